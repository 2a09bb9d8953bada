"""Tokenisation of task examples with the teacher's tokenizer, with an on-disk ``.npz`` cache."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lad.core.errors import ConfigError
from lad.core.fileio import atomic_file
from lad.data.glue import Example
from lad.data.sources import read_split, split_source
from lad.data.tasks import TaskSpec

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: records the number of truncated examples
IGNORE_INDEX = -100  # label of unlabelled classification rows (torch CE ignore_index)
_CHUNK = 2048        # examples per tokenizer call


@dataclass
class Features:
    """Tokenised split: one unpadded id array per example, labels and guids."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray           # int64 (-100 unlabelled) or float32 (NaN unlabelled)
    guids: list[str]
    pad_id: int = 0
    truncated: int = 0           # examples cut to max_len tokens
    _lengths: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        """Token count of every example (int64)."""
        if self._lengths is None or len(self._lengths) != len(self.input_ids):
            self._lengths = np.fromiter((len(x) for x in self.input_ids), dtype=np.int64,
                                        count=len(self.input_ids))
        return self._lengths

    @property
    def is_regression(self) -> bool:
        """True when labels are float scores."""
        return self.labels.dtype.kind == "f"

    @property
    def has_labels(self) -> bool:
        """True when every example carries a label."""
        if self.is_regression:
            return bool(np.all(np.isfinite(self.labels)))
        return bool(np.all(self.labels != IGNORE_INDEX))


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Stable hash of what determines token ids: class, vocab/normaliser state, lower-casing."""
    parts: dict[str, Any] = {"class": type(tokenizer).__name__}
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and hasattr(backend, "to_str"):
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # mutated by calls with truncation=...; not part of identity
        state.pop("padding", None)
        parts["backend"] = state
    else:
        parts["vocab"] = sorted(tokenizer.get_vocab().items())
    parts["lower"] = getattr(tokenizer, "do_lower_case", None)
    parts["special"] = sorted(str(t) for t in getattr(tokenizer, "all_special_tokens", []))
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:20]


def _encode(tokenizer: Any, texts_a: list[str], texts_b: list[str] | None, max_len: int):
    """One tokenizer call: (input_ids, token_type_ids) lists, truncated longest-first, unpadded."""
    enc = tokenizer(
        texts_a, texts_b, truncation="longest_first", max_length=max_len, padding=False,
        return_token_type_ids=True, return_attention_mask=False,
    )
    return enc["input_ids"], enc["token_type_ids"]


def encode_examples(
    examples: Sequence[Example], tokenizer: Any, max_len: int, is_regression: bool
) -> Features:
    """Tokenise examples (pairs when ``text_b`` is set) without padding."""
    if not isinstance(max_len, int) or max_len < 4:
        raise ConfigError(f"max_len must be an integer >= 4, got {max_len!r}")
    limit = getattr(tokenizer, "model_max_length", None)
    if isinstance(limit, int) and max_len > limit:
        log.warning("max_len %d exceeds the tokenizer's model_max_length %d", max_len, limit)
    pair = bool(examples) and examples[0].text_b is not None
    ids: list[np.ndarray] = []
    types: list[np.ndarray] = []
    for start in range(0, len(examples), _CHUNK):
        chunk = examples[start:start + _CHUNK]
        texts_b = [e.text_b or "" for e in chunk] if pair else None
        batch_ids, batch_types = _encode(tokenizer, [e.text_a for e in chunk], texts_b, max_len)
        ids.extend(np.asarray(x, dtype=np.int32) for x in batch_ids)
        types.extend(np.asarray(x, dtype=np.int8) for x in batch_types)
    truncated = _count_truncated(tokenizer, examples, ids, max_len, pair)
    if is_regression:
        labels = np.array([np.nan if e.label is None else e.label for e in examples], dtype=np.float32)
    else:
        labels = np.array([IGNORE_INDEX if e.label is None else e.label for e in examples], dtype=np.int64)
    pad_id = getattr(tokenizer, "pad_token_id", None)
    return Features(ids, types, labels, [e.guid for e in examples], pad_id=int(pad_id or 0),
                    truncated=truncated)


def _count_truncated(tokenizer: Any, examples: Sequence[Example], ids: list[np.ndarray], max_len: int,
                     pair: bool) -> int:
    """How many examples lost tokens to ``max_len`` (only those that hit the cap are re-encoded)."""
    full = [i for i, x in enumerate(ids) if len(x) >= max_len]
    if not full:
        return 0
    texts_a = [examples[i].text_a for i in full]
    texts_b = [examples[i].text_b or "" for i in full] if pair else None
    enc = tokenizer(texts_a, texts_b, truncation=False, padding=False, return_attention_mask=False,
                    return_token_type_ids=False, verbose=False)
    return sum(len(x) > max_len for x in enc["input_ids"])


def cache_key(
    task: TaskSpec, split: str, source: Path, fingerprint: str, max_len: int, max_samples: int | None
) -> str:
    """Cache identity as a JSON string (task/split layout, tokenizer, lengths, source file stamp)."""
    stat = source.stat()
    spec = task.split(split)
    key = {
        "format": CACHE_FORMAT, "task": task.name, "split": split, "layout": repr(spec),
        "labels": task.labels, "regression": task.is_regression, "tokenizer": fingerprint,
        "max_len": max_len, "max_samples": max_samples,
        "source": {"path": str(source.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns},
    }
    return json.dumps(key, sort_keys=True)


def cache_file(cache_dir: Path, task: TaskSpec, split: str, key: str) -> Path:
    """``<cache_dir>/<task>_<split>_<hash>.npz``."""
    digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:24]
    return Path(cache_dir) / f"{task.name}_{split}_{digest}.npz"


def load_features(
    task: TaskSpec,
    data_dir: str | os.PathLike | None,
    split: str,
    tokenizer: Any,
    max_len: int,
    cache_dir: str | os.PathLike | None,
    max_samples: int | None = None,
) -> Features:
    """Read + tokenise a split, reusing/writing the disk cache when ``cache_dir`` is given.

    The cache is keyed on the source file (path, size, mtime); hub splits are not cached here
    (``datasets`` keeps its own cache of the rows).
    """
    source = split_source(task, data_dir, split) if cache_dir is not None else None
    if not isinstance(source, Path):
        examples = read_split(task, data_dir, split, max_samples)
        return encode_examples(examples, tokenizer, max_len, task.is_regression)
    key = cache_key(task, split, source, tokenizer_fingerprint(tokenizer), max_len, max_samples)
    path = cache_file(Path(cache_dir), task, split, key)
    if path.is_file():
        cached = _load_npz(path, key)
        if cached is not None:
            log.info("loaded cached features %s", path)
            return cached
    examples = read_split(task, data_dir, split, max_samples)
    feats = encode_examples(examples, tokenizer, max_len, task.is_regression)
    save_features(feats, path, key)
    return feats


def save_features(feats: Features, path: Path, key: str = "") -> None:
    """Write features as flat int arrays + offsets to ``path`` atomically (``lad.core.fileio.atomic_file``)."""
    offsets = np.zeros(len(feats) + 1, dtype=np.int64)
    np.cumsum(feats.lengths, out=offsets[1:])
    flat_ids = np.concatenate(feats.input_ids).astype(np.int32) if len(feats) else np.zeros(0, np.int32)
    flat_types = (np.concatenate(feats.token_type_ids).astype(np.int8)
                  if len(feats) else np.zeros(0, np.int8))
    with atomic_file(path, binary=True) as fh:
        np.savez(
            fh, input_ids=flat_ids, token_type_ids=flat_types, offsets=offsets,
            labels=feats.labels, guids=np.array(feats.guids, dtype=np.str_),
            pad_id=np.array(feats.pad_id, dtype=np.int64), key=np.array(key, dtype=np.str_),
            truncated=np.array(feats.truncated, dtype=np.int64),
        )


def _load_npz(path: Path, key: str) -> Features | None:
    """Load a cache file; None (and a warning) if it is unreadable or for another key."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["key"]) != key:
                log.warning("cache file %s belongs to another configuration; rebuilding", path)
                return None
            offsets = data["offsets"]
            flat_ids, flat_types = data["input_ids"], data["token_type_ids"]
            cuts = offsets[1:-1]
            return Features(
                input_ids=np.split(flat_ids, cuts) if len(offsets) > 1 else [],
                token_type_ids=np.split(flat_types, cuts) if len(offsets) > 1 else [],
                labels=data["labels"], guids=[str(g) for g in data["guids"]],
                pad_id=int(data["pad_id"]), truncated=int(data["truncated"]),
            )
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.warning("ignoring unreadable feature cache %s (%s); rebuilding", path, err)
        return None
