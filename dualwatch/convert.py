"""``convert_run``: rewrites a run's VisualDL logs as TensorBoard ones, or the reverse.

A run logged for one viewer only (VisualDL's ``LogWriter``, torch's ``SummaryWriter``) can then
be opened in the other. Scalars, histograms, images and text keep their tags, steps and wall
times (to the millisecond, what VisualDL stores). The source is only read; the output is a
new run directory written by dualwatch's own file sinks, so it holds exactly what a
``Writer`` writes. The sinks are used without the ``Writer`` around them because a training
writer drops records when its queue is full and turns a failed write into a warning, where
a conversion must write everything or fail.

Not converted: hyper-parameters, and what dualwatch does not write (audio, PR curves,
embeddings). A histogram read from VisualDL has no sum of its values: TensorBoard's mean and
standard deviation are estimated from the bucket midpoints.
"""

from __future__ import annotations

import os
import struct
from typing import Any, Iterable, Iterator

import numpy as np

from dualwatch.formats import formats_by_name
from dualwatch.readers.discover import log_files
from dualwatch.records import Histogram, Image, Record, Scalars, Text
from dualwatch.sinks import FileSink

#: the format each target is converted from
SOURCE = {"tensorboard": "visualdl", "visualdl": "tensorboard"}
#: records encoded and appended at once
BATCH = 4096
_LENGTH = struct.Struct("<Q")
_PNG = b"\x89PNG\r\n\x1a\n"
#: PNG colour type -> channels (grey, RGB, palette, grey + alpha, RGBA)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


class ConvertError(Exception):
    """A run that cannot be converted as asked; the message says why in one line."""


def convert_run(run_dir: str, to: str, out: str | None = None) -> str:
    """Writes the run in ``run_dir`` in format ``to`` into ``out``; returns the output run directory.

    ``to`` is ``"tensorboard"`` (read from the run's VisualDL files) or ``"visualdl"`` (read from
    its TensorBoard files). ``out`` defaults to ``<run_dir>_<to>`` beside the run; it must not
    exist or be an empty directory.
    """
    if to not in SOURCE:
        raise ConvertError(f"cannot convert to {to!r}: choose one of {sorted(SOURCE)}")
    run_dir = os.path.normpath(run_dir)
    if not os.path.isdir(run_dir):
        raise ConvertError(f"{run_dir} is not a run directory")
    formats = formats_by_name()
    source = formats[SOURCE[to]]
    names = sorted(log_files(run_dir).get(source.name, {}))
    if not names:
        raise ConvertError(f"{run_dir} has no {source.label} logs (*{source.mark}* files) to convert")
    out = os.path.normpath(out or f"{os.path.abspath(run_dir)}_{to}")  # RUN "." has a name too
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise ConvertError(f"{out} already exists and is not empty: pass another -o/--out")
    read = _visualdl_records if source.name == "visualdl" else _tensorboard_records
    records = [record for name in names for record in read(os.path.join(run_dir, name))]
    if source.name == "tensorboard":
        records = _purged(records)
    if not records:
        raise ConvertError(f"{run_dir} has {source.label} logs but no scalars, histograms, images or text")
    os.makedirs(out, exist_ok=True)
    sink = FileSink(formats[to](), out)
    try:
        for start in range(0, len(records), BATCH):
            sink.write(records[start : start + BATCH])
    finally:
        sink.close()
    return out


def _grouped(scalars: Iterable[tuple[str, int, int, float]]) -> Iterator[Scalars]:
    """Consecutive ``(tag, step, wall_ms, value)`` of one step and millisecond as one record."""
    current: Scalars | None = None
    for tag, step, wall_ms, value in scalars:
        if current is None or (current.step, current.wall_ms) != (step, wall_ms) or tag in current.values:
            if current is not None:
                yield current
            current = Scalars(step, wall_ms, {})
        current.values[tag] = value
    if current is not None:
        yield current


def _binned(tag: str, step: int, wall_ms: int, counts: Any, edges: Any) -> Histogram:
    """A histogram known only by its buckets: the moments are taken at the bucket midpoints."""
    counts, edges = np.asarray(counts, dtype=np.float64), np.asarray(edges, dtype=np.float64)
    mids = (edges[:-1] + edges[1:]) / 2
    num, total, squares = round(float(counts.sum())), float(counts @ mids), float(counts @ mids**2)
    return Histogram(tag, step, wall_ms, counts, edges, num, total, squares)


def _png_shape(png: bytes) -> tuple[int, int, int]:
    """``(height, width, channels)`` from a PNG header; zeros for any other encoding."""
    if len(png) < 26 or not png.startswith(_PNG):
        return 0, 0, 0
    width, height = struct.unpack(">II", png[16:24])
    return height, width, _PNG_CHANNELS.get(png[25], 0)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


