"""Where records go. A sink takes flat scalar dicts; a failing sink never stops training.

The contract is two methods (``write`` and ``close``), one small class per sink;
:class:`FanOut` sends each record to every sink and turns a sink's exception
into one warning, after which that sink is switched off and the others go on.
"""

from __future__ import annotations

from typing import Mapping, Protocol, Sequence

from dualwatch._warn import warn
from dualwatch.sinks.console import ConsoleSink
from dualwatch.sinks.jsonl import JsonlSink

__all__ = ["ConsoleSink", "FanOut", "JsonlSink", "Sink"]


class Sink(Protocol):
    def write(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self) -> None: ...


class FanOut:
    """Sends every record to all sinks; a sink that raises is warned about once and dropped."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = list(sinks)

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for sink in list(self.sinks):
            self._guard(sink, "write", lambda s=sink: s.write(step, scalars))

    def close(self) -> None:
        for sink in list(self.sinks):
            self._guard(sink, "close", sink.close)
        self.sinks.clear()

    def _guard(self, sink: Sink, what: str, call) -> None:
        try:
            call()
        except Exception as err:
            self.sinks.remove(sink)
            warn(
                f"{type(sink).__name__} failed to {what} ({type(err).__name__}: {err}); "
                "it is switched off and training goes on."
            )
