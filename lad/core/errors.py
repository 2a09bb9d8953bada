"""User-facing errors: each carries a one-line message printed without a traceback."""

from hydra.errors import CompactHydraException


class LADError(Exception):
    """A mistake in the user's input (config, data, paths) rather than a bug."""


class ConfigError(LADError):
    """An invalid or incompatible configuration value."""


class DataError(LADError):
    """A missing, empty or malformed data file."""


class MissingDataFile(DataError):
    """A split's data file does not exist (an optional split, such as test, may be skipped)."""


class StudyError(ConfigError, CompactHydraException):
    """A bad search space, sweeper option or Optuna study state.

    Raised by the shared study helpers (``lad.search.studies``, ``lad.search.space``): ``lad.core.guard.guarded``
    prints it as one ``error:`` line (exit status 2); inside the Hydra sweeper, Hydra prints its
    message without a stack trace (a ``CompactHydraException``).
    """
