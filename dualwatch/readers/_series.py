"""Scalar series of one run: one point per step in step order, the last one written wins.

Readers hand points over in columns (tags, steps, wall times, values) a chunk at a time.
Training loops log the same tags in the same order every step, so a chunk's tags are
usually periodic; each tag's points are then a strided slice that joins its series with
three C-level ``extend`` calls instead of a Python loop per point. Anything else (a new
tag mid-chunk, a step logged again, out of order) goes point by point, through
:meth:`Series.put`. Also here: the viewers' smoothing of a series, which the monitor's report
and the plot both draw with.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from itertools import accumulate, islice
from operator import lt
from typing import Mapping, Protocol, Sequence

#: the EMA weight of the viewers' default smoothing, which the monitor and the plot use too
SMOOTHING = 0.6


class Series:
    """One scalar tag's points in step order; one point per step (last writer wins)."""

    __slots__ = ("_best", "_scanned", "steps", "values", "wall_times")

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.wall_times: list[float] = []
        self.values: list[float] = []
        # best(): index of the lowest finite value among the first ``_scanned`` points
        self._best = -1
        self._scanned = 0

    def __len__(self) -> int:
        return len(self.steps)

    def __repr__(self) -> str:
        return f"Series({len(self.steps)} points, last={self.last()})"

    def last(self) -> tuple[int, float, float] | None:
        """``(step, wall_time, value)`` of the highest step, or None when empty."""
        if not self.steps:
            return None
        return self.steps[-1], self.wall_times[-1], self.values[-1]

    def best(self) -> tuple[int, float] | None:
        """``(step, value)`` of the lowest finite value, or None when there is none.

        A monitor asks every poll; only points appended since the last call are scanned
        (any other change scans again from the start).
        """
        values, best = self.values, self._best
        for i in range(self._scanned, len(values)):
            v = values[i]
            if math.isfinite(v) and (best < 0 or v < values[best]):
                best = i
        self._best, self._scanned = best, len(values)
        return (self.steps[best], values[best]) if best >= 0 else None

    def put(self, step: int, wall_time: float, value: float) -> None:
        """Adds a point at any step; a point already at ``step`` is replaced."""
        steps = self.steps
        if not steps or step > steps[-1]:
            steps.append(step)
            self.wall_times.append(wall_time)
            self.values.append(value)
            return
        i = bisect_left(steps, step)
        self._best, self._scanned = -1, 0
        if steps[i] == step:
            self.wall_times[i] = wall_time
            self.values[i] = value
        else:
            steps.insert(i, step)
            self.wall_times.insert(i, wall_time)
            self.values.insert(i, value)

    def drop_before(self, index: int) -> None:
        """Removes the first ``index`` points (a reader that holds only the latest ones)."""
        del self.steps[:index], self.wall_times[:index], self.values[:index]
        self._best, self._scanned = -1, 0

    def drop_from(self, step: int) -> None:
        """Removes every point at ``step`` or later (TensorBoard's purge on a restart)."""
        i = bisect_left(self.steps, step)
        del self.steps[i:], self.wall_times[i:], self.values[i:]
        self._best, self._scanned = -1, 0


class Table:
    """Every series of one run, with the counts a monitor reports."""

    def __init__(self) -> None:
        self.series: dict[str, Series] = {}
        #: scalar points read, replaced ones included
        self.points = 0
        #: damaged records skipped
        self.corrupt = 0

    def extend(
        self,
        tags: Sequence[str],
        steps: Sequence[int],
        walls: Sequence[float],
        values: Sequence[float],
    ) -> None:
        """Adds the points ``zip(tags, steps, walls, values)``, in that order per tag."""
        n = len(tags)
        if not n:
            return
        self.points += n
        period = _period(tags)
        if period:
            # Tags logged together share one step and often one wall time: keep one object
            # for all of them (a million points hold 100k steps, not a million ints).
            lead_steps, lead_walls = steps[::period], walls[::period]
            for j in range(period):
                self._extend_tag(
                    tags[j],
                    _shared(steps[j::period], lead_steps),
                    _shared(walls[j::period], lead_walls),
                    values[j::period],
                )
            return
        series = self.series
        for tag, step, wall, value in zip(tags, steps, walls, values):
            s = series.get(tag)
            if s is None:
                s = series[tag] = Series()
            s.put(step, wall, value)

    def _extend_tag(self, tag: str, steps: list[int], walls: list[float], values: list[float]) -> None:
        s = self.series.get(tag)
        if s is None:
            s = self.series[tag] = Series()
        known = s.steps
        if (not known or steps[0] > known[-1]) and all(map(lt, steps, islice(steps, 1, None))):
            known.extend(steps)
            s.wall_times.extend(walls)
            s.values.extend(values)
            return
        for step, wall, value in zip(steps, walls, values):
            s.put(step, wall, value)

    def trim(self, keep: int) -> None:
        """Holds at most ``keep`` points per tag, the latest, once a tag holds twice that (so a
        poll rarely copies); ``best`` is then over the points held."""
        for s in self.series.values():
            if len(s.steps) > 2 * keep:
                s.drop_before(len(s.steps) - keep)

    def purge(self, step: int) -> None:
        """Drops every point at ``step`` or later, in every series; series left empty go."""
        for tag, s in list(self.series.items()):
            s.drop_from(step)
            if not s.steps:
                del self.series[tag]


def _shared(column: list, lead: list) -> list:
    """``column``, made of ``lead``'s objects where it holds the same numbers.

    A chunk may begin mid-step, so a tag's steps equal the first tag's steps either
    from the start or shifted by one.
    """
    m = len(column)
    for shift in (0, 1):
        same = lead[shift : shift + m]
        if column == same:
            return same
    return column


def _period(tags: Sequence[str]) -> int:
    """``p`` when ``tags`` repeats ``p`` distinct tags in a fixed order, else 0."""
    n = len(tags)
    try:
        p = tags.index(tags[0], 1)
    except ValueError:
        p = n
    if tags[p:] != tags[: n - p] or len(set(tags[:p])) != p:
        return 0
    return p


def smooth(values: Sequence[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average starting at the first value (the viewers' smoothing)."""
    return list(accumulate(values, lambda ema, v: weight * ema + (1 - weight) * v))


class SeriesLike(Protocol):
    """What the report and the plot need from one tag's points: :class:`Series` has it."""

    steps: list[int]
    wall_times: list[float]
    values: list[float]

    def last(self) -> tuple[int, float, float] | None: ...

    def best(self) -> tuple[int, float] | None: ...


class RunLike(Protocol):
    """What the report and the plot need from a run: :class:`~dualwatch.readers.RunReader` has it."""

    run_dir: str
    format: str | None
    series: Mapping[str, SeriesLike]
    corrupt: int
    records: int