# -- VisualDL ---------------------------------------------------------------------------------------


def _visualdl_records(path: str) -> Iterator[Record]:
    """The records of one ``vdlrecords`` file, in file order (up to the first damaged record)."""
    from visualdl.proto.record_pb2 import Record as VdlRecord

    from dualwatch.formats.visualdl import VisualDLFormat

    data, parse = _read(path), VdlRecord.FromString
    scalars: list[tuple[str, int, int, float]] = []
    for frame in VisualDLFormat().scan(data):
        value = parse(data[frame.start + _LENGTH.size : frame.end]).values[0]
        kind, tag, step, wall_ms = value.WhichOneof("one_value"), value.tag, value.id, value.timestamp
        if kind == "value":
            scalars.append((tag, step, wall_ms, value.value))
            continue
        if kind == "tag_value":  # add_scalars: one flat tag per sub-tag, as dualwatch writes it
            scalars.append((f"{tag}/{value.tag_value.tag}", step, wall_ms, value.tag_value.value))
            continue
        yield from _grouped(scalars)
        scalars = []
        if kind == "histogram":
            yield _binned(tag, step, wall_ms, value.histogram.hist, value.histogram.bin_edges)
        elif kind == "image":
            png = value.image.encoded_image_string
            yield Image(tag, step, wall_ms, png, *_png_shape(png))
        elif kind == "text":
            yield Text(tag, step, wall_ms, value.text.encoded_text_string)
    yield from _grouped(scalars)


# -- TensorBoard ------------------------------------------------------------------------------------


def _tensorboard_records(path: str) -> Iterator[Record | int]:
    """The records of one event file in file order; a ``SessionLog.START`` is its step (an int)."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    from dualwatch.formats.tensorboard import TensorBoardFormat

    data, parse = _read(path), event_pb2.Event.FromString
    plugins: dict[str, str] = {}  # the plugin of a tag is named in its first value only
    for frame in TensorBoardFormat().scan(data):
        event = parse(data[frame.start + 12 : frame.end - 4])
        step, wall_ms = event.step, int(event.wall_time * 1000 + 0.5)
        if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
            yield step
            continue
        scalars = []
        for value in event.summary.value:
            tag, kind = value.tag, value.WhichOneof("value")
            if value.metadata.plugin_data.plugin_name:
                plugins[tag] = value.metadata.plugin_data.plugin_name
            if kind == "simple_value":
                scalars.append((tag, step, wall_ms, value.simple_value))
            elif kind == "histo":
                yield _histo(tag, step, wall_ms, value.histo)
            elif kind == "image":
                im = value.image
                yield Image(tag, step, wall_ms, im.encoded_image_string, im.height, im.width, im.colorspace)
            elif kind == "tensor" and tag in plugins:
                array = tensor_util.make_ndarray(value.tensor)
                plugin = plugins[tag]
                if plugin == "scalars":
                    scalars.append((tag, step, wall_ms, float(array)))
                elif plugin == "histograms" and array.size:  # rows of (left, right, count)
                    edges = np.append(array[:, 0], array[-1, 1])
                    yield _binned(tag, step, wall_ms, array[:, 2], edges)
                elif plugin == "images":  # width, height, then the encoded images
                    for png in array[2:]:
                        yield Image(tag, step, wall_ms, png, *_png_shape(png))
                elif plugin == "text":
                    text = "\n".join(item.decode("utf-8", "replace") for item in array.reshape(-1))
                    yield Text(tag, step, wall_ms, text)
        yield from _grouped(scalars)


def _histo(tag: str, step: int, wall_ms: int, histo: Any) -> Histogram:
    """A legacy ``HistogramProto`` (bucket ``i`` ends at ``bucket_limit[i]``) as a dualwatch record.

    The first bucket starts at the minimum; limits beyond the data (TensorFlow's last one is
    DBL_MAX) are clipped to the minimum and maximum, which VisualDL draws as the x range.
    """
    limits = list(histo.bucket_limit)
    edges = np.array([min(histo.min, limits[0]) if limits else histo.min, *limits], dtype=np.float64)
    if histo.num > 0:
        edges = np.clip(edges, histo.min, histo.max)
    counts = np.array(histo.bucket, dtype=np.float64)
    return Histogram(tag, step, wall_ms, counts, edges, int(histo.num), histo.sum, histo.sum_squares)


def _purged(items: list[Record | int]) -> list[Record]:
    """Applies each ``SessionLog.START`` at step S as TensorBoard does: earlier records at S or later go."""
    records: list[Record] = []
    for item in items:
        if isinstance(item, int):
            records = [record for record in records if record.step < item]
        else:
            records.append(item)
    return records
