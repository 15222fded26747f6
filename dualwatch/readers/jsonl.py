"""Reads ``metrics.jsonl``: one JSON object per line, scalars as ``{"step", "wall_time", tag: value}``.

A line is read once it ends in a newline; the unterminated last line is a record still
being written. A line that is not JSON is counted as damaged and skipped, but zero bytes
at its head (a zero-filled stretch before it) are damage of their own: what follows them
is still read. Objects with a
``"kind"`` (histograms, text, hparams) hold no scalars. Non-finite values are the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (bare ``NaN`` is accepted too).

MMEngine's ``vis_data/scalars.json`` (``LocalVisBackend``) is the same kind of file, one
``{"step": ..., tag: value}`` line per ``add_scalars`` call, but with no wall time:
:class:`MMEngineDecoder` makes them up (see there).
"""

from __future__ import annotations

import json
import math
from typing import Iterator

from dualwatch.readers.series import Table

_NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_NOT_TAGS = ("step", "wall_time")


class JsonlDecoder:
    """Turns one file's bytes into points of ``table``."""

    def __init__(self, table: Table) -> None:
        self.table = table

    def decode(self, data: bytes) -> int:
        """Reads the whole lines of ``data``; returns how many bytes are done with."""
        done = data.rfind(b"\n") + 1
        dated = []
        for record in self._records(data[:done]):
            step, wall = record.get("step"), record.get("wall_time", 0.0)
            if "kind" in record or type(step) is not int or type(wall) not in (int, float):
                continue
            dated.append((step, float(wall), record))
        self._extend(dated)
        return done

    def _records(self, data: bytes) -> Iterator[dict]:
        """The JSON objects of the lines of ``data``; damaged lines are counted."""
        loads = json.loads
        for line in data.split(b"\n"):
            if not line.strip():
                continue
            try:
                record = loads(line)
            except (ValueError, RecursionError):
                record = self._damaged(line)
            if type(record) is dict:
                yield record

    def _extend(self, dated: list[tuple[int, float, dict]]) -> None:
        """Adds the numbers of each ``(step, wall_time, record)`` to the table."""
        tags: list[str] = []
        steps: list[int] = []
        walls: list[float] = []
        values: list[float] = []
        for step, wall, record in dated:
            for tag, value in record.items():
                kind = type(value)
                if kind is float or kind is int:
                    value = float(value)
                elif kind is str and value in _NON_FINITE:
                    value = _NON_FINITE[value]
                else:
                    continue
                if tag in _NOT_TAGS:
                    continue
                tags.append(tag)
                steps.append(step)
                walls.append(wall)
                values.append(value)
        self.table.extend(tags, steps, walls, values)

    def _damaged(self, line: bytes) -> object:
        """Counts a line that is not JSON as damaged; returns the record it still holds, or None.

        A zero-filled stretch (a crash before the file system wrote the blocks it had
        allotted, then a resumed writer appending) has no newline of its own, so the zeros
        end up at the head of the next whole line: that line is still read.
        """
        self.table.corrupt += 1
        rest = line.lstrip(b"\0")
        if rest is line or len(rest) == len(line) or not rest.strip():
            return None
        try:
            return json.loads(rest)
        except (ValueError, RecursionError):
            return None


class MMEngineDecoder(JsonlDecoder):
    """Reads MMEngine's ``scalars.json``, whose lines have no wall time.

    The rule: the last whole line of what one poll reads was written at ``mtime``, the
    file's modification time in the same ``stat`` that bounds the read (the reader sets it
    before each :meth:`decode`). Lines before it are dated back by MMEngine's own ``time``
    key, the mean seconds per iteration over the logging interval: a line's step gain over
    the highest step before it, times the ``time`` it gives, is the time it took. A line
    that gains no step (validation, logged at the epoch) or has no usable ``time`` took no
    time. No wall time goes back past the last one of the previous poll. So "since the
    last record" is the age of the file's last write (a live run is not stalled while it
    appends), and steps/s comes from MMEngine's iteration time; pauses between logged
    intervals that it does not time (validation, checkpoints) are not in the rate of a
    file read in one go.
    """

    def __init__(self, table: Table) -> None:
        super().__init__(table)
        #: modification time of the file as of the bytes handed to the next decode
        self.mtime = 0.0
        self._last_wall: float | None = None
        self._top: int | None = None

    def decode(self, data: bytes) -> int:
        """Reads the whole lines of ``data``; returns how many bytes are done with."""
        done = data.rfind(b"\n") + 1
        timed: list[tuple[int, float, dict]] = []  # (step, seconds since the first line, record)
        elapsed = 0.0
        top = self._top
        for record in self._records(data[:done]):
            step = record.get("step")
            if type(step) is not int:
                continue
            spent = record.get("time")
            if top is not None and step > top and type(spent) in (int, float) and math.isfinite(spent):
                elapsed += (step - top) * max(0.0, float(spent))
            top = step if top is None else max(top, step)
            timed.append((step, elapsed, record))
        self._top = top
        end, floor = float(self.mtime), self._last_wall
        dated = []
        for step, at, record in timed:
            wall = end - (elapsed - at)
            dated.append((step, wall if floor is None else max(floor, wall), record))
        if timed:
            self._last_wall = end if floor is None else max(floor, end)
        self._extend(dated)
        return done
