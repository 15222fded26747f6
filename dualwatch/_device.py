"""Accelerator tensors reduced together: a number of framework ops that does not grow with the tensor count.

On an accelerator each framework op is a kernel launch of a few microseconds, and a model's
hundreds of small tensors (biases, norms, small layers) reduced one at a time (about fourteen
ops per weight/gradient pair) make a check launch-bound: the arithmetic is nothing next to the
launches. So tensors of up to :data:`LARGE` elements are copied, with one multi-tensor copy, into
a flat buffer where each tensor starts on a fresh row of :data:`ROW` elements (the row's unused
tail, its padding, is neutralised before each reduction), and every statistic is a reduction
along the rows of that buffer: a fixed sequence of about twenty ops per :data:`SLICE` elements,
however many tensors share the slice. The buffer is converted to float64 before any sum, so
sums are exact enough whatever the values (offsets, spikes, outliers first); each row's
deviations are taken around the row's own mean, and rows combine into their tensor on the host
with Chan's formula (:func:`dualwatch._host.combine_parts`), as the C kernel's chunks do.

The per-row results of every slice travel home in the check's one device-to-host copy: seven
or eight float64 numbers per row, under 1% of the float64 data they summarise. Tensors above
:data:`LARGE` elements are reduced one at a time: there the launches are few next to the data,
and batching them would only enlarge the working buffers.

The weight snapshot for ``weight_change`` is a flat buffer in the same layout, refreshed from the
float64 slice right after it is compared (one copy op per slice), so a fresh snapshot costs no
extra read of the weights.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from dualwatch._host import combine_parts

#: elements per row: a tensor's padding is under one row, and the rows' results are ~1% of its data
ROW = 1024
#: elements per slice: the reach of one sequence of ops, and the size of its working buffers
SLICE = 1 << 22
#: tensors above this many elements are reduced on their own (a few launches next to much data)
LARGE = 1 << 20
#: values per row sent home: sum, sum of squared deviations, sum of deviations, min, max,
#: NaN/Inf count, NaN count (a NaN makes min and max NaN, as numpy, even where a device's
#: min/max kernels skip NaN), and, for weights compared with a snapshot, sum |x - snapshot|
COLUMNS = 7


class Slice:
    """Consecutive tensors of a :class:`Layout` that one sequence of ops reduces.

    ``members`` index the layout's tensors; ``offsets`` is where each starts in the slice's
    flat buffer (a multiple of :data:`ROW`) and ``padding`` how long its padding is; ``pads``
    lists the padding's positions and ``counts`` each row's number of real elements; ``start``
    is the slice's place in the layout's flat snapshot.
    """

    def __init__(self, members: range, sizes: np.ndarray, start: int) -> None:
        rows = -(-sizes // ROW)
        self.members = members
        self.start = start
        self.rows = int(rows.sum())
        self.size = self.rows * ROW
        self.offsets = np.concatenate(([0], np.cumsum(rows)[:-1])) * ROW
        self.padding = rows * ROW - sizes  # each tensor's padding to whole rows
        ends = self.offsets + sizes
        self.pads = np.concatenate(
            [np.arange(end, offset + r * ROW) for end, offset, r in zip(ends, self.offsets, rows)]
        ).astype(np.int64)
        counts = np.full(self.rows, float(ROW))
        last = np.cumsum(rows) - 1
        counts[last] = sizes - (rows - 1) * ROW
        self.counts = counts


class Layout:
    """Where each tensor of a batch lies: slices of whole rows, tensors in order."""

    def __init__(self, sizes: Sequence[int]) -> None:
        sizes = np.asarray(sizes, dtype=np.int64)
        if sizes.size == 0 or sizes.min() < 1 or sizes.max() > LARGE:
            raise ValueError(f"a batch takes tensors of 1 to {LARGE} elements, got sizes {sizes.tolist()}")
        rows = -(-sizes // ROW)
        self.slices: list[Slice] = []
        first, filled, start = 0, 0, 0
        for i, r in enumerate(rows.tolist()):
            if filled + r > SLICE // ROW:
                self.slices.append(Slice(range(first, i), sizes[first:i], start))
                start += self.slices[-1].size
                first, filled = i, 0
            filled += r
        self.slices.append(Slice(range(first, len(sizes)), sizes[first:], start))
        self.size = start + self.slices[-1].size
        self.owner = np.repeat(np.arange(len(sizes)), rows)  # the tensor each row belongs to
        self.counts = np.concatenate([s.counts for s in self.slices])
        self.tensors = len(sizes)

    def values(self, snapshot: bool) -> int:
        """How many values the backend's ``reduce_rows`` sends home for this layout."""
        return (COLUMNS + snapshot) * len(self.counts)

    def combine(self, values: np.ndarray, snapshot: bool) -> dict[str, np.ndarray]:
        """Per tensor ``sum, sumsq, m2, min, max, nonfinite`` (and ``absdiff`` with ``snapshot``)
        from the per-row results.

        ``values`` is what the backend's ``reduce_rows`` sent home: for each slice in turn,
        :data:`COLUMNS` blocks of one value per row (one more with ``snapshot``).
        """
        columns = COLUMNS + snapshot
        blocks, at = [], 0
        for s in self.slices:
            blocks.append(values[at : at + columns * s.rows].reshape(columns, s.rows))
            at += columns * s.rows
        total, squares, deviation, lo, hi, nonfinite, nans, *absdiff = np.concatenate(blocks, axis=1)
        n = self.counts
        with np.errstate(all="ignore"):
            # corrected two-pass: a row mean's rounding leaves sum(d) != 0, which this takes out again
            m2 = squares - deviation * deviation / n
        changed = absdiff[0] if snapshot else np.zeros_like(n)
        parts = np.column_stack([total, m2, lo, hi, nonfinite, nans, changed])
        stats = combine_parts(parts, self.owner, n, self.tensors)
        if not snapshot:
            del stats["absdiff"]
        return stats
