"""Readers for the GLUE TSV files (original download layout) and GLUE submission writer."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lad.core.errors import ConfigError, DataError, MissingDataFile
from lad.core.fileio import write_text
from lad.data.tasks import SplitSpec, TaskSpec

log = logging.getLogger(__name__)

_PACKAGE_DIR = Path(__file__).resolve().parent.parent  # .../lad
REPO_ROOT = _PACKAGE_DIR.parent


@dataclass
class Example:
    """One row of a GLUE split. ``label`` is a class id, a float score, or None (test)."""

    guid: str
    text_a: str
    text_b: str | None
    label: int | float | None


def default_data_dirs() -> tuple[Path, Path]:
    """Candidates for ``data_dir: auto``: ``<repo>/../shared/glue`` then ``<repo>/data/glue``."""
    return REPO_ROOT.parent / "shared" / "glue", REPO_ROOT / "data" / "glue"


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """Resolve ``data_dir`` (None/"auto" picks the shared copy, else ``data/glue``); DataError if missing."""
    if data_dir is not None and not str(data_dir).strip():  # an unset variable, not a choice
        raise DataError("data.data_dir is empty: set it to the folder holding the GLUE task folders, or to auto")
    if data_dir is None or str(data_dir).strip().lower() == "auto":
        shared, local = default_data_dirs()
        if shared.is_dir():
            return shared
        if local.is_dir():
            return local
        raise DataError(f"GLUE data directory not found: {local} (nor {shared}); set data.data_dir")
    path = Path(os.path.expandvars(os.path.expanduser(str(data_dir)))).absolute()
    if not path.is_dir():
        raise DataError(f"GLUE data directory not found: {path}")
    return path


def split_path(task: TaskSpec, data_dir: str | os.PathLike | None, split: str) -> Path:
    """Path of a split's TSV file; DataError if the task folder or the file is missing."""
    spec = task.split(split)
    task_dir = resolve_data_dir(data_dir) / task.glue_name
    if not task_dir.is_dir():
        raise DataError(f"{task_dir}: GLUE task folder '{task.glue_name}' not found")
    return check_data_file(task_dir / spec.file, task, split)


def check_data_file(path: Path, task: TaskSpec, split: str) -> Path:
    """``path`` if it is a regular file; DataError saying what it is otherwise (missing, a folder, a FIFO)."""
    if path.is_file():
        return path
    if not path.exists():
        raise MissingDataFile(f"{path}: file not found (task '{task.name}', split '{split}')")
    what = (
            "is a directory, not a data file" if path.is_dir() else
            "is not a regular file (a FIFO, socket or device); copy the data into a file")
    raise DataError(f"{path}: {what} (task '{task.name}', split '{split}')")


def read_split(
    task: TaskSpec,
    data_dir: str | os.PathLike | None,
    split: str,
    max_samples: int | None = None,
) -> list[Example]:
    """Read the first ``max_samples`` (all if None) examples of a split; DataError on bad input."""
    if max_samples is not None and (not isinstance(max_samples, int) or max_samples < 1):
        raise ConfigError(f"max_samples must be a positive integer or null, got {max_samples!r}")
    path = split_path(task, data_dir, split)
    return read_tsv(task, task.split(split), path, max_samples)


def read_tsv(task: TaskSpec, spec: SplitSpec, path: Path, max_samples: int | None = None) -> list[Example]:
    """Parse one GLUE TSV file laid out as ``spec`` (tab split, no CSV quoting)."""
    examples: list[Example] = []
    skipped: list[tuple[int, str]] = []
    with open(path, "rb") as fh:
        lines = (_strip_eol(_decode(raw, path, n)) for n, raw in enumerate(_raw_lines(fh), start=1))
        first = next(lines, None)
        if first is None or not first.strip():
            raise DataError(f"{path}:1: empty file")
        if spec.header:
            header = first.split("\t")
            width = len(header)
            start = 2
            rows = lines
        else:
            header = None
            width = spec.num_columns or len(first.split("\t"))
            start = 1
            rows = _chain_first(first, lines)
        cols = _column_positions(task, spec, header, width, path)
        lineno = start - 1
        blank = 0
        for lineno, line in enumerate(rows, start=start):
            if max_samples is not None and len(examples) >= max_samples:
                break
            if not line.strip():  # blank lines (e.g. at the end of the file) are not rows
                blank += 1
                continue
            try:
                examples.append(_parse_row(task, spec, cols, width, line, len(examples), path, lineno))
            except DataError as err:
                if not task.skip_malformed:
                    raise
                skipped.append((lineno, str(err)))
    if not examples:
        raise DataError(f"{path}:{max(lineno, start)}: no data rows")
    if skipped:
        log.warning("%s: skipped %d malformed row(s) (first: %s)", path, len(skipped), skipped[0][1])
    if blank:
        log.info("%s: ignored %d blank line(s)", path, blank)
    return examples


