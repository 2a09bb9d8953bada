"""A run directory belongs to one run: claim it with a lock, record the job, set an old run aside.

* :func:`target_dir` / :func:`resolve_output_dir`: the directory a command writes to, and whether it
  resumes the run there; a finished or unfinished run is never replaced without ``overwrite=true``.
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
* :func:`check_path_names`: every config name that becomes a path segment (``task.name``,
  ``teacher.name``) is one plain folder name, so no name can point a command at a parent folder
  or outside ``paths.artifacts`` / ``paths.output_root``.
* :func:`dir_kind` tells a run directory from a published teacher: ``overwrite=true`` replaces a
  directory only by one of the same kind (:func:`check_same_kind`).
"""

from __future__ import annotations

import contextlib
import logging
import logging.handlers
import os
import shutil
from pathlib import Path
from typing import Iterator

from omegaconf import DictConfig, OmegaConf

from lad.core.errors import ConfigError
from lad.core.secrets import MaskingFilter, redact
from lad.models.teacher import TEACHER_META

log = logging.getLogger(__name__)

REPLACED = ".replaced"
JOB_FILES = (".hydra",)
# everything a run writes into its directory (besides <job>.log)
RUN_FILES = ("checkpoints", "metrics.json", "model", "gates", "predictions", "mlflow_run_id", "config.yaml",
             ".hydra")
# keys that may differ between a run and its resumption (they do not change what is trained)
RESUME_FREE = ("trainer.resume", "trainer.progress", "trainer.num_threads", "trainer.keep_after_finish",
               "trainer.keep_model",
               "overwrite", "device", "mlflow.", "paths.", "data.data_dir", "data.cache_dir", "cache.",
               "output_dir", "hydra.", "trainer.predict_test")


# config names that become one path segment each (paths.artifacts/teachers/<teacher>/<task>, ...)
PATH_NAMES = ("task.name", "teacher.name")


def check_path_names(cfg) -> None:
    """ConfigError unless every name in :data:`PATH_NAMES` is one plain folder name."""
    from omegaconf import OmegaConf

    for key in PATH_NAMES:
        try:
            value = OmegaConf.select(cfg, key, throw_on_missing=False, default=None)
        except Exception:  # noqa: BLE001 - an unresolvable name is reported where it is used
            continue
        if value is None:
            continue
        name = str(value)
        problem = ("is empty" if not name.strip() else
                   "contains a '/' or '\\'" if "/" in name or "\\" in name else
                   "is '..'" if name == ".." else
                   "starts with '.'" if name.startswith(".") else
                   "contains a control character" if any(ord(c) < 32 for c in name) else None)
        if problem:
            raise ConfigError(f"{key}={name!r} {problem}: it names a folder (paths.artifacts/teachers/"
                              "<teacher.name>/<task.name>, outputs/<entry>/<task.name>/...); use a plain name "
                              "such as my_task")


# ----------------------------------------------------------------------------- which directory
def target_dir(cfg: DictConfig) -> Path:
    """The run directory this command writes to (``trainer.resume=<dir>`` names another one)."""
    resume = cfg.trainer.resume
    if isinstance(resume, str) and resume not in ("true", "false", ""):
        return Path(resume).expanduser()
    return Path(str(cfg.output_dir))


def resolve_output_dir(cfg: DictConfig) -> tuple[Path, bool]:
    """Run directory and whether to resume; refuses to clobber a finished or unfinished run.

    Nothing is changed here: with ``overwrite=true`` the old run is set aside only once every input
    has been checked, and put back if the new run fails (``lad.run.rundir``).
    """
    from lad.run import checkpoint as ckpt

    out = target_dir(cfg)
    resume = cfg.trainer.resume
    if isinstance(resume, str) and resume not in ("true", "false", ""):
        if not out.is_dir():
            raise ConfigError(f"trainer.resume={resume}: no such run directory")
        ckpt.latest_intact(out / "checkpoints")
        return out, True
    resume = bool(resume) and resume != "false"
    finished = (out / "metrics.json").exists()
    unfinished = (out / "checkpoints").exists() and not finished
    if resume:
        if finished and not cfg.overwrite:
            if extended_budget(out, cfg) and ckpt.list_checkpoints(out / "checkpoints"):
                ckpt.latest_intact(out / "checkpoints")
                return out, True  # a larger budget continues the finished run from its last checkpoint
            raise ConfigError(f"{out} already holds a finished run; pass overwrite=true to train it again, or "
                              "trainer.resume=true with a larger trainer.max_steps / trainer.epochs to extend it")
        if unfinished:
            ckpt.latest_intact(out / "checkpoints")  # all corrupt -> one clear error, before any work
        elif not finished:
            log.info("trainer.resume=true: %s holds no checkpoint yet; starting a new run", out)
        return out, unfinished
    if (finished or unfinished) and not cfg.overwrite:
        state = "a finished" if finished else "an unfinished"
        hint = "" if finished else " trainer.resume=true to continue it, or"
        raise ConfigError(f"{out} already holds {state} run; pass{hint} overwrite=true to replace it")
    return out, False


