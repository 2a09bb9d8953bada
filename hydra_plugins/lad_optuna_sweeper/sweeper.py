"""Hydra Sweeper plugin class (kept free of Optuna imports; see ``_impl``)."""

from __future__ import annotations

from typing import Any, List, Optional

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf


class LadOptunaSweeper(Sweeper):
    """Optuna (>= 4) ask/tell sweeper with resumable, shareable RDB studies."""

    def __init__(
        self,
        sampler: Optional[Any] = None,
        direction: str = "maximize",
        storage: Optional[str] = None,
        study_name: Optional[str] = None,
        n_trials: int = 20,
        n_jobs: int = 1,
        heartbeat_interval: int = 60,
        grace_period: Optional[int] = None,
        params: Optional[Any] = None,
    ) -> None:
        if isinstance(sampler, DictConfig):
            sampler = OmegaConf.to_container(sampler, resolve=True)
        self.sampler: Optional[dict[str, Any]] = None if sampler is None else dict(sampler)
        self.direction = str(direction).lower()
        self.storage = storage
        self.study_name = study_name
        self.n_trials = int(n_trials)
        self.n_jobs = int(n_jobs)
        self.heartbeat_interval = int(heartbeat_interval)
        self.grace_period = None if grace_period is None else int(grace_period)
        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params, resolve=True)
        self.params: dict[str, Any] = dict(params or {})
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
