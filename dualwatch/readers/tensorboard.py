"""Reads TensorBoard event bytes: ``<Q len | <I masked crc(len) | Event | <I masked crc(Event)``.

Both checksums are checked (C ``crc32c``; a header seen before is looked up, not
re-checksummed). A record whose data checksum fails is skipped and counted, and reading
goes on after it: TensorBoard's own loader stops there for good, silently. A header whose
checksum fails means the framing is lost: it is counted once and reading resumes at the
next offset whose 8 length bytes carry a valid checksum. A record not yet complete is
left for the next poll.

Scalars are ``simple_value`` and scalar tensors of the ``scalars`` plugin (torch
``new_style``, TensorFlow 2; the plugin is named in a tag's first value only, so it is
remembered per tag). ``SessionLog.START`` at step S drops the points at S or later read
so far, as TensorBoard does when a run restarts.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from dualwatch.readers import _schema
from dualwatch.readers.series import Table

try:
    from crc32c import crc32c
except ImportError:  # TensorBoard's pure-Python one: correct, about 50x slower
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import crc32c

_LENGTH = struct.Struct("<Q").unpack_from
_CRC = struct.Struct("<I").unpack_from
#: records per parse of the columns message
CHUNK = 512
_SPLIT_BELOW = 32
#: where a header might start: a length below 2 GiB followed by a checksum that is not zero
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{3}[\x00-\x7f]\x00\x00\x00\x00(?!\x00\x00\x00\x00)[\x00-\xff]{4})")
_START = 1  # SessionLog.START
#: tensor dtypes that hold a scalar, and how ``tensor_content`` packs them
_CONTENT = {1: "<f", 2: "<d", 3: "<i", 9: "<q", 19: "<e"}


def _masked(crc: int) -> int:
    """TFRecord's masked checksum (written out where it is hot, in ``decode``)."""
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


class TensorBoardDecoder:
    """Turns one file's bytes into points of ``table``; holds the file's resync state."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._columns = _schema.columns()[1].FromString
        self._event = _schema.tensorboard_event().FromString
        self._headers: dict[bytes, int] = {}
        self._scalar_tags: set[str] = set()
        self._lost = False

    def decode(self, data: bytes) -> int:
        """Reads the whole records at the start of ``data``; returns how many bytes are done with."""
        at, size, view = 0, len(data), memoryview(data)
        headers, crc, stored = self._headers, crc32c, _CRC
        while True:
            parts = []
            add = parts.append
            while at + 12 <= size and len(parts) < CHUNK:
                head = data[at : at + 12]
                length = headers.get(head)
                if length is None:
                    length = self._header(head)
                    if length is None:
                        break
                end = at + 12 + length
                if end + 4 > size:
                    break
                payload = view[at + 12 : end]
                c = crc(payload)
                if (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF != stored(data, end)[0]:
                    self.table.corrupt += 1
                else:
                    add(payload)
                at = end + 4
            if parts:
                self._emit(parts, 0, len(parts))
            if len(parts) == CHUNK:
                continue
            if at + 12 > size or self._header(data[at : at + 12]) is not None:
                return at  # a record still being written
            if data.count(0, at) == size - at:
                return at  # zeros a crash left: wait for what comes after them
            at = self._damaged(data, at)
            if at + 12 > size:
                return at

    def _header(self, head: bytes) -> int | None:
        """The record length in a 12-byte header, or None when its checksum fails."""
        if _masked(crc32c(head[:8])) != _CRC(head, 8)[0]:
            return None
        if len(self._headers) > 4096:
            self._headers.clear()
        length = self._headers[head] = _LENGTH(head)[0]
        return length

    def _damaged(self, data: bytes, at: int) -> int:
        """Counts a bad header (once per stretch); returns the next offset with a good one."""
        if not self._lost:
            self.table.corrupt += 1
            self._lost = True
        size = len(data)
        for match in _CANDIDATE.finditer(data, at + 1):
            start = match.start()
            if self._header(data[start : start + 12]) is not None:
                return start
        return max(at + 1, size - 11)

    def _emit(self, parts: list[memoryview], lo: int, hi: int) -> None:
        """Adds the points of the events ``parts[lo:hi]``, whose checksums are good."""
        k = hi - lo
        self._lost = False
        try:
            events = self._columns(b"".join(parts[lo:hi]))
        except Exception:
            self._one_by_one(parts[lo:hi])
            return
        values = events.summary.value
        tags, steps, walls, numbers = values.tag, events.step, events.wall_time, values.simple_value
        whole = min(len(tags), len(steps), len(walls), len(numbers))
        plain = len(events.ListFields()) == 3 and len(values.ListFields()) == 2
        if whole == k == len(tags) and plain:
            self.table.extend(list(tags), list(steps), list(walls), list(numbers))
        elif k >= _SPLIT_BELOW and len(tags) <= k and (k - whole) * 8 < k:
            self._emit(parts, lo, lo + k // 2)
            self._emit(parts, lo + k // 2, hi)
        else:
            self._one_by_one(parts[lo:hi])

    def _one_by_one(self, parts: list[memoryview]) -> None:
        """The exact path: TensorBoard's own ``Event``, tensor scalars and purges included."""
        tags: list[str] = []
        steps: list[int] = []
        walls: list[float] = []
        numbers: list[float] = []
        for part in parts:
            try:
                event = self._event(part)
            except Exception:
                self.table.corrupt += 1
                continue
            what = event.WhichOneof("what")
            if what == "summary":
                step, wall = event.step, event.wall_time  # one object for all values of the event
                for value in event.summary.value:
                    kind = value.WhichOneof("value")
                    if kind == "simple_value":
                        number = value.simple_value
                    elif kind == "tensor":
                        number = self._tensor_scalar(value)
                        if number is None:
                            continue
                    else:
                        continue
                    tags.append(value.tag)
                    steps.append(step)
                    walls.append(wall)
                    numbers.append(number)
            elif what == "session_log" and event.session_log.status == _START:
                self.table.extend(tags, steps, walls, numbers)
                tags, steps, walls, numbers = [], [], [], []
                self.table.purge(event.step)
        self.table.extend(tags, steps, walls, numbers)

    def _tensor_scalar(self, value: Any) -> float | None:
        """The number in a ``scalars``-plugin tensor value, or None for any other tensor."""
        tag = value.tag
        if value.HasField("metadata"):
            plugin = value.metadata.plugin_data.plugin_name
            if plugin == "scalars":
                self._scalar_tags.add(tag)
            elif plugin:
                return None
        if tag not in self._scalar_tags:
            return None
        tensor = value.tensor
        if tensor.tensor_content:
            layout = _CONTENT.get(tensor.dtype)
            if layout is None or len(tensor.tensor_content) != struct.calcsize(layout):
                return None
            return float(struct.unpack(layout, tensor.tensor_content)[0])
        for field in (tensor.float_val, tensor.double_val, tensor.int_val, tensor.int64_val):
            if len(field) == 1:
                return float(field[0])
        if len(tensor.half_val) == 1:
            return struct.unpack("<e", struct.pack("<H", tensor.half_val[0]))[0]
        return None
