"""VisualDL ``vdlrecords`` files: ``uint64 length | Record``, one value per record.

VisualDL's reader takes only the first value of a record, so every scalar is its own
record; batching happens in the write, not in the record. Protobuf messages come from
VisualDL's own ``record_pb2`` (installed with the ``visualdl`` extra); the scalar record is
re-used and re-filled, which is 3x faster than building a new message per value.
"""

from __future__ import annotations

import struct
from typing import Sequence

from dualwatch.formats import Format, Frame
from dualwatch.records import Histogram, HParams, Image, Record, Scalars, Text

_LENGTH = struct.Struct("<Q")
#: largest record this reader accepts while scanning (VisualDL has no CRC, so lengths are checked)
MAX_RECORD = 1 << 31


class VisualDLFormat(Format):
    name = "visualdl"
    label = "VisualDL"
    mark = "vdlrecords"
    file_pattern = "vdlrecords.{sec:010d}.{host}.{pid}.{seq}.log"

    def __init__(self) -> None:
        from visualdl.component import base_component
        from visualdl.proto.record_pb2 import Record as VdlRecord

        self._pb = VdlRecord
        self._components = base_component
        self._scalar = VdlRecord()
        self._value = self._scalar.values.add()

    def header(self, wall_ms: int, step: int) -> bytes:
        return _frame(self._components.meta_data(walltime=wall_ms).SerializeToString())

    def encode(self, records: Sequence[Record]) -> bytes:
        out: list[bytes] = []
        for record in records:
            if type(record) is Scalars:
                out.extend(self._scalars(record))
            else:
                out.append(_frame(self._other(record).SerializeToString()))
        return b"".join(out)

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

    def _other(self, record: Record):
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
        raise TypeError(f"VisualDL cannot store {type(record).__name__}")

    def scan(self, data: bytes) -> list[Frame]:
        frames, at, size, parse = [], 0, len(data), self._pb.FromString
        while at + 8 <= size:
            (length,) = _LENGTH.unpack_from(data, at)
            end = at + 8 + length
            if length > MAX_RECORD or end > size:
                break
            try:
                values = parse(data[at + 8 : end]).values
            except Exception:
                break
            if not values:
                break
            first = values[0]
            stepless = first.WhichOneof("one_value") in ("meta_data", "hparam")
            frames.append(Frame(at, end, None if stepless else first.id))
            at = end
        return frames


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload
