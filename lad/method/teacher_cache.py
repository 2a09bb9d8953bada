"""Teacher-output cache: run the frozen teacher over a training split once, read it back per batch.

A distillation run spends most of its time in the teacher's forward pass, and that pass gives the
same result for every seed, learning rate and Optuna trial. :func:`attach_cache` stores what the
objective needs from the teacher on disk, memory-mapped (``lad.method.teacher_store``: identity,
variants, validation), and plugs a :class:`CachedTeacher` into ``Distiller.teacher_outputs``:
the logits always; the hidden states of the teacher layers the gate and the loss terms read
(:func:`required_content`: all L for the lad / mean / attention gates, the mapped layers for
``gate=none``, only their [CLS] vectors for Patient-KD without a hidden-state term).

Padding: cached rows are re-padded with zeros to the batch's width. The losses mask padding and
per-token gates do not look at it; ``gate.norm=per_sequence`` does (its statistics include padded
positions), so that configuration keeps the online teacher.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lad.core.errors import ConfigError, LADError
from lad.method.distiller import TeacherOutputs
from lad.method.loss_terms import ATTENTIONS, CAPTURED, CLS, GATED, MAPPED, TEACHER_HIDDEN
from lad.method.teacher_store import (DTYPES, Content, Store, build_locked, cache_key, cache_root, estimate_bytes,
                                      features_digest, find_store, from_storage, teacher_fingerprint)
from lad.models.arch import hidden_size, num_layers

log = logging.getLogger(__name__)

_DEFAULTS = {"enabled": False, "dir": ".cache/lad/teacher_outputs", "dtype": "float16", "max_gb": 8.0,
             "release_teacher": True, "build_batch_size": 64}


class TeacherCacheCorrupt(LADError):
    """Cached teacher outputs that fail a check while they are read."""


# ----------------------------------------------------------------------------- what to store
def required_content(module) -> tuple[Content | None, str]:
    """What ``module``'s objective needs from the teacher; ``(None, reason)`` when it cannot be cached.

    The loss terms declare what they read (:mod:`lad.method.loss_terms`) and the gate which teacher
    layers it reads; attention maps are never cached.
    """
    obj = module.objective
    needs = obj.teacher_needs
    if not needs:
        return None, "the objective does not use the teacher"
    reasons = [term.uncacheable() for _, _, term in obj.terms]
    if GATED in needs and getattr(module.gate, "reads_padding", False):
        reasons.insert(0, "gate.norm=per_sequence normalises over padded positions, which a cache "
                          "of unpadded rows cannot reproduce")
    if ATTENTIONS in needs:
        reasons.append("a loss term reads the teacher's attention maps, which the cache does not store")
    if CAPTURED in needs:
        reasons.append("a loss term reads outputs of teacher modules captured during the forward pass "
                       "(LossTerm.captures), which the cache does not store")
    if any(reasons):
        return None, next(r for r in reasons if r)
    if not needs & TEACHER_HIDDEN:
        return Content("logits"), ""
    mapped = {int(m) for m in module.layer_map}
    tokens = set(mapped) if MAPPED in needs else set()
    if GATED in needs:
        tokens |= set(module.gate.teacher_layers(module.layer_map, num_layers(module.teacher)))
    if not tokens:
        return Content("cls", tuple(sorted(mapped))), ""
    if CLS in needs:
        tokens |= mapped
    return Content("tokens", tuple(sorted(tokens))), ""


# ----------------------------------------------------------------------------- train time
class CachedTeacher:
    """``Distiller.teacher_outputs`` replacement: ``batch -> TeacherOutputs`` from a :class:`Store`.

    Rows are gathered by ``batch["index"]`` (positions in the cached split) and zero-padded to the
    batch's width. ``hidden`` is a list of ``num_layers`` entries in which the layers the objective
    needs are float32 ``[B, T, d]`` tensors (``[B, 1, d]``, the [CLS] vector, for Patient-KD only)
    and the others are None. Tensors land on the batch's device.
    """

    def __init__(self, store: Store, need: Content, num_layers: int):
        if not store.content.covers(need):
            raise ValueError(f"cache variant {store.content.name} cannot serve {need.name}")
        self.store = store
        self.need = need
        self.num_layers = int(num_layers)
        stored = list(store.layers)
        self._select = [stored.index(m) for m in need.layers]
        self._all = self._select == list(range(len(stored)))
        self.calls = 0

    def __repr__(self) -> str:
        return f"CachedTeacher({self.store.path}, {self.need.name})"

    def __call__(self, batch: dict):
        self.calls += 1
        index = batch["index"].detach().cpu().numpy().astype(np.int64)
        device = batch["input_ids"].device
        logits = torch.from_numpy(self.store.logits[index]).to(device)
        if self.need.mode == "logits":
            return TeacherOutputs(logits)
        hidden: list[torch.Tensor | None] = [None] * self.num_layers
        if self.need.mode == "tokens":
            values = self._gather_tokens(index, int(batch["input_ids"].shape[1]), batch["attention_mask"])
        else:
            values = self._gather_cls(index)
        values = from_storage(torch.from_numpy(values).to(device), self.store.dtype)
        if not bool(torch.isfinite(values).all()):
            self._corrupt(index)
        for j, m in enumerate(self.need.layers):
            hidden[m - 1] = values[j]
        return TeacherOutputs(logits, hidden)

    def _corrupt(self, index: np.ndarray) -> None:
        """Non-finite cached values: the files changed after validation (disk error, another writer).

        The variant's manifest is renamed so that the next run rebuilds it, and the error says
        it is the cache, not the training, that went wrong.
        """
        path = self.store.path
        try:
            os.replace(path / "manifest.json", path / "manifest.json.corrupt")
        except OSError:
            pass
        shown = ", ".join(str(int(i)) for i in index[:5])
        raise TeacherCacheCorrupt(
            f"teacher cache {path} holds non-finite hidden states (training examples {shown}...): the "
            "cache files are corrupt, not the training; it was marked for rebuilding: run the command again")

    def _rows(self, block: np.ndarray) -> np.ndarray:
        """Select the needed layers (axis 1) of a stored block."""
        return block if self._all else block[:, self._select]

    def _gather_tokens(self, index: np.ndarray, width: int, mask: torch.Tensor) -> np.ndarray:
        offsets = self.store.offsets
        lengths = offsets[index + 1] - offsets[index]
        real = mask.detach().sum(dim=1).cpu().numpy()
        if not np.array_equal(lengths, real):
            raise LADError("teacher cache: batch lengths do not match the cached rows "
                           "(batch['index'] must be positions in the cached training features)")
        hidden = self.store.hidden
        out = np.zeros((len(self.need.layers), len(index), width, hidden.shape[-1]), dtype=hidden.dtype)
        for row, i in enumerate(index):
            block = self._rows(hidden[offsets[i]:offsets[i + 1]])    # [n, S, d]
            out[:, row, :block.shape[0]] = block.transpose(1, 0, 2)
        return out

    def _gather_cls(self, index: np.ndarray) -> np.ndarray:
        if self.store.content.mode == "cls":
            rows = self._rows(self.store.hidden[index])
        else:  # token variant: the [CLS] row is the first row of every example
            rows = self._rows(self.store.hidden[self.store.offsets[index]])
        return np.ascontiguousarray(rows.transpose(1, 0, 2))[:, :, None, :]  # [S, B, 1, d]


class ReleasedTeacher(nn.Module):
    """Stands in for a teacher whose outputs are cached: keeps ``config``, holds no weights."""

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config

    def forward(self, *args: Any, **kwargs: Any):
        raise LADError("the teacher's weights were released after its outputs were cached "
                       "(cache.release_teacher=true); set cache.release_teacher=false to keep them")


# ----------------------------------------------------------------------------- entry point
def _cache_cfg(cfg) -> dict:
    from omegaconf import OmegaConf

    section = cfg.get("cache") if hasattr(cfg, "get") else None
    values = dict(_DEFAULTS)
    if section is not None:
        values.update(OmegaConf.to_container(section, resolve=True) if not isinstance(section, dict) else section)
    if values["dtype"] not in DTYPES:
        raise ConfigError(f"cache.dtype must be one of {', '.join(DTYPES)}; got {values['dtype']!r}")
    return values


def attach_cache(cfg, module, train_feats, model_source, task, split: str = "train",
                 device: torch.device | None = None) -> CachedTeacher | None:
    """Serve ``module``'s teacher outputs from the disk cache (building it if needed).

    Returns the installed :class:`CachedTeacher`, or None when the online teacher is kept
    (objective/gate not cacheable, or the cache would exceed ``cache.max_gb`` / free disk space).
    """
    ccfg = _cache_cfg(cfg)
    teacher = module.teacher
    if teacher is None or isinstance(teacher, ReleasedTeacher):
        return None
    need, reason = required_content(module)
    if need is None:
        log.info("teacher cache: not used (%s); running the teacher online", reason)
        return None
    from lad.data.features import tokenizer_fingerprint
    from lad.models import load_tokenizer

    t0 = time.perf_counter()
    max_len = int(task.max_seq_length)
    max_samples = cfg.data.get("max_train_samples") if split == "train" else cfg.data.get("max_eval_samples")
    key = cache_key(teacher_fingerprint(model_source), task.name, split,
                    tokenizer_fingerprint(load_tokenizer(model_source)), max_len, max_samples,
                    features_digest(train_feats))
    root = cache_root(Path(str(ccfg["dir"])), key)
    dtype = str(ccfg["dtype"])
    lengths = np.asarray(train_feats.lengths, dtype=np.int64)
    store = find_store(root, key, need, dtype, lengths)
    if store is None:
        size = estimate_bytes(need, len(train_feats), int(lengths.sum()), hidden_size(teacher),
                              int(teacher.config.num_labels), dtype)
        limit = float(ccfg["max_gb"]) * 1e9
        where = f"{root}/{need.name}"
        if size > limit:
            log.warning("teacher cache: %s would take %.2f GB > cache.max_gb=%s; "
                        "falling back to the online teacher", where, size / 1e9, ccfg["max_gb"])
            return None
        try:
            store = build_locked(root, key, need, dtype, lengths, size, teacher, train_feats, ccfg, device)
        except OSError as err:
            log.warning("teacher cache: cannot write %s (%s); falling back to the online teacher", root, err)
            return None
        if store is None:
            return None
    else:
        log.info("teacher cache: reusing %s (%.3f GB)", store.path, store.manifest["bytes"] / 1e9)
    cached = CachedTeacher(store, need, num_layers(teacher))
    module.teacher_outputs = cached
    if ccfg.get("release_teacher"):
        module.teacher = ReleasedTeacher(teacher.config)
        del teacher
    log.info("teacher cache: serving %s from %s (%.1f s)", need.name, store.path, time.perf_counter() - t0)
    return cached
