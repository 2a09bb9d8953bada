"""Whole-file and whole-folder writes that never leave a half-written file or folder behind.

The one place LAD replaces things on disk. :func:`atomic_file` (and :func:`write_text` /
:func:`write_json` over it) writes a temporary file beside the target and moves it over the target
with ``os.replace`` (atomic on one filesystem): every generated page, export, metrics file,
submission and tokenised-feature cache. :func:`atomic_dir` does the same for a folder filled by a
callback: the saved model, gates, a published teacher, a checkpoint, a teacher-output cache. A crash
or a full disk leaves either the old version or the new one, never a mix; two writers racing for one
path each replace it whole; what is written follows the user's umask (mkstemp, mkdtemp and
safetensors create 0600 / 0700).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

_UMASK = os.umask(0)  # read once (setting it is the only way to read it), then put back
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, binary: bool = False) -> Iterator[IO]:
    """An open file (text: UTF-8, ``\\n`` line ends) that replaces ``path`` when the block ends without
    an error, creating its folder if needed; on an error the temporary file is removed and ``path`` is
    untouched. The file keeps the mode it had; a new one gets the mode ``open()`` would give it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o7777 if path.exists() else new_file_mode()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n")) as fh:
            yield fh
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Replace ``path`` with ``text`` (see :func:`atomic_file`)."""
    with atomic_file(path) as fh:
        fh.write(text)
    return Path(path)


def atomic_dir(final: str | os.PathLike, fill: Callable[[Path], object], *, tmp_name: str | None = None,
               fsync: bool = False) -> Path:
    """Fill a temporary folder beside ``final`` with ``fill(tmp)`` and swap it into place.

    ``tmp_name`` names the temporary folder (callers that sweep up leftovers of killed writers by a
    pattern pass one; default: a fresh ``.<name>.XXXX``). ``fsync`` flushes every file to disk before
    the swap. An existing ``final`` is set aside first and put back if the swap fails; any error
    removes the temporary folder. Returns ``final``."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if tmp_name is None:
        tmp = make_temp_dir(final.parent, prefix=f".{final.name}.")
    else:
        tmp = final.parent / tmp_name
        tmp.mkdir()
    try:
        fill(tmp)
        follow_umask(tmp)
        if fsync:
            for item in sorted(tmp.rglob("*")):
                if item.is_file():
                    with open(item, "rb") as fh:
                        os.fsync(fh.fileno())
        old = None
        if final.exists():  # set aside first (a name the caller's leftover sweep matches), put back on failure
            old = tmp.with_name(f"{tmp.name}.old")
            os.replace(final, old)
        try:
            os.replace(tmp, final)
        except BaseException:
            if old is not None and not final.exists():
                os.replace(old, final)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


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


def sha256(path: str | os.PathLike) -> str:
    """sha256 of a whole file (read in 1 MiB blocks): checkpoints' checksums, teacher identities."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
