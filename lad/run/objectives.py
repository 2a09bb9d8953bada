"""What a ``distil.py`` job returns to a sweeper: the values named by the config key ``objectives``.

``objectives: [metric]`` (the default) returns the best dev score of the task's main metric, a
number, as before. A multi-objective search (``conf/hparams_search/lad_pareto.yaml``) sets
``objectives: [metric, speed]``: the job then returns a list, in that order, to be matched by the
sweeper's ``direction: [maximize, minimize]`` (upstream hydra-optuna-sweeper's grammar).

* ``metric``: the best dev score of the task's main metric (maximise);
* ``speed``: the ``lad.deploy.speed`` measure chosen by ``speed.measure`` (a cost: minimise).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from lad.core.errors import ConfigError

DIRECTIONS = {"metric": "maximize", "speed": "minimize"}


def _speed(cfg, score: float, out_dir: Path) -> float:
    path = out_dir / "metrics.json"
    row = json.loads(path.read_text()).get("speed") if path.is_file() else None
    if not row:
        raise ConfigError(f"{path} has no speed measurement (objectives include speed)")
    return float(row["value"])


VALUES: dict[str, Callable[[Any, float, Path], float]] = {
    "metric": lambda cfg, score, out_dir: float(score),
    "speed": _speed,
}


def names(cfg) -> list[str]:
    """The objectives of ``cfg`` (default ``[metric]``), checked: one ConfigError line when wrong."""
    raw = cfg.get("objectives") if cfg is not None else None
    items = ["metric"] if raw is None else ([raw] if isinstance(raw, str) else [str(x) for x in raw])
    unknown = [n for n in items if n not in VALUES]
    if not items or unknown or len(set(items)) != len(items):
        raise ConfigError(f"objectives must be a list of distinct names among {', '.join(VALUES)} "
                          f"(default [metric]), got {list(items)!r}")
    if "speed" in items:
        from omegaconf import OmegaConf

        from lad.deploy.speed import settings_of

        settings_of(OmegaConf.to_container(cfg.get("speed") or {}, resolve=True))
    return items


def directions(cfg) -> list[str]:
    """The Optuna direction of each objective (``metric``: maximize, ``speed``: minimize)."""
    return [DIRECTIONS[n] for n in names(cfg)]


def check_sweeper(cfg) -> None:
    """In a job of an Optuna sweep, ``hydra.sweeper.direction`` has one entry per objective and each
    is the objective's own direction (``[maximize, minimize]`` for ``[metric, speed]``)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        sweeper = HydraConfig.get().sweeper
    except (ValueError, ImportError):
        return
    if not str(sweeper.get("_target_", "")).endswith("OptunaSweeper") or sweeper.get("direction") is None:
        return
    raw = sweeper.direction
    given = [str(d).lower() for d in (raw if not isinstance(raw, str) else [raw])]
    wanted = directions(cfg)
    if len(given) > 1 or len(wanted) > 1:
        if given != wanted:
            raise ConfigError(f"hydra.sweeper.direction is {given} but objectives {names(cfg)} need {wanted} "
                              "(one direction per objective, in the same order)")


def wants_speed(cfg) -> bool:
    return "speed" in names(cfg)


def job_value(cfg, score: float, out_dir: Path) -> float | list[float]:
    """The job's return value: the score alone for ``[metric]``, else one value per objective."""
    items = names(cfg)
    if items == ["metric"]:
        return score
    return [VALUES[n](cfg, score, Path(out_dir)) for n in items]
