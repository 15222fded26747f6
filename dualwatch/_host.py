"""Reductions of host tensors, the same for every framework (CPU tensors are numpy views for free).

A model's small tensors (biases, norm weights, small layers) cost far more in
per-op dispatch than in arithmetic: reduced one by one they made a check slower than
the hand-written ``.item()``-per-statistic loops it replaces. On the CPU, where tensors are
numpy views for free, they are instead concatenated once into a float64 buffer and reduced per
segment with numpy's ``reduceat``: a fixed handful of passes whatever their
number, and float64 keeps segment sums exact enough whatever their length. The
concatenated buffer is also the next check's snapshot for ``weight_change``.

Large tensors go through a small C kernel (``_hoststats.c``) that computes every
statistic and refreshes the snapshot in one pass: framework ops need about
fourteen passes per weight/gradient pair, three times the memory floor.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from dualwatch._threads import Workers

try:
    from dualwatch import _hoststats
except ImportError:  # installed without a C compiler: large tensors use framework ops
    _hoststats = None

# Elements per kernel call: enough to amortise the call, small enough to balance threads.
CHUNK = 1 << 20


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


class FusedReducer:
    """Large host tensors through the one-pass C kernel, in chunks spread over a few threads.

    The kernel releases the GIL, so threads reduce chunks at once (:class:`~dualwatch._threads.Workers`,
    the calling thread among them); chunks keep the work balanced when one tensor is much larger
    than the others. Each chunk comes back
    as its sum and centred sum of squares (``M2``) in float64, and chunks combine with
    Chan's formula, as shards do (:func:`dualwatch._table.combine_shards`): no sum of
    squares around a far-away value is ever subtracted, so no data loses precision.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.workers = Workers(
            threads or min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 2),
            "dualwatch",
        )

    def stats(
        self, arrays: Sequence[np.ndarray], prevs: Sequence[np.ndarray | None]
    ) -> dict[str, np.ndarray]:
        """Per tensor ``sum, sumsq, m2, min, max, nonfinite`` and ``absdiff`` (NaN without a ``prev``).

        Each ``prev`` is overwritten with its array (the next snapshot) in the same pass.
        """
        arrays = [a.reshape(-1) for a in arrays]
        prevs = [None if p is None else p.reshape(-1) for p in prevs]
        chunks = [
            (k, a[lo : lo + CHUNK], None if prev is None else prev[lo : lo + CHUNK])
            for k, (a, prev) in enumerate(zip(arrays, prevs))
            for lo in range(0, a.size, CHUNK)
        ]
        parts = np.empty((len(chunks), 7))

        def reduce(i: int) -> None:
            _, x, prev = chunks[i]
            parts[i] = _hoststats.reduce(x, prev)

        self.workers.run(reduce, len(chunks))
        owner = np.array([c[0] for c in chunks])
        part_n = np.array([c[1].size for c in chunks], dtype=np.float64)
        return combine_parts(parts, owner, part_n, len(arrays))


def combine_parts(parts: np.ndarray, owner: np.ndarray, part_n: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per tensor ``sum, sumsq, m2, min, max, nonfinite, absdiff`` from its parts' results.

    ``parts`` has one row per part: ``sum, m2, min, max, nonfinite, nans, absdiff``, ``m2`` taken
    around the part's own mean; ``owner`` says whose part each row is and ``part_n`` its size.
    ``nans`` (NaN counts) makes a tensor's sum, min, max and M2 NaN wherever it holds a NaN, as
    numpy's are, whether or not the kernel's min/max skip NaN (the C kernel's comparisons do).
    """
    total, nonfinite, nans, absdiff = (np.bincount(owner, parts[:, c], k) for c in (0, 4, 5, 6))
    lo, hi = np.full(k, np.inf), np.full(k, -np.inf)
    n = np.bincount(owner, part_n, k)
    with np.errstate(all="ignore"):
        np.minimum.at(lo, owner, parts[:, 2])
        np.maximum.at(hi, owner, parts[:, 3])
        mean = total / n
        spread = parts[:, 1] + part_n * (parts[:, 0] / part_n - mean[owner]) ** 2
        # An all-equal finite tensor has M2 exactly 0 (its part means may round apart in float64).
        m2 = np.where((lo == hi) & np.isfinite(lo), 0.0, np.bincount(owner, spread, k))
        mean = np.clip(mean, lo, hi)
        has_nan = nans > 0
        total[has_nan], lo[has_nan], hi[has_nan], m2[has_nan] = np.nan, np.nan, np.nan, np.nan
        return {
            "sum": total,
            "sumsq": m2 + total * mean,
            "m2": m2,
            "min": lo,
            "max": hi,
            "nonfinite": nonfinite,
            "absdiff": absdiff,
        }


def fused_kernel_built() -> bool:
    """Whether the C kernel was compiled at install time (it needs a C compiler)."""
    return _hoststats is not None
