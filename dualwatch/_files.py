"""Whole files only: a reader (a viewer, a script, another process) never sees half of one."""

from __future__ import annotations

import os
from typing import Any, Callable


def atomic_write(path: str | os.PathLike[str], write: Callable[[str], Any]) -> None:
    """``write(tmp)`` to a hidden temporary file beside ``path``, then rename it over ``path``.

    On any failure the temporary file is removed and the error raised; ``path`` is then as it was.
    """
    import tempfile  # only when a file is written: it costs start-up time

    folder, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
