"""The report's data model: tables, rows, sweep groups, gate rows, and helpers that read export records."""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lad.core.config import HOUSEKEEPING

REPO = Path(__file__).resolve().parents[2]


GLUE_ORDER = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
METHOD_ORDER = ["lad", "lad-frozen", "lad_reverse", "lad_reverse-frozen", "mean", "attention", "lad-nogate",
                "pkd", "kd", "ce"]
TARGET_TASKS = ["rte", "mrpc", "stsb", "cola", "sst2"]   # order of the published-numbers table
COMMIT_TAG = "mlflow.source.git.commit"
DEFAULT_TEACHER = "minilm_l6"
MIN_IMPORTANCE_TRIALS = 5    # finished trials a sweep group needs before fANOVA importance is shown
# extra overrides that do not change what a table compares (cadence and housekeeping: the trained model stays
# as it is), left out of a table's title and variant
NEUTRAL = ("trainer.eval_every=", "trainer.log_every=", "trainer.ckpt_every=", *HOUSEKEEPING)
# overrides the ablation driver sets itself (the rest of a run's overrides were `extra`)
MANAGED = ("task=", "gate=", "loss=", "student=", "seed=", "trainer.max_steps=", "trainer.epochs=",
           "data.max_train_samples=", "trainer.progress=", "trainer.predict_test=", "trainer.resume=",
           "overwrite=", "mlflow.", "paths.", "hydra.", "device=", "trainer.num_threads=",
           "gate.frozen=")  # part of the method label (lad-frozen), not a table variant


def parse_overrides(tag: str) -> list[str]:
    """The ``lad.overrides`` tag: a JSON list (older runs: space-separated)."""
    import json

    try:
        value = json.loads(tag)
        if isinstance(value, list):
            return [str(v) for v in value]
    except ValueError:
        pass
    return tag.split()


class SeedScores:
    """n, mean and sample std of a ``scores`` mapping (seed -> best dev main metric)."""

    scores: dict[int, float]

    @property
    def n(self) -> int:
        return len(self.scores)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.scores[s] for s in sorted(self.scores))

    @property
    def std(self) -> float | None:
        values = [self.scores[s] for s in sorted(self.scores)]
        return statistics.stdev(values) if len(values) > 1 else None


@dataclass
class Row(SeedScores):
    method: str
    student: str
    num_layers: int
    scores: dict[int, float]               # seed -> best dev main metric
    student_params: int | None
    throughput: float | None               # mean train examples / s
    pct_teacher: float | None = None
    commits: dict[str, int] = field(default_factory=dict)   # commit -> runs of this row


@dataclass
class Table:
    task: str
    teacher: str
    budget: str
    budget_args: list[str]
    main_metric: str
    rows: list[Row]
    teacher_score: float | None
    teacher_params: int | None
    extras: list[str]                      # extra overrides shared by every run (sorted)
    n_runs: int
    primary: bool = False
    trivial: dict | None = None            # the task's trivial baseline (results/baselines.json), same metric

    @property
    def trivial_score(self) -> float | None:
        return None if self.trivial is None else to_float(self.trivial.get("score"))

    @property
    def key(self) -> tuple:
        return (task_rank(self.task), self.teacher, self.budget, tuple(self.extras))

    @property
    def variant(self) -> str:
        """The extra overrides that set this table apart from the others of its task, as text."""
        return variant_text(self.extras)

    @property
    def slug(self) -> str:
        text = f"{self.task}-{self.teacher}-{self.budget}" + (f"-{self.variant}" if self.variant else "")
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text.replace(", ", "-"))

    def row(self, method: str, student: str) -> Row | None:
        return next((r for r in self.rows if (r.method, r.student) == (method, student)), None)

    @property
    def commits(self) -> dict[str, int]:
        """commit -> runs of the table (every row)."""
        out: Counter = Counter()
        for r in self.rows:
            out.update(r.commits)
        return dict(out)


