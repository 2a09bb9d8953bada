"""Every input of a run checked before any work, each mistake one ``ConfigError`` line."""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from lad.core.errors import ConfigError
from lad.core.schema import Key, check_value, validate
from lad.run.builders import memoized
from lad.run.rundir import check_path_names
from lad.run.schedules import check as check_schedule

log = logging.getLogger(__name__)


def validate_common(cfg: DictConfig) -> None:
    """Checks shared by both entry points; each raises ConfigError with one line.

    Types and ranges of every scalar key come from one table (``lad.core.schema.KEYS``).
    """
    validate(cfg)
    check_path_names(cfg)
    check_schedule(str(cfg.optim.get("lr_scheduler_type", "linear")))
    if cfg.device not in ("auto", "cpu", "cuda") and not str(cfg.device).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {cfg.device!r}")
    resume = cfg.trainer.get("resume", False)
    if not isinstance(resume, (bool, str)) or (isinstance(resume, str) and not resume.strip()):
        raise ConfigError(f"trainer.resume must be true, false or a run directory, got {resume!r}")
    if "teacher" in cfg and "source" in cfg.teacher:
        check_value("teacher.source", cfg.teacher.source, Key("choice", choices=("path", "mlflow")))


def check_writable_places(cfg: DictConfig, entry: str, out_dir: Path) -> None:
    """Every directory the run will write to accepts a file (before any training)."""
    from lad.core.preflight import writable
    from lad.tracking.store import sqlite_path

    writable(out_dir, "output directory", "hydra.run.dir (or paths.output_root)")
    writable(str(cfg.data.cache_dir), "feature cache directory", "data.cache_dir (or paths.cache)")
    if entry == "distil" and cfg.get("cache") is not None and cfg.cache.enabled:
        writable(str(cfg.cache.dir), "teacher cache directory", "cache.dir (or paths.cache), or pass cache=off")
    if entry == "train_teacher":
        writable(Path(str(cfg.teacher.path)).parent, "teacher directory", "teacher.path (or paths.artifacts)")
    if cfg.mlflow.enabled:
        uri = str(cfg.mlflow.tracking_uri)
        db = sqlite_path(uri)
        if db is not None:
            writable(db.parent, "MLflow store", "mlflow.tracking_uri")
        location = cfg.mlflow.get("artifact_location")
        if location and (db is not None or uri.startswith("file:") or "://" not in uri) \
                and ("://" not in str(location) or str(location).startswith("file://")):
            writable(str(location).removeprefix("file://"), "MLflow artifact directory", "mlflow.artifact_location")


def check_teacher_target(cfg: DictConfig) -> None:
    """train_teacher.py never replaces a teacher that another run fine-tuned, unless overwrite=true
    (distillation runs recorded it as their teacher), and never replaces anything but a teacher."""
    from lad.run.rundir import check_teacher_target as check

    check(Path(str(cfg.teacher.path)).expanduser(), bool(cfg.overwrite))


def check_test_splits(task, data_dir, limit, memo: dict | None = None) -> None:
    """Read every test split that ``trainer.predict_test`` will predict (a missing file is skipped then)."""
    from lad.core.errors import MissingDataFile
    from lad.data.sources import read_split
    from lad.data.tasks import has_split, test_splits

    for split in (s for s in test_splits(task) if has_split(task, s)):
        try:
            memoized(memo, ("examples", task, split, str(data_dir), limit),
                     lambda: read_split(task, data_dir, split, limit))
        except MissingDataFile as exc:
            log.warning("no test predictions for %s: %s", split, exc)


def check_disk_space(cfg, module, out_dir: Path) -> None:
    """Enough free space for the checkpoints and the model this run writes (before training)."""
    from lad.core.preflight import enough_space

    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    student = sum(p.numel() for p in module.student.parameters())
    keep = max(int(cfg.trainer.keep_checkpoints), 1)
    # a checkpoint = fp32 weights + two AdamW moments; +1 while the newest is written; model in fp32
    needed = (keep + 1) * trainable * 4 * 3 + 2 * student * 4
    enough_space(out_dir, int(needed * 1.1), "checkpoints and the model")
