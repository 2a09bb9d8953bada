"""Optuna studies shared by the Hydra sweeper (``hydra/sweeper=lad_optuna``) and the in-process search.

Storage URLs, studies created or resumed with a checked direction and record, the lock that makes
several workers reach an exact study total and stale-trial failing (the training budget that names a
study and is recorded on it is ``lad.core.config.budget_label`` / ``budget_record``). Optuna is
imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import re
import signal
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from lad.core.errors import StudyError
from lad.core.locks import file_lock

if TYPE_CHECKING:
    import optuna
    from optuna.storages import RDBStorage

log = logging.getLogger(__name__)

DIRECTIONS = ("minimize", "maximize")
_SQLITE_TIMEOUT_S = 60


def one_line(exc: BaseException) -> str:
    """First non-empty line of an exception message (its type name when the message is empty)."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


# -- storage ------------------------------------------------------------------------------------

def sqlite_file(url: str) -> Path | None:
    """Database file of a file-based SQLite URL; None for other URLs and in-memory SQLite."""
    import sqlalchemy

    parsed = sqlalchemy.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return None
    db = parsed.database
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db)


def safe_url(url: str | None) -> str | None:
    """The URL with any password masked, for logs and result files."""
    if url is None:
        return None
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used for display
        return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


def _bad_storage(url: str, exc: BaseException) -> str:
    return (f"cannot open Optuna storage '{safe_url(url)}' "
            f"(expected an SQLAlchemy URL such as sqlite:///sweeps/optuna.db): {one_line(exc)}")


class AdvisoryLock:
    """A PostgreSQL session advisory lock held on its own connection: the counterpart, for workers
    on any machine sharing one PostgreSQL study, of the lock file beside a SQLite database."""

    KEY = 0x1AD0_0001  # one lock per database (trial creation is short)

    def __init__(self, url: str) -> None:
        self.url = url

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        try:
            engine = sqlalchemy.create_engine(self.url, poolclass=NullPool)
            conn = engine.connect()
        except Exception as exc:  # noqa: BLE001 - missing driver, refused login, bad host...
            raise StudyError(_bad_storage(self.url, exc)) from None
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.KEY})
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
            finally:  # closing the session releases the lock in any case
                conn.close()
                engine.dispose()


def lock_path(url: str | None) -> "Path | AdvisoryLock | None":
    """What serialises trial creation: a lock file ``<database>.lock`` beside a file-based SQLite
    database, an advisory lock for PostgreSQL, None otherwise (then concurrent workers may each
    add up to ``n_jobs`` trials beyond ``max_trials``)."""
    if url is None:
        return None
    try:
        import sqlalchemy

        if sqlalchemy.engine.make_url(url).get_backend_name() == "postgresql":
            return AdvisoryLock(url)
        db = sqlite_file(url)
    except Exception as exc:  # noqa: BLE001 - an unusable URL
        raise StudyError(_bad_storage(url, exc)) from None
    if db is not None:
        _check_sqlite_folder(url)  # before the lock file is created there
    return None if db is None else db.with_name(db.name + ".lock")


def study_lock(path: "Path | AdvisoryLock | None"):
    """``with study_lock(p):`` holds the study lock ``p`` (a no-op when ``p`` is None)."""
    if isinstance(path, AdvisoryLock):
        return path.held()
    return contextlib.nullcontext() if path is None else file_lock(path)


def _check_sqlite_folder(url: str) -> None:
    """A SQLite study needs a writable folder (the database, its journal and its lock file)."""
    from lad.core.errors import ConfigError
    from lad.core.preflight import writable

    try:
        db = sqlite_file(url)
    except Exception:  # noqa: BLE001 - an unusable URL is reported by open_storage
        return
    if db is None:
        return
    try:
        writable(db.expanduser().absolute().parent, "Optuna storage folder", "the sweep's storage URL")
    except ConfigError as exc:
        raise StudyError(str(exc)) from None


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 failed_trial_callback: Callable | None = None) -> "RDBStorage":
    """RDB storage (with Optuna's trial heartbeats when ``heartbeat_interval`` is set); creates the
    folder of a SQLite file."""
    import optuna
    from optuna.storages import RDBStorage

    _check_sqlite_folder(url)
    try:
        db = sqlite_file(url)
        engine_kwargs: dict[str, Any] | None = None
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}}
        callback: dict[str, Any] = {}
        if failed_trial_callback is not None:  # renamed in Optuna 4.9
            import inspect

            name = ("heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback"
                    in inspect.signature(RDBStorage).parameters else "failed_trial_callback")
            callback[name] = failed_trial_callback
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period, **callback)
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable URL
        raise StudyError(_bad_storage(url, exc)) from None


def directions_of(direction: Any) -> list[str]:
    """``minimize`` / ``maximize`` or a list of them (one per objective), lower-cased and checked."""
    items = list(direction) if isinstance(direction, (list, tuple)) else [direction]
    out = [str(getattr(d, "name", d)).lower() for d in items]
    if not out or any(d not in DIRECTIONS for d in out):
        raise StudyError(f"direction must be minimize, maximize or a list of them, got {direction!r}")
    return out


