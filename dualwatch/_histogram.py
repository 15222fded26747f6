"""Histograms computed once, where the values live, for every format.

``summarize(values, bins)`` returns a function giving ``(counts, edges, num, sum,
sum_squares, nonfinite)``. Host values are copied (the caller may change them after the
call) and counted later on the writer thread; framework tensors on an accelerator are
counted on their device with a few kernels (``Framework.device_histogram``), and only
``bins + 6`` numbers are copied to the host, also on the writer thread. Buckets are
``bins`` equal widths between the finite min and max (numpy's rule; a constant input
spans ``value +- 0.5``); NaN and Inf are counted in ``nonfinite``, not bucketed.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from dualwatch.backends import framework_of

Summary = tuple[np.ndarray, np.ndarray, int, float, float, int]


def summarize(values: Any, bins: int) -> Callable[[], Summary]:
    framework = framework_of(values)
    if framework is not None and not framework.on_host(values):
        packed = framework.device_histogram(values, bins)
        if packed is not None:
            return lambda: _from_packed(framework.to_numpy(packed), bins)
    if framework is not None:
        values = framework.to_numpy(values)
    array = np.array(values, dtype=np.float64, copy=True).reshape(-1)
    return lambda: _numpy_summary(array, bins)


def _numpy_summary(array: np.ndarray, bins: int) -> Summary:
    finite = array[np.isfinite(array)]
    nonfinite = array.size - finite.size
    if finite.size == 0:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1), 0, 0.0, 0.0, nonfinite
    counts, edges = np.histogram(finite, bins=bins)
    return counts, edges, int(finite.size), float(finite.sum()), float(np.dot(finite, finite)), nonfinite


def _from_packed(packed: np.ndarray, bins: int) -> Summary:
    """``[lo, hi, num, sum, sum_squares, nonfinite, counts...]`` from a device back to a summary."""
    lo, hi, num, total, squares, nonfinite = packed[:6]
    if num == 0:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1), 0, 0.0, 0.0, int(nonfinite)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return packed[6:].astype(np.int64), edges, int(num), float(total), float(squares), int(nonfinite)
