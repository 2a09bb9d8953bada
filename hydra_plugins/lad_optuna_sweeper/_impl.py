"""Sweep loop of the LAD Optuna sweeper: reserve trials, launch jobs, report results.

Semantics (kept in sync with the plugin README):

- ``n_trials`` is the TOTAL number of trials the study is driven to, counting
  every trial already stored (COMPLETE, FAIL, PRUNED, and RUNNING trials of live
  workers). A run with ``n_trials=5`` on a study holding 3 trials adds 2; on a
  study holding 5 or more it adds none.
- Trial creation is serialised with a lock file next to a SQLite database, so
  several workers sharing one SQLite study reach exactly ``n_trials`` trials.
- A job that raises, or returns a non-number/NaN, is told as FAIL (the error is
  kept in the trial's ``error`` user attribute) and the sweep goes on. If every
  trial launched by this run fails, the run ends with a SweeperError.
- Each in-flight trial gets a storage heartbeat; RUNNING trials whose heartbeat
  is older than ``grace_period`` (killed processes) are marked FAIL before new
  trials are created. Interrupting the sweep (Ctrl-C) marks its trials FAIL.
- ``hydra.job.num`` of a job equals its Optuna trial number.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import instantiate
from omegaconf import OmegaConf
from optuna.trial import Trial, TrialState

from . import _study
from ._space import SearchSpace, parse_search_space
from .errors import SweeperError

if TYPE_CHECKING:
    from .sweeper import LadOptunaSweeper

log = logging.getLogger(__name__)

_DIRECTIONS = ("maximize", "minimize")


def check_options(sweeper: "LadOptunaSweeper") -> None:
    """Reject option values that cannot work, with a one-line message."""
    if sweeper.direction not in _DIRECTIONS:
        raise SweeperError(f"hydra.sweeper.direction must be one of {_DIRECTIONS}, got {sweeper.direction!r}")
    if isinstance(sweeper.n_trials, bool) or not isinstance(sweeper.n_trials, int) or sweeper.n_trials < 1:
        raise SweeperError(f"hydra.sweeper.n_trials must be an integer >= 1, got {sweeper.n_trials!r}")
    if sweeper.n_jobs < 1:
        raise SweeperError(f"hydra.sweeper.n_jobs must be >= 1, got {sweeper.n_jobs}")
    if sweeper.heartbeat_interval < 1:
        raise SweeperError(f"hydra.sweeper.heartbeat_interval must be >= 1 s, got {sweeper.heartbeat_interval}")
    if sweeper.grace_period is not None and sweeper.grace_period <= sweeper.heartbeat_interval:
        raise SweeperError(
            f"hydra.sweeper.grace_period ({sweeper.grace_period} s) must exceed heartbeat_interval "
            f"({sweeper.heartbeat_interval} s), or live trials would be marked stale"
        )
    if sweeper.storage is not None and not isinstance(sweeper.storage, str):
        raise SweeperError(f"hydra.sweeper.storage must be a URL string or null, got {sweeper.storage!r}")


def consecutive_runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Split positions of ``numbers`` into [start, end) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs


def _value_of(result: JobReturn) -> tuple[float | None, str | None, BaseException | None]:
    """(objective, None, None) for a usable result, else (None, error text, job exception)."""
    if result.status != JobStatus.COMPLETED:
        try:
            result.return_value  # re-raises the job's exception
        except Exception as exc:  # noqa: BLE001 - any job error marks the trial FAIL
            return None, f"{type(exc).__name__}: {_study.one_line(exc)}", exc
        return None, "job did not complete", None
    value = result.return_value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, f"job returned {value!r}; the objective must be a number", None
    if math.isnan(number):
        return None, "job returned NaN", None
    return number, None, None


class _Sweep:
    """State of one sweep run (one process)."""

    def __init__(self, sweeper: "LadOptunaSweeper", arguments: list[str]) -> None:
        assert sweeper.config is not None and sweeper.hydra_context is not None
        check_options(sweeper)
        self.sweeper = sweeper
        parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
        self.space: SearchSpace = parse_search_space(sweeper.params, arguments, parser)
        self.study_name = sweeper.study_name or str(sweeper.config.hydra.job.name)
        self.lock = _study.lock_path(sweeper.storage)
        sampler_cfg = dict(sweeper.sampler or {"_target_": "optuna.samplers.TPESampler"})
        self.seed = sampler_cfg.pop("seed", None)
        self.sampler_text = str(sampler_cfg.get("_target_"))
        self.make_sampler = _study.sampler_factory(partial(instantiate, sampler_cfg), self.seed)
        self.sampler_ready = False
        self.pending: dict[int, Trial] = {}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.launched = self.completed = 0
        self.first_error: str | None = None
        with _study.exclusive(self.lock):
            self.storage = (
                None
                if sweeper.storage is None
                else _study.open_storage(sweeper.storage, sweeper.heartbeat_interval, sweeper.grace_period)
            )
            self.study = _study.open_study(self.storage, self.study_name, sweeper.direction, None)
            where = "" if sweeper.storage is None else f" in {_study.safe_url(sweeper.storage)}"
            _study.check_space(self.study, self.space.distributions, where)

    # -- trial bookkeeping -------------------------------------------------
    def reserve(self) -> list[Trial]:
        """Create the next batch of trials (empty when the study reached n_trials)."""
        sweeper = self.sweeper
        return _study.reserve_trials(self.study, self.lock, sweeper.n_trials, sweeper.n_jobs, self._create)

    def _create(self, number: int) -> Trial:
        if not self.sampler_ready:  # seed + number of this process's first trial
            self.study.sampler = self.make_sampler(number)
            self.sampler_ready = True
        trial = _study.ask(self.study, self.space.distributions)
        # Trial has no public id accessor; _trial_id is stable across Optuna 2-4.
        _study.record_heartbeats(self.storage, [trial._trial_id])
        self.pending[trial.number] = trial
        trial.set_user_attr("worker", self.worker)
        return trial

    def fail(self, trial: Trial, error: str) -> None:
        """Record ``trial`` as FAIL with its error text."""
        self.pending.pop(trial.number, None)
        if self.first_error is None:
            self.first_error = f"trial {trial.number}: {error}"
        try:
            from lad.secrets import mask

            trial.set_user_attr("error", mask(error)[:1000])
        except Exception:  # noqa: BLE001 - the trial may already be finished elsewhere
            pass
        self.study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)

    def report(self, trial: Trial, result: JobReturn) -> None:
        """Tell Optuna the outcome of one job."""
        value, error, exc = _value_of(result)
        if value is None:
            error = error or "job failed"
            log.error("Trial %d FAILED: %s", trial.number, error, exc_info=exc)
            self.fail(trial, error)
            return
        self.pending.pop(trial.number, None)
        self.study.tell(trial, value, skip_if_finished=True)
        self.completed += 1
        log.info("Trial %d finished with value %s", trial.number, value)

    # -- main loop -----------------------------------------------------------
    def launch(self, trials: list[Trial]) -> list[JobReturn]:
        """Run one batch; ``hydra.job.num`` equals the trial number."""
        sweeper = self.sweeper
        assert sweeper.launcher is not None
        batch = [self.space.overrides_for(t.params) for t in trials]
        sweeper.validate_batch_is_legal(batch)
        numbers = [t.number for t in trials]
        results: list[JobReturn] = []
        interval = float(sweeper.heartbeat_interval)
        with _study.heartbeat(self.storage, [t._trial_id for t in trials], interval):
            for start, end in consecutive_runs(numbers):
                results.extend(sweeper.launcher.launch(batch[start:end], initial_job_idx=numbers[start]))
        return results

    def run(self) -> list[Sequence[JobReturn]]:
        """Sweep until the study holds n_trials trials."""
        self._log_start()
        returns: list[Sequence[JobReturn]] = []
        try:
            while True:
                trials = self.reserve()
                if not trials:
                    break
                results = self.launch(trials)
                self.launched += len(trials)
                for trial, result in zip(trials, results):
                    self.report(trial, result)
                returns.append(results)
        except BaseException as exc:
            for trial in list(self.pending.values()):
                self.fail(trial, f"sweep aborted: {type(exc).__name__}: {_study.one_line(exc)}")
            raise
        self._finish()
        return returns

    def _log_start(self) -> None:
        sweeper = self.sweeper
        existing = len(self.study.get_trials(deepcopy=False))
        where = "in memory" if sweeper.storage is None else _study.safe_url(sweeper.storage)
        log.info(
            "Optuna study '%s' (%s, %s): %d trial(s) stored, target n_trials=%d",
            self.study_name, where, sweeper.direction, existing, sweeper.n_trials,
        )
        log.info(
            "Sampler %s, seed %s; search space: %s",
            self.sampler_text,
            "none" if self.seed is None else f"{self.seed} + first trial number of this run",
            ", ".join(self.space.distributions) or "empty",
        )
        if not self.space.distributions:
            log.warning("No search space: set hydra.sweeper.params or pass interval()/choice() overrides")

    def _finish(self) -> None:
        trials = self.study.get_trials(deepcopy=False)
        states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
        summary: dict[str, Any] = {
            "study_name": self.study_name,
            "storage": None if self.sweeper.storage is None else _study.safe_url(self.sweeper.storage),
            "direction": self.sweeper.direction,
            "n_trials": len(trials),
            "states": {k: v for k, v in states.items() if v},
            "launched_this_run": self.launched,
        }
        if states["COMPLETE"]:
            best = self.study.best_trial
            summary.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params))
            log.info("Best trial %d: value %s, params %s", best.number, best.value, best.params)
        assert self.sweeper.config is not None
        sweep_dir = Path(str(self.sweeper.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / "optimization_results.yaml")
        if self.launched and not self.completed:
            raise SweeperError(f"all {self.launched} trial(s) of this sweep failed; first: {self.first_error}")


def run_sweep(sweeper: "LadOptunaSweeper", arguments: list[str]) -> list[Sequence[JobReturn]]:
    """Entry point used by :class:`LadOptunaSweeper.sweep`."""
    sweep = _Sweep(sweeper, arguments)
    assert sweeper.config is not None
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    from lad.secrets import redact  # the storage URL and every override may carry a password

    OmegaConf.save(OmegaConf.create(redact(sweeper.config)), sweep_dir / "multirun.yaml")
    return sweep.run()
