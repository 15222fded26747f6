"""Where records go. The contract is two methods, ``write(records)`` and ``close()``.

:class:`FanOut` sends each batch to every sink; a sink that raises is switched off with
one warning (naming every sink that failed on that batch) and the others go on, so a
full disk or a missing directory never reaches the training loop. With a ``backlog``,
each sink is fed by a thread of its own, so a sink stuck in ``write()`` (a tracker's
server not answering, a hung network disk) never holds up the others.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from typing import Callable, Protocol, Sequence

from dualwatch._warn import warn
from dualwatch.records import Record
from dualwatch.sinks._console import ConsoleSink

__all__ = ["ConsoleSink", "FanOut", "Sink"]

_SETTLE = 1.0  # seconds the other sinks get to finish a batch before a failure is warned about


class Sink(Protocol):
    """Anything with these two methods can be passed in ``Writer(sinks=[...])``: the writer thread
    calls ``write`` with each batch of records (:mod:`dualwatch.records`) and ``close`` once."""

    def write(self, records: Sequence[Record]) -> None: ...

    def close(self) -> None: ...


class FanOut:
    """Sends every batch to all sinks; sinks that raise are warned about once and dropped.

    ``backlog=None``: each batch is written on the caller's thread, sink after sink (the
    console prints before ``log()`` returns). ``backlog=N``: each sink has its own thread
    and at most ``N`` records waiting for it; ``write`` only hands the batch out, in order,
    and a batch that would overflow a sink's backlog is dropped for that sink alone and
    counted in :attr:`dropped` (one warning per sink). ``wait`` and ``close`` are bounded.
    """

    def __init__(self, sinks: Sequence[Sink], backlog: int | None = None) -> None:
        self.sinks = list(sinks)
        self.failed: list[str] = []
        #: records dropped per sink (its ``repr``) because its backlog was full
        self.dropped: dict[str, int] = {}
        self._feeds = {id(sink): _Feed(sink, backlog, self._failure) for sink in sinks} if backlog else {}
        self._failures: list[tuple[str, str]] = []  # (what, "sink (error)") not yet warned about
        # re-entrant: the SIGTERM handler may close the writers while the main thread is in here
        self._failures_lock = threading.RLock()

    def write(self, records: Sequence[Record]) -> None:
        if not self._feeds:
            self._each("write", lambda sink: sink.write(records))
            return
        for sink in list(self.sinks):
            feed = self._feeds[id(sink)]
            if feed.put(records):
                continue
            name = repr(sink)
            if name not in self.dropped:
                warn(
                    f"{name} is {feed.backlog} records behind (stuck in write()?); its batches are dropped "
                    "and counted in Writer.stats()['backlog_dropped'] until it catches up. "
                    "The other sinks get every record"
                )
            self.dropped[name] = self.dropped.get(name, 0) + len(records)
        self.report()

    def wait(self, timeout: float) -> None:
        """Waits up to ``timeout`` seconds in all for every sink to write what it was handed. A sink
        found stuck is not waited for again until a write of it returns."""
        deadline = time.monotonic() + timeout
        for feed in self._feeds.values():
            feed.done_by(deadline)
        self.report()

    def close(self, timeout: float = 0.0) -> list[tuple[Sink, int]]:
        """Writes what each sink was handed and closes it, waiting at most ``timeout`` seconds in all.
        Returns the sinks still stuck then, each with the records it had not written: they are
        abandoned (their threads left behind) and listed in :attr:`failed`."""
        if not self._feeds:
            self._each("close", lambda sink: sink.close())
            self.sinks.clear()
            return []
        deadline = time.monotonic() + timeout
        for feed in self._feeds.values():
            feed.finish()
        stuck = [feed for feed in self._feeds.values() if not feed.joined_by(deadline)]
        self.report()
        self.failed += [f"{feed.sink!r} (stuck in write() at close)" for feed in stuck]
        self.sinks.clear()
        return [(feed.sink, feed.held + feed.writing) for feed in stuck]

    def report(self) -> None:
        """Warns once about the sinks that failed since the last report (fed sinks fail on their threads).

        The others are given up to a second to finish the batches they hold, so that sinks failing on
        the same batch (three files in a removed directory) are named in one warning."""
        if not self._failures:
            return
        deadline = time.monotonic() + _SETTLE
        for feed in self._feeds.values():
            feed.done_by(deadline, give_up=False)
        with self._failures_lock:
            failures, self._failures = self._failures, []
        for what in dict.fromkeys(what for what, _ in failures):
            self._warn_failed(what, [text for w, text in failures if w == what])

    def _failure(self, sink: Sink, what: str, err: Exception) -> None:
        """Called on a sink's thread when its ``write`` or ``close`` raised."""
        with self._failures_lock:
            with contextlib.suppress(ValueError):
                self.sinks.remove(sink)
            self._failures.append((what, f"{sink!r} ({type(err).__name__}: {err})"))

    def _each(self, what: str, call: Callable[[Sink], object]) -> None:
        failures = []
        for sink in list(self.sinks):
            try:
                call(sink)
            except Exception as err:
                self.sinks.remove(sink)
                failures.append(f"{sink!r} ({type(err).__name__}: {err})")
                with contextlib.suppress(Exception):
                    sink.close()
        if failures:
            self._warn_failed(what, failures)

    def _warn_failed(self, what: str, failures: list[str]) -> None:
        self.failed += failures
        still = (
            f"{', '.join(repr(s) for s in self.sinks)} goes on, and so does training"
            if self.sinks
            else "training goes on"
        )
        warn(f"failed to {what}: {'; '.join(failures)}. Switched off; {still}.")


