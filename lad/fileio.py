"""Whole-file writes that never leave a half-written file behind.

Every generated page, export, metrics file and submission goes through ``write_text``: the text is
written to a temporary file beside the target and moved over it with ``os.replace`` (atomic on one
filesystem), so a crash or a full disk leaves either the old file or the new one, never a mix, and
two writers racing for one path each replace it whole.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

_UMASK = os.umask(0)  # read once (setting it is the only way to read it), then put back
os.umask(_UMASK)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` (UTF-8, ``\\n`` line ends), creating its folder if needed. The file
    keeps the mode it had; a new one gets the mode ``open()`` would give it (mkstemp's is 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data) -> Path:
    """``data`` as indented JSON with sorted keys (numpy scalars written as floats)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=float))


def make_temp_dir(parent: str | os.PathLike, prefix: str) -> Path:
    """``tempfile.mkdtemp`` in ``parent`` with the mode ``mkdir`` would give (mkdtemp's is 0700), so a
    folder swapped into place (model/, gates/, a published teacher) follows the user's umask."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(tmp, 0o777 & ~_UMASK)
    return tmp


def new_file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    return 0o666 & ~_UMASK


def follow_umask(path: str | os.PathLike) -> None:
    """Give ``path`` (a file, or a folder and everything in it) the modes the user's umask gives new
    files and folders: some writers (safetensors' ``save_file``, mkstemp, mkdtemp) create 0600 / 0700."""
    path = Path(path)
    items = [path, *path.rglob("*")] if path.is_dir() else [path]
    for item in items:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~_UMASK)
