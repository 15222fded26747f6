"""Which files are logs, of which format, and which directories are runs.

A file is a log by the marker in its name, as the viewers decide (``tfevents`` for
TensorBoard, ``vdlrecords`` for VisualDL) plus dualwatch's ``metrics.jsonl``, plus
MMEngine's ``scalars.json``: the file its ``LocalVisBackend`` appends one JSON line to per
``add_scalars`` call. That name is common, so it counts only in a directory named
``vis_data``, which MMEngine's ``Visualizer`` always writes its backends' files under
(``<work_dir>/<timestamp>/vis_data/``); the ``<timestamp>.json`` next to it holds the
same lines and is not read. Hidden files and directories (a resume's
``.dualwatch-resume.tmp``, ``.git``) are never logs.
"""

from __future__ import annotations

import os

#: formats in the order a run is read from: TensorBoard first, its records carry checksums
FORMATS = (
    ("tensorboard", "tfevents"),
    ("visualdl", "vdlrecords"),
    ("jsonl", "metrics.jsonl"),
    ("mmengine", "scalars.json"),
)
#: the directory MMEngine's Visualizer puts its backends' files in
MMENGINE_DIR = "vis_data"


def format_of(name: str, directory: str | None = None) -> str | None:
    """The format of a file named ``name`` in ``directory``, or None when it is not a log.

    MMEngine's ``scalars.json`` is a log only when ``directory`` is named ``vis_data``.
    """
    if name.startswith("."):
        return None
    for fmt, mark in FORMATS:
        if fmt == "mmengine":
            if name == mark and directory is not None and _is_vis_data(directory):
                return fmt
        elif mark in name:
            return fmt
    return None


def _is_vis_data(directory: str) -> bool:
    return os.path.basename(os.path.abspath(directory)) == MMENGINE_DIR


def log_files(run_dir: str) -> dict[str, dict[str, os.stat_result]]:
    """``{format: {file name: stat}}`` of the log files directly in ``run_dir``."""
    found: dict[str, dict[str, os.stat_result]] = {}
    try:
        with os.scandir(run_dir) as entries:
            for entry in entries:
                fmt = format_of(entry.name, run_dir)
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
            if format_of(name, directory) is not None:
                try:
                    mtime = os.stat(os.path.join(directory, name)).st_mtime
                except OSError:  # gone since the listing
                    continue
                newest = mtime if newest is None else max(newest, mtime)
        if newest is not None:
            runs.append((newest, directory))
    return [directory for _, directory in sorted(runs)]
