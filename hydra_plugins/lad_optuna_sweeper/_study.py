"""Optuna storage, study and cross-process coordination for the LAD sweeper."""

from __future__ import annotations

import logging
import re
import signal
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import optuna
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage
from optuna.study import StudyDirection

from .errors import SweeperError

try:  # POSIX only; without it concurrent SQLite workers may overshoot n_trials slightly
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_SQLITE_TIMEOUT_S = 60


def one_line(exc: BaseException) -> str:
    """First non-empty line of an exception message, prefixed by its type if empty."""
    for line in str(exc).splitlines():
        if line.strip():
            return line.strip()
    return type(exc).__name__


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


def safe_url(url: str) -> str:
    """The URL with any password masked, for logs and result files."""
    import sqlalchemy

    try:
        return sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only used for display
        return re.sub(r"(//[^/:@]*:)[^/@]*@", r"\1***@", url)


class AdvisoryLock:
    """A PostgreSQL session advisory lock, held on its own connection while the block runs.

    The PostgreSQL counterpart of the lock file next to a SQLite database: every worker that
    shares the database, on any machine, waits for it before counting and creating trials.
    """

    KEY = 0x1AD0_0001  # one lock per database: trial creation is short

    def __init__(self, url: str) -> None:
        self.url = url

    @contextmanager
    def held(self) -> Iterator[None]:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        try:
            engine = sqlalchemy.create_engine(self.url, poolclass=NullPool)
            conn = engine.connect()
        except Exception as exc:  # noqa: BLE001 - missing driver, refused login, bad host...
            raise SweeperError(_bad_storage(self.url, exc)) from None
        try:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.KEY})
            yield
        finally:
            try:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.KEY})
            finally:  # closing the connection releases the lock in any case
                conn.close()
                engine.dispose()


def lock_path(url: str | None) -> Path | AdvisoryLock | None:
    """Lock that serialises trial creation: a lock file next to a file-based SQLite database,
    an advisory lock for PostgreSQL, None for other storages (concurrent workers may then
    overshoot n_trials by up to n_jobs trials per extra worker)."""
    if url is None:
        return None
    try:
        import sqlalchemy

        if sqlalchemy.engine.make_url(url).get_backend_name() == "postgresql":
            return AdvisoryLock(url)
        db = sqlite_file(url)
    except Exception as exc:  # noqa: BLE001 - reported by open_storage with context
        raise SweeperError(_bad_storage(url, exc)) from None
    return None if db is None else db.with_name(db.name + ".lock")


@contextmanager
def exclusive(path: Path | AdvisoryLock | None) -> Iterator[None]:
    """Hold the lock from :func:`lock_path`: an exclusive advisory lock on a file (no-op
    when None or unsupported), or a PostgreSQL advisory lock."""
    if isinstance(path, AdvisoryLock):
        with path.held():
            yield
        return
    if path is None or fcntl is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (main thread, POSIX only).

    Used while trials are created, so an interrupt cannot leave a trial in the
    storage that this process does not know about yet.
    """
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _bad_storage(url: str, exc: BaseException) -> str:
    return (
        f"cannot open Optuna storage '{safe_url(url)}' "
        f"(expected an SQLAlchemy URL such as sqlite:///sweeps/optuna.db): {one_line(exc)}"
    )


def open_storage(url: str, heartbeat_interval: int, grace_period: int | None) -> RDBStorage:
    """RDB storage with heartbeats; creates the parent folder of a SQLite file."""
    try:
        db = sqlite_file(url)
        engine_kwargs: dict[str, Any] | None = None
        if db is not None:
            db.parent.mkdir(parents=True, exist_ok=True)
            engine_kwargs = {"connect_args": {"timeout": _SQLITE_TIMEOUT_S}}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
            )
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable URL
        raise SweeperError(_bad_storage(url, exc)) from None


def open_study(
    storage: RDBStorage | None, name: str, direction: str, sampler: BaseSampler | None
) -> optuna.Study:
    """Create the study, or load it when it already exists (resume)."""
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction=direction,
        sampler=sampler,
        load_if_exists=True,
    )
    wanted = StudyDirection.MAXIMIZE if direction == "maximize" else StudyDirection.MINIMIZE
    if list(study.directions) != [wanted]:
        found = ", ".join(d.name.lower() for d in study.directions)
        raise SweeperError(
            f"study '{name}' already exists with direction {found}, not {direction}; "
            "use another study_name"
        )
    return study


def heartbeat_enabled(storage: Any) -> bool:
    """True for an RDB storage created with a heartbeat interval."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None


def fail_stale(study: optuna.Study) -> None:
    """Mark RUNNING trials whose heartbeat expired (killed workers) as FAIL."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def ask(study: optuna.Study, distributions: dict[str, Any]) -> optuna.Trial:
    """``study.ask`` without Optuna's warning that heartbeats are meant for ``optimize``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
        return study.ask(fixed_distributions=distributions)


def reserve_trials(
    study: optuna.Study,
    lock: Path | None,
    n_trials: int,
    n_jobs: int,
    create: Callable[[int], optuna.Trial],
) -> list[optuna.Trial]:
    """Create up to ``n_jobs`` trials while the study holds fewer than ``n_trials``.

    Stale trials are failed first; counting and creating happen under ``lock`` so
    that concurrent workers never exceed ``n_trials``. ``create(number)`` gets the
    trial number the new trial is expected to receive.
    """
    with deferred_signals(), exclusive(lock):
        fail_stale(study)
        existing = len(study.get_trials(deepcopy=False))
        count = max(0, min(n_jobs, n_trials - existing))
        return [create(existing + i) for i in range(count)]


def record_heartbeats(storage: Any, trial_ids: Sequence[int]) -> None:
    """Record a heartbeat now for each trial (no-op for storages without heartbeats)."""
    if not heartbeat_enabled(storage):
        return
    for trial_id in trial_ids:
        storage.record_heartbeat(trial_id)


@contextmanager
def heartbeat(storage: Any, trial_ids: Sequence[int], interval: float) -> Iterator[None]:
    """Keep ``trial_ids`` alive in the storage while the block runs."""
    if not heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        # signals must reach the main thread: one delivered to this thread would not interrupt
        # a job sleeping or blocked in a system call there
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        while not stop.wait(interval):
            try:
                record_heartbeats(storage, trial_ids)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
                log.warning("Optuna heartbeat failed: %s", one_line(exc))

    thread = threading.Thread(target=beat, name="lad-optuna-heartbeat", daemon=True)
    if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
        # start the thread with the signals already blocked (it inherits the mask): no window
        # in which a Ctrl-C could land on it
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    else:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def sampler_factory(make: Callable[..., BaseSampler], seed: int | None) -> Callable[[int], BaseSampler]:
    """``offset -> sampler`` seeded with ``seed + offset`` (unseeded when ``seed`` is None)."""

    def build(offset: int) -> BaseSampler:
        return make() if seed is None else make(seed=int(seed) + offset)

    return build
