"""VisualDL ``vdlrecords`` files: ``uint64 length | Record``, one value per record.

Writing: VisualDL's reader takes only the first value of a record, so every scalar is its own
record; batching happens in the write, not in the record. Protobuf messages come from
VisualDL's own ``record_pb2`` (installed with the ``visualdl`` extra); the scalar record is
re-used and re-filled, which is 3x faster than building a new message per value.

Reading, without ever trusting a length blindly: VisualDL has no checksum, so a record is
believed only when its length is plausible (1 byte to 2 GiB, and within the bytes at hand)
and it parses with at least one value. A length that runs past the end is a record still
being written, and is waited for, when what is there agrees with it (a ``Record`` payload
starts ``0x0a <value length>``); otherwise the record is damaged: it is counted once and
reading resumes at the next offset where a believable record starts. Zeros at the end of a
file (a crash leaves them) are a tail to wait on, not 512 damaged records.
"""

from __future__ import annotations

import re
import struct
from itertools import repeat
from operator import truediv
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from dualwatch._formats import _codec, _columns, _graphs
from dualwatch._formats.base import Format, Frame, Points, all_zeros, unique_name
from dualwatch._images import png_shape
from dualwatch.records import (
    Embedding,
    Graph,
    Histogram,
    HParams,
    Image,
    PRCurve,
    Record,
    ROCCurve,
    Scalars,
    Text,
    binned,
    grouped,
)

_LENGTH = struct.Struct("<Q")
_length_at = _LENGTH.unpack_from
#: largest record believed (VisualDL has no CRC, so lengths are checked)
MAX_RECORD = 1 << 31
#: records per parse of the columns message
CHUNK = 512
#: a chunk smaller than this that is not all plain scalars is read record by record
_SPLIT_BELOW = 32
#: where a record might start: a length below 2 GiB, then 0x0a (``Record.values``)
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{3}[\x00-\x7f]\x00\x00\x00\x00\n)")
#: value kinds that belong to no step
_STEPLESS = ("meta_data", "hparam")


def split(data: bytes, at: int, limit: int) -> tuple[list[memoryview], int]:
    """The framing: up to ``limit`` payloads from ``at`` whose lengths are plausible and whose
    bytes are all there, and the offset after the last of them."""
    view, size, parts = memoryview(data), len(data), []
    add = parts.append
    while at + 8 <= size and len(parts) < limit:
        (length,) = _length_at(data, at)
        end = at + 8 + length
        if not 0 < length <= MAX_RECORD or end > size:
            break
        add(view[at + 8 : end])
        at = end
    return parts, at


def scalar(value: Any) -> tuple[str, float] | None:
    """The ``(tag, number)`` of a scalar value: ``add_scalar``'s, and each line of ``add_scalars``
    as one flat ``main/sub`` tag (as dualwatch writes them); None for any other kind."""
    kind = value.WhichOneof("one_value")
    if kind == "value":
        return value.tag, value.value
    if kind == "tag_value":
        return f"{value.tag}/{value.tag_value.tag}", value.tag_value.value
    return None


class VisualDLDecoder:
    """Turns one file's bytes into points; holds the file's resync state."""

    def __init__(self, points: Points) -> None:
        self.points = points
        self._columns = _columns.columns()[0].FromString
        self._record = _columns.visualdl_record().FromString
        #: inside a damaged stretch that has been counted already
        self._lost = False

    def decode(self, data: bytes) -> int:
        """Reads the whole records at the start of ``data``; returns how many bytes are done with."""
        at, size = 0, len(data)
        while True:
            start = at
            parts, at = split(data, at, CHUNK)
            if parts:
                bad = self._emit(parts, 0, len(parts), start)
                if bad is not None:
                    at = self._damaged(data, bad)
                    continue
            if len(parts) == CHUNK:
                continue
            if at + 8 > size or _waits(data, at) or all_zeros(data, at):
                return at
            at = self._damaged(data, at)
            if at + 8 > size or _waits(data, at):
                return at

    def _emit(self, parts: list[memoryview], lo: int, hi: int, at: int) -> int | None:
        """Adds the points of ``parts[lo:hi]`` (the first at file offset ``at``).

        Returns the offset of a record that does not parse, after adding those before it.
        """
        k = hi - lo
        try:
            values = self._columns(b"".join(parts[lo:hi])).values
        except Exception:
            return self._one_by_one(parts, lo, hi, at)
        tags = values.tag
        whole = min(len(values.id), len(tags), len(values.timestamp), len(values.value))
        if whole == k == len(tags) and len(values.ListFields()) == 4:
            self.points.extend(
                list(tags),
                list(values.id),
                list(map(truediv, values.timestamp, repeat(1000))),
                list(values.value),
            )
            self._lost = False
            return None
        if k >= _SPLIT_BELOW and len(tags) <= k and (k - whole) * 8 < k:
            mid = lo + k // 2
            bad = self._emit(parts, lo, mid, at)
            if bad is not None:
                return bad
            return self._emit(parts, mid, hi, at + sum(8 + len(p) for p in parts[lo:mid]))
        return self._one_by_one(parts, lo, hi, at)

    def _one_by_one(self, parts: list[memoryview], lo: int, hi: int, at: int) -> int | None:
        """The exact path: VisualDL's own ``Record``, every value kind, damage located."""
        tags: list[str] = []
        steps: list[int] = []
        walls: list[float] = []
        values: list[float] = []
        bad = None
        for part in parts[lo:hi]:
            try:
                record = self._record(part).values
            except Exception:
                record = None
            if not record:
                bad = at
                break
            self._lost = False
            value = record[0]
            number = scalar(value)
            if number is not None:
                tags.append(number[0])
                values.append(number[1])
                steps.append(value.id)
                walls.append(value.timestamp / 1000)
            at += 8 + len(part)
        self.points.extend(tags, steps, walls, values)
        return bad

    def skip(self, data: bytes, available: int) -> int:
        """Passes over what ``decode`` waited on at the start of ``data`` when that is more than a
        reader holds (``data``, of the ``available`` bytes left in the file): a record that starts as
        a record does is passed over unread once it is all there (0 until then: no scalar record
        is that big), and a zero-filled stretch is counted once as damage."""
        if _waits(data, 0):
            (length,) = _length_at(data, 0)
            return 8 + length if 8 + length <= available else 0
        if not self._lost:
            self.points.corrupt += 1
            self._lost = True
        return max(1, len(data) - 7)  # a record may start in the last 7 bytes

    def _damaged(self, data: bytes, at: int) -> int:
        """Counts the damage at ``at`` (once per stretch); returns where a record may start again."""
        if not self._lost:
            self.points.corrupt += 1
            self._lost = True
        size = len(data)
        for match in _CANDIDATE.finditer(data, at + 1):
            start = match.start()
            (length,) = _length_at(data, start)
            end = start + 8 + length
            if end > size:
                if _waits(data, start):
                    return start
                continue
            try:
                if self._record(data[start + 8 : end]).values:
                    return start
            except Exception:
                continue
        return max(at + 1, size - 8)


