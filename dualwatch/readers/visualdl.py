"""Reads ``vdlrecords`` bytes: ``<Q length | Record``, without ever trusting a length blindly.

VisualDL has no checksum, so a record is believed only when its length is plausible
(1 byte to 2 GiB, and within the bytes at hand) and it parses with at least one value. A
length that runs past the end is a record still being written, and is waited for, when
what is there agrees with it (a ``Record`` payload starts ``0x0a <value length>``);
otherwise the record is damaged: it is counted once and reading resumes at the next
offset where a believable record starts. Zeros at the end of a file (a crash leaves
them) are a tail to wait on, not 512 damaged records.
"""

from __future__ import annotations

import re
import struct
from itertools import repeat
from operator import truediv

from dualwatch.formats.visualdl import MAX_RECORD
from dualwatch.readers import _schema
from dualwatch.readers.series import Table

_LENGTH = struct.Struct("<Q").unpack_from
#: records per parse of the columns message
CHUNK = 512
#: a chunk smaller than this that is not all plain scalars is read record by record
_SPLIT_BELOW = 32
#: where a record might start: a length below 2 GiB, then 0x0a (``Record.values``)
_CANDIDATE = re.compile(rb"(?=[\x00-\xff]{3}[\x00-\x7f]\x00\x00\x00\x00\n)")


class VisualDLDecoder:
    """Turns one file's bytes into points of ``table``; holds the file's resync state."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self._columns = _schema.columns()[0].FromString
        self._record = _schema.visualdl_record().FromString
        #: inside a damaged stretch that has been counted already
        self._lost = False

    def decode(self, data: bytes) -> int:
        """Reads the whole records at the start of ``data``; returns how many bytes are done with."""
        at, size, view, length_of = 0, len(data), memoryview(data), _LENGTH
        while True:
            start, parts = at, []
            add = parts.append
            while at + 8 <= size and len(parts) < CHUNK:
                (length,) = length_of(data, at)
                end = at + 8 + length
                if not 0 < length <= MAX_RECORD or end > size:
                    break
                add(view[at + 8 : end])
                at = end
            if parts:
                bad = self._emit(parts, 0, len(parts), start)
                if bad is not None:
                    at = self._damaged(data, bad)
                    continue
            if len(parts) == CHUNK:
                continue
            if at + 8 > size or _waits(data, at) or data.count(0, at) == size - at:
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
            self.table.extend(
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
            kind = value.WhichOneof("one_value")
            if kind == "value":
                tags.append(value.tag)
                values.append(value.value)
            elif kind == "tag_value":  # add_scalars: one flat tag per line, as dualwatch writes it
                tags.append(f"{value.tag}/{value.tag_value.tag}")
                values.append(value.tag_value.value)
            else:
                at += 8 + len(part)
                continue
            steps.append(value.id)
            walls.append(value.timestamp / 1000)
            at += 8 + len(part)
        self.table.extend(tags, steps, walls, values)
        return bad

    def _damaged(self, data: bytes, at: int) -> int:
        """Counts the damage at ``at`` (once per stretch); returns where a record may start again."""
        if not self._lost:
            self.table.corrupt += 1
            self._lost = True
        size = len(data)
        for match in _CANDIDATE.finditer(data, at + 1):
            start = match.start()
            (length,) = _LENGTH(data, start)
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


def _waits(data: bytes, at: int) -> bool:
    """Whether the bytes from ``at`` can be the beginning of a record still being written."""
    size = len(data)
    if at + 8 > size:
        return True
    (length,) = _LENGTH(data, at)
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
