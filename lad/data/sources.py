"""Where a split's rows come from, and reading them: layouts, file readers by extension, the Hub.

A task's ``layout`` picks a row of :data:`LAYOUTS`:

* ``glue``: the original GLUE TSV files under ``<data_dir>/<glue_name>`` (:mod:`lad.data.glue`);
* ``files``: every split is a file of its own (``task=custom``: ``data.train_file`` ...), read
  by the reader registered for its extension in :data:`FILE_READERS` (CSV, TSV, JSON Lines,
  Parquet);
* ``hub``: any task with ``hf_dataset`` set; splits come from ``datasets.load_dataset``.

File and hub rows go through one table check (:func:`frame_examples`): every user mistake is a
:class:`~lad.core.errors.DataError` with one line naming the file and the row. pandas (+ pyarrow for
Parquet) reads the files: both are already installed with MLflow, read all four formats, and
work offline; ``datasets`` is only imported for ``hf_dataset``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from lad.core.errors import ConfigError, DataError
from lad.data.glue import Example, check_data_file, read_tsv, split_path
from lad.data.tasks import SplitSpec, TaskSpec, check_label_names

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- file readers
def _decode(path: Path) -> str:
    """The file's text (UTF-8, BOM allowed); DataError naming the line of the first bad byte."""
    raw = path.read_bytes()
    if not raw.strip():
        raise DataError(f"{path}: empty file")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line}: not UTF-8 text (byte 0x{raw[err.start]:02x}); "
                        "save the file as UTF-8") from None


