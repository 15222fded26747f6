"""Histograms computed once, where the values live, for every format.

``summarize(values, bins)`` returns a function giving ``(counts, edges, num, sum,
sum_squares, nonfinite)``. Host values are copied (the caller may change them after the
call) and counted later on the writer thread; framework tensors on an accelerator are
counted on their device with a few kernels (``Framework.device_histogram``), and only
``bins + 6`` numbers are copied to the host, also on the writer thread. Buckets are
``bins`` equal widths between the finite min and max (numpy's rule; a constant input
spans ``value +- 0.5``); NaN and Inf are counted in ``nonfinite``, not bucketed.

``bins`` may also be torch's ``"tensorflow"`` (TensorFlow's exponential buckets, cut to the
buckets that hold data and merged down to ``max_bins``, as torch's ``add_histogram`` writes
them), one of numpy's rules (``"auto"``, ``"fd"``...) or the bucket edges; those are counted
on the host.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Sequence, Union

import numpy as np

from dualwatch.backends import framework_of

Summary = tuple[np.ndarray, np.ndarray, int, float, float, int]
Bins = Union[int, str, Sequence[float]]
NUMPY_RULES = ("auto", "fd", "doane", "scott", "stone", "rice", "sturges", "sqrt")
TENSORFLOW = "tensorflow"


def check_bins(bins: Any, max_bins: Any = None) -> None:
    """Raises on the caller's thread for ``bins`` or ``max_bins`` that cannot be counted into."""
    if max_bins is not None and (isinstance(max_bins, bool) or not isinstance(max_bins, int) or max_bins < 1):
        raise ValueError(f"max_bins= must be a positive int or None, got {max_bins!r}")
    if isinstance(bins, str):
        if bins not in (TENSORFLOW, *NUMPY_RULES):
            raise ValueError(f"bins= as a string is one of {(TENSORFLOW, *NUMPY_RULES)}, got {bins!r}")
        return
    if isinstance(bins, (bool, float)) or (isinstance(bins, int) and bins < 1):
        raise ValueError(
            f"bins= must be a positive int, a rule such as 'tensorflow' or the edges, got {bins!r}"
        )
    if not isinstance(bins, int):
        edges = np.asarray(bins, dtype=np.float64)
        if edges.ndim != 1 or edges.size < 2 or not np.all(np.diff(edges) > 0):
            raise ValueError(f"bins= as edges is an increasing sequence of at least 2 numbers, got {bins!r}")


def summarize(values: Any, bins: Bins, max_bins: int | None = None) -> Callable[[], Summary]:
    framework = framework_of(values)
    if not isinstance(bins, int):
        array = np.array(framework.to_numpy(values) if framework else values, dtype=np.float64).reshape(-1)
        return lambda: _ruled_summary(array, bins, max_bins)
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


def _ruled_summary(array: np.ndarray, bins: str | Sequence[float], max_bins: int | None) -> Summary:
    """Buckets by a rule or given edges, as torch's ``make_histogram`` lays them out."""
    finite = array[np.isfinite(array)]
    nonfinite = array.size - finite.size
    if finite.size == 0:
        return np.zeros(1, np.int64), np.array([0.0, 1.0]), 0, 0.0, 0.0, nonfinite
    edges = _tensorflow_edges() if bins == TENSORFLOW else bins
    counts, edges = np.histogram(finite, bins=edges)
    if max_bins is not None and len(counts) > max_bins:  # merge neighbours, as torch does
        merge = -(-len(counts) // max_bins)
        counts = np.pad(counts, (0, -len(counts) % merge)).reshape(-1, merge).sum(axis=1)
        edges = np.append(edges[:-1:merge], edges[-1])
    if bins == TENSORFLOW:  # only the buckets that hold data, the outer edges at the data's extremes
        held = np.flatnonzero(counts)
        counts, edges = counts[held[0] : held[-1] + 1], edges[held[0] : held[-1] + 2].copy()
        if finite.min() < finite.max():
            edges[0], edges[-1] = finite.min(), finite.max()
    return counts, edges, int(finite.size), float(finite.sum()), float(np.dot(finite, finite)), nonfinite


@lru_cache(maxsize=1)
def _tensorflow_edges() -> np.ndarray:
    """TensorFlow's default buckets (torch's ``default_bins``): +-1e-12 growing by 10 % to 1e20, and 0."""
    positive = 1e-12 * 1.1 ** np.arange(int(np.ceil(np.log(1e32) / np.log(1.1))))
    positive = positive[positive < 1e20]
    return np.concatenate([-positive[::-1], [0.0], positive])


def _from_packed(packed: np.ndarray, bins: int) -> Summary:
    """``[lo, hi, num, sum, sum_squares, nonfinite, counts...]`` from a device back to a summary."""
    lo, hi, num, total, squares, nonfinite = packed[:6]
    if num == 0:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1), 0, 0.0, 0.0, int(nonfinite)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return packed[6:].astype(np.int64), edges, int(num), float(total), float(squares), int(nonfinite)
