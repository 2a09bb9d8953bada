"""Pruned vs unpruned in-process search at equal time budgets (not a test).

    python benchmarks/search_pruning.py run [distil overrides] --seeds 1 2 3 4 5   # results/search/seed<k>-<arm>.json
    python benchmarks/search_pruning.py report                    # docs/benchmarks/search.md and its figure

``run`` records, per seed, an unpruned search of ``--trials`` trials and then a pruned search
(``--pruner``, median by default) given the same time: it runs trials until it has used the
unpruned search's time (at most ``--max-trials``). Both use the seed for training and for the TPE
sampler, on the fine-tuned MiniLM teacher (``artifacts/teachers/minilm_l6/<task>``). Searches run
one after another; a seed and arm already recorded are skipped, so re-running the command resumes.
Time is the search process's CPU time (one thread): on a shared machine that is the wall time
the search takes on a core of its own; the wall time is recorded next to it. Every search starts
cold, as a fresh ``sweeps/search.py`` run does: its own empty feature and teacher-output cache.
Trials skip the end-of-run inference timing (``trainer.measure_inference=false``): only complete
trials would pay it, which would charge the unpruned search for work no search needs.

``report`` reads the recordings and writes the page: at 25 %, 50 % and 100 % of each seed's
unpruned search time, the best dev score found so far (complete trials only) by each arm, the
paired differences and their spread, and a figure of best-so-far vs time. Nothing on the page is
typed by hand.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lad.core.fileio import write_json, write_text

REPO = Path(__file__).resolve().parent.parent
RECORDS = REPO / "results" / "search"
PAGE = REPO / "docs" / "benchmarks" / "search.md"
BUDGETS = (0.25, 0.5, 1.0)
ARMS = ("none", "pruned")


# ---------------------------------------------------------------- analysis (pure, from recordings)

def best_so_far(trials: list[dict], at: float, clock: str = "cpu") -> float | None:
    """Best value of the complete trials that ended by ``at`` seconds (``None`` before the first)."""
    values = [t["value"] for t in trials if t["state"] == "COMPLETE" and t[f"end_{clock}_s"] <= at]
    return max(values) if values else None


def search_time(record: dict, clock: str = "cpu") -> float:
    """Seconds a recorded search took: the end of its last trial."""
    return max((t[f"end_{clock}_s"] for t in record["trials"]), default=0.0)


def paired_budgets(pairs: dict[int, dict], budgets=BUDGETS, clock: str = "cpu") -> list[dict]:
    """Per budget (a fraction of each seed's unpruned search time): each seed's best-so-far of both
    arms and their difference (pruned minus unpruned; ``None`` where an arm has no complete trial yet)."""
    rows = []
    for frac in budgets:
        seeds = {}
        for seed, pair in sorted(pairs.items()):
            limit = frac * search_time(pair["none"], clock)
            base = best_so_far(pair["none"]["trials"], limit, clock)
            pruned = best_so_far(pair["pruned"]["trials"], limit, clock)
            diff = None if base is None or pruned is None else pruned - base
            seeds[seed] = {"limit_s": limit, "none": base, "pruned": pruned, "diff": diff}
        rows.append({"budget": frac, "seeds": seeds, **diff_summary([s["diff"] for s in seeds.values()])})
    return rows


def diff_summary(diffs: list) -> dict:
    """Mean, standard deviation, range and signs of the paired differences that exist."""
    known = [d for d in diffs if d is not None]
    out = {"n": len(known), "missing": len(diffs) - len(known),
           "better": sum(d > 0 for d in known), "worse": sum(d < 0 for d in known), "tied": sum(d == 0 for d in known)}
    if known:
        out.update(mean=statistics.fmean(known), sd=statistics.stdev(known) if len(known) > 1 else 0.0,
                   min=min(known), max=max(known))
    return out


def curves(pairs: dict[int, dict], points: int = 101, clock: str = "cpu") -> dict:
    """Best-so-far of each arm on a grid of fractions of each seed's unpruned search time:
    ``{arm: [[value per grid point] per seed]}`` (``None`` before an arm's first complete trial)."""
    grid = [i / (points - 1) for i in range(points)]
    out = {"grid": grid}
    for arm in ARMS:
        out[arm] = [[best_so_far(pair[arm]["trials"], f * search_time(pair["none"], clock), clock) for f in grid]
                    for _, pair in sorted(pairs.items())]
    return out


def sign_test(row: dict) -> float | None:
    """Two-sided sign test of a budget's paired differences (ties left out)."""
    from scipy.stats import binomtest

    n = row["better"] + row["worse"]
    return binomtest(row["better"], n).pvalue if n else None


def verdict(row: dict) -> str:
    """One honest sentence on a budget's paired differences."""
    if row["n"] < 2:
        return "too few seeds with a complete trial in both arms"
    if row["better"] == row["n"]:
        return f"pruned ahead on all {row['n']} seeds"
    if row["worse"] == row["n"]:
        return f"unpruned ahead on all {row['n']} seeds"
    if row["tied"] == row["n"]:
        return f"tied on all {row['n']} seeds"
    return "no consistent difference"


# ---------------------------------------------------------------- the page

def load_pairs(folder: Path) -> dict[int, dict]:
    """``{seed: {"none": record, "pruned": record}}`` of the seeds recorded in both arms."""
    records = {}
    for path in sorted(folder.glob("seed*-*.json")):
        rec = json.loads(path.read_text())
        records.setdefault(int(rec["seed"]), {})[rec["arm"]] = rec
    return {seed: arms for seed, arms in records.items() if set(arms) == set(ARMS)}


def _f(value, fmt: str = ".4f") -> str:
    return "—" if value is None else format(value, fmt)


def trial_spread(pairs: dict[int, dict]) -> dict:
    """How far apart the unpruned searches' complete trials score: lowest, highest, and the mean over
    seeds of each search's standard deviation (small next to dev noise = the best trial is a draw)."""
    per_seed = [[t["value"] for t in pair["none"]["trials"] if t["state"] == "COMPLETE"] for pair in pairs.values()]
    values = [v for seed in per_seed for v in seed]
    sds = [statistics.stdev(seed) for seed in per_seed if len(seed) > 1]
    return {"min": min(values, default=None), "max": max(values, default=None),
            "sd": statistics.fmean(sds) if sds else None}


def dev_noise(setup: dict, baselines: dict, teacher: float | None) -> str:
    """The binomial standard error of one dev accuracy at the teacher's level (accuracy tasks only)."""
    base = baselines.get(setup["task"], {})
    n = base.get("dev_examples")
    if base.get("main_metric") != "accuracy" or not n or teacher is None:
        return ""
    se = (teacher * (1 - teacher) / n) ** 0.5
    return (f" For scale: on {n} dev examples, one accuracy near the teacher's has a binomial standard "
            f"error of {se:.4f}.")


def references(setup: dict, baselines: dict) -> tuple[float | None, float | None]:
    """The majority-class dev score of the task (results/baselines.json) and the recorded teacher's."""
    majority = baselines.get(setup["task"], {}).get("score")
    return majority, (setup.get("teacher") or {}).get("score")


def page_lines(pairs: dict[int, dict], figure: str, command: str, baselines: dict) -> list[str]:
    rows = paired_budgets(pairs)
    first = next(iter(pairs.values()))
    setup = first["none"]["setup"]
    majority, teacher = references(setup, baselines)
    cpu = [search_time(p["none"]) for p in pairs.values()]
    lines = [
        "# Search benchmark: does pruning find a better trial in the same time?",
        "",
        f"Generated by `{command}` from the recordings under "
        "[`results/search/`](../../results/search/) — do not edit by hand.",
        "",
        "**Question.** Given the time an unpruned search of "
        f"{setup['trials']} trials takes, and 25 %, 50 % or 100 % of it, is the best dev score found "
        f"so far higher with a {setup['pruner']} pruner than without? Pruned and unpruned searches are "
        f"paired by seed (the same seed trains the trials and seeds TPE); {len(pairs)} seeds.",
        "",
        f"**Setup.** Task {setup['task']}, 3-layer student of the fine-tuned MiniLM teacher, trials of "
        f"{setup['steps']} steps with a dev evaluation every {setup['eval_every']} steps, search space "
        f"`lad_optuna`, no end-of-run inference timing, extra overrides "
        f"`{' '.join(setup['overrides']) or 'none'}`. The unpruned search "
        f"runs {setup['trials']} trials; the pruned one runs trials until it has used the unpruned "
        f"search's time (at most {setup['max_trials']}), so the time pruning saves goes into more trials. "
        "Time is the search process's CPU time on one thread (the wall time on a core of its own; the "
        "machine was shared), counted from the search's start: every search starts cold (its own empty "
        "feature and teacher-output cache), so loading the teacher, tokenising the data and computing the "
        "teacher's outputs is in it. "
        f"Unpruned search time per seed: {', '.join(f'{s:.0f} s' for s in cpu)}. "
        f"Recorded on {first['none'].get('machine', 'an unrecorded machine')}.",
        "",
        f"**References on the same dev set.** Always predicting the majority class: {_f(majority)} "
        f"([`results/baselines.json`](../../results/baselines.json)); the teacher: {_f(teacher)}. "
        "Both are on the figure and in every row below.",
        "",
        f"![best-so-far vs time]({figure})",
        "",
        "Means over the seeds with a complete trial in both arms by that budget; sign test: two-sided, "
        "over the seeds whose arms differ.",
        "",
        "| budget | majority class | teacher | unpruned best (mean) | pruned best (mean) | pruned − unpruned: mean | sd | min | max "
        "| pruned better / tied / worse | sign test p | reading |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    for row in rows:
        paired = [s for s in row["seeds"].values() if s["diff"] is not None]
        lines.append(
            f"| {row['budget']:.0%} | {_f(majority)} | {_f(teacher)} | "
            f"{_f(statistics.fmean(s['none'] for s in paired) if paired else None)} | "
            f"{_f(statistics.fmean(s['pruned'] for s in paired) if paired else None)} | "
            f"{_f(row.get('mean'), '+.4f')} | "
            f"{_f(row.get('sd'))} | {_f(row.get('min'), '+.4f')} | {_f(row.get('max'), '+.4f')} | "
            f"{row['better']} / {row['tied']} / {row['worse']}"
            + (f" ({row['missing']} seed(s) without a complete trial in an arm)" if row["missing"] else "")
            + f" | {_f(sign_test(row), '.3f')} | {verdict(row)} |")
    lines += ["", "Per seed (best-so-far unpruned → pruned at each budget; trials complete / pruned in the "
              "whole pruned search):", "",
              "| seed | " + " | ".join(f"{b:.0%}" for b in BUDGETS) + " | pruned search trials |",
              "|---:|" + "---|" * len(BUDGETS) + "---|"]
    for seed, pair in sorted(pairs.items()):
        cells = [f"{_f(r['seeds'][seed]['none'])} → {_f(r['seeds'][seed]['pruned'])}" for r in rows]
        states = [t["state"] for t in pair["pruned"]["trials"]]
        lines.append(f"| {seed} | " + " | ".join(cells) + f" | {states.count('COMPLETE')} / {states.count('PRUNED')} |")
    full = rows[-1]
    spread = trial_spread(pairs)
    lines += ["", "**Answer.** " + answer(rows), "",
              f"The unpruned searches' complete trials score from {_f(spread['min'])} to {_f(spread['max'])} "
              f"(standard deviation within a search, mean over seeds: {_f(spread['sd'])})."
              + dev_noise(setup, baselines, teacher), "",
              f"At the full budget the paired differences range from {_f(full.get('min'), '+.4f')} to "
              f"{_f(full.get('max'), '+.4f')}: with {len(pairs)} seeds, a mean difference whose spread "
              "covers zero is no evidence either way, and even the same sign on every seed would be weak "
              f"evidence (two-sided sign-test p = {min(1.0, 2 * 0.5 ** len(pairs)):.3f}).", "",
              "## Reproduce", "", "```bash",
              f"python sweeps/teachers.py --tasks {setup['task']}   # the teacher (skipped when it is trained)",
              run_command(setup, sorted(pairs)) + "   # resumable: skips recorded seeds",
              "python benchmarks/search_pruning.py report", "```", ""]
    return lines


def run_command(setup: dict, seeds: list[int]) -> str:
    """The ``run`` command line that records searches with a recording's settings."""
    return ("python benchmarks/search_pruning.py run "
            + "".join(f"{o} " for o in setup["overrides"])
            + f"--task {setup['task']} --trials {setup['trials']} --max-trials {setup['max_trials']} "
            f"--steps {setup['steps']} --eval-every {setup['eval_every']} --pruner {setup['pruner']} "
            f"--seeds {' '.join(map(str, seeds))}")


def answer(rows: list[dict]) -> str:
    parts = [f"at {r['budget']:.0%} of the unpruned time, {verdict(r)} (mean difference "
             f"{_f(r.get('mean'), '+.4f')}, sd {_f(r.get('sd'))})" for r in rows]
    helps = all(r["n"] and r["better"] == r["n"] for r in rows)
    hurts = all(r["n"] and r["worse"] == r["n"] for r in rows)
    head = ("Pruning helped at every budget on every seed" if helps else
            "Pruning hurt at every budget on every seed" if hurts else
            "Pruning does not reliably help here")
    return head + ": " + "; ".join(parts) + "."


def draw(pairs: dict[int, dict], path: Path, majority: float | None = None, teacher: float | None = None) -> None:
    """Best-so-far vs time (fraction of each seed's unpruned search time): each seed thin, and the
    mean over the seeds with the band between the lowest and the highest, from the time every seed
    has a complete trial."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curves(pairs)
    grid = data["grid"]
    fig, ax = plt.subplots(figsize=(7, 5))
    for arm, colour, label in (("none", "tab:blue", "no pruning"), ("pruned", "tab:orange", "pruned")):
        for seed in data[arm]:
            known = [(100 * x, v) for x, v in zip(grid, seed) if v is not None]
            ax.step([x for x, _ in known], [v for _, v in known], where="post", color=colour, lw=0.6, alpha=0.5)
        xs, mean, low, high = [], [], [], []
        for i, x in enumerate(grid):
            vals = [seed[i] for seed in data[arm]]
            if None not in vals:
                xs.append(100 * x)
                mean.append(statistics.fmean(vals))
                low.append(min(vals))
                high.append(max(vals))
        ax.step(xs, mean, where="post", color=colour, lw=2,
                label=f"{label}: mean of {len(data[arm])} seeds (thin: each seed)")
        ax.fill_between(xs, low, high, step="post", color=colour, alpha=0.2, label=f"{label}: min–max")
    for b in BUDGETS:
        ax.axvline(100 * b, color="grey", lw=0.6, ls=":")
    # the axis spans the searches and the teacher; a reference far below (the majority class) would
    # flatten every curve, so it is named in the legend with its value instead of drawn
    seen = [v for arm in ARMS for seed in data[arm] for v in seed if v is not None]
    low_y = min(seen, default=0.0)
    high_y = max(seen + ([teacher] if teacher is not None else []), default=1.0)
    pad = 0.1 * (high_y - low_y) or 0.01
    ax.set_ylim(low_y - pad, high_y + pad)
    for value, style, label in ((teacher, "-.", "teacher"), (majority, "--", "majority class")):
        if value is None:
            continue
        if low_y - pad <= value <= high_y + pad:
            ax.axhline(value, color="black", lw=1, ls=style, label=f"{label} {value:.4f}")
        else:
            ax.plot([], [], color="black", lw=1, ls=style, label=f"{label} {value:.4f} (off the axis)")
    ax.set_xlim(0, 100)
    ax.set_xlabel("time, % of the seed's unpruned search (CPU time, one thread)")
    ax.set_ylabel("best dev score so far")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def report(args) -> int:
    from lad.core.errors import ConfigError

    from sweeps.baselines import read_baselines

    pairs = load_pairs(Path(args.records))
    if not pairs:
        raise ConfigError(f"no seed recorded in both arms under {args.records} "
                          "(record some: python benchmarks/search_pruning.py run)")
    page = Path(args.page)
    figure = page.with_suffix(".png")
    baselines = read_baselines()
    draw(pairs, figure, *references(next(iter(pairs.values()))["none"]["setup"], baselines))
    default = Path(args.records).resolve() == RECORDS and page.resolve() == PAGE
    command = "python benchmarks/search_pruning.py report" + ("" if default else f" {args.records} --page {args.page}")
    write_text(page, "\n".join(page_lines(pairs, figure.name, command, baselines)))
    print(f"wrote {page} and {figure} from {len(pairs)} seed(s)")
    return 0


# ---------------------------------------------------------------- live searches

class Clock:
    """Optuna callback recording each finished trial's end (CPU and wall seconds since the search
    started) and stopping the search once it has used ``limit_s`` CPU seconds."""

    def __init__(self, limit_s: float | None = None) -> None:
        self.cpu0, self.wall0, self.limit_s, self.ends = time.process_time(), time.time(), limit_s, {}

    def __call__(self, study, trial) -> None:
        cpu = time.process_time() - self.cpu0
        self.ends[trial.number] = (cpu, time.time() - self.wall0)
        if self.limit_s is not None and cpu >= self.limit_s:
            study.stop()


def teacher_score(cfg) -> dict:
    """The fine-tuned teacher's best dev score (the ``metrics.json`` train_teacher.py writes next to
    it; ``None`` for a teacher without one), recorded next to the searches."""
    path = Path(str(cfg.teacher.path)) / "metrics.json"
    if not path.is_file():
        return {"path": str(cfg.teacher.path), "metric": None, "score": None}
    metrics = json.loads(path.read_text())
    main = metrics["main_metric"]
    return {"path": str(cfg.teacher.path), "metric": main, "score": metrics["best"][main]}


def record_search(args, seed: int, arm: str, limit_s: float | None) -> dict:
    """Run one search in this process and return its recording."""
    import optuna

    from lad.search.inprocess import run_search

    from lad.search.trials import compose_search

    pruner = "none" if arm == "none" else args.pruner
    trials = args.trials if arm == "none" else args.max_trials
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        overrides = [f"task={args.task}", "student=3layer", f"n_trials={trials}", "max_trials=null",  # a fresh study
                     f"search.pruner={pruner}",
                     f"search.storage=sqlite:///{tmp / 'optuna.db'}", "search.study_name=bench",
                     f"output_dir={tmp / 'out'}", f"paths.cache={tmp / 'cache'}", "mlflow=off",
                     "trainer.progress=false", "search.plots=false", "trainer.measure_inference=false",
                     f"trainer.max_steps={args.steps}", f"trainer.eval_every={args.eval_every}",
                     f"seed={seed}", *args.overrides]
        clock = Clock(limit_s)
        run_search(compose_search(overrides), tmp / "out", overrides, callbacks=[clock])
        study = optuna.load_study(study_name="bench", storage=f"sqlite:///{tmp / 'optuna.db'}")
    records, start = [], (0.0, 0.0)
    for trial in sorted(study.trials, key=lambda t: t.number):
        end = clock.ends.get(trial.number)
        if end is None:
            continue
        records.append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                        "params": trial.params, "start_cpu_s": round(start[0], 2), "end_cpu_s": round(end[0], 2),
                        "start_wall_s": round(start[1], 2), "end_wall_s": round(end[1], 2),
                        "reports": {str(k): v for k, v in sorted(trial.intermediate_values.items())}})
        start = end
    best = [t["value"] for t in records if t["state"] == "COMPLETE"]
    return {"seed": seed, "arm": arm, "pruner": pruner, "limit_cpu_s": limit_s, "machine": platform.machine(),
            "setup": {"task": args.task, "trials": args.trials, "max_trials": args.max_trials, "steps": args.steps,
                      "eval_every": args.eval_every, "pruner": args.pruner, "overrides": list(args.overrides),
                      "teacher": args.teacher},
            "final_best": max(best) if best else None, "trials": records}


def check_run_args(args) -> dict:
    """Bad settings or overrides: one error before any search starts. Returns the teacher's score."""
    from hydra.errors import HydraException

    from lad.core.errors import ConfigError
    from lad.search.trials import compose_search

    if args.trials < 1 or args.max_trials < args.trials:
        raise ConfigError(f"need 1 <= --trials <= --max-trials, got {args.trials} and {args.max_trials}")
    if args.steps < 1 or not 1 <= args.eval_every <= args.steps:
        raise ConfigError(f"need 1 <= --eval-every <= --steps, got {args.eval_every} and {args.steps}")
    try:
        cfg = compose_search([f"task={args.task}", "student=3layer", *args.overrides])
    except HydraException as exc:
        raise ConfigError(f"bad override: {str(exc).splitlines()[0]}") from None
    if not Path(str(cfg.teacher.path)).is_dir():
        raise ConfigError(f"no fine-tuned teacher at {cfg.teacher.path} (train it: python sweeps/teachers.py "
                          f"--tasks {args.task})")
    return teacher_score(cfg)


def run(args) -> int:
    from lad.core.config import setup_environment

    args.teacher = check_run_args(args)
    setup_environment()
    out = Path(args.out)
    todo = [(seed, arm) for seed in args.seeds for arm in ARMS if not (out / f"seed{seed}-{arm}.json").exists()]
    done_s: list[float] = []
    for seed in args.seeds:
        for arm in ARMS:
            path = out / f"seed{seed}-{arm}.json"
            if path.exists():
                print(f"[bench] seed {seed} {arm}: recorded in {path}, skipped", flush=True)
                continue
            limit = None if arm == "none" else search_time(json.loads((out / f"seed{seed}-none.json").read_text()))
            budget = f" (CPU budget {limit:.0f} s)" if limit else ""
            print(f"[bench] seed {seed} {arm}: starting{budget}", flush=True)
            rec = record_search(args, seed, arm, limit)
            write_json(path, rec)
            done_s.append(search_time(rec))
            left = len(todo) - len(done_s)
            print(f"[bench] seed {seed} {arm}: {len(rec['trials'])} trials, {search_time(rec):.0f} CPU s, "
                  f"best {rec['final_best']} -> {path}; estimate for the {left} search(es) left: "
                  f"{left * statistics.fmean(done_s) / 60:.0f} CPU min", flush=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    live = sub.add_parser("run", help="record pruned and unpruned searches (resumable)")
    live.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    live.add_argument("--task", default="sst2")
    live.add_argument("--trials", type=int, default=8, help="trials of the unpruned search")
    live.add_argument("--max-trials", type=int, default=24, help="at most this many trials in the pruned search")
    live.add_argument("--steps", type=int, default=80)
    live.add_argument("--eval-every", type=int, default=20)
    live.add_argument("--pruner", default="median", choices=("median", "halving", "hyperband"))
    live.add_argument("--out", default=str(RECORDS), help="folder of the recordings")
    live.add_argument("overrides", nargs="*", help="extra distil overrides for every trial")
    live.set_defaults(func=run)
    rep = sub.add_parser("report", help="write the page and its figure from the recordings")
    rep.add_argument("records", nargs="?", default=str(RECORDS))
    rep.add_argument("--page", default=str(PAGE))
    rep.set_defaults(func=report)
    return parser


def main(argv=None) -> int:
    from lad.core.guard import guarded

    args = build_parser().parse_args(argv)
    return guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
