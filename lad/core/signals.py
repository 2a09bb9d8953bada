"""SIGINT / SIGTERM end a command with one line, a resumable run directory and no temporary folders.

* :func:`install` makes both signals raise :class:`Interrupted` (a ``KeyboardInterrupt`` that knows
  its signal) in the main thread, so every ``finally`` / ``except BaseException`` on the way out runs:
  the MLflow run ends ``KILLED``, an ``overwrite=true`` puts the previous run back, and the
  temporary folders of ``atomic_dir`` / ``save_checkpoint`` are removed. A checkpoint being written
  when the signal comes is finished first (``lad.run.checkpoint`` writes inside :func:`deferred`),
  and ``lad.run.checkpoint.resume_hint`` says what the interrupted run directory holds.
* :func:`message` is the one line the entry point prints (``lad.core.guard.guarded``); the exit status is
  128 + the signal number, as a shell reports a command killed by that signal.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from typing import Iterator


class Interrupted(KeyboardInterrupt):
    """The command was stopped by SIGINT (Ctrl-C) or SIGTERM (``kill``, a scheduler)."""

    def __init__(self, signum: int = signal.SIGINT, hint: str = "") -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = int(signum)
        self.hint = hint


def _raise(signum, frame) -> None:
    raise Interrupted(signum)


def install() -> None:
    """SIGINT and SIGTERM raise :class:`Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold SIGINT / SIGTERM until the block ends, then act on the first one as it would have.

    Works at the Python level (the handlers are swapped), so it holds in a process with other threads
    too: a signal mask covers only the calling thread, and torch's threads can receive the signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda n, frame: caught.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if caught:
            handler = previous[caught[0]]
            if callable(handler):
                handler(caught[0], None)
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), caught[0])


def signum_of(exc: BaseException) -> int:
    return getattr(exc, "signum", signal.SIGINT)


def message(exc: BaseException) -> str:
    """The one line printed for an interrupted command."""
    name = signal.Signals(signum_of(exc)).name
    hint = getattr(exc, "hint", "")
    return f"interrupted by {name}" + (f"; {hint}" if hint else "")
