"""What a run looks like in the MLflow UI: its name, description, plots, datasets, and the
experiment's ablation table.

Kept apart from ``lad.tracking.tracker`` (the run lifecycle): everything here is presentation, built from
the config and the run's results, and every MLflow call goes through a tracker's client.

* ``display_name``  ``lad/3layer rte seed=42``, ``kd/3layer mrpc trial=7``, ``teacher/minilm_l6 sst2 seed=42``
* ``description``   the exact command (``mlflow.note.content``, shown as the run's description)
* ``log_plots``     ``plots/learning_curve.png`` (dev metric vs step), ``plots/gates.png`` (gate per layer)
* ``log_datasets``  the task's train / dev files as run inputs (the runs table's Dataset column)
* ``refresh_ablation_table``  the experiment's description: method x mean dev metric over finished runs
* ``save_runs_view``  the experiment's saved view ``LAD: dev metric and key params`` (MLflow's Views menu,
  ``runs_view_url``): the
  dev metric and the key params as the runs table's first columns, wide enough for the run names

MLflow 3 cannot be told which columns its runs table starts with (it shows Source, Models and
Dataset, whatever a run logged); a saved view, kept as an experiment tag, is what a server-side
store can hold. ``python -m lad.tracking.run_record`` prints each experiment's link to it (``make ui``).
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

from omegaconf import DictConfig

log = logging.getLogger(__name__)

NOTE_TAG = "mlflow.note.content"  # MLflow's description of a run or an experiment
# overrides already spelled out by the name (or that do not change what is trained)
_NAMED_KEYS = ("task", "student", "gate", "loss", "seed", "teacher", "experiment", "hparams_search")
_NOT_TRAINING = ("paths.", "mlflow", "device", "overwrite", "trainer.resume", "trainer.progress",
                 "trainer.num_threads", "data.data_dir", "data.cache_dir", "hydra.", "+hydra.")
MAX_NAME = 120


def method_of(cfg: DictConfig) -> str:
    """``lad/3layer`` for a student (method label / depth), ``teacher/<name>`` for a teacher run."""
    from lad.tracking.tracker import method_label

    if "student" not in cfg:
        return f"teacher/{cfg.teacher.name}"
    return f"{method_label(cfg)}/{cfg.student.name}"


def display_name(cfg: DictConfig, overrides: list[str] | None = None, trial: int | None = None) -> str:
    """A run name that says what the run is: method, task, then ``trial=N`` or ``seed=S``.

    Outside an Optuna trial, overrides that change the training but are not in the name yet
    (``loss.temperature=4``) are appended, so the jobs of a multirun get different names.
    """
    parts = [method_of(cfg), str(cfg.task.name)]
    if trial is not None:
        parts.append(f"trial={trial}")
        return " ".join(parts)
    parts.append(f"seed={cfg.seed}")
    for item in overrides or []:
        key = item.split("=", 1)[0].lstrip("+~")
        if key in _NAMED_KEYS or key.startswith(_NOT_TRAINING):
            continue
        parts.append(item.lstrip("+"))
    name = " ".join(parts)
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 1] + "…"


def command_line(entry: str, overrides: list[str] | None) -> str:
    """``python distil.py task=rte seed=1``: the command that runs this configuration again."""
    return " ".join(["python", f"{entry}.py", *(shlex.quote(o) for o in overrides or [])])


def launcher_line(argv: list[str] | None = None) -> str:
    """The command that started this process (paths inside the working directory kept relative)."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    script = Path(argv[0])
    try:
        script = script.resolve().relative_to(Path.cwd())
    except ValueError:
        pass
    return " ".join(["python", shlex.quote(str(script)), *(shlex.quote(a) for a in argv[1:])])