def _raw_lines(fh):
    """The file's lines (bytes); a file whose only line ends are CR (classic Mac) is split at CR."""
    head = fh.read(1 << 16)
    fh.seek(0)
    if b"\r" in head and b"\n" not in head:
        data = fh.read()
        if b"\n" not in data:
            return iter(line + b"\r" for line in data.rstrip(b"\r").split(b"\r"))
        fh.seek(0)
    return iter(fh)


def _decode(raw: bytes, path: Path, lineno: int) -> str:
    """One line as UTF-8 (a BOM on the first line is dropped); DataError naming file, line and byte."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); "
            "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    if "\x00" in text:
        raise DataError(f"{path}:{lineno}: contains a NUL byte (a binary or UTF-16 file?); save it as UTF-8 text")
    return text.removeprefix("\ufeff") if lineno == 1 else text


def _strip_eol(line: str) -> str:
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith(("\n", "\r")):
        return line[:-1]
    return line


def _chain_first(first: str, rest):
    yield first
    yield from rest


def _column_positions(
    task: TaskSpec, spec: SplitSpec, header: list[str] | None, width: int, path: Path
) -> dict[str, int | None]:
    """Map text_a/text_b/label/index to 0-based positions, checking they exist."""
    out: dict[str, int | None] = {}
    for key in ("text_a", "text_b", "label", "index"):
        col = getattr(spec, key)
        if col is None:
            out[key] = None
        elif isinstance(col, int):
            if col >= width:
                raise DataError(f"{path}:1: column {col} ({key}) out of range for {width} columns")
            out[key] = col
        else:
            assert header is not None
            if col in header:
                out[key] = header.index(col)
            elif key == "index":
                out[key] = None  # e.g. SST-2/MRPC train have no id column: guids are synthesised
            else:
                raise DataError(
                    f"{path}:1: missing column '{col}' ({key}); header has: {', '.join(header)}"
                )
    return out


def _parse_row(
    task: TaskSpec, spec: SplitSpec, cols: dict[str, int | None], width: int,
    line: str, row: int, path: Path, lineno: int,
) -> Example:
    fields = line.split("\t")
    if len(fields) != width:
        raise DataError(f"{path}:{lineno}: expected {width} tab-separated columns, found {len(fields)}")
    text_b = fields[cols["text_b"]] if cols["text_b"] is not None else None
    for key, text in (("text_a", fields[cols["text_a"]]), ("text_b", text_b)):
        if text is not None and not text.strip():
            raise DataError(f"{path}:{lineno}: empty text in column {cols[key]} (task.{key}); "
                            "remove the row or fill it in")
    guid = fields[cols["index"]].strip() if cols["index"] is not None else f"{spec.name}-{row}"
    label = None
    if cols["label"] is not None:
        label = _parse_label(task, fields[cols["label"]].strip(), path, lineno)
    return Example(guid=guid, text_a=fields[cols["text_a"]], text_b=text_b, label=label)


def _parse_label(task: TaskSpec, raw: str, path: Path, lineno: int) -> int | float:
    if task.is_regression:
        try:
            value = float(raw)
        except ValueError:
            raise DataError(f"{path}:{lineno}: non-numeric score '{raw}'") from None
        if not math.isfinite(value):
            raise DataError(f"{path}:{lineno}: non-finite score '{raw}'")
        if task.label_range is not None and not task.label_range[0] <= value <= task.label_range[1]:
            low, high = task.label_range
            raise DataError(f"{path}:{lineno}: score {value} outside [{low:g}, {high:g}]")
        return value
    assert task.labels is not None
    if raw not in task.labels:
        raise DataError(f"{path}:{lineno}: label '{raw}' not in label set [{', '.join(task.labels)}]")
    return task.labels.index(raw)


def submission_path(task: TaskSpec, split: str, out_dir: str | os.PathLike) -> Path:
    """``<out_dir>/<submission name>.tsv`` for a test split (e.g. ``MNLI-m.tsv``)."""
    return Path(out_dir) / f"{task.split(split).submission_name}.tsv"


def write_submission(
    task: TaskSpec,
    split: str,
    guids: Sequence[str | int],
    preds: Sequence[float] | np.ndarray,
    path: str | os.PathLike,
) -> Path:
    """Write ``index<TAB>prediction`` rows (label strings, or floats for regression) atomically."""
    task.split(split)  # validates the split name
    preds = np.asarray(preds)
    if preds.ndim == 2 and not task.is_regression:
        preds = preds.argmax(axis=-1)
    preds = preds.reshape(-1) if task.is_regression else preds
    if preds.ndim != 1 or len(preds) != len(guids):
        raise ValueError(f"got {len(guids)} guids but predictions of shape {preds.shape}")
    lines = ["index\tprediction"]
    for guid, pred in zip(guids, preds):
        if task.is_regression:
            lines.append(f"{guid}\t{float(pred):.6g}")
        else:
            lines.append(f"{guid}\t{task.label_name(int(pred))}")
    return write_text(path, "\n".join(lines) + "\n")


