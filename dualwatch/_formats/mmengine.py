"""MMEngine's ``vis_data/scalars.json``: read only, the file ``LocalVisBackend`` appends to.

It is the same kind of file as ``metrics.jsonl``, one ``{"step": ..., tag: value}`` line per
``add_scalars`` call, but with no wall time: :class:`MMEngineDecoder` makes them up (see
there). Its name is common, so a file counts as one only in a directory named ``vis_data``,
which MMEngine's ``Visualizer`` always writes its backends' files under
(``<work_dir>/<timestamp>/vis_data/``); the ``<timestamp>.json`` next to it holds the same
lines and is not read.
"""

from __future__ import annotations

import math
import os

from dualwatch._formats.base import LogFormat, Points
from dualwatch._formats.jsonl import STEPS, JsonlDecoder, _float

#: the directory MMEngine's Visualizer puts its backends' files in
DIRECTORY = "vis_data"


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

    def __init__(self, points: Points) -> None:
        super().__init__(points)
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
            if not -STEPS <= step < STEPS:  # every format's steps are int64s
                self.points.corrupt += 1
                continue
            spent = record.get("time")
            if top is not None and step > top and type(spent) in (int, float):
                took = _float(step - top) * max(0.0, _float(spent))
                if math.isfinite(took):  # NaN, or numbers too large to date anything by
                    elapsed += took
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


class MMEngineFormat(LogFormat):
    name = "mmengine"
    label = "MMEngine"
    mark = "scalars.json"
    Decoder = MMEngineDecoder

    @classmethod
    def is_log(cls, name: str, directory: str | None = None) -> bool:
        return (
            name == cls.mark
            and directory is not None
            and os.path.basename(os.path.abspath(directory)) == DIRECTORY
        )
