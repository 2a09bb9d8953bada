"""User-facing errors raised by the LAD Optuna sweeper."""

from lad.core.errors import StudyError


class SweeperError(StudyError):
    """Bad sweeper configuration or study state; the message is one line.

    Being a ``CompactHydraException`` (through ``lad.core.errors.StudyError``), Hydra prints only the
    message (no stack trace) and exits with status 1.
    """