class VisualDLFormat(Format):
    name = "visualdl"
    label = "VisualDL"
    mark = "vdlrecords"
    file_pattern = "vdlrecords.{sec:010d}.{host}.{pid}.{seq:09d}.log"  # sorts by age
    Decoder = VisualDLDecoder

    def __init__(self, display_name: str = "") -> None:
        """``display_name``: the run's name in VisualDL (its meta record), instead of its path."""
        from visualdl.component import base_component
        from visualdl.proto.record_pb2 import Record as VdlRecord

        self._pb = VdlRecord
        self._components = base_component
        self._display_name = display_name
        self._scalar = VdlRecord()
        self._value = self._scalar.values.add()

    def header(self, wall_ms: int, step: int) -> bytes:
        meta = self._components.meta_data(display_name=self._display_name, walltime=wall_ms)
        return _frame(meta.SerializeToString())

    def encode(self, records: Sequence[Record]) -> bytes:
        return _codec.encode(records, _codec.codec and _codec.codec.visualdl, self._encode)

    def _encode(self, records: Sequence[Record]) -> bytes:
        out: list[bytes] = []
        for record in records:
            if type(record) is Scalars:
                out.extend(self._scalars(record))
            elif not isinstance(record, Graph):  # a graph is a file of its own: side_files
                out.append(_frame(self._other(record).SerializeToString()))
        return b"".join(out)

    # -- model graphs: VisualDL's server reads the newest ``vdlgraph`` file of a run, one JSON ------
    graph_file_pattern = "vdlgraph.{sec:010d}.{host}.{pid}.{seq:09d}.log"  # sorts by age

    def side_files(
        self, records: Sequence[Record], read: Callable[[str], bytes | None]
    ) -> list[tuple[str, bytes]]:
        """Each graph as the JSON VisualDL's ``add_graph`` writes: paddle's as its exporter made it,
        any other built from its nodes."""
        return [
            (
                unique_name(self.graph_file_pattern, record.wall_ms),
                record.native.get(self.name) or _graphs.visualdl_json(record),
            )
            for record in records
            if isinstance(record, Graph)
        ]

    # -- end of model graphs ------------------------------------------------------------------------

    def _scalars(self, record: Scalars) -> list[bytes]:
        value, serialize, pack = self._value, self._scalar.SerializeToString, _LENGTH.pack
        value.id = record.step
        value.timestamp = record.wall_ms
        out = []
        for tag, number in record.values.items():
            value.tag = tag
            value.value = number
            payload = serialize()
            out.append(pack(len(payload)) + payload)
        return out

    def _other(self, record: Record) -> Any:
        c, pb = self._components, self._pb
        if isinstance(record, Histogram):
            return c.histogram(record.tag, record.counts, record.edges, record.step, record.wall_ms)
        if isinstance(record, Image):
            image = pb.Image(encoded_image_string=record.png)
            return pb(
                values=[pb.Value(id=record.step, tag=record.tag, timestamp=record.wall_ms, image=image)]
            )
        if isinstance(record, Text):
            return c.text(record.tag, record.text, record.step, record.wall_ms)
        if isinstance(record, HParams):
            # VisualDL names the record after the file; one run holds one set, so a fixed name does.
            # Its HParam has no bool field: booleans are written as "True"/"False".
            hparams = {k: str(v) if isinstance(v, bool) else v for k, v in record.hparams.items()}
            return c.hparam("dualwatch", hparams, record.metrics, record.wall_ms)
        if isinstance(record, (PRCurve, ROCCurve, Embedding)):
            value = pb.Value(id=record.step, tag=record.tag, timestamp=record.wall_ms, **_field(pb, record))
            return pb(values=[value])
        raise TypeError(f"VisualDL cannot store {type(record).__name__}")

    @classmethod
    def scan(cls, data: bytes) -> list[Frame]:
        frames, at, parse = [], 0, _columns.visualdl_record().FromString
        while True:
            parts, end = split(data, at, 1)
            if not parts:
                break
            try:
                values = parse(parts[0]).values
            except Exception:
                break
            if not values:
                break
            first = values[0]
            frames.append(Frame(at, end, None if first.WhichOneof("one_value") in _STEPLESS else first.id))
            at = end
        return frames

    @classmethod
    def read_records(cls, data: bytes) -> Iterator[Record | int | None]:
        parse = _columns.visualdl_record().FromString
        points: list[tuple[str, float, int, float]] = []
        for frame in cls.scan(data):
            value = parse(data[frame.start + _LENGTH.size : frame.end]).values[0]
            number = scalar(value)
            if number is not None:
                points.append((number[0], number[1], value.id, value.timestamp / 1000))
                continue
            yield from grouped(points)
            points = []
            kind = value.WhichOneof("one_value")
            if kind not in _STEPLESS:
                yield _record(kind, value)
        yield from grouped(points)


