"""Hydra Sweeper plugin class (kept free of Optuna imports; see ``_impl``)."""

from __future__ import annotations

from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, ListConfig, OmegaConf


def _plain(value: Any) -> Any:
    """A DictConfig/ListConfig as Python containers (resolved), anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


class LadOptunaSweeper(Sweeper):
    """Optuna (>= 4) ask/tell sweeper with upstream hydra-optuna-sweeper 1.3's options, resumable
    and shareable RDB studies, heartbeats and exact study totals (``max_trials``)."""

    def __init__(
        self,
        sampler: Optional[Any] = None,
        direction: Any = "minimize",
        storage: Optional[str] = None,
        study_name: Optional[str] = None,
        n_trials: Optional[int] = 20,
        n_jobs: int = 2,
        max_failure_rate: float = 0.0,
        search_space: Optional[Any] = None,
        params: Optional[Any] = None,
        custom_search_space: Optional[str] = None,
        max_trials: Optional[int] = None,
        heartbeat_interval: int = 60,
        grace_period: Optional[int] = None,
        study_attrs: Optional[Any] = None,
    ) -> None:
        sampler = _plain(sampler)
        self.sampler: Optional[dict[str, Any]] = None if sampler is None else dict(sampler)
        self.direction = _plain(direction)
        self.storage = storage
        self.study_name = study_name
        self.n_trials = None if n_trials is None else int(n_trials)
        self.n_jobs = int(n_jobs)
        self.max_failure_rate = float(max_failure_rate)
        self.search_space: dict[str, Any] = dict(_plain(search_space) or {})
        self.params: dict[str, Any] = dict(_plain(params) or {})
        self.custom_search_space = custom_search_space
        self.max_trials = None if max_trials is None else int(max_trials)
        self.heartbeat_interval = int(heartbeat_interval)
        self.grace_period = None if grace_period is None else int(grace_period)
        self.study_attrs: dict[str, Any] = dict(_plain(study_attrs) or {})
        self.hydra_context: Optional[HydraContext] = None
        self.config: Optional[DictConfig] = None
        self.launcher = None

    def setup(
        self,
        *,
        hydra_context: HydraContext,
        task_function: TaskFunction,
        config: DictConfig,
    ) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context = hydra_context
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: List[str]) -> Any:
        from ._impl import run_sweep

        return run_sweep(self, list(arguments))
