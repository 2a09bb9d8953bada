"""Sweep loop of the LAD Optuna sweeper: reserve trials, launch jobs, report results.

Upstream hydra-optuna-sweeper 1.3 meanings (kept in sync with the plugin README):

- ``n_trials`` is the number of trials THIS run adds (``null``: no per-run limit).
- ``direction`` is ``minimize`` (default), ``maximize`` or a list (one per objective; the job then
  returns a list of numbers).
- ``max_failure_rate``: a batch whose share of failed trials exceeds it ends the sweep with an error.
- ``custom_search_space``: ``module.function(cfg, trial)`` suggests more parameters per trial.
- The grid sampler runs at most as many trials as the grid has points.

Project additions:

- ``max_trials`` caps the study TOTAL (all states, earlier runs and other workers included);
  counting and creating trials happen under ``<database>.lock`` so workers sharing a SQLite study
  reach it exactly.
- Each in-flight trial gets a storage heartbeat; RUNNING trials whose heartbeat is older than
  ``grace_period`` (killed processes) are marked FAIL before new trials are created. Interrupting
  the sweep (Ctrl-C) marks its trials FAIL. If every trial a run launched failed, the run fails.
- ``study_attrs`` are recorded on the study; resuming it with other values is refused.
- ``hydra.job.num`` of a job equals its Optuna trial number.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.utils import get_method
from omegaconf import OmegaConf
from optuna.trial import Trial, TrialState

from lad.core.errors import StudyError
from lad.search import studies
from lad.search.rerun import config_overrides, key_of, merge_overrides, rerun_command
from lad.search.space import SearchSpace, legacy_distribution, parse_search_space

from . import _study
from .errors import SweeperError

if TYPE_CHECKING:
    from .sweeper import LadOptunaSweeper

log = logging.getLogger(__name__)


def check_options(sweeper: "LadOptunaSweeper") -> list[str]:
    """The study's directions; rejects option values that cannot work, with a one-line message."""
    try:
        directions = studies.directions_of(sweeper.direction)
    except StudyError as exc:
        raise SweeperError(f"hydra.sweeper.{exc}") from None
    if sweeper.n_trials is None and sweeper.max_trials is None:
        raise SweeperError("hydra.sweeper.n_trials is null: set it, or set max_trials (a study total)")
    for key in ("n_trials", "max_trials"):
        value = getattr(sweeper, key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SweeperError(f"hydra.sweeper.{key} must be an integer >= 1 (or null), got {value!r}")
    if sweeper.n_jobs < 1:
        raise SweeperError(f"hydra.sweeper.n_jobs must be >= 1, got {sweeper.n_jobs}")
    if not 0.0 <= sweeper.max_failure_rate <= 1.0:
        raise SweeperError(f"hydra.sweeper.max_failure_rate must be within [0, 1], got {sweeper.max_failure_rate}")
    if sweeper.heartbeat_interval < 1:
        raise SweeperError(f"hydra.sweeper.heartbeat_interval must be >= 1 s, got {sweeper.heartbeat_interval}")
    if sweeper.grace_period is not None and sweeper.grace_period <= sweeper.heartbeat_interval:
        raise SweeperError(
            f"hydra.sweeper.grace_period ({sweeper.grace_period} s) must exceed heartbeat_interval "
            f"({sweeper.heartbeat_interval} s), or live trials would be marked stale"
        )
    if sweeper.storage is not None and not isinstance(sweeper.storage, str):
        raise SweeperError(f"hydra.sweeper.storage must be a URL string or null, got {sweeper.storage!r}")
    return directions


def consecutive_runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Split positions of ``numbers`` into [start, end) runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(numbers) + 1):
        if i == len(numbers) or numbers[i] != numbers[i - 1] + 1:
            runs.append((start, i))
            start = i
    return runs


def values_of(result: JobReturn, objectives: int) -> tuple[list[float] | None, str | None, BaseException | None]:
    """(objective values, None, None) for a usable result, else (None, error text, job exception)."""
    if result.status != JobStatus.COMPLETED:
        try:
            result.return_value  # re-raises the job's exception
        except Exception as exc:  # noqa: BLE001 - any job error marks the trial FAIL
            return None, f"{type(exc).__name__}: {studies.one_line(exc)}", exc
        return None, "job did not complete", None
    value = result.return_value
    raw = [value] if objectives == 1 else value
    try:
        numbers = [float(v) for v in raw]
    except (TypeError, ValueError):
        wanted = "a number" if objectives == 1 else f"a list of {objectives} numbers"
        return None, f"job returned {value!r}; the objective must be {wanted}", None
    if len(numbers) != objectives:
        return None, f"job returned {len(numbers)} values for {objectives} objectives", None
    if any(math.isnan(n) for n in numbers):
        return None, "job returned NaN", None
    return numbers, None, None


