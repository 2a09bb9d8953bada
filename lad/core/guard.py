"""A user mistake ends a command with one ``error:`` line and exit status 2, never a traceback.

:func:`guarded` runs a command's body: a :class:`lad.core.errors.LADError`, a config value left as
``???``, an unresolvable interpolation or an OS error with a plain cause (disk full, read-only,
permission) becomes one line; SIGINT / SIGTERM end with one line and status 128 + the signal. The
entry points (``lad.run.cli``), ``python -m lad.deploy``, ``lad.search.pareto`` and the scripts under
``sweeps/`` and ``benchmarks/`` share it.
"""

from __future__ import annotations

import logging
import os
import sys

from omegaconf import DictConfig
from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

from lad.core.errors import LADError


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
        exit_interrupted(exc)
    except (*USER_ERRORS, OSError) as exc:
        if not is_user_error(exc):
            raise
        if in_sweep or os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        logging.getLogger("lad").debug("user error", exc_info=True)
        print(f"error: {_one_line(exc)}", file=sys.stderr, flush=True)
        sys.exit(2)


def exit_interrupted(exc: KeyboardInterrupt) -> None:
    """The end of an interrupted command: one line and exit status 128 + the signal."""
    from lad.core import signals

    print(f"error: {signals.message(exc)}", file=sys.stderr, flush=True)
    sys.exit(128 + signals.signum_of(exc))


USER_ERRORS = (LADError, MissingMandatoryValue, InterpolationResolutionError)


def is_user_error(exc: BaseException | None) -> bool:
    """A mistake in the user's input or environment (one line, no traceback), not a bug."""
    return isinstance(exc, USER_ERRORS) or isinstance(exc, OSError) and _os_error_line(exc) is not None


def _os_error_line(exc: OSError) -> str | None:
    from lad.core.preflight import describe_os_error

    return describe_os_error(exc)


def _one_line(exc: BaseException) -> str:
    """First line of an error; a config value left as ``???`` gets a hint on how to set it."""
    if isinstance(exc, MissingMandatoryValue) and getattr(exc, "full_key", None):
        key = exc.full_key
        return f"{key} is required here but not set: pass {key}=<value> on the command line"
    if isinstance(exc, OSError) and _os_error_line(exc):
        return _os_error_line(exc)
    from lad.core.secrets import mask

    message = mask(str(exc).strip())
    return message.splitlines()[0] if message else type(exc).__name__