def open_study(storage: Any, name: str | None, directions: Sequence[str], sampler: Any = None,
               record: Mapping[str, Any] | None = None) -> "optuna.Study":
    """Create the study, or load it when it exists (resume).

    A stored study with other directions, or whose recorded attributes (``record``: teacher,
    training budget, ...) differ, is refused: resuming it would mix incomparable trials.
    """
    import optuna
    from optuna.study import StudyDirection

    study = optuna.create_study(storage=storage, study_name=name, directions=list(directions),
                                sampler=sampler, load_if_exists=True)
    wanted = [StudyDirection.MAXIMIZE if d == "maximize" else StudyDirection.MINIMIZE for d in directions]
    if list(study.directions) != wanted:
        found = ", ".join(d.name.lower() for d in study.directions)
        raise StudyError(f"study '{study.study_name}' already exists with direction {found}, "
                         f"not {', '.join(directions)}; use another study_name")
    check_record(study, record or {})
    return study


def check_record(study: "optuna.Study", record: Mapping[str, Any]) -> None:
    """Store ``record`` as study user attributes on first use; refuse a resume with other values."""
    stored = study.user_attrs
    for key, value in record.items():
        if key not in stored:
            study.set_user_attr(key, value)
        elif stored[key] != value:
            raise StudyError(f"study '{study.study_name}' was run with {key}={stored[key]!r}, not {value!r}; "
                             "resume it with the same setting or use another study_name")


# -- trials ---------------------------------------------------------------------------------------

@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (main thread, POSIX only): an interrupt cannot leave a
    trial in the storage that this process does not know about yet."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def fail_stale(study: "optuna.Study") -> None:
    """Mark RUNNING trials whose heartbeat expired (killed workers) as FAIL."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def reserve_trials(study: "optuna.Study", lock: Path | None, want: int, max_trials: int | None,
                   create: Callable[[int], Any]) -> list:
    """Create up to ``want`` trials, and none beyond a study total of ``max_trials`` (None: no total).

    Stale trials are failed first; counting and creating happen under ``lock`` so that workers
    sharing a SQLite study never exceed ``max_trials``. ``create(number)`` gets the number the new
    trial is expected to receive.
    """
    with deferred_signals(), study_lock(lock):
        fail_stale(study)
        existing = len(study.get_trials(deepcopy=False))
        count = want if max_trials is None else min(want, max_trials - existing)
        return [create(existing + i) for i in range(max(0, count))]


def check_space(study: "optuna.Study", distributions: Mapping[str, Any], where: str = "") -> None:
    """StudyError when the stored study was searched over another space than ``distributions``.

    Compared with the newest stored trial that has parameters: the same names, and for each the
    same kind, range, step, log scale or choices. Checked before any trial is created, so a
    mismatch leaves no RUNNING trial behind.
    """
    stored = next((t.distributions for t in reversed(study.get_trials(deepcopy=False)) if t.distributions), None)
    if not stored:
        return
    problems = []
    for name in sorted(set(stored) | set(distributions)):
        old, new = stored.get(name), distributions.get(name)
        if old is None or new is None:
            problems.append(f"{name}: {'not searched' if old is None else _describe(old)} -> "
                            f"{'not searched' if new is None else _describe(new)}")
        elif old != new:
            problems.append(f"{name}: {_describe(old)} -> {_describe(new)}")
    if problems:
        more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
        raise StudyError(
            f"study '{study.study_name}'{where} was searched over another space ({'; '.join(problems[:2])}{more}); "
            "use the stored ranges, or a new hydra.sweeper.study_name for the new space")


def _describe(dist: Any) -> str:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if isinstance(dist, CategoricalDistribution):
        return f"choice{tuple(dist.choices)}"
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        kind = "int" if isinstance(dist, IntDistribution) else "float"
        extra = ", log" if dist.log else (f", step={dist.step}" if dist.step not in (None, 1) else "")
        return f"{kind}[{dist.low}, {dist.high}{extra}]"
    return type(dist).__name__


def heartbeat_enabled(storage: Any) -> bool:
    """True for an RDB storage created with a heartbeat interval."""
    from optuna.storages import RDBStorage

    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def record_heartbeats(storage: Any, trial_ids: Sequence[int]) -> None:
    """Record a heartbeat now for each trial (no-op for storages without heartbeats)."""
    if heartbeat_enabled(storage):
        for trial_id in trial_ids:
            storage.record_heartbeat(trial_id)


def trial_durations(study: "optuna.Study") -> list[float]:
    """Seconds each finished trial of the study took (for estimates)."""
    return [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials(deepcopy=False)
            if t.datetime_complete is not None and t.datetime_start is not None]


def format_seconds(seconds: float) -> str:
    """``1 h 05 min``, ``4 min 10 s`` or ``12 s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    if seconds >= 60:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds} s"
