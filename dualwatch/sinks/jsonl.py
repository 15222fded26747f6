"""``metrics.jsonl``: the seed-004 "JSON backup", one object per record, for jq and pandas."""

from __future__ import annotations

import json
import math
import os
import time
from typing import Mapping


class JsonlSink:
    """Appends ``{"step": ..., "wall_time": ..., "<tag>": value, ...}`` lines to one file.

    Non-finite values are written as the strings ``"NaN"``, ``"Infinity"`` and
    ``"-Infinity"`` so the file stays strict JSON (``jq`` rejects bare NaN).
    Each record is one ``write`` of a whole line, so a reader never sees half a record
    from a live writer unless the process dies mid-write.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - open for the sink's lifetime

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        record = {"step": int(step), "wall_time": time.time()}
        record.update({tag: _json_number(v) for tag, v in scalars.items()})
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _json_number(value: float) -> float | str:
    value = float(value)
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
