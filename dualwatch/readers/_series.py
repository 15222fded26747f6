"""Scalar series of one run: one point per step in step order, the last one written wins.

Each tag's points are held in columns: typed arrays of its steps (int64), wall times
(float64) and values (float64, which holds every float32 a log stores exactly), 24 bytes a
point where lists of Python numbers took about 80 (a million points: 24 MB, not 80).
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
from array import array
from bisect import bisect_left
from itertools import accumulate, islice
from operator import lt
from typing import Iterable, Mapping, Protocol, Sequence

#: the EMA weight of the viewers' default smoothing, which the monitor and the plot use too
SMOOTHING = 0.6


class Column(array):
    """A typed array that also equals a list of the same numbers, as the lists it replaces did.

    ``array.array`` holds numbers unboxed and grows in place (``extend`` from another array or
    a list is one C loop); it supports everything the report and the plot use (``len``,
    indexing, slicing, iteration, ``numpy.asarray`` without a copy). Slices are plain arrays.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            return self.tolist() == other
        return array.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = None  # type: ignore[assignment]  # mutable, like the array it is


class Series:
    """One scalar tag's points in step order; one point per step (last writer wins)."""

    __slots__ = ("_best", "_last", "_scanned", "_steps", "_values", "_walls")

    def __init__(self) -> None:
        self._steps = Column("q")
        self._walls = Column("d")
        self._values = Column("d")
        # best(): index of the lowest finite value among the first ``_scanned`` points
        self._best = -1
        self._scanned = 0
        # last(), kept until the series changes: an array makes a new float at each read, and a
        # NaN equals only itself, so reports built twice from one unchanged series stay equal
        self._last: tuple[int, float, float] | None = None

    # The columns can be replaced whole (a test or a tool building a series by hand); whatever
    # sequence is given is stored as a column, so the methods below see one kind of storage.
    @property
    def steps(self) -> Column:
        """The steps, ascending (int64)."""
        return self._steps

    @steps.setter
    def steps(self, steps: Iterable[int]) -> None:
        self._steps = Column("q", steps)
        self._best, self._scanned, self._last = -1, 0, None

    @property
    def wall_times(self) -> Column:
        """Each point's wall time, in seconds since the epoch (float64)."""
        return self._walls

    @wall_times.setter
    def wall_times(self, walls: Iterable[float]) -> None:
        self._walls = Column("d", walls)
        self._last = None

    @property
    def values(self) -> Column:
        """Each point's value (float64)."""
        return self._values

    @values.setter
    def values(self, values: Iterable[float]) -> None:
        self._values = Column("d", values)
        self._best, self._scanned, self._last = -1, 0, None

    def __len__(self) -> int:
        return len(self._steps)

    def __repr__(self) -> str:
        return f"Series({len(self._steps)} points, last={self.last()})"

    def last(self) -> tuple[int, float, float] | None:
        """``(step, wall_time, value)`` of the highest step, or None when empty."""
        if self._last is None and self._steps:
            self._last = self._steps[-1], self._walls[-1], self._values[-1]
        return self._last

    def best(self) -> tuple[int, float] | None:
        """``(step, value)`` of the lowest finite value, or None when there is none.

        A monitor asks every poll; only points appended since the last call are scanned
        (any other change scans again from the start).
        """
        values, best = self._values, self._best
        for i in range(self._scanned, len(values)):
            v = values[i]
            if math.isfinite(v) and (best < 0 or v < values[best]):
                best = i
        self._best, self._scanned = best, len(values)
        return (self._steps[best], values[best]) if best >= 0 else None

    def put(self, step: int, wall_time: float, value: float) -> None:
        """Adds a point at any step; a point already at ``step`` is replaced."""
        steps = self._steps
        self._last = None
        if not steps or step > steps[-1]:
            steps.append(step)
            self._walls.append(wall_time)
            self._values.append(value)
            return
        i = bisect_left(steps, step)
        self._best, self._scanned = -1, 0
        if steps[i] == step:
            self._walls[i] = wall_time
            self._values[i] = value
        else:
            steps.insert(i, step)
            self._walls.insert(i, wall_time)
            self._values.insert(i, value)

    def extend(
        self,
        steps: Sequence[int],
        walls: Sequence[float],
        values: Sequence[float],
        ascending: bool = False,
    ) -> None:
        """Adds points in the order given; points that do not all come after the last one, in
        ascending steps (``ascending``: the caller knows they ascend), go one by one through
        :meth:`put`. Steps and wall times may come as arrays: they are then copied, not converted.
        """
        known = self._steps
        if (not known or steps[0] > known[-1]) and (ascending or _ascending(steps)):
            self._last = None
            # a list: one resize, then a C loop (``extend`` resizes per item); an array: a copy
            known.fromlist(steps) if type(steps) is list else known.extend(steps)
            self._walls.fromlist(walls) if type(walls) is list else self._walls.extend(walls)
            self._values.fromlist(values) if type(values) is list else self._values.extend(values)
            return
        for step, wall, value in zip(steps, walls, values):
            self.put(step, wall, value)

    def drop_before(self, index: int) -> None:
        """Removes the first ``index`` points (a reader that holds only the latest ones)."""
        del self._steps[:index], self._walls[:index], self._values[:index]
        self._best, self._scanned, self._last = -1, 0, None

    def drop_from(self, step: int) -> None:
        """Removes every point at ``step`` or later (TensorBoard's purge on a restart)."""
        i = bisect_left(self._steps, step)
        del self._steps[i:], self._walls[i:], self._values[i:]
        self._best, self._scanned, self._last = -1, 0, None


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
        series = self.series
        period = _period(tags)
        if period:
            # Tags logged together share their steps and mostly their wall times: the first tag's
            # are checked and converted once, and each tag whose own are the same (from the first
            # step, or from the second when the chunk began mid-step) copies them.
            lead_steps, lead_walls = steps[::period], walls[::period]
            ascending = _ascending(lead_steps)
            step_column, wall_column = Column("q", lead_steps), Column("d", lead_walls)
            for j in range(period):
                s = series.get(tags[j])
                if s is None:
                    s = series[tags[j]] = Series()
                own_steps, own_walls, own_values = steps[j::period], walls[j::period], values[j::period]
                m = len(own_steps)
                for shift in (0, 1):
                    if own_steps == lead_steps[shift : shift + m]:
                        shared = own_walls == lead_walls[shift : shift + m]
                        walls_in = wall_column[shift : shift + m] if shared else own_walls
                        s.extend(step_column[shift : shift + m], walls_in, own_values, ascending)
                        break
                else:
                    s.extend(own_steps, own_walls, own_values)
            return
        for tag, step, wall, value in zip(tags, steps, walls, values):
            s = series.get(tag)
            if s is None:
                s = series[tag] = Series()
            s.put(step, wall, value)

    def trim(self, keep: int) -> None:
        """Holds at most ``keep`` points per tag, the latest, once a tag holds twice that (so a
        poll rarely copies); ``best`` is then over the points held."""
        for s in self.series.values():
            if len(s) > 2 * keep:
                s.drop_before(len(s) - keep)

    def purge(self, step: int) -> None:
        """Drops every point at ``step`` or later, in every series; series left empty go."""
        for tag, s in list(self.series.items()):
            s.drop_from(step)
            if not len(s):
                del self.series[tag]


def _ascending(steps: Sequence[int]) -> bool:
    """Whether ``steps`` strictly ascend."""
    return all(map(lt, steps, islice(steps, 1, None)))


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

    @property
    def steps(self) -> Sequence[int]: ...

    @property
    def wall_times(self) -> Sequence[float]: ...

    @property
    def values(self) -> Sequence[float]: ...

    def last(self) -> tuple[int, float, float] | None: ...

    def best(self) -> tuple[int, float] | None: ...


class RunLike(Protocol):
    """What the report and the plot need from a run: :class:`~dualwatch.readers.RunReader` has it."""

    run_dir: str
    format: str | None
    series: Mapping[str, SeriesLike]
    corrupt: int
    records: int