def description(entry: str, overrides: list[str] | None, trial: int | None = None,
                in_sweep: bool = False, argv: list[str] | None = None) -> str:
    """Markdown for the run's description: the command, and what launched it when it is a job."""
    from lad.tracking.store import mask_secrets

    lines = []
    launched = launcher_line(argv)
    if trial is not None:
        lines.append(f"Optuna trial {trial} of `{launched}`")
        if overrides:
            lines.append(f"\n\nTrial overrides: `{' '.join(overrides)}`")
    else:
        lines.append(f"Command: `{command_line(entry, overrides)}`")
        if in_sweep and launched:
            lines.append(f"\n\nA job of the multirun `{launched}`")
    return mask_secrets("".join(lines))


# ----------------------------------------------------------------------------- plots
def ui_extra(fn, *args) -> None:
    """Call an MLflow UI nicety (datasets, plots, the experiment's table); a failure only warns."""
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - never lose a run over its presentation
        log.warning("MLflow %s skipped: %s", fn.__name__, str(exc).splitlines()[0] if str(exc) else exc)


def learning_curve_png(history: list[dict], metric: str, path: Path, title: str) -> Path | None:
    """Dev ``metric`` against the training step; None when there is nothing to draw."""
    points = [(h["step"], h[metric]) for h in history if metric in h and "step" in h]
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, values = zip(*points)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.plot(steps, values, marker="o")
    best = max(range(len(values)), key=values.__getitem__)
    ax.annotate(f"best {values[best]:.4f}", (steps[best], values[best]), textcoords="offset points",
                xytext=(0, 6), ha="center", fontsize=8)
    ax.set(xlabel="step", ylabel=f"dev {metric}", title=title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def gates_png(values: dict[int, float], path: Path, title: str) -> Path | None:
    """Mean gate value per teacher layer (bars); None without values."""
    if not values:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = sorted(values)
    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
    ax.bar(range(len(layers)), [values[layer] for layer in layers])
    ax.set_xticks(range(len(layers)), [str(layer) for layer in layers])  # labels, not numbers
    ax.set(xlabel="teacher layer", ylabel="mean gate g_l", ylim=(0, 1), title=title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def log_plots(tracker, out_dir: Path, name: str, history: list[dict], metric: str) -> list[Path]:
    """Draw the run's plots into ``<out_dir>/plots`` and log them as artifacts ``plots/*.png``."""
    import json

    written = [learning_curve_png(history, metric, out_dir / "plots" / "learning_curve.png", name)]
    values_file = out_dir / "gates" / "gate_values.json"
    if values_file.is_file():
        values = {int(k): float(v) for k, v in json.loads(values_file.read_text()).items()}
        written.append(gates_png(values, out_dir / "plots" / "gates.png", f"{name}: gates"))
    written = [p for p in written if p is not None]
    for path in written:
        tracker.log_artifact(path, "plots")
    return written


# ----------------------------------------------------------------------------- datasets
def dataset_name(task, split: str, n: int, limit: int | None) -> str:
    """``sst2/train`` for a whole split, ``sst2/train[:2000]`` for the first examples only."""
    return f"{task.name}/{split}" + (f"[:{n}]" if limit is not None else "")


def log_datasets(tracker, task, data_dir: Path, examples: dict[str, list], limits: dict[str, int | None]) -> None:
    """Log each split's examples as an MLflow dataset input (context ``train`` / ``eval``).

    The dataset's source is the TSV file and its digest is computed from the rows, so two runs on
    the same data show the same dataset in the UI.
    """
    client = getattr(tracker, "client", None)
    if client is None or not examples:
        return
    import pandas as pd
    from mlflow.data import from_pandas
    from mlflow.entities import DatasetInput, InputTag

    from lad.data.sources import split_source

    import warnings

    inputs = []
    for split, rows in examples.items():
        frame = pd.DataFrame({"text_a": [r.text_a for r in rows], "text_b": [r.text_b for r in rows],
                              "label": [r.label for r in rows]})
        if not task.is_pair:
            frame = frame.drop(columns="text_b")
        with warnings.catch_warnings():  # MLflow's schema / source-type hints are not for our users
            warnings.simplefilter("ignore")
            dataset = from_pandas(frame, source=str(split_source(task, data_dir, split)), targets="label",
                                  name=dataset_name(task, split, len(rows), limits.get(split)))
            entity = dataset._to_mlflow_entity()
        context = "train" if split == "train" else "eval"
        inputs.append(DatasetInput(entity, tags=[InputTag("mlflow.data.context", context)]))
    client.log_inputs(tracker.run_id, datasets=inputs)


# ----------------------------------------------------------------------------- experiment description
def budget_label(params: dict) -> str:
    """A run's training budget from its params: ``8 steps`` / ``2 epochs`` (+ ``, 2000 examples``)."""
    steps = params.get("trainer.max_steps")
    try:
        label = f"{int(steps)} steps" if steps is not None and int(steps) > 0 else None
    except ValueError:
        label = None
    label = label or f"{params.get('trainer.epochs', '?')} epochs"
    samples = params.get("data.max_train_samples")
    return label if samples in (None, "None", "null") else f"{label}, {samples} examples"


def ablation_table(runs, metric: str | None = None) -> str:
    """Markdown: one row per method (``lad.method`` tag) and training budget, mean / best
    ``best/<metric>`` and run count (a 2-epoch run is never averaged with 8-step trials).

    ``runs`` are MLflow ``Run`` objects; runs without the metric or the tag are left out.
    """
    import statistics

    scores: dict[tuple[str, str], list[float]] = {}
    for run in runs:
        tags, metrics = run.data.tags, run.data.metrics
        main = metric or run.data.params.get("task.main_metric")
        method = tags.get("lad.method")
        value = metrics.get(f"best/{main}") if main else None
        if method and value is not None:
            metric = metric or main
            scores.setdefault((method, budget_label(run.data.params)), []).append(float(value))
    if not scores:
        return ""
    order = sorted(scores, key=lambda m: (m[1], m[0] == "teacher", -statistics.fmean(scores[m])))
    lines = [f"| method | budget | runs | mean dev {metric} | best |", "|---|---|---:|---:|---:|"]
    for method, budget in order:
        values = scores[(method, budget)]
        lines.append(f"| {method} | {budget} | {len(values)} | {statistics.fmean(values):.4f} | {max(values):.4f} |")
    return "\n".join(lines)


def refresh_ablation_table(tracker, max_runs: int = 5000) -> str:
    """Rewrite the experiment's description with the ablation table of its finished runs."""
    client = getattr(tracker, "client", None)
    if client is None:
        return ""
    exp_id = tracker.run.info.experiment_id
    runs = client.search_runs([exp_id], filter_string="attributes.status = 'FINISHED'", max_results=max_runs)
    table = ablation_table(runs)
    if not table:
        return ""
    text = ("Ablation table of this experiment: best dev score of each finished run, averaged per "
            "method (`lad.method` tag) and training budget, over seeds and trials; refreshed by LAD at the end of "
            "every run. For tables per budget and variant run `python sweeps/report.py`.\n\n" + table)
    client.set_experiment_tag(exp_id, NOTE_TAG, text)
    return text


# ----------------------------------------------------------------------------- the runs table's view
VIEW_ID = "lad"
VIEW_NAME = "LAD: dev metric and key params"
VIEW_TAG = "mlflow.sharedViewState." + VIEW_ID  # MLflow's saved views are experiment tags with this prefix
#: the params shown right after the dev metric, in this order (a teacher run leaves the student's empty)
VIEW_PARAMS = ("student.name", "gate.name", "loss.name", "seed", "trainer.max_steps", "trainer.epochs",
               "loss.temperature", "optim.lr", "teacher.name")
RUN_NAME_COLUMN = "attributes.`Run Name`"  # the runs table's id of its run-name column
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # the UI's experiment type: model training (runs) or GenAI (traces)
_CHAR_PX, _PAD_PX, _MIN_PX, _MAX_NAME_PX = 8, 56, 90, 640


def column_key(kind: str, name: str) -> str:
    """The runs table's id of a column: ``metrics.`best/accuracy```, ``params.`gate.name```."""
    return f"{kind}.`{name}`"


def runs_view_state(metric: str, run_names: list[str]) -> dict:
    """The saved view: best dev ``metric`` first (and sorted on, best first), then ``VIEW_PARAMS``,
    then the Dataset column; every column wide enough for its header, the run-name column for the
    longest run name."""
    metric_col = column_key("metrics", f"best/{metric}")
    params = [column_key("params", name) for name in VIEW_PARAMS]
    columns = [metric_col, *params, column_key("attributes", "Dataset")]
    widths = {col: max(_MIN_PX, _PAD_PX + _CHAR_PX * len(col.split("`")[1])) for col in [metric_col, *params]}
    longest = max((len(n) for n in run_names), default=0)
    widths[RUN_NAME_COLUMN] = min(_MAX_NAME_PX, max(200, _PAD_PX + _CHAR_PX * longest))
    return {"orderByKey": metric_col, "orderByAsc": False, "selectedColumns": columns,
            "columnOrder": [RUN_NAME_COLUMN, *columns], "columnWidths": widths}


def runs_view_url(base_url: str, experiment_id: str) -> str:
    """The link that opens an experiment's runs table in LAD's saved view."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_ID}"


def save_runs_view(tracker, metric: str, max_runs: int = 1000) -> dict | None:
    """Write (or update) the experiment's saved view for dev ``metric`` (its run-name column as wide as
    the longest name of the newest ``max_runs`` runs); None without MLflow."""
    import time

    client = getattr(tracker, "client", None)
    if client is None:
        return None
    exp_id = tracker.run.info.experiment_id
    runs = client.search_runs([exp_id], max_results=max_runs)
    state = runs_view_state(metric, [r.info.run_name or "" for r in runs])
    text = json.dumps(state, sort_keys=True)
    now = int(time.time() * 1000)
    created = now
    tags = client.get_experiment(exp_id).tags
    if EXPERIMENT_KIND_TAG not in tags:  # else the UI may guess "GenAI" and open on traces (a user's choice stays)
        client.set_experiment_tag(exp_id, EXPERIMENT_KIND_TAG, "custom_model_development")
    old = tags.get(VIEW_TAG)
    if old:
        try:
            envelope = json.loads(old)
            if envelope.get("state") == text and envelope.get("name") == VIEW_NAME:
                return state
            created = int(envelope.get("createdAt", now))
        except (ValueError, TypeError, AttributeError):
            pass
    envelope = {"name": VIEW_NAME, "createdAt": created, "updatedAt": now, "state": text}
    client.set_experiment_tag(exp_id, VIEW_TAG, json.dumps(envelope))
    return state


def view_links(tracking_uri: str, base_url: str) -> list[tuple[str, str]]:
    """(experiment name, link to its LAD view) for every experiment of the store that has one."""
    from mlflow.tracking import MlflowClient

    from lad.core.config import import_mlflow

    import_mlflow()
    client = MlflowClient(tracking_uri=tracking_uri)
    return [(exp.name, runs_view_url(base_url, exp.experiment_id))
            for exp in client.search_experiments(max_results=1000) if VIEW_TAG in exp.tags]


def main(argv: list[str] | None = None) -> int:
    """Print the link to each experiment's LAD view (``make ui`` runs this before the server)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--tracking-uri", default="sqlite:///mlruns.db")
    parser.add_argument("--url", default="http://127.0.0.1:5000", help="where the MLflow UI will answer")
    args = parser.parse_args(argv)
    db = args.tracking_uri.removeprefix("sqlite:///") if args.tracking_uri.startswith("sqlite:///") else None
    links = [] if db is not None and not Path(db).is_file() else view_links(args.tracking_uri, args.url)
    if not links:
        print(f"No LAD runs in this store yet; each experiment gets the view '{VIEW_NAME}' (Views menu) with its "
              "first run.")
    else:
        print(f"Runs tables with the dev metric and key params first (the view '{VIEW_NAME}' of each experiment's "
              "Views menu):")
        for name, url in links:
            print(f"  {name}: {url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
