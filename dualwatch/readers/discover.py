"""Which files are logs, of which format, and which directories are runs.

A file is a log by the marker in its name, as the viewers decide (``tfevents`` for
TensorBoard, ``vdlrecords`` for VisualDL) plus dualwatch's ``metrics.jsonl``. Hidden
files and directories (a resume's ``.dualwatch-resume.tmp``, ``.git``) are never logs.
"""

from __future__ import annotations

import os

#: formats in the order a run is read from: TensorBoard first, its records carry checksums
FORMATS = (("tensorboard", "tfevents"), ("visualdl", "vdlrecords"), ("jsonl", "metrics.jsonl"))


def format_of(name: str) -> str | None:
    """The format of a file named ``name``, or None when it is not a log."""
    if name.startswith("."):
        return None
    for fmt, mark in FORMATS:
        if mark in name:
            return fmt
    return None


def log_files(run_dir: str) -> dict[str, dict[str, os.stat_result]]:
    """``{format: {file name: stat}}`` of the log files directly in ``run_dir``."""
    found: dict[str, dict[str, os.stat_result]] = {}
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                fmt = format_of(entry.name)
                if fmt is None:
                    continue
                try:
                    if entry.is_file():
                        found.setdefault(fmt, {})[entry.name] = entry.stat()
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
    runs: list[tuple[float, str]] = []
    for directory, subdirs, files in os.walk(logdir):
        subdirs[:] = [d for d in subdirs if not d.startswith(".")]
        newest = None
        for name in files:
            if format_of(name) is not None:
                try:
                    mtime = os.stat(os.path.join(directory, name)).st_mtime
                except OSError:  # gone since the listing
                    continue
                newest = mtime if newest is None else max(newest, mtime)
        if newest is not None:
            runs.append((newest, directory))
    return [directory for _, directory in sorted(runs)]
