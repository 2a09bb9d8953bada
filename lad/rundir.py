"""A run directory belongs to one run: claim it with a lock, record the job, set an old run aside.

* :func:`claim` holds an exclusive lock (``filelock``) on ``<parent>/.<name>.lock`` for the whole
  command: a second command into the same directory stops with one line instead of mixing
  checkpoints. The lock file sits beside the run directory, so taking it changes nothing inside.
* :func:`write_job_files` writes ``.hydra/{config,hydra,overrides}.yaml`` (secrets masked) and opens
  ``<job>.log`` only once every input was checked: Hydra's own writers are switched off
  (``hydra.output_subdir: null``, ``hydra/job_logging: lad``) because they run before any check,
  and a refused re-run used to rewrite the finished run's ``.hydra/config.yaml``.
* ``overwrite=true`` moves the old run into ``<run_dir>/.replaced/`` (:func:`set_aside`) just before
  training and deletes it when the new run finished (:func:`discard`); if the new run fails it is
  removed and the old one put back (:func:`restore`). A command killed in between (``kill -9``)
  leaves ``.replaced/``; the next command into that directory finishes the job (:func:`recover`).
* :func:`check_resume_config`: ``trainer.resume=true`` with a configuration other than the one the
  run started with is an error, before anything is written.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from lad.errors import ConfigError
from lad.secrets import MaskingFilter, redact

log = logging.getLogger(__name__)

REPLACED = ".replaced"
JOB_FILES = (".hydra",)
# everything a run writes into its directory (besides <job>.log)
RUN_FILES = ("checkpoints", "metrics.json", "model", "gates", "predictions", "mlflow_run_id", "config.yaml",
             ".hydra")
# keys that may differ between a run and its resumption (they do not change what is trained)
RESUME_FREE = ("trainer.resume", "trainer.progress", "trainer.num_threads", "trainer.keep_after_finish",
               "overwrite", "device", "mlflow.", "paths.", "data.data_dir", "data.cache_dir", "cache.",
               "output_dir", "hydra.", "trainer.predict_test")


def lock_file(out_dir: Path) -> Path:
    out_dir = Path(out_dir).absolute()
    return out_dir.parent / f".{out_dir.name}.lock"


@contextlib.contextmanager
def claim(out_dir: Path) -> Iterator[None]:
    """Hold the run directory's lock; ConfigError at once when another process holds it."""
    from filelock import FileLock, Timeout

    path = lock_file(out_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=0)
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"{out_dir} is in use by another running command (lock {path}); wait for it to finish, "
            "or give this run its own directory (another override, or hydra.run.dir=...)") from None
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory lock {path}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()
        # a refused command leaves nothing behind, not even its lock file (Hydra may have created
        # the run directory itself; the entry point removes it when it is still empty)
        if not out_dir.exists() or (out_dir.is_dir() and not any(out_dir.iterdir())):
            path.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- overwrite
def _own_files(out_dir: Path) -> list[Path]:
    found = [out_dir / name for name in RUN_FILES if (out_dir / name).exists()]
    return found + sorted(out_dir.glob("*.log"))


def set_aside(out_dir: Path) -> bool:
    """Move a previous run's files into ``.replaced/`` (renames only); True when there was one."""
    files = _own_files(out_dir)
    if not files:
        return False
    backup = out_dir / REPLACED
    backup.mkdir()
    for path in files:
        os.replace(path, backup / path.name)
    log.info("overwrite=true: the previous run in %s is kept in %s until this one finishes", out_dir, backup)
    return True


def restore(out_dir: Path) -> None:
    """Remove this (failed) run's files and put the set-aside run back."""
    backup = out_dir / REPLACED
    if not backup.is_dir():
        return
    for path in _own_files(out_dir):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    for path in backup.iterdir():
        os.replace(path, out_dir / path.name)
    backup.rmdir()


def discard(out_dir: Path) -> None:
    """The new run finished: delete the set-aside one."""
    shutil.rmtree(out_dir / REPLACED, ignore_errors=True)


def recover(out_dir: Path) -> None:
    """Finish an ``overwrite=true`` that was killed: keep whichever run is complete."""
    if not (out_dir / REPLACED).is_dir():
        return
    if (out_dir / "metrics.json").exists():
        discard(out_dir)
    else:
        restore(out_dir)
        log.warning("%s: an interrupted overwrite=true left the previous run aside; it was put back", out_dir)


# ----------------------------------------------------------------------------- resume
def _flat(cfg) -> dict:
    from lad.config import flatten

    return {k: v for k, v in flatten(cfg).items() if not k.startswith(RESUME_FREE)}


def check_resume_config(out_dir: Path, cfg: DictConfig) -> None:
    """ConfigError when ``out_dir/config.yaml`` (the run being resumed) differs from ``cfg``."""
    saved_file = Path(out_dir) / "config.yaml"
    if not saved_file.is_file():
        return
    try:
        saved = _flat(OmegaConf.load(saved_file))
    except Exception:  # noqa: BLE001 - an unreadable record cannot be compared; checkpoints still decide
        log.warning("cannot read %s: resuming without comparing configurations", saved_file)
        return
    current = _flat(redact(cfg))
    # keys the record lacks (added to LAD since the run started) cannot tell the runs apart
    diff = [k for k in sorted(saved) if str(saved[k]) != str(current.get(k))]
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff[:3])
        more = f" (+{len(diff) - 3} more)" if len(diff) > 3 else ""
        raise ConfigError(
            f"trainer.resume: {out_dir} was started with another configuration ({shown}{more}); "
            "resume with the same settings, or pass overwrite=true to start over")


# ----------------------------------------------------------------------------- job record
_LOG_HANDLERS: list[logging.Handler] = []


def write_job_files(out_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/*.yaml`` of this job (secrets masked) and its ``<job>.log`` (inside a Hydra job only)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return
    from lad.config import task_overrides
    from lad.fileio import write_text

    record = Path(out_dir) / ".hydra"
    task_cfg = OmegaConf.to_container(cfg, resolve=False)
    write_text(record / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(redact(task_cfg))))
    write_text(record / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": redact(hydra_cfg)})))
    write_text(record / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(redact(task_overrides(hydra_cfg)))))
    handler = logging.FileHandler(Path(out_dir) / f"{hydra_cfg.job.name}.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.addFilter(MaskingFilter())
    logging.getLogger().addHandler(handler)
    _LOG_HANDLERS.append(handler)


def close_job_files() -> None:
    while _LOG_HANDLERS:
        handler = _LOG_HANDLERS.pop()
        logging.getLogger().removeHandler(handler)
        handler.close()
