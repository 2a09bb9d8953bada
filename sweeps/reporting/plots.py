"""Figures of the results page (matplotlib, Agg backend, no timestamps in the files)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from sweeps.reporting.model import GateRow, Report, SweepGroup, Table, method_rank, to_float


def save(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})


def plot_table(table: Table, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    students = list(dict.fromkeys(r.student for r in table.rows))
    methods = sorted({r.method for r in table.rows}, key=method_rank)
    width = 0.8 / max(1, len(students))
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(methods) + 2), 3.6))
    for i, student in enumerate(students):
        xs, ys, es = [], [], []
        for j, method in enumerate(methods):
            row = table.row(method, student)
            if row is not None:
                xs.append(j + (i - (len(students) - 1) / 2) * width)
                ys.append(100.0 * row.mean)
                es.append(100.0 * (row.std or 0.0))
        ax.bar(xs, ys, width, yerr=es, capsize=3, label=student)
    if table.teacher_score is not None:
        ax.axhline(100.0 * table.teacher_score, color="k", linestyle="--", linewidth=1, label="teacher")
    if table.trivial_score is not None:
        ax.axhline(100.0 * table.trivial_score, color="0.5", linestyle=":", linewidth=1, label="trivial baseline")
    ax.set_xticks(range(len(methods)), methods)
    ax.set_ylabel(f"dev {table.main_metric} (x100)")
    ax.set_title(f"{table.task} — {table.budget}" + (f"\n{table.variant}" if table.variant else ""),
                 fontsize=9 if table.variant else None)
    values = [100.0 * r.mean for r in table.rows] + [100.0 * s for s in (table.teacher_score, table.trivial_score)
                                                      if s is not None]
    low = min(values) - 10
    ax.set_ylim(max(low, 0.0) if min(values) >= 0 else low, max(values) + 5)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def plot_sweeps(groups: list[SweepGroup], path: Path) -> bool:
    """Dev score vs temperature and vs μ for one task's sweep trials; False when nothing varies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes_keys = [("loss.temperature", "temperature T", False), ("loss.hidden_weight", "μ (hidden weight)", True)]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    drawn = False
    for ax, (key, name, log) in zip(axes, axes_keys):
        for g in groups:
            pts = [(to_float(p.get(key)), 100.0 * s) for s, p in g.trials if to_float(p.get(key)) is not None]
            if len({x for x, _ in pts}) > 1:
                ax.scatter([x for x, _ in pts], [y for _, y in pts], s=14, label=g.label)
                drawn = True
        if log and any(c.get_offsets().size for c in ax.collections):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(f"dev {groups[0].main_metric} (x100)")
        if ax.collections:
            ax.legend(fontsize=7)
    fig.suptitle(f"{groups[0].task}: sweep trials")
    fig.tight_layout()
    if drawn:
        save(fig, path)
    plt.close(fig)
    return drawn


def plot_importances(groups: list[SweepGroup], path: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = [(g, g.importance) for g in groups if g.importance]
    if not data:
        return False
    fig, axes = plt.subplots(1, len(data), figsize=(4.8 * len(data), 3.0), squeeze=False)
    for ax, (g, imp) in zip(axes[0], data):
        keys = sorted(imp, key=lambda k: imp[k])
        ax.barh(range(len(keys)), [imp[k] for k in keys])
        ax.set_yticks(range(len(keys)), keys, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xlabel("fANOVA importance")
        method, budget = g.method_budget
        ax.set_title(f"{g.task} {method} ({len(g.trials)} finished trials)\n{budget}", fontsize=9)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)
    return True


def plot_gates(task: str, rows: list[GateRow], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(set().union(*(r.values for r in rows)))
    grid = [[r.values.get(l, float("nan")) for l in layers] for r in rows]
    fig, ax = plt.subplots(figsize=(1.0 + 0.7 * len(layers), 0.9 + 0.45 * len(rows)))
    im = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(layers)), [str(l) for l in layers])
    ax.set_yticks(range(len(rows)), [r.label for r in rows])
    ax.set_xlabel("teacher layer")
    ax.set_title(f"{task}: mean gate value")
    fig.colorbar(im, ax=ax, fraction=0.05)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def plot_curves(curves: dict[str, dict[str, list[tuple[int, float]]]], tasks: list[str], metrics: dict[str, str],
                path: Path) -> None:
    """One panel per task: mean dev score vs step of each method with a recorded history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = [t for t in tasks if t in curves]
    fig, axes = plt.subplots(1, len(tasks), figsize=(3.4 * len(tasks), 3.0), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        for method in sorted(curves[task], key=method_rank):
            pts = curves[task][method]
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker=".", label=method)
        ax.set_title(task)
        ax.set_xlabel("step")
        ax.set_ylabel(f"dev {metrics.get(task, '')} (x100)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, path)
    plt.close(fig)


def make_plots(report: Report, img_dir: Path) -> dict[str, str]:
    """Draw every figure into ``img_dir``; returns figure key -> file name (short: ``<task>-<n>.png``)."""
    images = {}
    count: dict[str, int] = defaultdict(int)
    for table in report.tables:
        count[table.task] += 1
        name = f"{table.task}-{count[table.task]}.png"
        plot_table(table, img_dir / name)
        images[f"table:{table.slug}"] = name
    head = report.headline
    if head is not None and head.curves:
        plot_curves(head.curves, list(head.prereg.tasks), head.metrics, img_dir / "curves.png")
        images["curves"] = "curves.png"
    by_task = defaultdict(list)
    for g in report.sweeps:
        by_task[g.task].append(g)
    for task, groups in by_task.items():
        name = f"sweep-{task}.png"
        if plot_sweeps(groups, img_dir / name):
            images[f"sweep:{task}"] = name
        name = f"importance-{task}.png"
        if plot_importances(groups, img_dir / name):
            images[f"sweep:importance:{task}"] = name
    for task, rows in report.gates.items():
        name = f"gates-{task}.png"
        plot_gates(task, rows, img_dir / name)
        images[f"gates:{task}"] = name
    return images
