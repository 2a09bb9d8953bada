"""Atomic, checksummed, resumable checkpoints.

A checkpoint is a directory ``step-<N>`` holding ``weights.safetensors`` (trainable weights),
``state.pt`` (optimisers, schedulers, RNG, progress; loaded with ``weights_only=True``) and
``checksums.json``. It is written to a temporary directory and renamed into place, so a crash
never leaves a half-written ``step-<N>``; older checkpoints are pruned only after the new one exists.
A checkpoint whose checksums do not match is skipped in favour of the previous one.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lad.core.errors import LADError
from lad.core.fileio import atomic_dir, sha256
from lad.core.signals import deferred

log = logging.getLogger(__name__)

WEIGHTS = "weights.safetensors"
STATE = "state.pt"
SUMS = "checksums.json"


def _step_of(path: Path) -> int:
    try:
        return int(path.name.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def list_checkpoints(ckpt_dir: Path) -> list[Path]:
    """Complete-looking checkpoint dirs, newest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [p for p in ckpt_dir.iterdir() if p.is_dir() and p.name.startswith("step-") and _step_of(p) >= 0]
    return sorted(found, key=_step_of, reverse=True)


def save_checkpoint(ckpt_dir: Path, step: int, weights: dict[str, torch.Tensor], state: dict,
                    keep: int = 2) -> Path:
    if not all_finite(weights):  # never let a NaN checkpoint become "the last good one"
        raise NumericFault(f"weights became non-finite by step {step}; no checkpoint was written; "
                           f"{recovery_hint(ckpt_dir)}")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    final = ckpt_dir / f"step-{step}"
    for stale in ckpt_dir.glob(".tmp-step-*"):  # left behind by a killed run
        shutil.rmtree(stale, ignore_errors=True)
    def fill(tmp: Path) -> None:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / WEIGHTS))
        torch.save(state, tmp / STATE)
        sums = {name: sha256(tmp / name) for name in (WEIGHTS, STATE)}
        (tmp / SUMS).write_text(json.dumps(sums, indent=1))

    # SIGINT / SIGTERM wait until the checkpoint is complete (seconds); any failure removes the temp dir
    with deferred():
        atomic_dir(final, fill, tmp_name=f".tmp-step-{step}-{os.getpid()}", fsync=True)
    for old in list_checkpoints(ckpt_dir)[max(keep, 1):]:
        shutil.rmtree(old, ignore_errors=True)
    return final


class NumericFault(LADError):
    """Weights (or a loss) became NaN or infinite."""


def recovery_hint(ckpt_dir: Path) -> str:
    """What to do after a numeric fault, naming a checkpoint that exists (or saying there is none)."""
    try:
        path = latest_intact(Path(ckpt_dir))
    except LADError:
        path = None
    if path is None:
        return ("no checkpoint was written before it: lower optim.lr (or the weight of the exploding "
                "loss term) and start over with overwrite=true")
    return (f"the last good checkpoint is {path}: lower optim.lr (or the weight of the exploding loss "
            "term) and continue with trainer.resume=true, or start over with overwrite=true")


def all_finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in weights.values() if v.is_floating_point())


def prune(ckpt_dir: Path, keep: int) -> None:
    """Keep the ``keep`` newest checkpoints (0: remove the folder) once a run finished."""
    ckpt_dir = Path(ckpt_dir)
    if keep <= 0:
        shutil.rmtree(ckpt_dir, ignore_errors=True)
        return
    for old in list_checkpoints(ckpt_dir)[keep:]:
        shutil.rmtree(old, ignore_errors=True)


def verify(path: Path) -> bool:
    try:
        sums = json.loads((path / SUMS).read_text())
        return all(sha256(path / name) == digest for name, digest in sums.items()) and len(sums) == 2
    except (OSError, ValueError):
        return False


def latest_intact(ckpt_dir: Path) -> Path | None:
    """Newest checkpoint whose checksums match; None when there is none; LADError if all are corrupt.

    Cheap (hashes the files): call it before heavy work to fail fast on ``trainer.resume=true``.
    """
    candidates = list_checkpoints(ckpt_dir)
    for path in candidates:
        if verify(path):
            return path
        log.warning("checkpoint %s is corrupt or incomplete (checksum mismatch); trying an older one", path)
    if candidates:
        raise LADError(
            f"every checkpoint in {ckpt_dir} is corrupt (checksum mismatch); cannot resume: "
            "delete that folder to start over, or pass overwrite=true"
        )
    return None


def load_latest(ckpt_dir: Path) -> tuple[dict[str, torch.Tensor], dict, Path] | None:
    """Weights, state and path of the newest checkpoint that is intact and loads safely (weights only:
    no pickled code); an older one, with one warning, when the newest fails; None when there is none."""
    newest = latest_intact(ckpt_dir)
    if newest is None:
        return None
    failures = []
    for path in (p for p in list_checkpoints(ckpt_dir) if _step_of(p) <= _step_of(newest)):
        if path != newest and not verify(path):
            continue
        try:
            weights = load_file(str(path / WEIGHTS))
            state = torch.load(path / STATE, weights_only=True, map_location="cpu")
            if not isinstance(state, dict) or "step" not in state:
                raise ValueError("no training state in it")
        except Exception as exc:  # noqa: BLE001 - unpickling refused, damaged tensors, another format
            reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
            log.warning("checkpoint %s cannot be loaded safely (%s); trying an older one", path, reason)
            failures.append(path.name)
            continue
        return weights, state, path
    raise LADError(f"no checkpoint in {ckpt_dir} loads safely (tried {', '.join(failures)}); cannot resume: "
                   "delete that folder to start over, or pass overwrite=true")


def resume_hint(out_dir: Path) -> str:
    """What an interrupted run leaves: the checkpoint to resume from, or none."""
    try:
        path = latest_intact(Path(out_dir) / "checkpoints")
    except Exception:  # noqa: BLE001 - only a hint
        path = None
    if path is None:
        return f"{out_dir} holds no checkpoint yet: run the command again to start over"
    return f"{out_dir} keeps checkpoint {path.name}: continue with trainer.resume=true"
