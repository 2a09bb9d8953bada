"""One exclusive file lock for the processes that share a directory or a database (``filelock``)."""

from __future__ import annotations

from pathlib import Path

from filelock import FileLock


def file_lock(path: str | Path, timeout: float = -1) -> FileLock:
    """An exclusive lock on ``path`` (its folder is created), used as ``with file_lock(p): ...``.

    ``filelock`` holds an OS lock (``flock`` on POSIX, ``msvcrt`` on Windows) that dies with the
    process, so a killed holder never leaves a stale lock. Waits forever unless ``timeout`` >= 0.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=timeout)
