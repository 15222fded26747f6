"""Where records go. The contract is two methods, ``write(records)`` and ``close()``.

:class:`FanOut` sends each batch to every sink; a sink that raises is switched off with
one warning (naming every sink that failed on that batch) and the others go on, so a
full disk or a missing directory never reaches the training loop.
"""

from __future__ import annotations

import contextlib
from typing import Protocol, Sequence

from dualwatch._warn import warn
from dualwatch.records import Record
from dualwatch.sinks._console import ConsoleSink

__all__ = ["ConsoleSink", "FanOut", "Sink"]


class Sink(Protocol):
    """Anything with these two methods can be passed in ``Writer(sinks=[...])``: the writer thread
    calls ``write`` with each batch of records (:mod:`dualwatch.records`) and ``close`` once."""

    def write(self, records: Sequence[Record]) -> None: ...

    def close(self) -> None: ...


class FanOut:
    """Sends every batch to all sinks; sinks that raise are warned about once and dropped."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)
        self.failed: list[str] = []

    def write(self, records: Sequence[Record]) -> None:
        self._each("write", lambda sink: sink.write(records))

    def close(self) -> None:
        self._each("close", lambda sink: sink.close())
        self.sinks.clear()

    def _each(self, what: str, call) -> None:
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
            self.failed += failures
            still = (
                f"{', '.join(repr(s) for s in self.sinks)} goes on, and so does training"
                if self.sinks
                else "training goes on"
            )
            warn(f"failed to {what}: {'; '.join(failures)}. Switched off; {still}.")