@dataclass
class SweepGroup:
    task: str
    label: str
    main_metric: str
    trials: list[tuple[float, dict]]       # (score, params) of the finished trials
    pruned: int = 0                        # trials stopped by the pruner (no final score)
    importance: dict[str, float] = field(default_factory=dict)   # fANOVA share per searched parameter

    @property
    def method_budget(self) -> tuple[str, str]:
        """("method/student", "budget") from the label that ``sweep_label`` wrote."""
        method, _, budget = self.label.partition(", ")
        return method, budget


@dataclass
class GateRow:
    label: str                              # method/student
    n: int                                  # runs averaged
    values: dict[int, float]                # teacher layer -> mean gate value
    moves: dict[int, float] = field(default_factory=dict)  # teacher layer -> mean ||W - W0|| / ||W0||


@dataclass
class Report:
    tables: list[Table]
    sweeps: list[SweepGroup] = field(default_factory=list)
    gates: dict[str, list[GateRow]] = field(default_factory=dict)
    teachers: list[dict] = field(default_factory=list)      # latest teacher run per (task, teacher)
    baselines: dict[str, dict] = field(default_factory=dict)  # task -> trivial baseline (sweeps/baselines.py)
    headline: object = None          # sweeps.reporting.primary.Headline (the pre-registered analysis)

    def trivial(self, task: str, main_metric: str | None) -> dict | None:
        """The task's trivial baseline when it is scored with ``main_metric`` (else None)."""
        found = self.baselines.get(task)
        return found if found and found.get("main_metric") == main_metric else None


def task_rank(task: str) -> tuple:
    return (GLUE_ORDER.index(task), task) if task in GLUE_ORDER else (len(GLUE_ORDER), task)


def method_rank(method: str) -> tuple:
    return (METHOD_ORDER.index(method), method) if method in METHOD_ORDER else (len(METHOD_ORDER), method)


def to_int(value, default: int | None = None) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return default


def to_float(value) -> float | None:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def budget_of(params: dict) -> tuple[str, list[str]]:
    """Readable budget label and the matching ``sweeps/ablation.py`` arguments."""
    steps = to_int(params.get("trainer.max_steps"), -1)
    if steps is not None and steps > 0:
        label, args = f"max_steps={steps}", [f"budget.max_steps={steps}"]
    else:
        epochs = params.get("trainer.epochs", "?")
        label, args = f"epochs={epochs}", [f"budget.epochs={epochs}"]
    samples = params.get("data.max_train_samples", "None")
    if samples not in (None, "None", "null"):
        label += f", train={samples}"
        args.append(f"budget.max_train_samples={samples}")
    else:
        label += ", train=full"
    return label, args


def extras_of(record: dict) -> tuple[str, ...]:
    overrides = parse_overrides(str(record.get("tags", {}).get("lad.overrides", "")))
    return tuple(o for o in overrides if not o.lstrip("+~").startswith(MANAGED))


def variant_text(extras) -> str:
    """The overrides of ``extras`` that change what is compared (not :data:`NEUTRAL`), sorted, as text."""
    return " ".join(e for e in sorted(extras) if not e.startswith(NEUTRAL))


def experiment_of(record: dict) -> str:
    """The ``experiment=`` override a run was recorded with (a recipe such as ``reference_rte``), or ''."""
    return next((o.split("=", 1)[1] for o in extras_of(record) if o.lstrip("+").startswith("experiment=")), "")


def score_of(record: dict) -> float | None:
    metric = record.get("main_metric")
    return to_float(record.get("metrics", {}).get(f"best/{metric}")) if metric else None


def latest(records: list[dict]) -> dict:
    return max(records, key=lambda r: (str(r.get("start_time") or ""), str(r.get("run_id"))))


def sweep_label(record: dict) -> str:
    return f"{record['method']}/{record['student']}, {budget_of(record.get('params', {}))[0]}"


def published_from(run_path: str, published: str) -> bool:
    """Whether a teacher trained at ``run_path`` is a candidate for the published ``published`` folder:
    sweeps/teachers.py trains a learning-rate grid at ``<artifacts>/teacher_lr/<lr>/<rest>`` and
    publishes a copy of the best one at ``<artifacts>/<rest>``."""
    parts, target = Path(run_path).parts, Path(published).parts
    if "teacher_lr" not in parts:
        return False
    i = parts.index("teacher_lr")
    return parts[:i] + parts[i + 2:] == target