def record_output_dir(trial: Trial, result: JobReturn) -> None:
    """The job's run directory as the trial's user attribute ``output_dir`` (``lad.search.pareto`` exports
    a picked trial's model from there)."""
    out = OmegaConf.select(result.hydra_cfg, "hydra.runtime.output_dir") if result.hydra_cfg else None
    if out:
        try:
            trial.set_user_attr("output_dir", str(out))
        except Exception:  # noqa: BLE001 - the trial may already be finished elsewhere
            pass


def build_space(sweeper: "LadOptunaSweeper", arguments: list[str]) -> SearchSpace:
    """``params`` (or upstream's deprecated ``search_space``) plus command-line sweeps."""
    assert sweeper.hydra_context is not None
    parser = OverridesParser.create(config_loader=sweeper.hydra_context.config_loader)
    space = parse_search_space(sweeper.params, arguments, parser)
    if sweeper.search_space and sweeper.params:
        log.warning("hydra.sweeper.params and search_space are both set: search_space is ignored (as upstream)")
    elif sweeper.search_space:
        for name, spec in sweeper.search_space.items():
            if name not in space.distributions and not any(f.split("=", 1)[0].lstrip("+") == name for f in space.fixed):
                dist = legacy_distribution(name, spec)
                space.distributions[name], space.keys[name] = dist, name
                if hasattr(dist, "choices"):
                    space.choice_text[name] = [str(c) for c in dist.choices]
    return space


