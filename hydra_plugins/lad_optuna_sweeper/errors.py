"""User-facing errors raised by the LAD Optuna sweeper."""

from hydra.errors import CompactHydraException


class SweeperError(CompactHydraException, ValueError):
    """Bad sweeper configuration or study state; the message is one line.

    Being a ``CompactHydraException``, Hydra prints only the message (no stack
    trace) and exits with status 1.
    """
