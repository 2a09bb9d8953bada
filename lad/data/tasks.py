"""Task specifications: one frozen :class:`TaskSpec` per task config (``conf/task/*.yaml``).

A task's files follow a *layout* (:data:`lad.data.sources.LAYOUTS`): ``glue`` (TSV files under
``<data_dir>/<glue_name>``) or ``files`` (each split a CSV/TSV/JSONL/Parquet path of its own,
``task=custom``), or come from a Hugging Face Hub dataset (``hf_dataset``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lad.core.config import as_dict
from lad.core.errors import ConfigError

#: metric family -> keys reported by :func:`lad.data.metrics.compute_metrics`
METRIC_KEYS: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy",),
    "f1_acc": ("f1", "accuracy", "f1_acc_mean"),
    "matthews": ("mcc",),
    "pearson_spearman": ("pearson", "spearman", "corr_mean"),
}
#: short metric names (``task.metric=f1``) -> (family, default main metric)
METRIC_ALIASES: dict[str, tuple[str, str]] = {
    "f1": ("f1_acc", "f1"), "mcc": ("matthews", "mcc"),
    "pearson": ("pearson_spearman", "pearson"), "spearman": ("pearson_spearman", "spearman"),
    **{family: (family, keys[0]) for family, keys in METRIC_KEYS.items()},
}
LAYOUT_NAMES: tuple[str, ...] = ("glue", "files")

REQUIRED_KEYS: tuple[str, ...] = (
    "name", "glue_name", "text_a", "text_b", "label", "index", "header", "labels",
    "is_regression", "metric", "main_metric", "max_seq_length", "splits", "submission_name",
)
OPTIONAL_KEYS: tuple[str, ...] = ("num_columns", "skip_malformed", "label_range", "layout", "hf_dataset",
                                  "file_hint", "label_names")
# keys a split entry may override (besides ``file``)
SPLIT_KEYS: tuple[str, ...] = (
    "file", "header", "text_a", "text_b", "label", "index", "labeled", "num_columns",
    "metric_suffix", "submission_name", "hf_split",
)

Column = str | int


@dataclass(frozen=True)
class SplitSpec:
    """Where one split lives and how its columns are laid out."""

    name: str
    file: str | None            # glue: relative to <data_dir>/<glue_name>; files: a path; None: hub only
    header: bool                # first line names the columns
    text_a: Column              # column name (header files) or 0-based position
    text_b: Column | None
    label: Column | None
    index: Column | None        # id column; None -> guids are "<split>-<row>"
    labeled: bool               # test splits carry no labels
    num_columns: int | None     # expected column count (header-less files; header files use the header)
    metric_suffix: str          # appended to metric keys for this eval split ("_m")
    submission_name: str        # GLUE submission file stem for this split
    hf_split: str = ""          # split name in a hub dataset (defaults to the split's own name)


@dataclass(frozen=True)
class TaskSpec:
    """A task: columns, label set (None: inferred from the training data), metric and splits.

    ``labels`` are the values of the label column (read from the files, written to GLUE
    submissions); ``label_names`` (optional, same order) are what a trained model calls the classes
    (its ``id2label``, the MLflow model's predictions), e.g. ``negative``/``positive`` for SST-2's 0/1.
    """

    name: str
    glue_name: str | None
    text_a: Column
    text_b: Column | None
    label: Column | None
    index: Column | None
    header: bool
    labels: tuple[str, ...] | None
    is_regression: bool
    metric: str
    main_metric: str
    max_seq_length: int
    splits: tuple[SplitSpec, ...]
    submission_name: str
    num_columns: int | None = None
    skip_malformed: bool = False
    label_range: tuple[float, float] | None = None
    layout: str = "glue"
    hf_dataset: str | None = None
    label_names: tuple[str, ...] | None = None

    @property
    def class_names(self) -> tuple[str, ...] | None:
        """What a trained model calls each class, in id order: ``label_names``, else ``labels``."""
        return self.label_names or self.labels

    @property
    def num_labels(self) -> int:
        """Output size of the classifier head (1 for regression)."""
        return 1 if self.is_regression else len(self.labels or ())

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks."""
        return self.text_b is not None

    @property
    def split_names(self) -> list[str]:
        """All split names in config order."""
        return [s.name for s in self.splits]

    def split(self, name: str) -> SplitSpec:
        """The :class:`SplitSpec` called ``name``; ConfigError if the task has no such split."""
        for spec in self.splits:
            if spec.name == name:
                return spec
        raise ConfigError(
            f"task '{self.name}' has no split '{name}' (available: {', '.join(self.split_names)})"
        )

    def label_name(self, class_id: int) -> str:
        """Label string of a class id, as the data files write it (GLUE submissions)."""
        assert self.labels is not None
        return self.labels[int(class_id)]

    def metric_keys(self, split: str | None = None) -> tuple[str, ...]:
        """Metric keys reported for an eval split (suffixed, e.g. ``accuracy_m``)."""
        suffix = self.split(split).metric_suffix if split is not None else ""
        return tuple(k + suffix for k in METRIC_KEYS[self.metric])

    @classmethod
    def from_config(cls, cfg: Any) -> "TaskSpec":
        """Build and validate a TaskSpec from a task config (DictConfig or mapping)."""
        data = as_dict(cfg, "task config")
        missing = [k for k in REQUIRED_KEYS if k not in data]
        where = f"task config '{data.get('name', '?')}'"
        if missing:
            raise ConfigError(f"{where} is missing key(s): {', '.join(missing)}")
        unknown = sorted(set(data) - set(REQUIRED_KEYS) - set(OPTIONAL_KEYS))
        if unknown:
            raise ConfigError(f"{where} has unknown key(s): {', '.join(unknown)}")

        is_regression = _as_bool(data["is_regression"], where, "is_regression")
        layout = str(data.get("layout") or "glue")
        if layout not in LAYOUT_NAMES:
            raise ConfigError(f"{where}: unknown layout '{layout}' (choose from {', '.join(LAYOUT_NAMES)})")
        hf_dataset = data.get("hf_dataset") or None
        labels = data["labels"]
        if is_regression:
            if labels is not None:
                raise ConfigError(f"{where}: labels must be null for a regression task")
        elif labels is None and (layout != "glue" or hf_dataset):
            pass  # inferred from the training split (lad.data.sources.with_labels)
        else:
            labels = check_labels(labels, where)
        label_names = data.get("label_names")
        if label_names is not None:
            if is_regression:
                raise ConfigError(f"{where}: label_names must be null for a regression task")
            label_names = check_labels(label_names, where, "label_names")
            check_label_names(labels, label_names, where)
        metric = data["metric"] if data["metric"] is not None else (
            "pearson" if is_regression else "accuracy")
        if metric not in METRIC_ALIASES:
            raise ConfigError(f"{where}: unknown metric '{metric}' (choose from {', '.join(METRIC_ALIASES)})")
        metric, default_main = METRIC_ALIASES[metric]
        if is_regression != (metric == "pearson_spearman"):
            raise ConfigError(f"{where}: metric '{data['metric']}' does not fit is_regression={is_regression}")
        main_metric = data["main_metric"] if data["main_metric"] is not None else default_main
        max_len = data["max_seq_length"]
        if not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 4:
            raise ConfigError(f"{where}: max_seq_length must be an integer >= 4, got {max_len!r}")
        label_range = data.get("label_range")
        if label_range is not None:
            if len(label_range) != 2 or float(label_range[0]) > float(label_range[1]):
                raise ConfigError(f"{where}: label_range must be [low, high], got {label_range!r}")
            label_range = (float(label_range[0]), float(label_range[1]))

        base = {
            "header": _as_bool(data["header"], where, "header"),
            "text_a": data["text_a"], "text_b": data["text_b"], "label": data["label"],
            "index": data["index"], "num_columns": data.get("num_columns"),
            "submission_name": str(data["submission_name"]),
        }
        if base["text_a"] is None:
            raise ConfigError(f"{where}: text_a must name a column")
        if layout == "glue" and not hf_dataset and not data["glue_name"]:
            raise ConfigError(f"{where}: glue_name must name the task's folder under data.data_dir")
        hint = str(data.get("file_hint") or "")
        splits = _parse_splits(data["splits"], base, where, need_files=not hf_dataset, hint=hint)
        for split in splits:
            check_column_roles(split, where)

        spec = cls(
            name=str(data["name"]), glue_name=None if data["glue_name"] is None else str(data["glue_name"]),
            text_a=data["text_a"],
            text_b=data["text_b"], label=data["label"], index=data["index"],
            header=base["header"], labels=labels, is_regression=is_regression, metric=metric,
            main_metric=str(main_metric), max_seq_length=max_len, splits=splits,
            submission_name=base["submission_name"], num_columns=data.get("num_columns"),
            skip_malformed=_as_bool(data.get("skip_malformed", False), where, "skip_malformed"),
            label_range=label_range, layout=layout, hf_dataset=None if hf_dataset is None else str(hf_dataset),
            label_names=label_names,
        )
        allowed = {k for s in (eval_splits(spec) or [None]) for k in spec.metric_keys(s)}
        if spec.main_metric not in allowed:
            raise ConfigError(
                f"{where}: main_metric '{spec.main_metric}' is not reported by metric '{metric}' "
                f"(one of: {', '.join(sorted(allowed))})"
            )
        return spec


def check_column_roles(split: "SplitSpec", where: str) -> None:
    """text_a, text_b and label name three different columns (the label as text would train on it)."""
    keys = ("text_a", "text_b", "label") if split.labeled else ("text_a", "text_b")
    roles = [(key, getattr(split, key)) for key in keys if getattr(split, key) is not None]
    for i, (key, col) in enumerate(roles):
        for other, other_col in roles[i + 1:]:
            if str(col) == str(other_col):
                raise ConfigError(f"{where}: task.{key} and task.{other} both name column {col!r} (split "
                                  f"'{split.name}'): each role needs its own column; set task.{key} to the "
                                  "column that holds the text")


def check_labels(labels: Any, where: str, key: str = "labels") -> tuple[str, ...]:
    """A classification label set as a tuple of strings; ConfigError if it is too small or repeats."""
    if not isinstance(labels, (list, tuple)) or len(labels) < 2:
        raise ConfigError(f"{where}: {key} must list at least two classes")
    labels = tuple(str(x) for x in labels)
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{where}: {key} contain duplicates: {list(labels)}")
    return labels


def check_label_names(labels: tuple[str, ...] | None, names: tuple[str, ...] | None, where: str) -> None:
    """ConfigError when ``label_names`` do not name each of ``labels`` (once they are known)."""
    if labels is not None and names is not None and len(names) != len(labels):
        raise ConfigError(f"{where}: label_names [{', '.join(names)}] must name each of the {len(labels)} labels "
                          f"[{', '.join(labels)}], in that order")


def eval_splits(task: TaskSpec) -> list[str]:
    """Labelled evaluation splits: ``["dev"]`` or ``["dev_matched", "dev_mismatched"]`` (MNLI)."""
    return [s.name for s in task.splits if s.name.startswith("dev")]


def test_splits(task: TaskSpec) -> list[str]:
    """Unlabelled test splits (GLUE submission inputs)."""
    return [s.name for s in task.splits if s.name.startswith("test")]


def has_split(task: TaskSpec, split: str) -> bool:
    """True if the task config defines ``split``."""
    return split in task.split_names


def _as_bool(value: Any, where: str, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _check_column(value: Any, header: bool, where: str, key: str, required: bool) -> None:
    if value is None:
        if required:
            raise ConfigError(f"{where}: {key} must name a column")
        return
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{where}: {key} must be a column name or position, got {value!r}")
    if not header and not isinstance(value, int):
        raise ConfigError(f"{where}: {key} must be a column position (int) in a header-less file")
    if isinstance(value, int) and value < 0:
        raise ConfigError(f"{where}: {key} position must be >= 0, got {value}")


def _parse_splits(raw: Any, base: dict[str, Any], where: str, need_files: bool = True,
                  hint: str = "") -> tuple[SplitSpec, ...]:
    """Split entries; a test split without a file is left out, a train/dev one is an error."""
    if not isinstance(raw, Mapping) or not raw:
        raise ConfigError(f"{where}: splits must map split names to file names")
    out = []
    for name, entry in raw.items():
        name = str(name)
        if not (name == "train" or name.startswith("dev") or name.startswith("test")):
            raise ConfigError(f"{where}: split '{name}' must be 'train' or start with 'dev'/'test'")
        entry = {"file": entry} if isinstance(entry, str) or entry is None else entry
        if not isinstance(entry, Mapping) or not isinstance(entry.get("file"), (str, type(None))):
            raise ConfigError(f"{where}: split '{name}' needs a file name")
        if need_files and not entry.get("file"):
            if name.startswith("test"):
                continue  # optional: no test file, no test predictions
            raise ConfigError(f"{where}: split '{name}' has no file" + (
                f": {hint.format(split=name)}" if hint else ""))
        bad = sorted(set(entry) - set(SPLIT_KEYS))
        if bad:
            raise ConfigError(f"{where}: split '{name}' has unknown key(s): {', '.join(bad)}")
        merged = {**base, "labeled": not name.startswith("test"), "metric_suffix": "", **entry}
        sw = f"{where}, split '{name}'"
        header = _as_bool(merged["header"], sw, "header")
        labeled = _as_bool(merged["labeled"], sw, "labeled")
        _check_column(merged["text_a"], header, sw, "text_a", required=True)
        _check_column(merged["text_b"], header, sw, "text_b", required=False)
        _check_column(merged["label"], header, sw, "label", required=labeled)
        _check_column(merged["index"], header, sw, "index", required=False)
        if (base["text_b"] is None) != (merged["text_b"] is None):
            raise ConfigError(f"{sw}: text_b must be set in every split of a pair task (and only there)")
        ncols = merged["num_columns"]
        if ncols is not None and (not isinstance(ncols, int) or ncols < 1):
            raise ConfigError(f"{sw}: num_columns must be a positive integer")
        out.append(SplitSpec(
            name=name, file=merged["file"], header=header, text_a=merged["text_a"],
            text_b=merged["text_b"], label=merged["label"] if labeled else None,
            index=merged["index"], labeled=labeled, num_columns=ncols,
            metric_suffix=str(merged["metric_suffix"]),
            submission_name=str(merged["submission_name"]),
            hf_split=str(merged.get("hf_split") or name),
        ))
    return tuple(out)


test_splits.__test__ = False  # a public helper, not a pytest test (safe to import into test modules)