class _Sweep:
    """State of one sweep run (one process)."""

    def __init__(self, sweeper: "LadOptunaSweeper", arguments: list[str]) -> None:
        assert sweeper.config is not None and sweeper.hydra_context is not None
        self.directions = check_options(sweeper)
        self.sweeper = sweeper
        self.space = build_space(sweeper, arguments)
        self.custom = None
        if sweeper.custom_search_space:
            try:
                self.custom = get_method(sweeper.custom_search_space)
            except Exception as exc:  # noqa: BLE001 - a wrong dotted path is a user mistake
                raise SweeperError(f"hydra.sweeper.custom_search_space: {studies.one_line(exc)}") from None
        sampler_cfg = dict(sweeper.sampler or {"_target_": "optuna.samplers.TPESampler"})
        self.seed = sampler_cfg.get("seed")
        self.sampler_text = str(sampler_cfg.get("_target_"))
        grid = self.space.grid if _study.is_grid(sampler_cfg) else None
        self.run_limit = sweeper.n_trials
        if grid is not None:  # as upstream: no more trials than grid points
            size = math.prod(len(v) for v in (sampler_cfg.get("search_space") or grid()).values())
            self.run_limit = size if self.run_limit is None else min(self.run_limit, size)
        self.make_sampler = _study.sampler_factory(sampler_cfg, grid)
        self.make_sampler(0)  # a bad sampler config fails before the study is touched
        self.sampler_ready = False
        self.pending: dict[int, Trial] = {}
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.launched = self.completed = 0
        self.first_error: str | None = None
        self.lock = studies.lock_path(sweeper.storage)
        with studies.study_lock(self.lock):  # concurrent workers must not create the schema twice
            self.storage = (
                None
                if sweeper.storage is None
                else studies.open_storage(sweeper.storage, sweeper.heartbeat_interval, sweeper.grace_period)
            )
            self.study = studies.open_study(self.storage, sweeper.study_name, self.directions, None,
                                            sweeper.study_attrs)
        self.study_name = self.study.study_name
        where = "" if sweeper.storage is None else f" in {studies.safe_url(sweeper.storage)}"
        try:  # a stored study over another space: one error, before any trial exists
            studies.check_space(self.study, self.space.distributions, where)
        except StudyError as exc:
            raise SweeperError(str(exc)) from None

    # -- trial bookkeeping -------------------------------------------------
    def reserve(self) -> list[Trial]:
        """The next batch of trials (empty when this run's n_trials or the study's max_trials is reached)."""
        want = self.sweeper.n_jobs
        if self.run_limit is not None:
            want = min(want, self.run_limit - self.launched)
        if want <= 0:
            return []
        return studies.reserve_trials(self.study, self.lock, want, self.sweeper.max_trials, self._create)

    def _create(self, number: int) -> Trial:
        if not self.sampler_ready:  # seed + number of this process's first trial
            self.study.sampler = self.make_sampler(number)
            self.sampler_ready = True
        with warnings.catch_warnings():  # Optuna warns that heartbeats are meant for optimize()
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = self.study.ask(fixed_distributions=self.space.distributions)
        # Trial has no public id accessor; _trial_id is stable across Optuna 2-4.
        studies.record_heartbeats(self.storage, [trial._trial_id])
        self.pending[trial.number] = trial
        trial.set_user_attr("worker", self.worker)
        if self.custom is not None:
            self.custom(self.sweeper.config, trial)
        return trial

    def fail(self, trial: Trial, error: str) -> None:
        """Record ``trial`` as FAIL with its error text."""
        self.pending.pop(trial.number, None)
        if self.first_error is None:
            self.first_error = f"trial {trial.number}: {error}"
        try:
            from lad.core.secrets import mask

            trial.set_user_attr("error", mask(error)[:1000])
        except Exception:  # noqa: BLE001 - the trial may already be finished elsewhere
            pass
        self._tell(trial, state=TrialState.FAIL)

    def _tell(self, trial: Trial, values: list[float] | None = None, state: TrialState | None = None) -> None:
        try:
            self.study.tell(trial, values, state=state, skip_if_finished=True)
        except RuntimeError as exc:  # GridSampler calls study.stop() once its grid is covered
            if "Study.stop" not in str(exc):
                raise

    def report(self, trial: Trial, result: JobReturn) -> bool:
        """Tell Optuna the outcome of one job; False when it failed."""
        record_output_dir(trial, result)
        values, error, exc = values_of(result, len(self.directions))
        if values is None:
            error = error or "job failed"
            from lad.core.guard import is_user_error

            # a user mistake (e.g. a bad value for every trial) is its one line; a bug keeps its traceback
            log.error("Trial %d FAILED: %s", trial.number, error, exc_info=None if is_user_error(exc) else exc)
            self.fail(trial, error)
            return False
        self.pending.pop(trial.number, None)
        self._tell(trial, values)
        self.completed += 1
        log.info("Trial %d finished with value %s", trial.number, values[0] if len(values) == 1 else values)
        return True

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
        """Sweep until this run added n_trials trials or the study holds max_trials."""
        self._log_start()
        returns: list[Sequence[JobReturn]] = []
        t0 = time.monotonic()
        try:
            while True:
                trials = self.reserve()
                if not trials:
                    break
                results = self.launch(trials)
                self.launched += len(trials)
                failed = sum(not self.report(t, r) for t, r in zip(trials, results))
                returns.append(results)
                self._log_eta(t0)
                if failed / len(trials) > self.sweeper.max_failure_rate:
                    raise SweeperError(
                        f"{failed} of {len(trials)} trial(s) in a batch failed "
                        f"(max_failure_rate={self.sweeper.max_failure_rate}); first: {self.first_error}"
                    )
        except BaseException as exc:
            for trial in list(self.pending.values()):
                self.fail(trial, f"sweep aborted: {type(exc).__name__}: {studies.one_line(exc)}")
            self._finish(check=False)
            if isinstance(exc, KeyboardInterrupt) and self.sweeper.storage is not None:
                # the entry point prints this one line (lad.run.cli.main_guard), not a traceback
                exc.hint = (f"the running trial(s) of study '{self.study_name}' were marked FAIL; "
                            "run the same command to resume it")
            raise
        self._finish()
        return returns

    def _planned(self) -> int | None:
        """Trials this run will add at most (None: unknown)."""
        limits = [] if self.run_limit is None else [self.run_limit]
        if self.sweeper.max_trials is not None:
            limits.append(max(0, self.sweeper.max_trials - len(self.study.get_trials(deepcopy=False))))
        return min(limits) if limits else None

    def _log_start(self) -> None:
        sweeper = self.sweeper
        stored = len(self.study.get_trials(deepcopy=False))
        where = "in memory" if sweeper.storage is None else studies.safe_url(sweeper.storage)
        log.info(
            "Optuna study '%s' (%s, %s): %d trial(s) stored; this run adds up to %s (n_trials=%s, max_trials=%s)",
            self.study_name, where, ",".join(self.directions), stored, self._planned(),
            sweeper.n_trials, sweeper.max_trials,
        )
        log.info(
            "Sampler %s, seed %s; search space: %s",
            self.sampler_text,
            "none" if self.seed is None else f"{self.seed} + first trial number of this run",
            ", ".join(self.space.distributions) or "empty",
        )
        durations = studies.trial_durations(self.study)
        planned = self._planned()
        if durations and planned:
            mean = sum(durations) / len(durations)
            log.info("Estimate: %d trial(s) x %s (mean of %d stored) = %s in batches of %d",
                     planned, studies.format_seconds(mean), len(durations),
                     studies.format_seconds(mean * planned), sweeper.n_jobs)
        if not self.space.distributions and self.custom is None:
            log.warning("No search space: set hydra.sweeper.params or pass interval()/choice() overrides")

    def _log_eta(self, t0: float) -> None:
        elapsed = time.monotonic() - t0
        left = None if self.run_limit is None else self.run_limit - self.launched
        if self.sweeper.max_trials is not None:
            total_left = self.sweeper.max_trials - len(self.study.get_trials(deepcopy=False))
            left = total_left if left is None else min(left, total_left)
        eta = f", ETA {studies.format_seconds(elapsed / self.launched * left)}" if left and left > 0 else ""
        log.info("%d trial(s) done this run in %s%s", self.launched, studies.format_seconds(elapsed), eta)

    def _finish(self, check: bool = True) -> None:
        trials = self.study.get_trials(deepcopy=False)
        states = {s.name: sum(t.state == s for t in trials) for s in TrialState}
        summary: dict[str, Any] = {
            "name": "optuna",
            "study_name": self.study_name,
            "storage": studies.safe_url(self.sweeper.storage),
            "direction": self.directions[0] if len(self.directions) == 1 else self.directions,
            "n_trials": len(trials),
            "states": {k: v for k, v in states.items() if v},
            "launched_this_run": self.launched,
        }
        if states["COMPLETE"] and len(self.directions) == 1:
            best = self.study.best_trial
            overrides = self.rerun_overrides(best.params)
            command = rerun_command(str(self.sweeper.config.hydra.job.name), overrides)
            summary.update(best_trial=best.number, best_value=best.value, best_params=dict(best.params),
                           best_overrides=overrides, best_command=command)
            log.info("Best trial %d: value %s, params %s", best.number, best.value, best.params)
            log.info("Re-run the best trial: %s", command)
        elif states["COMPLETE"]:
            summary["solutions"] = [{"number": t.number, "params": dict(t.params), "values": list(t.values)}
                                    for t in self.study.best_trials]
            log.info("Number of Pareto solutions: %d", len(summary["solutions"]))
        assert self.sweeper.config is not None
        sweep_dir = Path(str(self.sweeper.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(OmegaConf.create(summary), sweep_dir / "optimization_results.yaml")
        if check and self.launched and not self.completed:
            raise SweeperError(f"all {self.launched} trial(s) of this sweep failed; first: {self.first_error}")


    def rerun_overrides(self, params: dict) -> list[str]:
        """Every override a trial with ``params`` ran with, self-contained (lad.search.rerun): what the
        hparams_search file sets outside ``hydra:``, the command line's fixed overrides, the values."""
        from lad.core.secrets import mask

        search_file = search_file_overrides(self.sweeper)
        trial = self.space.overrides_for(params)
        # no readable file: keep the group choice itself (it applies without -m too)
        keep = [] if search_file is not None else [o for o in trial if key_of(o) == "hparams_search"]
        return [mask(o) for o in merge_overrides(search_file or [], trial) + keep]


def search_file_overrides(sweeper: "LadOptunaSweeper") -> list[str] | None:
    """The chosen ``hparams_search`` file's own settings as overrides ([] without one; None when
    no config source holds it)."""
    name = OmegaConf.select(sweeper.config, "hydra.runtime.choices.hparams_search")
    if not name or sweeper.hydra_context is None:
        return []
    return _file_overrides(sweeper.hydra_context.config_loader.get_sources(), f"hparams_search/{name}")


def _file_overrides(sources, path: str) -> list[str] | None:
    """A config file's settings as overrides, after those of the bases its ``defaults`` list names
    (``- default`` beside it, ``- /group/file`` from the config root), as Hydra composes them."""
    for source in sources:
        if source.is_config(path):
            config = source.load_config(path).config
            out: list[str] = []
            for entry in config.get("defaults") or []:
                if isinstance(entry, str) and entry != "_self_":
                    base = entry[1:] if entry.startswith("/") else f"{path.rpartition('/')[0]}/{entry}"
                    out += _file_overrides(sources, base) or []
            return out + config_overrides(config)
    return None


def run_sweep(sweeper: "LadOptunaSweeper", arguments: list[str]) -> list[Sequence[JobReturn]]:
    """Entry point used by :class:`LadOptunaSweeper.sweep`."""
    sweep = _Sweep(sweeper, arguments)
    assert sweeper.config is not None
    sweep_dir = Path(str(sweeper.config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    from lad.core.secrets import redact  # the storage URL and every override may carry a password

    OmegaConf.save(OmegaConf.create(redact(sweeper.config)), sweep_dir / "multirun.yaml")
    return sweep.run()