def _record(kind: str | None, value: Any) -> Record | None:
    """The record of a value that is not a scalar, or None when its parts do not fit together."""
    tag, step, wall_ms = value.tag, value.id, value.timestamp
    if kind == "histogram":
        h = value.histogram
        if len(h.bin_edges) == len(h.hist) + 1:
            return binned(tag, step, wall_ms, h.hist, h.bin_edges)
    elif kind == "image":
        png = value.image.encoded_image_string
        return Image(tag, step, wall_ms, png, *png_shape(png))
    elif kind == "text":
        return Text(tag, step, wall_ms, value.text.encoded_text_string)
    elif kind in ("pr_curve", "roc_curve"):
        c = value.pr_curve if kind == "pr_curve" else value.roc_curve
        rows = [c.TP, c.FP, c.TN, c.FN, *((c.precision, c.recall) if kind == "pr_curve" else (c.tpr, c.fpr))]
        if len({len(row) for row in rows}) == 1:
            return (PRCurve if kind == "pr_curve" else ROCCurve)(tag, step, wall_ms, *map(_floats, rows))
    elif kind == "embeddings":
        points = value.embeddings.embeddings
        if len({len(point.vectors) for point in points}) == 1:
            return _embedding(tag, step, wall_ms, value.embeddings)
    return None


# -- curves and embeddings -------------------------------------------------------------------------


def _field(pb: Any, record: PRCurve | ROCCurve | Embedding) -> dict[str, Any]:
    """The ``Value`` field of a curve or an embedding. VisualDL's counts are int64: weighted
    (fractional) counts are rounded. An embedding without metadata is labelled by row number,
    which VisualDL's projector needs to list its points."""
    if isinstance(record, Embedding):
        rows = record.metadata or [[str(i)] for i in range(len(record.mat))]
        points = [pb.Embedding(label=row, vectors=vector) for row, vector in zip(rows, record.mat.tolist())]
        return {"embeddings": pb.Embeddings(embeddings=points, label_meta=record.header or [])}
    counts = {
        name: np.rint(getattr(record, name.lower())).astype(np.int64) for name in ("TP", "FP", "TN", "FN")
    }
    if isinstance(record, PRCurve):
        return {"pr_curve": pb.PRCurve(**counts, precision=record.precision, recall=record.recall)}
    return {"roc_curve": pb.ROC_Curve(**counts, tpr=record.tpr, fpr=record.fpr)}


def _floats(values: Any) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def _embedding(tag: str, step: int, wall_ms: int, embeddings: Any) -> Embedding:
    points = embeddings.embeddings
    mat = np.array([point.vectors for point in points], dtype=np.float32)
    rows = [list(point.label) for point in points]
    return Embedding(tag, step, wall_ms, mat, rows, list(embeddings.label_meta) or None)


def _waits(data: bytes, at: int) -> bool:
    """Whether the bytes from ``at`` can be the beginning of a record still being written."""
    size = len(data)
    if at + 8 > size:
        return True
    (length,) = _length_at(data, at)
    if not 0 < length <= MAX_RECORD or at + 8 + length <= size:
        return False
    if at + 9 > size:
        return True
    if data[at + 8] != 0x0A:
        return False
    inner, shift, i = 0, 0, at + 9
    while i < size:  # the varint length of the one Value: 1 + its size + the Value == the record
        byte = data[i]
        inner |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return 1 + (i - at - 9) + inner == length
        shift += 7
        if shift > 63:
            return False
    return True


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload
