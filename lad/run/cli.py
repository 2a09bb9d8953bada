"""Glue between Hydra entry points and the library: one clear error line instead of a traceback."""

from __future__ import annotations

import os
import sys

from omegaconf import DictConfig

from lad.core.config import register_resolvers, setup_environment, task_overrides
from lad.core.guard import guarded
from lad.tracking.parents import OPTUNA_SWEEPERS

register_resolvers()
setup_environment()


def _hydra_context() -> tuple[list[str], str | None, int | None]:
    """Task overrides of this job, the sweep directory in a multirun, the Optuna trial number."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        overrides = task_overrides(hc)
        sweep_dir = hc.sweep.dir if hc.mode == RunMode.MULTIRUN else None
        target = str(hc.sweeper.get("_target_", "")) if sweep_dir else ""
        trial = int(hc.job.num) if target.endswith(OPTUNA_SWEEPERS) else None
        return overrides, sweep_dir, trial
    except (ValueError, ImportError):
        return [], None, None


def run_entry(cfg: DictConfig) -> float | list[float]:
    """Run ``lad.run.pipeline.run`` for a Hydra job (errors handled by ``guarded``); the return value is
    what ``objectives`` names (``lad.run.objectives``): the best dev score, or a list for a
    multi-objective sweep."""
    overrides, sweep_dir, trial = _hydra_context()
    from lad.core import signals

    signals.install()  # SIGINT / SIGTERM unwind (the MLflow run ends KILLED) and end with one line
    protect_secrets(cfg, overrides)

    def job(cfg: DictConfig) -> float | list[float]:
        from lad.run.objectives import check_sweeper, job_value
        from lad.run.pipeline import run
        from lad.run.rundir import target_dir

        try:
            check_sweeper(cfg)  # one line per trial, before any work, when the directions do not fit
            score = run(cfg, overrides=overrides, sweep_dir=sweep_dir, job_files=True, trial=trial)
        except BaseException:
            _drop_empty_run_dir()
            raise
        return job_value(cfg, score, target_dir(cfg))

    return guarded(job, cfg, in_sweep=sweep_dir is not None)


def protect_command_line(argv: list[str] | None = None) -> None:
    """Mask the passwords of the command line and the environment from the process's first output.

    Called by the entry points before Hydra parses anything: ``--cfg job``, ``--info config`` and
    Hydra's own error messages print the configuration (URIs included) before the app runs.
    """
    from lad.core.secrets import guard_streams, remember

    remember(list(sys.argv[1:] if argv is None else argv))
    remember([value for value in os.environ.values() if "://" in value])  # MLFLOW_TRACKING_URI, ...
    guard_streams()


def main_guard(main) -> None:
    """Call an entry point's ``@hydra.main`` function. A SIGINT / SIGTERM that ends a multirun (the
    sweeper re-raises it after marking its running trials FAIL) prints one line and exits with 128 + the
    signal, as a single run does (``lad.core.guard``), instead of Python's traceback; Hydra itself handles
    only ``Exception``. ``HYDRA_FULL_ERROR=1`` keeps the traceback."""
    try:
        main()
    except KeyboardInterrupt as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from lad.core.guard import exit_interrupted

        exit_interrupted(exc)


def protect_secrets(cfg, overrides: list[str] | tuple = ()) -> None:
    """Learn the passwords in this job's config and mask them in all console and log output."""
    from lad.core.secrets import guard_streams, install_log_filter, remember

    try:
        remember(cfg)
    except Exception:  # noqa: BLE001 - an unresolvable value is reported by the run itself
        pass
    remember(list(overrides))
    guard_streams()
    install_log_filter()


def _drop_empty_run_dir() -> None:
    """Hydra creates the run directory before the app runs: a refused command removes it if empty."""
    try:
        from hydra.core.hydra_config import HydraConfig

        out = HydraConfig.get().runtime.output_dir
        os.rmdir(out)  # only succeeds when empty
    except (ValueError, OSError, ImportError):
        pass
