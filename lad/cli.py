"""Glue between Hydra entry points and the library: one clear error line instead of a traceback."""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from lad.config import register_resolvers, setup_environment, task_overrides
from lad.errors import LADError

register_resolvers()
setup_environment()


OPTUNA_SWEEPERS = ("OptunaSweeper",)  # class names whose jobs are Optuna trials (job num = trial number)


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
    """Run ``lad.pipeline.run`` for a Hydra job (errors handled by ``guarded``); the return value is
    what ``objectives`` names (``lad.objectives``): the best dev score, or a list for a
    multi-objective sweep."""
    overrides, sweep_dir, trial = _hydra_context()
    from lad import signals

    signals.install()  # SIGINT / SIGTERM unwind (the MLflow run ends KILLED) and end with one line
    protect_secrets(cfg, overrides)

    def job(cfg: DictConfig) -> float | list[float]:
        from lad.objectives import check_sweeper, job_value
        from lad.pipeline import run, target_dir

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
    from lad.secrets import guard_streams, remember

    remember(list(sys.argv[1:] if argv is None else argv))
    remember([value for value in os.environ.values() if "://" in value])  # MLFLOW_TRACKING_URI, ...
    guard_streams()


def protect_secrets(cfg, overrides: list[str] | tuple = ()) -> None:
    """Learn the passwords in this job's config and mask them in all console and log output."""
    from lad.secrets import guard_streams, install_log_filter, remember

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


def guarded(fn, cfg: DictConfig, in_sweep: bool = False):
    """Call ``fn(cfg)``; a user mistake prints ``error: ...`` and exits with status 2.

    A config value left as ``???`` or an interpolation that cannot be resolved counts as a user
    mistake too. In a multirun the error is re-raised instead, so the sweeper records the job as
    failed and moves on. ``HYDRA_FULL_ERROR=1`` shows the full traceback.
    """
    try:
        return fn(cfg)
    except KeyboardInterrupt as exc:
        if in_sweep or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        from lad import signals

        print(f"error: {signals.message(exc)}", file=sys.stderr, flush=True)
        sys.exit(128 + signals.signum_of(exc))
    except (*USER_ERRORS, OSError) as exc:
        if not is_user_error(exc):
            raise
        if in_sweep or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        logging.getLogger("lad").debug("user error", exc_info=True)
        print(f"error: {_one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)


USER_ERRORS = (LADError, MissingMandatoryValue, InterpolationResolutionError)


def is_user_error(exc: BaseException | None) -> bool:
    """A mistake in the user's input or environment (one line, no traceback), not a bug."""
    return isinstance(exc, USER_ERRORS) or isinstance(exc, OSError) and _os_error_line(exc) is not None


def _os_error_line(exc: OSError) -> str | None:
    from lad.preflight import describe_os_error

    return describe_os_error(exc)


def _one_line(exc: BaseException) -> str:
    """First line of an error; a config value left as ``???`` gets a hint on how to set it."""
    if isinstance(exc, MissingMandatoryValue) and getattr(exc, "full_key", None):
        key = exc.full_key
        return f"{key} is required here but not set: pass {key}=<value> on the command line"
    if isinstance(exc, OSError) and _os_error_line(exc):
        return _os_error_line(exc)
    from lad.secrets import mask

    message = mask(str(exc).strip())
    return message.splitlines()[0] if message else type(exc).__name__