# ----------------------------------------------------------------------------- kinds
TEACHER_KIND, RUN_KIND, OTHER_KIND = "a published teacher", "a run", "other files"


def dir_kind(path: Path) -> tuple[str, str | None] | None:
    """What ``path`` holds: ``(kind, entry)``; None when it is missing or empty.

    A published teacher carries ``lad_teacher.json`` (or is a model folder: ``config.json`` next to
    weights); a run directory carries the files of :data:`RUN_FILES`, and its ``metrics.json`` /
    ``config.yaml`` name the entry point that wrote it (None when they do not say).
    """
    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        return None
    if (path / TEACHER_META).is_file() or ((path / "config.json").is_file() and any(path.glob("*.safetensors"))):
        return TEACHER_KIND, None
    if any((path / name).exists() for name in RUN_FILES if name != ".hydra") or (path / REPLACED).is_dir():
        return RUN_KIND, _run_entry(path)
    return OTHER_KIND, None


def _run_entry(path: Path) -> str | None:
    import json

    try:
        entry = json.loads((path / "metrics.json").read_text()).get("entry")
        if entry:
            return str(entry)
    except (OSError, ValueError, AttributeError):
        pass
    try:
        saved = OmegaConf.load(path / "config.yaml")
        return str(saved.get("entry")) if saved.get("entry") else None
    except Exception:  # noqa: BLE001 - no readable record: the entry is unknown
        return None


def check_run_target(out_dir: Path, entry: str) -> None:
    """A run writes only into an empty directory or a run of the same entry point (never a teacher)."""
    found = dir_kind(out_dir)
    if found is None:
        return
    kind, other = found
    if kind == TEACHER_KIND:
        raise ConfigError(f"{out_dir} holds {kind}, not a run directory: a run never writes into it "
                          "(not even with overwrite=true); give the run its own hydra.run.dir")
    if kind == RUN_KIND and other and other != entry:
        raise ConfigError(f"{out_dir} holds a {other} run, not a {entry} run: overwrite=true replaces only a "
                          "run of the same kind; give this run its own hydra.run.dir")


def check_teacher_target(target: Path, overwrite: bool) -> None:
    """train_teacher.py publishes only into an empty folder, or over a teacher with ``overwrite=true``."""
    found = dir_kind(target)
    if target.exists() and not target.is_dir():
        raise ConfigError(f"teacher.path {target} is a file, not a folder; set teacher.path to a folder")
    if found is None:
        return
    kind, _ = found
    if kind != TEACHER_KIND:
        raise ConfigError(f"teacher.path {target} holds {kind}, not a published teacher: a teacher replaces only "
                          "a teacher (not even overwrite=true replaces it); set teacher.path to a folder of its own")
    if not overwrite:
        raise ConfigError(f"teacher.path {target} already holds a fine-tuned teacher (distillation runs may use "
                          "it); pass overwrite=true to replace it, or set teacher.path to another directory")


def check_apart(run_dir: Path, teacher_path: Path) -> None:
    """The run directory and the teacher it publishes must not contain one another."""
    run_dir, teacher_path = Path(run_dir).absolute().resolve(), Path(teacher_path).absolute().resolve()
    if run_dir == teacher_path or run_dir in teacher_path.parents or teacher_path in run_dir.parents:
        raise ConfigError(f"teacher.path {teacher_path} and the run directory {run_dir} overlap: publishing "
                          "the teacher would replace the run's own files; give each its own folder")


def lock_file(out_dir: Path) -> Path:
    out_dir = Path(out_dir).absolute()
    return out_dir.parent / f".{out_dir.name}.lock"


@contextlib.contextmanager
def claim(out_dir: Path, what: str = "") -> Iterator[None]:
    """Hold the run directory's lock; ConfigError at once when another process holds it.

    ``what`` names the directory in the message (e.g. ``teacher.path``: a teacher being published).
    """
    from filelock import FileLock, Timeout

    path = lock_file(out_dir)
    made = [d for d in (path.parent, *path.parent.parents) if not d.exists()]  # deepest first
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=0)
        lock.acquire()
    except Timeout:
        raise ConfigError(
            f"{what + ' ' if what else ''}{out_dir} is in use by another running command (lock {path}); wait for it "
            "to finish, or give this run its own directory (another override, or hydra.run.dir=...)") from None
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
            for folder in made:  # and none of the folders the lock needed (artifacts/teachers/<teacher>/)
                with contextlib.suppress(OSError):  # not empty: something else lives there now
                    folder.rmdir()


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
    from lad.core.config import flatten

    return {k: v for k, v in flatten(cfg).items() if not k.startswith(RESUME_FREE)}


# the training budget: a resumed run may get a larger one (Hugging Face Trainer allows it too)
BUDGET_KEYS = ("trainer.max_steps", "trainer.epochs")


def _grows(key: str, old, new) -> bool:
    """``new`` is a larger budget than ``old`` for ``key`` (``trainer.max_steps=-1``: no step cap)."""
    try:
        old, new = int(old), int(new)
    except (TypeError, ValueError):
        return False
    if key == "trainer.max_steps":
        return new == -1 and old != -1 or old != -1 and new > old
    return new > old


def _saved_and_current(out_dir: Path, cfg) -> tuple[dict, dict] | None:
    saved_file = Path(out_dir) / "config.yaml"
    if not saved_file.is_file():
        return None
    try:
        saved = _flat(OmegaConf.load(saved_file))
    except Exception:  # noqa: BLE001 - an unreadable record cannot be compared; checkpoints still decide
        log.warning("cannot read %s: resuming without comparing configurations", saved_file)
        return None
    return saved, _flat(redact(cfg))


def extended_budget(out_dir: Path, cfg) -> dict[str, tuple]:
    """``{key: (old, new)}`` of the budget keys that ``cfg`` raises over the run in ``out_dir``."""
    found = _saved_and_current(out_dir, cfg)
    if found is None:
        return {}
    saved, current = found
    return {k: (saved[k], current.get(k)) for k in BUDGET_KEYS
            if k in saved and str(saved[k]) != str(current.get(k)) and _grows(k, saved[k], current.get(k))}


def check_resume_config(out_dir: Path, cfg: DictConfig) -> None:
    """ConfigError when ``out_dir/config.yaml`` (the run being resumed) differs from ``cfg`` in anything
    but a larger training budget (``trainer.max_steps`` / ``trainer.epochs``: the run is extended)."""
    found = _saved_and_current(out_dir, cfg)
    if found is None:
        return
    saved, current = found
    grown = extended_budget(out_dir, cfg)
    # keys the record lacks (added to LAD since the run started) cannot tell the runs apart
    diff = [k for k in sorted(saved) if str(saved[k]) != str(current.get(k)) and k not in grown]
    if diff:
        shown = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in diff[:3])
        more = f" (+{len(diff) - 3} more)" if len(diff) > 3 else ""
        raise ConfigError(
            f"trainer.resume: {out_dir} was started with another configuration ({shown}{more}); "
            "resume with the same settings (a larger trainer.max_steps or trainer.epochs extends the run), "
            "or pass overwrite=true to start over")
    for key, (old, new) in grown.items():
        log.info("trainer.resume: %s extends the run from %s=%s to %s (the schedule continues over the "
                 "new total, as Hugging Face Trainer does)", out_dir, key, old, new)


# ----------------------------------------------------------------------------- job record
_LOG_HANDLERS: list[logging.Handler] = []
_EARLY: list[logging.handlers.MemoryHandler] = []


def hold_early_log() -> None:
    """Keep this command's log records from now on until its ``<job>.log`` opens (they are written
    first into it): the checks and data loading before the run directory is claimed log too."""
    import logging.handlers

    if not _EARLY:
        buffer = logging.handlers.MemoryHandler(capacity=100_000, flushLevel=logging.CRITICAL + 1)
        buffer.setLevel(logging.INFO)
        logging.getLogger().addHandler(buffer)
        _EARLY.append(buffer)


def _drop_early_log(target: logging.Handler | None = None) -> None:
    while _EARLY:
        buffer = _EARLY.pop()
        logging.getLogger().removeHandler(buffer)
        if target is not None:
            buffer.setTarget(target)
            buffer.flush()
        buffer.buffer.clear()
        buffer.close()


def write_job_files(out_dir: Path, cfg: DictConfig) -> None:
    """``.hydra/*.yaml`` of this job (secrets masked) and its ``<job>.log`` (inside a Hydra job only)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return
        hydra_cfg = HydraConfig.get()
    except (ImportError, ValueError):
        return
    from lad.core.config import task_overrides
    from lad.core.fileio import write_text

    record = Path(out_dir) / ".hydra"
    task_cfg = OmegaConf.to_container(cfg, resolve=False)
    write_text(record / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(redact(task_cfg))))
    write_text(record / "hydra.yaml", OmegaConf.to_yaml(OmegaConf.create({"hydra": redact(hydra_cfg)})))
    write_text(record / "overrides.yaml", OmegaConf.to_yaml(OmegaConf.create(redact(task_overrides(hydra_cfg)))))
    handler = logging.FileHandler(Path(out_dir) / f"{hydra_cfg.job.name}.log")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
    handler.addFilter(MaskingFilter())
    _drop_early_log(handler)  # what was logged before the run directory was claimed comes first
    logging.getLogger().addHandler(handler)
    _LOG_HANDLERS.append(handler)


def close_job_files() -> None:
    _drop_early_log()
    while _LOG_HANDLERS:
        handler = _LOG_HANDLERS.pop()
        logging.getLogger().removeHandler(handler)
        handler.close()
