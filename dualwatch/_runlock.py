"""One writer per run: an advisory lock on ``<run_dir>/.dualwatch.lock``, held while a Writer is open.

Two writers on one run would each cut the other's records when they resume, and interleave
steps when they do not. ``fcntl.flock`` is held by the open file, so the operating system
drops it when the process ends however it ends (``SIGKILL`` included): a crashed run never
stays locked. The file says who holds it (pid, host, start time) for the error message; its
hidden name keeps it out of every viewer's and reader's listing, and ``close()`` removes it
(a crash leaves it, unlocked). Without ``fcntl`` (Windows) nothing is locked.

``dualwatch monitor --until-done`` tells from the lock whether a run's Writer still writes
(:func:`writer_state`). Its probe holds a shared lock for a moment; a Writer starting at that
instant retries for up to :data:`PROBE_PATIENCE` seconds before it calls the run in use, so a
monitor never makes training fail. ``flock`` locks are the kernel's, so this works between
containers sharing a volume on one host (pids and host names differ; the lock does not care).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, one writer per run is up to the user
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".dualwatch.lock"
#: seconds a Writer retries a lock held by someone else: a monitor's probe holds it for microseconds
PROBE_PATIENCE = 0.5
#: :func:`writer_state`'s answers
OPEN, ABANDONED, ABSENT, UNKNOWN = "open", "abandoned", "absent", "unknown"
_held: dict[int, str] = {}  # fd -> lock file, for close() to remove and a forked child to let go of


class RunInUseError(RuntimeError):
    """Another open ``Writer`` (in this process or another) is writing the run."""


def lock_run(run_dir: str) -> int | None:
    """Locks ``run_dir`` for this process; returns the lock's fd (None without ``fcntl``).

    Raises :class:`RunInUseError` naming the holder when another writer has it.
    """
    if fcntl is None:
        return None
    path = os.path.join(run_dir, LOCK_NAME)
    patience = time.monotonic() + PROBE_PATIENCE
    while True:
        try:
            fd = _locked(path, run_dir)
        except RunInUseError:
            if time.monotonic() > patience:  # a writer, not a monitor's passing probe
                raise
            time.sleep(0.01)
            continue
        if fd is not None:
            break
    info = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _held[fd] = path
    return fd


def _locked(path: str, run_dir: str) -> int | None:
    """The locked lock file's fd; None when the holder removed the file meanwhile (try again)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        if not _same_file(fd, path):  # locked a file its holder's close() had just removed
            os.close(fd)
            return None
        return fd
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        pid, host = holder.get("pid", "?"), holder.get("host", "?")
        started = holder.get("started")
        since = f" since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}" if started else ""
        raise RunInUseError(
            f"run {run_dir!r} is being written by another Writer (pid {pid} on host {host!r}{since}); "
            f"two writers would cut each other's records. close() the other writer, wait for pid {pid} "
            "to exit, or pass another run="
        ) from None
    except BaseException:
        os.close(fd)
        raise


def unlock_run(fd: int | None) -> None:
    """Removes the lock file and lets go of the lock (closing the file releases it)."""
    path = _held.pop(fd, None) if fd is not None else None
    if path is not None:
        with contextlib.suppress(OSError):
            if _same_file(fd, path):
                os.unlink(path)
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        now, mine = os.stat(path, follow_symlinks=False), os.fstat(fd)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (mine.st_dev, mine.st_ino)


def writer_state(run_dir: str) -> str:
    """Whether a Writer is writing ``run_dir``, from its lock file, without ever blocking:

    :data:`OPEN` (a Writer holds the lock), :data:`ABANDONED` (the file is there, unlocked: its
    Writer ended without ``close()``, crashed or killed), :data:`ABSENT` (no lock file: closed,
    or never a Writer's run) or :data:`UNKNOWN` (no ``fcntl``, or the file cannot be opened).
    """
    if fcntl is None:
        return UNKNOWN
    path = os.path.join(run_dir, LOCK_NAME)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return ABSENT
    except OSError:
        return UNKNOWN
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return OPEN
    except OSError:
        return UNKNOWN
    else:
        # close() removes the file before it lets go of the lock: a file still there is abandoned,
        # one removed since it was opened was closed
        return ABANDONED if _same_file(fd, path) else ABSENT
    finally:
        os.close(fd)


def forget_in_child() -> None:
    """In a forked child: closes the inherited lock files without unlocking (the parent holds the lock;
    once the parent closes its file, nothing of the child's keeps the run locked)."""
    for fd in list(_held):
        with contextlib.suppress(OSError):
            os.close(fd)
    _held.clear()


def _holder(fd: int) -> dict:
    with contextlib.suppress(OSError, ValueError):
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if isinstance(info, dict):
            return info
    return {}
