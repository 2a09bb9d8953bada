"""The teacher-output cache on disk: identity, variants, writing and validation.

Identity (directory name): teacher checkpoint (sha256 of config.json and of the weight files),
task, split, tokenizer fingerprint, max_len, max_samples and a hash of the token ids themselves.
Seed and optimiser settings are not part of it, so seeds, runs and sweep trials share one cache.
Several *variants* (what is stored: :class:`Content`, and the dtype) can live under one identity; a
variant that stores more serves an objective that needs less (an all-layer cache also serves KD and
PKD runs).

Stored: the logits (always, float32, ``[N, C]``); ``tokens``: per-token hidden states of the needed
teacher layers, unpadded: the real tokens of every example concatenated as ``[total_tokens, S, d]``
with ``offsets[N + 1]`` (example i owns rows ``offsets[i]:offsets[i + 1]``); ``cls``: only the
[CLS] vector of the mapped layers, ``[N, S, d]``. Hidden states are stored as float16, bfloat16
(raw bits in uint16) or float32 (``cache.dtype``).

A variant is written into a temporary directory and renamed into place with its manifest; one that
fails validation (missing/short files, changed bytes in sampled blocks, wrong key) is rebuilt.
Concurrent builders of the same identity serialise on a lock file (:func:`build_locked`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from lad.core.errors import ConfigError, LADError
from lad.core.fileio import atomic_dir, sha256
from lad.core.locks import file_lock
from lad.models.arch import forward_inputs, hidden_size, num_layers

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
DTYPES = {"float16": np.float16, "bfloat16": np.uint16, "float32": np.float32}
MODES = ("logits", "tokens", "cls")
_HASH_BLOCK = 1 << 20        # bytes per sampled block when checking file integrity
_HASH_BLOCKS = 16            # sampled blocks per file (small files are hashed whole)


# ----------------------------------------------------------------------------- what a variant holds
@dataclass(frozen=True)
class Content:
    """What a cache variant holds besides the logits: ``mode`` and 1-based teacher ``layers``."""

    mode: str                       # logits | tokens | cls
    layers: tuple[int, ...] = ()

    def covers(self, need: "Content") -> bool:
        """True when this content can answer ``need`` (tokens also answer cls requests)."""
        if need.mode == "logits":
            return True
        if self.mode == "logits" or (need.mode == "tokens" and self.mode != "tokens"):
            return False
        return set(need.layers) <= set(self.layers)

    @property
    def name(self) -> str:
        if self.mode == "logits":
            return "logits"
        return f"{self.mode}-L{'_'.join(map(str, self.layers))}"


# ----------------------------------------------------------------------------- identity
_FINGERPRINTS: dict[tuple, dict] = {}  # (dir, file stats) -> fingerprint, for in-process sweeps


def teacher_fingerprint(teacher_dir: str | os.PathLike) -> dict:
    """Identity of a checkpoint directory: sha256 of config.json and of every weight file (+ size).

    Hashes are recomputed only when a file's size or mtime changed since the last call in this process.
    """
    root = Path(teacher_dir)
    weights = sorted(list(root.glob("*.safetensors")) + list(root.glob("pytorch_model*.bin")))
    if not (root / "config.json").is_file() or not weights:
        raise ConfigError(f"teacher cache: {root} is not a model directory (config.json + weights)")
    files = [root / "config.json", *weights]
    stamp = (str(root.resolve()), tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files))
    if stamp not in _FINGERPRINTS:
        _FINGERPRINTS[stamp] = {
            "config_sha256": sha256(root / "config.json"),
            "weights": {p.name: {"size": p.stat().st_size, "sha256": sha256(p)} for p in weights},
        }
    return _FINGERPRINTS[stamp]


def features_digest(feats) -> str:
    """sha256 of the token ids / token types of every example (and their lengths)."""
    digest = hashlib.sha256()
    digest.update(np.asarray(feats.lengths, dtype=np.int64).tobytes())
    for ids, types in zip(feats.input_ids, feats.token_type_ids):
        digest.update(np.asarray(ids, dtype=np.int32).tobytes())
        digest.update(np.asarray(types, dtype=np.int8).tobytes())
    return digest.hexdigest()


def cache_key(teacher: dict, task: str, split: str, tokenizer: str, max_len: int,
              max_samples: int | None, features: str) -> dict:
    """The identity of one teacher-output cache (everything that changes the stored numbers)."""
    return {"format": CACHE_FORMAT, "teacher": teacher, "task": str(task), "split": str(split),
            "tokenizer": str(tokenizer), "max_len": int(max_len),
            "max_samples": None if max_samples is None else int(max_samples), "features": features}


def key_digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def cache_root(base_dir: str | os.PathLike, key: dict) -> Path:
    """``<cache.dir>/<task>-<split>-<digest>``: the directory holding this key's variants."""
    return Path(base_dir) / f"{key['task']}-{key['split']}-{key_digest(key)}"


