"""``metrics.jsonl``: seed 004's "JSON backup", one strict-JSON object per line.

Scalars of one step and millisecond form one object ``{"step", "wall_time", <tag>: value}``
(``pandas.read_json(path, lines=True)`` gives one row per record). Other records carry a
``"kind"``; images are not copied into the text file. Non-finite values become the strings
``"NaN"``, ``"Infinity"`` and ``"-Infinity"``, because ``jq`` rejects bare NaN.
"""

from __future__ import annotations

import json
import math
from typing import Any, Sequence

from dualwatch.formats import Format, Frame
from dualwatch.records import Histogram, HParams, Image, Record, Scalars, Text

_dumps = json.JSONEncoder(allow_nan=False, separators=(", ", ": ")).encode


class JsonlFormat(Format):
    name = "jsonl"
    label = "JSON lines"
    mark = "metrics.jsonl"
    file_pattern = "metrics.jsonl"

    def new_file_name(self, wall_ms: int) -> str:
        return self.file_pattern

    def encode(self, records: Sequence[Record]) -> bytes:
        lines = []
        for record in records:
            obj = _object(record)
            if obj is None:
                continue
            try:
                lines.append(_dumps(obj))
            except ValueError:
                lines.append(_dumps({k: _finite(v) for k, v in obj.items()}))
        return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""

    def scan(self, data: bytes) -> list[Frame]:
        frames, at = [], 0
        while (end := data.find(b"\n", at)) >= 0:
            try:
                step = json.loads(data[at:end]).get("step")
            except ValueError:
                break
            frames.append(Frame(at, end + 1, step))
            at = end + 1
        return frames


def _object(record: Record) -> dict[str, Any] | None:
    head = {"step": record.step, "wall_time": record.wall_ms / 1000}
    if type(record) is Scalars:
        head.update(record.values)
        return head
    if isinstance(record, Histogram):
        head.update(
            kind="histogram", tag=record.tag, counts=record.counts.tolist(), edges=record.edges.tolist(),
            num=record.num, sum=record.sum, sum_squares=record.sum_squares, nonfinite=record.nonfinite,
        )  # fmt: skip
    elif isinstance(record, Text):
        head.update(kind="text", tag=record.tag, text=record.text)
    elif isinstance(record, HParams):
        head.update(kind="hparams", hparams=record.hparams, metrics=record.metrics)
    elif isinstance(record, Image):
        return None
    return head


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value
