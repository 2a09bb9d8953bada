"""Structured config of the LAD Optuna sweeper, registered as ``hydra/sweeper=lad_optuna``."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


def _default_sampler() -> Dict[str, Any]:
    return {"_target_": "optuna.samplers.TPESampler", "seed": None}


@dataclass
class LadOptunaSweeperConf:
    """Options of ``hydra.sweeper`` (see README of the plugin package for semantics)."""

    _target_: str = "hydra_plugins.lad_optuna_sweeper.sweeper.LadOptunaSweeper"
    # Keep ``sampler`` a plain config: the sweeper instantiates it once per trial.
    _recursive_: bool = False
    # Optuna sampler; when ``seed`` is set, trial number n uses seed + n.
    sampler: Dict[str, Any] = field(default_factory=_default_sampler)
    direction: str = "maximize"  # maximize | minimize
    # SQLAlchemy URL (e.g. sqlite:///sweeps/optuna.db); null = in-memory, no resume.
    storage: Optional[str] = None
    # Study to create or resume; null = the Hydra job name.
    study_name: Optional[str] = None
    # Total number of trials the study is driven to (all states, earlier runs included).
    n_trials: int = 20
    # Trials asked per launcher batch (parallel launchers run a batch concurrently).
    n_jobs: int = 1
    # Storage heartbeat (seconds) used to detect trials of killed processes.
    heartbeat_interval: int = 60
    # A RUNNING trial without a heartbeat for this long is marked FAIL; null = 2 x interval.
    grace_period: Optional[int] = None
    # Search space: config key -> Hydra sweep override (interval, tag(log, ...), choice, range).
    params: Optional[Dict[str, Any]] = None


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="lad_optuna",
    node=LadOptunaSweeperConf,
    provider="lad_optuna_sweeper",
)
