"""Checks on the places a run will write to, done before training rather than discovered after it.

``writable`` really creates (and removes) a temporary file: permission bits say nothing for root
or on a read-only mount. ``enough_space`` compares an estimate of the run's largest files with the
free space of the file system that will hold them.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

from lad.core.errors import ConfigError
from lad.core.secrets import mask

WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def _existing_ancestor(path: Path) -> Path:
    path = Path(path).absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def writable(path: str | os.PathLike, what: str, key: str) -> None:
    """ConfigError unless ``path`` (a directory, created later if missing) can be written."""
    target = Path(os.path.expanduser(str(path)))
    base = _existing_ancestor(target)
    if not base.is_dir():
        raise ConfigError(f"{what} {mask(target)}: {base} is a file, not a directory; set {key} to a directory")
    try:
        with tempfile.TemporaryFile(dir=base, prefix=".lad-write-test-"):
            pass
    except OSError as exc:
        raise ConfigError(
            f"{what} {mask(target)} is not writable ({exc.strerror or exc}); "
            f"set {key} to a writable directory") from None


def free_bytes(path: str | os.PathLike) -> int:
    return shutil.disk_usage(_existing_ancestor(Path(path))).free


def enough_space(path: str | os.PathLike, needed: int, what: str) -> None:
    """ConfigError when the file system of ``path`` has less than ``needed`` bytes free."""
    free = free_bytes(path)
    if needed > free:
        raise ConfigError(
            f"not enough disk space for {what} in {path}: about {needed / 1e6:.0f} MB needed, "
            f"{free / 1e6:.0f} MB free; free some space or point the output elsewhere")


def describe_os_error(exc: OSError) -> str | None:
    """One line for an OSError that is the user's environment (full disk, read-only place)."""
    if exc.errno not in WRITE_ERRNOS:
        return None
    where = exc.filename or ""
    return f"cannot write {mask(where)}: {exc.strerror}" if where else f"cannot write: {exc.strerror}"
