"""A recorded output's numbers at a glance: each tensor's mean, std, min and max go to a
:class:`dualwatch.Writer` as ``capture/<alias><leaf>/<stat>``, so a capture shows up beside the
training curves without opening its files.

A ``single`` capture is logged as it is taken. An ``epoch_full`` layer's statistics describe the
whole epoch, as if its batches were concatenated (the layer-output Monitor script's
``torch.cat(outputs, dim=0)``): each batch adds its :class:`Moments` to a running total with the
exact pairwise formula, so the epoch's numbers cost five floats per tensor instead of the epoch's
data, and they include the batches spilled to disk past ``max_bytes``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from dualwatch._capture.outputs import leaves
from dualwatch._table import sample_std
from dualwatch.backends import Framework


@dataclass(frozen=True)
class Moments:
    """Count, mean, centred sum of squares (``m2``), min and max of some numbers, in float64."""

    n: int
    mean: float
    m2: float
    min: float
    max: float

    @classmethod
    def of(cls, array: np.ndarray) -> Moments:
        a = array.astype(np.float64, copy=False)
        mean = float(a.mean())
        return cls(a.size, mean, float(np.square(a - mean).sum()), float(a.min()), float(a.max()))

    def __add__(self, other: Moments) -> Moments:
        """The moments of both sets together (Chan, Golub and LeVeque's pairwise update): exact,
        and without the cancellation of summing squares. NaN propagates as in ``np.min``."""
        n = self.n + other.n
        delta = other.mean - self.mean
        return Moments(
            n,
            self.mean + delta * (other.n / n),
            self.m2 + other.m2 + delta * delta * (self.n * other.n / n),
            float(np.minimum(self.min, other.min)),
            float(np.maximum(self.max, other.max)),
        )

    def values(self) -> dict[str, float]:
        """``mean``, ``std`` (the sample std, ddof=1, as ``torch.std``; 0 for a single value), ``min``
        and ``max``."""
        std = float(sample_std(self.m2, self.n))
        return {"mean": self.mean, "std": std, "min": self.min, "max": self.max}


def moments(data: Any, fw: Framework) -> dict[str, Moments]:
    """``{leaf path: Moments}`` of every non-empty tensor in ``data`` (one layer's output)."""
    found = {}
    for path, tensor in leaves(data, fw.is_tensor):
        array = fw.to_numpy(tensor)
        if array.size:
            found[path] = Moments.of(array)
    return found


def add_moments(total: dict[str, Moments], batch: dict[str, Moments]) -> None:
    """Adds one batch's moments into the running ``total``, leaf by leaf."""
    for path, m in batch.items():
        total[path] = total[path] + m if path in total else m


def log_moments(writer: Any, step: int, alias: str, found: dict[str, Moments]) -> None:
    """Logs ``capture/<alias><leaf>/<stat>`` for each leaf's moments at ``step``."""
    writer.log(
        step,
        {
            f"capture/{alias}{path}/{stat}": value
            for path, m in found.items()
            for stat, value in m.values().items()
        },
    )