def pick_teacher(teachers: list[dict], paths: Counter) -> dict | None:
    """The teacher run the students were distilled from: the latest run at the teacher.path most of
    them used, or, for a teacher published from a learning-rate grid, the grid's best run (the one
    sweeps/teachers.py published); the latest teacher run when neither is known."""
    if not teachers:
        return None

    def path_of(t: dict) -> str:
        return str(t.get("params", {}).get("teacher.path", ""))

    def best_of_grid(published: str) -> dict | None:
        grid = [t for t in teachers if published_from(path_of(t), published)
                and t.get("metrics", {}).get(f"best/{t.get('main_metric')}") is not None]
        if not grid:  # the best of the grid, as published (ties: the first rate, i.e. the earliest run)
            return None
        return max(grid, key=lambda t: (t["metrics"][f"best/{t['main_metric']}"],
                                        [-ord(c) for c in str(t.get("start_time") or "")]))

    for path, _ in sorted(paths.items(), key=lambda kv: (-kv[1], kv[0])):
        same = [t for t in teachers if path_of(t) == path]
        if same:
            return latest(same)
        if path and (best := best_of_grid(path)) is not None:
            return best
    last = latest(teachers)
    parts = Path(path_of(last)).parts
    if "teacher_lr" in parts:  # the newest teacher came from a learning-rate grid: the one it published
        i = parts.index("teacher_lr")
        return best_of_grid(str(Path(*parts[:i], *parts[i + 2:]))) or last
    return last


def teacher_of(student: dict, teachers: list[dict]) -> dict | None:
    """The teacher run ``student`` was distilled from, told apart by time: every machine retrains the
    teachers into the same folder, so it is the latest run at the student's ``teacher.path`` that
    started before the student — or, when a learning-rate grid for that folder trained after it, the
    grid's best run (the copy sweeps/teachers.py published). None when no teacher run started before."""
    path = str(student.get("params", {}).get("teacher.path", ""))
    start = str(student.get("start_time") or "")
    before = [t for t in teachers if str(t.get("start_time") or "") < start
              and t.get("entry", "train_teacher") == "train_teacher"]
    direct = [t for t in before if str(t.get("params", {}).get("teacher.path", "")) == path]
    last = latest(direct)["start_time"] if direct else ""
    grid = [t for t in before if published_from(str(t.get("params", {}).get("teacher.path", "")), path)
            and score_of(t) is not None and str(t.get("start_time") or "") > last]
    if grid:  # the best of the grid, as published (ties: the first rate, i.e. the earliest run)
        return max(grid, key=lambda t: (score_of(t), [-ord(c) for c in str(t.get("start_time") or "")]))
    return latest(direct) if direct else None


def commit_of(record: dict) -> str:
    """The commit the run recorded (``mlflow.source.git.commit``), "" when it has none."""
    return str(record.get("tags", {}).get(COMMIT_TAG) or "")


def short(commit: str) -> str:
    return commit[:7] if commit else "unrecorded"


def commits_text(commits: dict[str, int]) -> str:
    """``commit abc1234`` or ``mixed commits: abc1234 (3 runs), def5678 (2 runs)``."""
    if len(commits) <= 1:
        return f"commit {short(next(iter(commits), ''))}"
    parts = sorted(commits.items(), key=lambda kv: (-kv[1], kv[0]))
    return "mixed commits: " + ", ".join(f"{short(c)} ({n} run{'s' if n != 1 else ''})" for c, n in parts)


def pct(score: float | None) -> str:
    return "–" if score is None else f"{100.0 * score:.2f}"


def mean_std(row: Row) -> str:
    return f"{100.0 * row.mean:.2f}" + ("" if row.std is None else f" ± {100.0 * row.std:.2f}")


def fmt_params(n: int | None) -> str:
    return "–" if not n else f"{n / 1e6:.1f}M"


def num(value) -> str:
    x = to_float(value)
    return "–" if x is None else f"{x:.4g}"