# ----------------------------------------------------------------------------- on-disk store
def _sample_digest(path: Path) -> str:
    """sha256 over the whole file when small, else over evenly spaced 1 MiB blocks."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with open(path, "rb") as fh:
        if size <= _HASH_BLOCK * _HASH_BLOCKS:
            digest.update(fh.read())
        else:
            step = (size - _HASH_BLOCK) // (_HASH_BLOCKS - 1)
            for i in range(_HASH_BLOCKS):
                fh.seek(i * step)
                digest.update(fh.read(_HASH_BLOCK))
    return digest.hexdigest()


@dataclass
class Store:
    """A loaded (validated) cache variant; ``hidden`` is a read-only memory map or None."""

    path: Path
    manifest: dict
    content: Content
    logits: np.ndarray               # float32 [N, C]
    hidden: np.ndarray | None        # tokens: [total, S, d]; cls: [N, S, d]; storage dtype
    offsets: np.ndarray | None       # int64 [N + 1] (tokens only)

    @property
    def dtype(self) -> str:
        return str(self.manifest["dtype"])

    @property
    def layers(self) -> tuple[int, ...]:
        return self.content.layers


def _read_manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


def load_store(path: Path, key: dict, lengths: np.ndarray | None = None) -> Store | None:
    """Open and validate a variant directory; None (with a warning) when it is unusable."""
    manifest = _read_manifest(path)
    problem = None
    if manifest is None:
        problem = "no readable manifest.json"
    elif manifest.get("format") != CACHE_FORMAT or manifest.get("key") != key:
        problem = "it was written for another configuration"
    if problem is None:
        try:
            arrays = {}
            for name, info in manifest["files"].items():
                file = path / name
                if file.stat().st_size != info["bytes"]:
                    raise ValueError(f"{name} has {file.stat().st_size} bytes, expected {info['bytes']}")
                if _sample_digest(file) != info["digest"]:
                    raise ValueError(f"{name} does not match its recorded checksum")
                arr = np.load(file, mmap_mode="r", allow_pickle=False)
                if list(arr.shape) != info["shape"] or str(arr.dtype) != info["dtype"]:
                    raise ValueError(f"{name} has shape {arr.shape} / {arr.dtype}, expected {info['shape']}")
                arrays[name.removesuffix(".npy")] = arr
            content = Content(manifest["content"]["mode"], tuple(manifest["content"]["layers"]))
            offsets = np.asarray(arrays["offsets"]) if "offsets" in arrays else None
            if offsets is not None and lengths is not None and not np.array_equal(np.diff(offsets), lengths):
                raise ValueError("row offsets do not match the example lengths")
            logits = np.asarray(arrays["logits"], dtype=np.float32)
            if not np.all(np.isfinite(logits)):
                raise ValueError("logits are not finite")
            return Store(path, manifest, content, logits, arrays.get("hidden"), offsets)
        except (OSError, ValueError, KeyError, TypeError) as err:
            problem = str(err)
    log.warning("teacher cache %s is unusable (%s); it will be rebuilt", path, problem)
    return None


def _variants(root: Path) -> Iterator[Path]:
    if root.is_dir():
        yield from sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_store(root: Path, key: dict, need: Content, dtype: str, lengths: np.ndarray | None) -> Store | None:
    """The smallest valid variant under ``root`` that covers ``need`` (with ``dtype`` if it has hidden states).

    Variants that fail validation are deleted.
    """
    candidates = []
    for path in _variants(root):
        manifest = _read_manifest(path)
        if manifest is None:
            candidates.append((0, path))  # broken: validate (and remove) below
            continue
        content = Content(manifest.get("content", {}).get("mode", ""),
                          tuple(manifest.get("content", {}).get("layers", ())))
        if content.covers(need) and (need.mode == "logits" or manifest.get("dtype") == dtype):
            candidates.append((int(manifest.get("bytes", 0)), path))
    for _, path in sorted(candidates):
        store = load_store(path, key, lengths)
        if store is not None and store.content.covers(need):
            return store
        if store is None:
            shutil.rmtree(path, ignore_errors=True)
    return None


def estimate_bytes(need: Content, num_examples: int, num_tokens: int, hidden_size: int,
                   num_labels: int, dtype: str) -> int:
    """Bytes a variant will take on disk (array payloads; headers are negligible)."""
    item = np.dtype(DTYPES[dtype]).itemsize
    total = num_examples * num_labels * 4
    if need.mode == "tokens":
        total += num_tokens * len(need.layers) * hidden_size * item + (num_examples + 1) * 8
    elif need.mode == "cls":
        total += num_examples * len(need.layers) * hidden_size * item
    return int(total)


def to_storage(x: torch.Tensor, dtype: str) -> np.ndarray:
    """float32 tensor -> numpy array in the storage dtype (bfloat16 as raw uint16 bits)."""
    x = x.detach().float().cpu()
    if dtype == "float16":
        limit = float(np.finfo(np.float16).max)
        return x.clamp(-limit, limit).to(torch.float16).numpy()
    if dtype == "bfloat16":
        return x.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    return x.numpy()


def from_storage(x: torch.Tensor, dtype: str) -> torch.Tensor:
    """Inverse of :func:`to_storage` for a tensor view of stored values (result float32)."""
    if dtype == "bfloat16":
        x = x.view(torch.bfloat16)
    return x.float()


def _teacher_batches(feats, batch_size: int) -> list[list[int]]:
    """Longest-first batches (least padding while the teacher runs)."""
    order = np.argsort(-np.asarray(feats.lengths), kind="stable")
    return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def build_store(root: Path, key: dict, need: Content, teacher, feats, dtype: str,
                batch_size: int, device: torch.device | None = None) -> Path:
    """Run ``teacher`` over ``feats`` and write the ``need`` variant atomically; returns its path."""
    from lad.data.loader import FeaturesDataset, collate

    device = device or torch.device("cpu")
    lengths = np.asarray(feats.lengths, dtype=np.int64)
    n = len(feats)
    num_labels = int(teacher.config.num_labels)
    width = hidden_size(teacher)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    layers = list(need.layers)
    final = root / f"{need.name}-{dtype}" if need.mode != "logits" else root / need.name
    t0 = time.perf_counter()

    def fill(tmp: Path) -> None:
        from numpy.lib.format import open_memmap

        logits = open_memmap(tmp / "logits.npy", mode="w+", dtype=np.float32, shape=(n, num_labels))
        hidden = None
        store_dtype = DTYPES[dtype]
        if need.mode == "tokens":
            hidden = open_memmap(tmp / "hidden.npy", mode="w+", dtype=store_dtype,
                                 shape=(int(offsets[-1]), len(layers), width))
            np.save(tmp / "offsets.npy", offsets)
        elif need.mode == "cls":
            hidden = open_memmap(tmp / "hidden.npy", mode="w+", dtype=store_dtype, shape=(n, len(layers), width))
        data = FeaturesDataset(feats)
        batches = _teacher_batches(feats, batch_size)
        was_training = teacher.training
        teacher.eval()
        report_every = max(1, len(batches) // 10)
        with torch.inference_mode():
            for b_num, idx in enumerate(batches, start=1):
                batch = collate([data[i] for i in idx], pad_id=feats.pad_id)
                inputs = {k: v.to(device) for k, v in forward_inputs(teacher, batch).items()}
                out = teacher(**inputs, output_hidden_states=need.mode != "logits")
                logits[np.asarray(idx)] = out.logits.float().cpu().numpy()
                if need.mode == "tokens":
                    stacked = to_storage(torch.stack([out.hidden_states[m] for m in layers], dim=2), dtype)
                    for row, i in enumerate(idx):
                        hidden[offsets[i]:offsets[i + 1]] = stacked[row, :lengths[i]]
                elif need.mode == "cls":
                    cls = torch.stack([out.hidden_states[m][:, 0] for m in layers], dim=1)
                    hidden[np.asarray(idx)] = to_storage(cls, dtype)
                if b_num % report_every == 0 and b_num < len(batches):
                    log.info("teacher cache: %d/%d batches (%.0f s)", b_num, len(batches),
                             time.perf_counter() - t0)
        teacher.train(was_training)
        files = {"logits.npy": logits}
        if hidden is not None:
            files["hidden.npy"] = hidden
        for arr in files.values():
            arr.flush()
        if not np.all(np.isfinite(np.asarray(logits))):
            raise LADError("teacher cache: the teacher produced non-finite logits")
        del logits, hidden, files  # close the memory maps before hashing and renaming
        manifest = {
            "format": CACHE_FORMAT, "key": key, "dtype": dtype,
            "content": {"mode": need.mode, "layers": layers},
            "num_examples": n, "num_tokens": int(offsets[-1]), "hidden_size": width,
            "num_labels": num_labels, "num_layers": num_layers(teacher),
            "build_seconds": round(time.perf_counter() - t0, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "files": {},
        }
        for file in sorted(tmp.glob("*.npy")):
            arr = np.load(file, mmap_mode="r")
            manifest["files"][file.name] = {"bytes": file.stat().st_size, "digest": _sample_digest(file),
                                            "shape": list(arr.shape), "dtype": str(arr.dtype)}
            del arr
        manifest["bytes"] = sum(f["bytes"] for f in manifest["files"].values())
        with open(tmp / "manifest.json", "w") as fh:
            json.dump(manifest, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())

    # an invalid leftover at ``final`` (valid ones are found before building) is replaced
    return atomic_dir(final, fill, tmp_name=f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def build_locked(root: Path, key: dict, need: Content, dtype: str, lengths: np.ndarray, size: int,
                  teacher, feats, ccfg: dict, device: torch.device | None) -> Store | None:
    """Build the variant under the directory lock (None: not enough free disk space)."""
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    if size > 0.9 * free:
        log.warning("teacher cache: %s would take %.2f GB but only %.2f GB are free; "
                    "falling back to the online teacher", root / need.name, size / 1e9, free / 1e9)
        return None
    with file_lock(root / ".lock"):
        store = find_store(root, key, need, dtype, lengths)  # another process may have built it
        for stale in root.glob(".tmp-*"):  # builds hold the lock: these are from interrupted ones
            shutil.rmtree(stale, ignore_errors=True)
        if store is not None:
            return store
        log.info("teacher cache: writing %.3f GB (%s, %s, %d examples, %d tokens) to %s",
                 size / 1e9, need.name, dtype, len(feats), int(lengths.sum()), root)
        build_device = device or torch.device("cpu")
        teacher.to(build_device)
        path = build_store(root, key, need, teacher, feats, dtype, int(ccfg.get("build_batch_size") or 64),
                           build_device)
        store = load_store(path, key, lengths)
        if store is None:
            raise LADError(f"teacher cache: {path} failed validation right after it was written")
        log.info("teacher cache: built in %.1f s", store.manifest["build_seconds"])
        return store