def _read_delimited(path: Path, sep: str):
    import pandas as pd

    text = _decode(path)
    try:  # every cell as text: labels keep their spelling ("01" stays "01"), empty cells stay ""
        return pd.read_csv(io.StringIO(text), sep=sep, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise DataError(f"{path}: {str(err).strip().splitlines()[0]}") from None


def read_csv(path: Path):
    """Comma-separated values with a header line (RFC 4180 quoting)."""
    return _read_delimited(path, ",")


def read_tab(path: Path):
    """Tab-separated values with a header line (quoted fields allowed)."""
    return _read_delimited(path, "\t")


def read_jsonl(path: Path):
    """JSON Lines: one object per line (blank lines skipped); DataError naming a bad line."""
    import pandas as pd

    records = []
    for lineno, line in enumerate(_decode(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as err:
            raise DataError(f"{path}: line {lineno}: invalid JSON ({err})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {lineno}: expected a JSON object, found {type(record).__name__}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def read_parquet(path: Path):
    """An Apache Parquet table (pyarrow)."""
    import pandas as pd

    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        return pd.read_parquet(path)
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable Parquet file ({str(err).strip().splitlines()[0]})") from None


#: file extension -> reader returning a pandas DataFrame (one column per field)
FILE_READERS: dict[str, Callable[[Path], Any]] = {
    ".csv": read_csv, ".tsv": read_tab, ".jsonl": read_jsonl, ".ndjson": read_jsonl,
    ".parquet": read_parquet, ".pq": read_parquet,
}


def file_reader(path: Path) -> Callable[[Path], Any]:
    """The reader for ``path``'s extension; ConfigError listing the supported ones."""
    reader = FILE_READERS.get(path.suffix.lower())
    if reader is None:
        raise ConfigError(f"{path}: unsupported file type '{path.suffix}' "
                          f"(use one of {', '.join(FILE_READERS)})")
    return reader


# ----------------------------------------------------------------------------- rows -> examples
def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _column(frame, col, key: str, where: str) -> str:
    """The frame column named (or, for an int, positioned) by ``col``; DataError if absent."""
    names = [str(c) for c in frame.columns]
    if isinstance(col, int):
        if col >= len(names):
            raise DataError(f"{where}: column {col} ({key}) out of range for {len(names)} columns")
        return frame.columns[col]
    if col not in names:
        raise DataError(f"{where}: missing column '{col}' (task.{key}); columns are: {', '.join(names)}")
    return frame.columns[names.index(col)]


def _text(value: Any, where: str, row: int, key: str, col: str) -> str:
    if _missing(value):
        raise DataError(f"{where}: row {row}: no value in column '{col}' (task.{key})")
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise DataError(f"{where}: row {row}: column '{col}' is not UTF-8 text") from None
    if not isinstance(value, str):  # a JSON object, list or number is not text: its repr would be trained on
        raise DataError(f"{where}: row {row}: column '{col}' (task.{key}) holds a {_kind_of(value)}, not text; "
                        "texts must be strings (quote them in JSON)")
    text = value
    if not text.strip():
        raise DataError(f"{where}: row {row}: empty text in column '{col}' (task.{key}); remove the row or fill it in")
    return text


def _kind_of(value: Any) -> str:
    return {dict: "JSON object", list: "JSON list", bool: "boolean"}.get(type(value), type(value).__name__)


def label_kind(value: Any) -> str:
    """``boolean``, ``number`` (numbers and numeric strings) or ``text``."""
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "boolean"
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        return "number"
    try:
        float(str(value))
        return "number"
    except ValueError:
        return "text"


def label_text(value: Any) -> str:
    """The class name of a raw label: ``1``, ``1.0`` and ``"1"`` are all ``"1"``; text is stripped."""
    if isinstance(value, str):
        return value.strip()
    if label_kind(value) == "number" and float(value).is_integer():
        return str(int(value))
    return str(value)


def raw_labels(frame, spec: SplitSpec, where: str) -> list[tuple[int, Any]]:
    """(row, value) of every label cell; DataError for an empty one."""
    col = _column(frame, spec.label, "label", where)
    out = []
    for row, value in enumerate(frame[col].tolist(), start=1):
        if _missing(value) or (isinstance(value, str) and not value.strip()):
            raise DataError(f"{where}: row {row}: missing label (column '{col}')")
        out.append((row, value))
    return out


def infer_labels(values: Sequence[tuple[int, Any]], where: str) -> tuple[str, ...]:
    """Sorted class names of a training split (numerically when all are numbers).

    DataError when the column mixes kinds (numbers with text, say) or holds one class only.
    """
    first_row, first = values[0]
    kind = label_kind(first)
    for row, value in values:
        if label_kind(value) != kind:
            raise DataError(
                f"{where}: row {row}: label {value!r} is {label_kind(value)} but row {first_row}'s "
                f"label {first!r} is {kind}: mixed label types in one column")
    names = {label_text(v) for _, v in values}
    if len(names) < 2:
        raise DataError(f"{where}: only one label ({', '.join(names)}) in the training data: a classifier "
                        "needs two or more (or set task.is_regression=true)")
    key = (lambda s: (float(s), s)) if kind == "number" else str
    return tuple(sorted(names, key=key))


def _label(task: TaskSpec, value: Any, where: str, row: int, col: str) -> int | float:
    if task.is_regression:
        try:
            score = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: row {row}: non-numeric score {value!r} in column '{col}'") from None
        if not math.isfinite(score):
            raise DataError(f"{where}: row {row}: non-finite score {value!r}")
        return score
    assert task.labels is not None
    name = label_text(value)
    if name not in task.labels:
        raise DataError(f"{where}: row {row}: label '{name}' is not in the label set "
                        f"[{', '.join(task.labels)}] (taken from the training data or task.labels)")
    return task.labels.index(name)


def frame_examples(task: TaskSpec, spec: SplitSpec, frame, where: str,
                   max_samples: int | None = None) -> list[Example]:
    """Examples from a table; DataError (file and row) for a missing column, value or bad label."""
    if len(frame) == 0:
        raise DataError(f"{where}: no data rows")
    cols = {key: _column(frame, getattr(spec, key), key, where)
            for key in ("text_a", "text_b", "label") if getattr(spec, key) is not None}
    index = None
    if spec.index is not None and (isinstance(spec.index, int) or spec.index in map(str, frame.columns)):
        index = _column(frame, spec.index, "index", where)
    if max_samples is not None:
        frame = frame.head(max_samples)
    if "label" in cols:
        raw_labels(frame, spec, where)  # empty label cells first, with their row
    columns = {key: frame[col].tolist() for key, col in cols.items()}
    ids = frame[index].tolist() if index is not None else None
    out = []
    for i in range(len(frame)):
        row = i + 1
        text_b = _text(columns["text_b"][i], where, row, "text_b", cols["text_b"]) if "text_b" in cols else None
        label = _label(task, columns["label"][i], where, row, cols["label"]) if "label" in cols else None
        guid = str(ids[i]) if ids is not None else f"{spec.name}-{i}"
        out.append(Example(guid, _text(columns["text_a"][i], where, row, "text_a", cols["text_a"]),
                           text_b, label))
    return out


# ----------------------------------------------------------------------------- the Hub
@dataclass(frozen=True)
class HubSplit:
    """A split of a Hugging Face Hub dataset: ``name`` or ``name:config`` and the split name."""

    dataset: str
    split: str

    def __str__(self) -> str:
        return f"hf_dataset {self.dataset} [{self.split}]"


def load_hub_frame(source: HubSplit):
    """The split as a DataFrame (class-label ids mapped to their names); one DataError line on failure."""
    name, _, config = source.dataset.partition(":")
    try:
        import datasets
    except ImportError:
        raise DataError(f"data.hf_dataset={source.dataset} needs the 'datasets' package: "
                        "pip install 'lad-distil[hub]' (or pass data.train_file/data.dev_file)") from None
    datasets.logging.set_verbosity_error()
    hub_log = logging.getLogger("huggingface_hub")  # its retry warnings would bury the one error line
    level = hub_log.level
    hub_log.setLevel(logging.ERROR)
    try:
        ds = datasets.load_dataset(name, config or None, split=source.split)
    except Exception as err:  # noqa: BLE001 - offline, unknown name, unknown split: all one line
        offline = os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "false", "")
        hint = (" (LAD runs offline unless HF_HUB_OFFLINE=0 is set; with no network, download the data "
                "and pass data.train_file/data.dev_file)") if offline else ""
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"data.hf_dataset={source.dataset}: cannot load split '{source.split}' "
                        f"from the Hugging Face Hub: {reason}{hint}") from None
    finally:
        hub_log.setLevel(level)
    frame = ds.to_pandas()
    for col, feature in ds.features.items():
        names = getattr(feature, "names", None)
        if names:
            frame[col] = [names[i] if isinstance(i, int) and 0 <= i < len(names) else None
                          for i in frame[col].tolist()]
    return frame


# ----------------------------------------------------------------------------- layouts
def _file_path(task: TaskSpec, data_dir, split: str) -> Path:
    spec = task.split(split)
    path = Path(os.path.expandvars(os.path.expanduser(str(spec.file))))
    file_reader(path)
    return check_data_file(path, task, split)


def _read_file(task: TaskSpec, spec: SplitSpec, path: Path, max_samples: int | None) -> list[Example]:
    return frame_examples(task, spec, file_reader(path)(path), str(path), max_samples)


def _file_labels(task: TaskSpec, spec: SplitSpec, path: Path) -> list[tuple[int, Any]]:
    frame = file_reader(path)(path)
    if len(frame) == 0:
        raise DataError(f"{path}: no data rows")
    return raw_labels(frame, spec, str(path))


def _hub_split(task: TaskSpec, data_dir, split: str) -> HubSplit:
    return HubSplit(str(task.hf_dataset), task.split(split).hf_split)


def _read_hub(task: TaskSpec, spec: SplitSpec, source: HubSplit, max_samples: int | None) -> list[Example]:
    return frame_examples(task, spec, load_hub_frame(source), str(source), max_samples)


def _hub_labels(task: TaskSpec, spec: SplitSpec, source: HubSplit) -> list[tuple[int, Any]]:
    return raw_labels(load_hub_frame(source), spec, str(source))


@dataclass(frozen=True)
class Layout:
    """How a layout finds a split (``locate``), reads it, and lists its raw labels (None: not supported)."""

    locate: Callable[[TaskSpec, Any, str], Any]
    read: Callable[[TaskSpec, SplitSpec, Any, int | None], list[Example]]
    labels: Callable[[TaskSpec, SplitSpec, Any], list[tuple[int, Any]]] | None = None


LAYOUTS: dict[str, Layout] = {
    "glue": Layout(split_path, read_tsv),
    "files": Layout(_file_path, _read_file, _file_labels),
    "hub": Layout(_hub_split, _read_hub, _hub_labels),
}


def layout_of(task: TaskSpec) -> Layout:
    return LAYOUTS["hub" if task.hf_dataset else task.layout]


def split_source(task: TaskSpec, data_dir: str | os.PathLike | None, split: str) -> Path | HubSplit:
    """Where a split's rows are: a file path, or a :class:`HubSplit`; DataError if missing."""
    return layout_of(task).locate(task, data_dir, split)


def read_split(task: TaskSpec, data_dir: str | os.PathLike | None, split: str,
               max_samples: int | None = None) -> list[Example]:
    """The first ``max_samples`` (all if None) examples of a split, whatever the layout."""
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ConfigError(f"max_samples must be a positive integer or null, got {max_samples!r}")
    if task.labels is None and not task.is_regression:
        task = with_labels(task, data_dir)
    source = split_source(task, data_dir, split)
    return layout_of(task).read(task, task.split(split), source, max_samples)


def with_labels(task: TaskSpec, data_dir: str | os.PathLike | None) -> TaskSpec:
    """``task`` with its label set: as configured, or inferred (sorted) from the training split."""
    if task.is_regression or task.labels is not None:
        return task
    layout = layout_of(task)
    if layout.labels is None:  # pragma: no cover - TaskSpec requires labels for GLUE folders
        raise ConfigError(f"task '{task.name}': set task.labels (this layout cannot infer them)")
    spec = task.split("train")
    source = split_source(task, data_dir, "train")
    labels = infer_labels(layout.labels(task, spec, source), str(source))
    log.info("task %s: labels inferred from %s: %s", task.name, source, ", ".join(labels))
    check_label_names(labels, task.label_names, f"task config '{task.name}'")
    return replace(task, labels=labels)
