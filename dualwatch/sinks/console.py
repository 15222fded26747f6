"""The seed-000 console block: a framed "<Title> Monitor - Step N" with the key numbers."""

from __future__ import annotations

import sys
from typing import Mapping, TextIO

from dualwatch.health import Verdict

RULE = "=" * 80
HEALTH_TAG = "train/gradient/health"


class ConsoleSink:
    """Prints per-parameter ``weight_change`` and ``grad_norm`` and the model-level gradient health.

    ``title`` heads the block (seed 000: "Edge Processor Monitor"); ``keys`` are the
    per-parameter statistics shown, in order.
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

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        lines = [RULE, f"{self.title} - Step {step}", RULE]
        lines += [
            f"  {tag}: {value:.6e}" for tag, value in scalars.items() if tag.rsplit("/", 1)[-1] in self.keys
        ]
        for tag, value in scalars.items():
            if tag == HEALTH_TAG:
                lines.append(f"  {tag}: {list(Verdict)[int(value)].value}")
            elif tag.startswith("train/gradient/"):
                lines.append(f"  {tag}: {value:.6e}")
        print("\n".join(lines), file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        pass
