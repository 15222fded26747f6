"""Which files are logs, of which format, which directories are runs, and which run a user means.

A file is a log by the marker in its name, as the viewers decide (``tfevents`` for
TensorBoard, ``vdlrecords`` for VisualDL), plus dualwatch's ``metrics.jsonl`` and MMEngine's
``vis_data/scalars.json``; each format says which names are its own (:mod:`dualwatch._formats`).
Hidden files and directories (a resume's temporary file, ``.git``) are never logs.
"""

from __future__ import annotations

import functools
import os
import stat

from dualwatch._errors import DualwatchError
from dualwatch._formats import read_order
from dualwatch._formats.base import LogFormat


def format_of(name: str, directory: str | None = None) -> type[LogFormat] | None:
    """The format of a file named ``name`` in ``directory``, or None when it is not a log."""
    for fmt in _formats():
        if fmt.is_log(name, directory):
            return fmt
    return None


@functools.cache
def _formats() -> tuple[type[LogFormat], ...]:
    """:func:`read_order`, asked once: a monitor of hundreds of runs asks for every file each poll."""
    return read_order()


def log_files(run_dir: str) -> dict[str, dict[str, os.stat_result]]:
    """``{format name: {file name: stat}}`` of the log files directly in ``run_dir``."""
    found: dict[str, dict[str, os.stat_result]] = {}
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                fmt = format_of(entry.name, run_dir)
                if fmt is None:
                    continue
                try:
                    if entry.is_file():
                        found.setdefault(fmt.name, {})[entry.name] = entry.stat()
                except OSError:  # gone since the listing
                    continue
    except OSError:
        return {}
    return found


def find_runs(logdir: str) -> list[str]:
    """Every directory under ``logdir`` (itself included) that holds a log file.

    Hidden directories and symbolic links to directories are not entered. The most
    recently modified run (by its newest log file) comes last; ties go by path.
    """
    return _walk(logdir, [])


def _walk(logdir: str, unreadable: list[OSError]) -> list[str]:
    """:func:`find_runs`, adding to ``unreadable`` the directories under ``logdir`` it could not list.

    One ``scandir`` per directory and one ``stat`` per log file, nothing else: a monitor of
    hundreds of runs walks the logdir every poll.
    """
    runs: list[tuple[float, str]] = []
    pending = [logdir]
    while pending:
        directory = pending.pop()
        newest = None
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir():
                            if not entry.name.startswith(".") and not entry.is_symlink():
                                pending.append(entry.path)
                        elif format_of(entry.name, directory) is not None:
                            mtime = entry.stat().st_mtime
                            newest = mtime if newest is None else max(newest, mtime)
                    except OSError:  # gone since the listing
                        continue
        except OSError as err:
            unreadable.append(err)
            continue
        if newest is not None:
            runs.append((newest, directory))
    return [directory for _, directory in sorted(runs)]


def locate_run(logdir: str, name: str | None = None) -> str:
    """The run directory to show: the newest under ``logdir``, or the newest matching ``name``.

    ``name`` is a run's path under ``logdir`` (``torch/logs_01011230``), a directory on that
    path (``torch``: its newest run) or a run directory's own name. Raises
    :class:`~dualwatch.DualwatchError` with a one-line reason when there is none.
    """
    runs = list_runs(logdir)
    if name is None:
        return runs[-1]
    wanted = os.path.normpath(name)
    matching = [run for run in runs if _is_named(run, logdir, wanted)]
    if not matching:
        known = ", ".join(display_name(run, logdir) for run in reversed(runs[-10:]))
        raise DualwatchError(f"no run {name!r} under {logdir} (runs: {known})", transient=True)
    return matching[-1]


def list_runs(logdir: str) -> list[str]:
    """:func:`find_runs`, or a :class:`~dualwatch.DualwatchError` saying why there is none:
    ``logdir`` missing, not a directory, not readable, or holding no log file.

    Every run directory is one run, so an MMEngine launch with dualwatch's hook but not its vis
    backend is two: ``<timestamp>/vis_data`` (MMEngine's scalars) and ``<timestamp>/dualwatch``
    (the hook's, its loss as ``train/detailed_loss/loss``), each with its loss.
    """
    try:
        is_dir = stat.S_ISDIR(os.stat(logdir).st_mode)
        if is_dir:
            os.listdir(logdir)
    except FileNotFoundError:
        raise DualwatchError(f"no such directory: {logdir}", transient=True) from None
    except OSError as err:  # a parent or the directory itself that this user may not read
        raise DualwatchError(f"cannot read directory: {logdir} ({err.strerror})") from None
    if not is_dir:
        raise DualwatchError(f"not a directory: {logdir}")
    if not os.access(logdir, os.R_OK | os.X_OK):  # listed, but its entries cannot be opened
        raise DualwatchError(f"cannot read directory: {logdir} (Permission denied)")
    unreadable: list[OSError] = []
    runs = _walk(logdir, unreadable)
    if not runs and unreadable:  # a run directory this user may not list: say so, not "no logs"
        err = unreadable[0]
        raise DualwatchError(f"cannot read directory: {err.filename} ({err.strerror})")
    if not runs:
        raise DualwatchError(
            f"no logs under {logdir} (no tfevents, vdlrecords, metrics.jsonl or vis_data/scalars.json file)",
            transient=True,
        )
    return runs


def display_name(run_dir: str, logdir: str) -> str:
    """How a run is named in reports: its path under ``logdir``, or its own name if it is ``logdir``."""
    rel = os.path.relpath(run_dir, logdir)
    return os.path.basename(os.path.abspath(run_dir)) if rel == "." else rel


def _is_named(run: str, logdir: str, wanted: str) -> bool:
    rel = os.path.relpath(run, logdir)
    return os.path.basename(run) == wanted or rel == wanted or rel.startswith(wanted + os.sep)
