"""The StableSR edge monitor's console block: a framed "<Title> Monitor - Step N" with the key numbers.

The block goes to the ``dualwatch`` logger (:mod:`dualwatch._log`), so it scrolls above a
progress bar and ``logging`` can silence or redirect it.
"""

from __future__ import annotations

from typing import Sequence, TextIO

from dualwatch import _log
from dualwatch._health import Verdict
from dualwatch._tags import HEALTH, PARAMETER_STATS
from dualwatch.records import Record, Scalars

RULE = "=" * 80


class ConsoleSink:
    """Prints each scalar record as one block: per-parameter ``keys`` and every other tag.

    ``title`` heads the block ("Edge Processor Monitor"); of the per-parameter
    statistics only ``keys`` are shown, in the order they were logged. The blocks are logged
    at INFO on the ``dualwatch`` logger, or written to ``stream`` when one is given.
    """

    def __init__(
        self,
        title: str,
        keys: tuple[str, ...] = ("weight_change", "grad_norm"),
        stream: TextIO | None = None,
    ) -> None:
        self.title = title
        self.keys = keys
        self.stream = stream

    def __repr__(self) -> str:
        return "console"

    def write(self, records: Sequence[Record]) -> None:
        for record in records:
            if not isinstance(record, Scalars):
                continue
            if self.stream is None:
                _log.info(self._block(record))
            else:
                print(self._block(record), file=self.stream, flush=True)

    def _block(self, record: Scalars) -> str:
        lines = [RULE, f"{self.title} - Step {record.step}", RULE]
        for tag, value in record.values.items():
            stat = tag.rsplit("/", 1)[-1]
            if tag == HEALTH:
                lines.append(f"  {tag}: {list(Verdict)[int(value)].value}")
            elif stat not in PARAMETER_STATS or stat in self.keys:
                lines.append(f"  {tag}: {value:.6e}")
        return "\n".join(lines)

    def close(self) -> None:
        pass
