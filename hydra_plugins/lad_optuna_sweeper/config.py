"""Structured config of the LAD Optuna sweeper, registered as ``hydra/sweeper=lad_optuna``, and the
sampler group ``hydra/sweeper/sampler=tpe|random|cmaes|nsgaii|motpe|grid|gp|qmc`` (upstream's names)."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING


@dataclass
class LadOptunaSweeperConf:
    """Options of ``hydra.sweeper``. Upstream hydra-optuna-sweeper 1.3 keys keep upstream's meaning
    and default; the keys after ``custom_search_space`` are this project's additions (see README)."""

    _target_: str = "hydra_plugins.lad_optuna_sweeper.sweeper.LadOptunaSweeper"
    defaults: List[Any] = field(default_factory=lambda: [{"sampler": "tpe"}])
    # Keep ``sampler`` a plain config: the sweeper instantiates it itself (seeding, grid).
    _recursive_: bool = False
    # -- upstream keys ------------------------------------------------------------------------
    sampler: Any = MISSING  # from the hydra/sweeper/sampler group
    direction: Any = "minimize"  # minimize | maximize | a list of them (multi-objective)
    storage: Optional[Any] = None  # SQLAlchemy URL; null = in memory
    study_name: Optional[str] = None  # null = Optuna's generated name (no resume)
    n_trials: Optional[int] = 20  # trials this run adds (null: no per-run limit, needs max_trials)
    n_jobs: int = 2  # trials per launcher batch
    max_failure_rate: float = 0.0  # a batch with a larger share of failed trials ends the sweep
    search_space: Optional[Dict[str, Any]] = None  # deprecated upstream form of params
    params: Optional[Dict[str, Any]] = None  # key: <sweep override>
    custom_search_space: Optional[str] = None  # module.function(cfg, trial) suggesting more params
    # -- project additions ----------------------------------------------------------------------
    max_trials: Optional[int] = None  # study total (all states, all workers); null = none
    heartbeat_interval: int = 60  # seconds between storage heartbeats of running trials
    grace_period: Optional[int] = None  # a RUNNING trial silent this long is FAIL; null = 2 x interval
    study_attrs: Dict[str, Any] = field(default_factory=dict)  # recorded on the study; a resume must match


_SAMPLERS = {
    "tpe": "optuna.samplers.TPESampler",
    "random": "optuna.samplers.RandomSampler",
    "cmaes": "optuna.samplers.CmaEsSampler",
    "nsgaii": "optuna.samplers.NSGAIISampler",
    # Optuna 4 removed MOTPESampler; its TPESampler optimises several objectives
    "motpe": "optuna.samplers.TPESampler",
    "grid": "optuna.samplers.GridSampler",
    "gp": "optuna.samplers.GPSampler",
    "qmc": "optuna.samplers.QMCSampler",
}

_store = ConfigStore.instance()
_store.store(group="hydra/sweeper", name="lad_optuna", node=LadOptunaSweeperConf, provider="lad_optuna_sweeper")
# upstream's keys and defaults of hydra/sweeper/sampler=nsgaii (NSGAIISamplerConfig)
_NSGAII = {"population_size": 50, "mutation_prob": None, "crossover_prob": 0.9, "swapping_prob": 0.5,
           "constraints_func": None}

for _name, _target in _SAMPLERS.items():
    _node: Dict[str, Any] = {"_target_": _target, "seed": None}
    if _name == "grid":
        _node["search_space"] = None  # null: every value of the search space (params)
    if _name == "nsgaii":
        _node.update(_NSGAII)
    _store.store(group="hydra/sweeper/sampler", name=_name, node=_node, provider="lad_optuna_sweeper")
