"""``convert_run``: rewrites a run's VisualDL logs as TensorBoard ones, or the reverse.

A run logged for one viewer only (VisualDL's ``LogWriter``, torch's ``SummaryWriter``) can then
be opened in the other. Scalars, histograms, images and text keep their tags, steps and wall
times (to the millisecond, what VisualDL stores). Conversion is reading with the source
format's decoding and writing with the target format's encoding, both from
:mod:`dualwatch._formats`. The source is only read; the output is a new run directory written
by dualwatch's own file sinks, so it holds exactly what a ``Writer`` writes. The sinks are used
without the ``Writer`` around them because a training writer drops records when its queue is
full and turns a failed write into a warning, where a conversion must write everything or fail.

PR curves convert both ways, ROC curves only to VisualDL (TensorBoard has no ROC plugin), and
VisualDL's embeddings become TensorBoard projector files. Not converted: hyper-parameters,
TensorBoard's embeddings (the projector's files are not in its event files), and what dualwatch
does not write (audio). A histogram read from VisualDL has no sum of its values: TensorBoard's
mean and standard deviation are estimated from the bucket midpoints.
"""

from __future__ import annotations

import mmap
import os
from contextlib import contextmanager
from typing import BinaryIO, Iterator

from dualwatch._errors import NO_LOGS, USAGE, DualwatchError
from dualwatch._formats import formats_by_name
from dualwatch._warn import warn
from dualwatch.readers._discover import log_files
from dualwatch.records import Record
from dualwatch.sinks._files import FileSink

#: the format each target is converted from
SOURCE = {"tensorboard": "visualdl", "visualdl": "tensorboard"}
#: records encoded and appended at once
BATCH = 4096


def convert_run(run_dir: str, to: str, out: str | None = None) -> str:
    """Writes the run in ``run_dir`` in format ``to`` into ``out``; returns the output run directory.

    ``to`` is ``"tensorboard"`` (read from the run's VisualDL files) or ``"visualdl"`` (read from
    its TensorBoard files). ``out`` defaults to ``<run_dir>_<to>`` beside the run; it must not
    exist or be an empty directory.
    """
    if to not in SOURCE:
        raise DualwatchError(f"cannot convert to {to!r}: choose one of {sorted(SOURCE)}")
    run_dir = os.path.normpath(run_dir)
    if not os.path.isdir(run_dir):  # missing: nothing to read (3); a file: asked wrong (2)
        missing = not os.path.exists(run_dir)
        raise DualwatchError(f"{run_dir} is not a run directory", exit_code=NO_LOGS if missing else USAGE)
    formats = formats_by_name()
    source = formats[SOURCE[to]]
    names = sorted(log_files(run_dir).get(source.name, {}))
    if not names:
        raise DualwatchError(
            f"{run_dir} has no {source.label} logs (*{source.mark}* files) to convert", exit_code=NO_LOGS
        )
    out = os.path.normpath(out or f"{os.path.abspath(run_dir)}_{to}")  # RUN "." has a name too
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise DualwatchError(f"{out} already exists and is not empty: pass another -o/--out")
    records: list[Record] = []
    skipped = 0
    for name in names:
        path = os.path.join(run_dir, name)
        try:
            with open(path, "rb") as f, _mapped(f) as data:  # pages are read as records are
                items = list(source.read_records(data))
        except OSError as err:
            raise DualwatchError(f"cannot read log file: {path} ({err.strerror})") from None
        for item in items:
            if item is None:
                skipped += 1
            elif isinstance(item, int):  # a restart marker: what was read before it at its step or later goes
                records = [record for record in records if record.step < item]
            else:
                records.append(item)
    if skipped:
        warn(f"{skipped} record(s) of {run_dir} not converted: damaged, or of a kind convert leaves out")
    if not records:
        raise DualwatchError(
            f"{run_dir} has {source.label} logs but no scalars, histograms, images or text", exit_code=NO_LOGS
        )
    os.makedirs(out, exist_ok=True)
    sink = FileSink(formats[to](), out)
    try:
        for start in range(0, len(records), BATCH):
            sink.write(records[start : start + BATCH])
    finally:
        sink.close()
    return out


@contextmanager
def _mapped(f: BinaryIO) -> Iterator[bytes | mmap.mmap]:
    """The file's bytes, mapped: reading stops at the first damaged record, so a file that is
    mostly zeros or garbage (a crash, 2 GiB of it) costs only the pages read up to there."""
    if os.fstat(f.fileno()).st_size == 0:
        yield b""
        return
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        yield data
