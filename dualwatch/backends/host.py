"""Reduce many small host tensors at once, the same way for every framework.

A model's small tensors (biases, norm weights, small layers) cost far more in
per-op dispatch than in arithmetic: reduced one by one they made a check slower
than the seed's ``.item()`` loop. On the CPU, where tensors are numpy views for
free, they are instead concatenated once into a float64 buffer and reduced per
segment with numpy's ``reduceat``: a fixed handful of passes whatever their
number, and float64 keeps segment sums exact enough whatever their length. The
concatenated buffer is also the next check's snapshot for ``weight_change``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class HostBatch:
    """Segment reductions over a fixed list of tensor sizes (all > 0)."""

    def __init__(self, sizes: Sequence[int]) -> None:
        self.lengths = np.asarray(sizes, dtype=np.int64)
        self.starts = np.concatenate(([0], np.cumsum(self.lengths)[:-1]))

    def stats(
        self, arrays: Sequence[np.ndarray], prev: np.ndarray | None
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Per tensor ``sum, sumsq, m2, min, max, nonfinite`` (and ``absdiff`` against ``prev``),
        plus the float64 concatenation (the next snapshot)."""
        flat = np.concatenate([a.reshape(-1) for a in arrays], dtype=np.float64)
        at = self.starts
        with np.errstate(all="ignore"):  # NaN/Inf are counted, not warned about
            total = np.add.reduceat(flat, at)
            lo, hi = np.minimum.reduceat(flat, at), np.maximum.reduceat(flat, at)
            mean = np.clip(total / self.lengths, lo, hi)  # exactly the common value of an all-equal tensor
            centred = flat - np.repeat(mean, self.lengths)
            m2 = np.add.reduceat(centred * centred, at)
            stats = {
                "sum": total,
                "sumsq": m2 + total * mean,
                "m2": m2,
                "min": lo,
                "max": hi,
                "nonfinite": np.add.reduceat(~np.isfinite(flat), at).astype(np.float64),
            }
            if prev is not None:
                stats["absdiff"] = np.add.reduceat(np.abs(flat - prev), at)
        return stats, flat
