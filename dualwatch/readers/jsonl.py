"""Reads ``metrics.jsonl``: one JSON object per line, scalars as ``{"step", "wall_time", tag: value}``.

A line is read once it ends in a newline; the unterminated last line is a record still
being written. A line that is not JSON is counted as damaged and skipped. Objects with a
``"kind"`` (histograms, text, hparams) hold no scalars. Non-finite values are the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"`` (bare ``NaN`` is accepted too).
"""

from __future__ import annotations

import json

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
        tags: list[str] = []
        steps: list[int] = []
        walls: list[float] = []
        values: list[float] = []
        loads = json.loads
        for line in data[:done].split(b"\n"):
            if not line.strip():
                continue
            try:
                record = loads(line)
            except (ValueError, RecursionError):
                self.table.corrupt += 1
                continue
            if type(record) is not dict or "kind" in record:
                continue
            step, wall = record.get("step"), record.get("wall_time", 0.0)
            if type(step) is not int or type(wall) not in (int, float):
                continue
            wall = float(wall)
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
        return done
