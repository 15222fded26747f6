"""``metrics.jsonl``: the JSON backup of a run, one strict-JSON object per line.

Writing: scalars of one step and millisecond form one object ``{"step", "wall_time", <tag>:
value}`` (``pandas.read_json(path, lines=True)`` gives one row per record). Other records
carry a ``"kind"``; PR and ROC curves carry their arrays (``tp``, ``fp``, ``tn``, ``fn`` and
``precision``/``recall`` or ``tpr``/``fpr``); a model graph is summed up (its node count and
operations; the graph itself is in the viewers' files); images and embeddings are not copied into
the text file. Non-finite values become the strings ``"NaN"``, ``"Infinity"`` and ``"-Infinity"``
(:func:`to_json`), because ``jq`` rejects bare NaN.

Reading: a line is read once it ends in a newline; the unterminated last line is a record
still being written. A line that is not JSON is counted as damaged and skipped, but zero
bytes at its head (a zero-filled stretch before it) are damage of their own: what follows
them is still read. Objects with a ``"kind"`` (histograms, text, hparams) hold no scalars.
The non-finite strings are read back as numbers (bare ``NaN`` is accepted too).
"""

from __future__ import annotations

import collections
import json
import math
from json.encoder import encode_basestring_ascii
from typing import Any, Iterator, Sequence

from dualwatch._formats import _codec
from dualwatch._formats.base import Format, Frame, Points
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
)

_dumps = json.JSONEncoder(allow_nan=False, separators=(", ", ": ")).encode
#: the strings non-finite numbers are written as, and their values
NON_FINITE = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}
_NOT_TAGS = ("step", "wall_time")
#: steps are int64s: from -STEPS to STEPS - 1
STEPS = 1 << 63
#: parsed lines handed to the reader's columns at once: a 4 MiB block holds some 13,000 lines, whose
#: dicts, held all at once, would take more memory (about 20 MB) than a million points in columns
BATCH = 1024


def to_json(value: Any) -> Any:
    """``value`` with every non-finite float, however deeply nested, as its string (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def _float(number: int | float) -> float:
    """``number`` as a float; an int beyond every float (JSON has no bound) is infinite."""
    try:
        return float(number)
    except OverflowError:
        return math.inf if number > 0 else -math.inf


class JsonlDecoder:
    """Turns one file's bytes into points."""

    def __init__(self, points: Points) -> None:
        self.points = points
        #: ``skip`` passed over the start of the line that comes next (and counted it)
        self._skipped = False

    def decode(self, data: bytes) -> int:
        """Reads the whole lines of ``data``; returns how many bytes are done with."""
        done = data.rfind(b"\n") + 1
        dated = []
        for record in self._records(data[:done]):
            step, wall = record.get("step"), record.get("wall_time", 0.0)
            if "kind" in record or type(step) is not int or type(wall) not in (int, float):
                continue
            if not -STEPS <= step < STEPS:  # every format's steps are int64s
                self.points.corrupt += 1
                continue
            dated.append((step, _float(wall), record))
            if len(dated) == BATCH:
                self._extend(dated)
                dated = []
        self._extend(dated)
        return done

    def skip(self, data: bytes, available: int) -> int:
        """Passes over ``data``, the start of a line longer than a reader holds (no scalar line is
        that long) or a zero-filled stretch, counted once as damaged; the end of that line is
        then not counted again (a line after zeros is still read, as in :meth:`_damaged`)."""
        if not self._skipped:
            self.points.corrupt += 1
            self._skipped = True
        return len(data)

    def _records(self, data: bytes) -> Iterator[dict]:
        """The JSON objects of the lines of ``data``; damaged lines are counted."""
        loads = json.loads
        skipped = self._skipped and bool(data)  # the first line ends what skip counted
        self._skipped &= not data
        for line in data.split(b"\n"):
            counted, skipped = skipped, False
            if not line.strip():
                continue
            try:
                record = loads(line)
            except (ValueError, RecursionError):
                record = self._damaged(line, counted)
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
                if kind is float:
                    pass
                elif kind is int:
                    value = _float(value)
                elif kind is str and value in NON_FINITE:
                    value = NON_FINITE[value]
                else:
                    continue
                if tag in _NOT_TAGS:
                    continue
                tags.append(tag)
                steps.append(step)
                walls.append(wall)
                values.append(value)
        self.points.extend(tags, steps, walls, values)

    def _damaged(self, line: bytes, counted: bool = False) -> object:
        """Counts a line that is not JSON as damaged; returns the record it still holds, or None.

        A zero-filled stretch (a crash before the file system wrote the blocks it had
        allotted, then a resumed writer appending) has no newline of its own, so the zeros
        end up at the head of the next whole line: that line is still read.
        """
        self.points.corrupt += not counted
        rest = line.lstrip(b"\0")
        if rest is line or len(rest) == len(line) or not rest.strip():
            return None
        try:
            return json.loads(rest)
        except (ValueError, RecursionError):
            return None


class JsonlFormat(Format):
    name = "jsonl"
    label = "JSON lines"
    mark = "metrics.jsonl"
    file_pattern = "metrics.jsonl"
    Decoder = JsonlDecoder

    def new_file_name(self, wall_ms: int) -> str:
        return self.file_pattern

    def __init__(self) -> None:
        self._keys: dict[str, bytes] = {}  # each tag as a JSON string, for the C codec

    def encode(self, records: Sequence[Record]) -> bytes:
        return _codec.encode(records, _codec.codec and self._fast, self._encode)

    def _fast(self, records: list, start: int, scalars: type) -> tuple[bytes, int]:
        return _codec.codec.jsonl(records, start, scalars, self._keys, encode_basestring_ascii)

    def _encode(self, records: Sequence[Record]) -> bytes:
        lines = []
        for record in records:
            obj = _object(record)
            if obj is None:
                continue
            try:
                lines.append(_dumps(obj))
            except ValueError:
                lines.append(_dumps(to_json(obj)))
        return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""

    @classmethod
    def scan(cls, data: bytes) -> list[Frame]:
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
    elif isinstance(record, PRCurve):
        head.update(kind="pr_curve", tag=record.tag, **_arrays(record, "tp fp tn fn precision recall"))
    elif isinstance(record, ROCCurve):
        head.update(kind="roc_curve", tag=record.tag, **_arrays(record, "tp fp tn fn tpr fpr"))
    elif isinstance(record, (Image, Embedding)):
        return None
    elif isinstance(record, Graph):  # a summary: the graph itself is in the viewers' files
        ops = collections.Counter(node.op for node in record.nodes)
        head.update(kind="graph", framework=record.framework, nodes=len(record.nodes), ops=dict(ops))
    return head


def _arrays(record: PRCurve | ROCCurve, names: str) -> dict[str, list[float]]:
    return {name: getattr(record, name).tolist() for name in names.split()}
