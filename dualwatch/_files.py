"""Whole files only: a reader (a viewer, a script, another process) never sees half of one.

The temporary file is created under a fresh random name with ``O_CREAT | O_EXCL | O_NOFOLLOW``,
so a file or symlink someone planted beside ``path`` is never opened, followed or overwritten;
the rename replaces ``path`` itself, never what a symlink there points to.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from typing import Any, Callable, Iterator

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """``write(tmp)`` to a hidden temporary file beside ``path``, then rename it over ``path``.

    On any failure the temporary file is removed and the error raised; ``path`` is then as it was.
    If ``tmp`` was swapped for another file (a symlink) while ``write`` ran, nothing is renamed.
    """
    with _replacing(path) as (fd, tmp):
        mine = os.fstat(fd)
        write(tmp)
        now = os.lstat(tmp)
        if (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino):
            raise OSError(f"{tmp} was replaced while it was written; {path} is left as it was")


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replaces ``path`` by a file holding ``data``, written through the temporary file's own descriptor."""
    with _replacing(path) as (fd, _):
        view, done = memoryview(data), 0
        while done < len(data):
            done += os.write(fd, view[done:])


@contextlib.contextmanager
def _replacing(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """A new temporary file beside ``path`` (its descriptor and name), renamed over ``path`` when the
    block ends, removed when it raises."""
    fd, tmp = _create_beside(path)
    try:
        yield fd, tmp
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp, fd)
        raise
    finally:
        os.close(fd)


def _create_beside(path: str | os.PathLike[str]) -> tuple[int, str]:
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(8)}.tmp")
        try:
            return os.open(tmp, _CREATE, 0o644), tmp
        except FileExistsError:
            continue


def _remove(tmp: str, fd: int) -> None:
    """Removes the temporary file, if the name is still ours."""
    try:
        now, mine = os.lstat(tmp), os.fstat(fd)
    except OSError:
        return
    if (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino):
        os.unlink(tmp)
