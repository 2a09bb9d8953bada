"""Sweeper-only study helpers: heartbeats of jobs run by a launcher, and the sampler."""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from hydra.utils import get_class, instantiate

from lad.search.studies import heartbeat_enabled, one_line, record_heartbeats

from .errors import SweeperError

log = logging.getLogger(__name__)


@contextmanager
def heartbeat(storage: Any, trial_ids: Sequence[int], interval: float) -> Iterator[None]:
    """Keep ``trial_ids`` alive in the storage while the block runs (the launcher runs the jobs, so
    Optuna's own ``optimize`` heartbeat does not apply)."""
    if not heartbeat_enabled(storage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        # signals must reach the main thread: one delivered here would not interrupt a job there
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        while not stop.wait(interval):
            try:
                record_heartbeats(storage, trial_ids)
            except Exception as exc:  # noqa: BLE001 - a missed beat is retried next time
                log.warning("Optuna heartbeat failed: %s", one_line(exc))

    thread = threading.Thread(target=beat, name="lad-optuna-heartbeat", daemon=True)
    if hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread():
        # start the thread with the signals already blocked (it inherits the mask)
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


def is_grid(sampler_cfg: dict[str, Any]) -> bool:
    """True when the sampler config builds Optuna's GridSampler."""
    import optuna

    try:
        return get_class(str(sampler_cfg.get("_target_"))) is optuna.samplers.GridSampler
    except Exception:  # noqa: BLE001 - reported when the sampler is built
        return False


def sampler_factory(sampler_cfg: dict[str, Any], grid: Callable[[], dict] | None) -> Callable[[int], Any]:
    """``offset -> sampler``: seeded with ``seed + offset`` when ``seed`` is set; a grid sampler gets
    the search space's values unless its config has its own ``search_space``."""
    cfg = dict(sampler_cfg)
    seed = cfg.pop("seed", None)
    if "_target_" not in cfg:
        raise SweeperError("hydra.sweeper.sampler needs a _target_ (or pick hydra/sweeper/sampler=tpe|random|...)")
    grid_space = cfg.pop("search_space", None) if grid is not None else None

    def build(offset: int) -> Any:
        kwargs: dict[str, Any] = {}
        if seed is not None:
            kwargs["seed"] = int(seed) + offset
        if grid is not None:
            kwargs["search_space"] = grid_space if grid_space is not None else grid()
        try:
            return instantiate(cfg, **kwargs)
        except Exception as exc:  # noqa: BLE001 - a bad sampler config is a user mistake
            raise SweeperError(f"cannot build the sampler {cfg.get('_target_')}: {one_line(exc)}") from None

    return build