class _Feed:
    """One sink's thread and its backlog: batches are written in the order they were handed out."""

    def __init__(self, sink: Sink, backlog: int, failed: Callable[[Sink, str, Exception], None]) -> None:
        self.sink = sink
        self.backlog = backlog
        self.held = 0  # records waiting
        self.writing = 0  # records in the write() under way
        self._failed = failed
        self._batches: deque[Sequence[Record]] = deque()
        self._handed = self._done = 0  # batches
        self._late = False  # missed a wait's deadline: not waited for until it writes again
        self._broken = False
        self._finishing = False
        self._ready = threading.Condition(threading.RLock())  # re-entrant, as for _failures_lock
        self._thread = threading.Thread(target=self._work, name=f"dualwatch-sink {sink!r}", daemon=True)
        self._thread.start()

    def put(self, records: Sequence[Record]) -> bool:
        """Hands a batch over; False when the backlog is full and the batch is dropped."""
        with self._ready:
            if self._broken or self._finishing:
                return True
            if self.held and self.held + len(records) > self.backlog:
                return False
            self._batches.append(records)
            self.held += len(records)
            self._handed += 1
            self._ready.notify_all()
            return True

    def done_by(self, deadline: float, give_up: bool = True) -> bool:
        """Whether the sink wrote what it was handed by ``deadline``; ``give_up``: if not, it is not
        waited for again until a write of it returns."""
        with self._ready:
            target = self._handed
            while self._done < target and not self._late:
                left = deadline - time.monotonic()
                if left <= 0:
                    self._late = give_up
                    return False
                self._ready.wait(left)
            return self._done >= target

    def finish(self) -> None:
        with self._ready:
            self._finishing = True
            self._ready.notify_all()

    def joined_by(self, deadline: float) -> bool:
        self._thread.join(max(0.0, deadline - time.monotonic()))
        return not self._thread.is_alive()

    def _work(self) -> None:
        while True:
            with self._ready:
                while not self._batches and not self._finishing:
                    self._ready.wait()
                if not self._batches:
                    break
                batch = self._batches.popleft()
                self.held -= len(batch)
                self.writing = len(batch)
            if not self._broken:
                try:
                    self.sink.write(batch)
                except Exception as err:
                    self._break("write", err)
            with self._ready:
                self.writing = 0
                self._done += 1
                self._late = False
                self._ready.notify_all()
        if not self._broken:
            try:
                self.sink.close()
            except Exception as err:
                self._break("close", err)

    def _break(self, what: str, err: Exception) -> None:
        """Switches the sink off: later batches are not given to it."""
        self._broken = True
        self._failed(self.sink, what, err)
        if what == "write":
            with contextlib.suppress(Exception):
                self.sink.close()
