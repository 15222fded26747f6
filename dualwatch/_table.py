"""The per-check table: what a framework's reductions hand to the engine, and how shards combine.

One row per parameter, one column per raw reduction (:class:`Col`); the framework-free
:class:`~dualwatch._stats.StatsEngine` turns a table into metrics. This module is the ground
floor of the package: it imports nothing from dualwatch, so the engine above it and the
backends beside it can both depend on it.

Under sharded training (FSDP2, DTensor, Paddle's split parameters) each rank holds a slice of
every parameter and of its gradient, and the global norm read from one rank is too small by the
square root of the shard count (the bug class of torchtitan #766, LlamaFactory #10640). Each
rank reduces its slices to rows of the usual table; the rows of all ranks are gathered in one
collective and combined by :func:`combine_shards`, so every rank ends with the same
full-parameter table (and the same health verdict).

Sums, squared sums, counts and absolute changes add up; minima and maxima take the extreme;
the sum of squared deviations combines with Chan's formula, ``M2 = sum(M2_i + n_i (mean_i -
mean)^2)``, which keeps its precision where ``sumsq - sum^2 / n`` would not. A NaN in any
shard stays a NaN, as it would in the whole tensor. Empty shards (uneven sharding pads some
ranks to nothing) count for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Col(IntEnum):
    """Columns of the reduction table; absent values are NaN."""

    NUMEL = 0
    W_SUM = 1  # sum of weights
    W_SUMSQ = 2  # sum of squared weights
    W_M2 = 3  # sum of squared deviations from the weights' mean
    W_MIN = 4
    W_MAX = 5
    W_NONFINITE = 6  # NaN/Inf count in the weights
    W_ABSDIFF = 7  # sum |w - w at previous check|; NaN on the first check
    HAS_GRAD = 8  # 1.0 when the parameter holds a gradient, else 0.0
    G_SUM = 9
    G_SUMSQ = 10
    G_M2 = 11
    G_MIN = 12
    G_MAX = 13
    G_NONFINITE = 14


#: where each statistic of one tensor goes, counted from its ``W_SUM`` or ``G_SUM`` column
OFFSETS = {"sum": 0, "sumsq": 1, "m2": 2, "min": 3, "max": 4, "nonfinite": 5}


@dataclass(frozen=True)
class ParamInfo:
    """What the engine needs to know about a parameter besides its numbers."""

    name: str
    shape: tuple[int, ...]
    numel: int
    trainable: bool
    dtype: str


_ADDED = (Col.W_SUM, Col.W_SUMSQ, Col.W_NONFINITE, Col.W_ABSDIFF, Col.G_SUM, Col.G_SUMSQ, Col.G_NONFINITE)
_M2 = ((Col.W_M2, Col.W_SUM), (Col.G_M2, Col.G_SUM))


def sample_std(m2: np.ndarray | float, n: np.ndarray | float) -> np.ndarray:
    """The sample standard deviation (ddof=1) from a centred sum of squares and a count: every
    ``*_std`` dualwatch logs (``weight_std``, ``grad_std``, ``capture/<alias>/std``) is this one.

    It is what ``torch.std``, ``paddle.std`` and the StableSR edge monitor's ``param.data.std()``
    give by default, so curves do not shift when a user switches to dualwatch. A 1-element tensor
    has std 0 (those frameworks give NaN: one value has no spread, and a NaN tag would read as a
    broken run); ``m2`` below 0 (rounding) counts as 0 and a NaN ``m2`` stays NaN.
    """
    return np.sqrt(np.maximum(m2, 0.0) / np.maximum(np.asarray(n, dtype=np.float64) - 1.0, 1.0))


def combine_shards(shards: np.ndarray) -> np.ndarray:
    """``[ranks, rows, len(Col)]`` tables of shards -> the ``[rows, len(Col)]`` table of the whole."""
    n = shards[:, :, Col.NUMEL]
    present = n > 0
    out = np.full(shards.shape[1:], np.nan)
    out[:, Col.NUMEL] = n.sum(axis=0)
    for col in _ADDED:
        out[:, col] = np.where(present, shards[:, :, col], 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        for m2, total in _M2:
            mean = out[:, total] / out[:, Col.NUMEL]
            spread = shards[:, :, m2] + n * (shards[:, :, total] / np.where(present, n, 1) - mean) ** 2
            out[:, m2] = np.where(present, spread, 0.0).sum(axis=0)
    for lo, hi in ((Col.W_MIN, Col.W_MAX), (Col.G_MIN, Col.G_MAX)):
        out[:, lo] = np.where(present, shards[:, :, lo], np.inf).min(axis=0)
        out[:, hi] = np.where(present, shards[:, :, hi], -np.inf).max(axis=0)
    out[:, Col.HAS_GRAD] = shards[:, :, Col.HAS_GRAD].max(axis=0)
    out[out[:, Col.HAS_GRAD] == 0, Col.G_SUM :] = np.nan  # no gradient anywhere: nothing to report
    empty = out[:, Col.NUMEL] == 0
    out[empty, Col.W_SUM : Col.HAS_GRAD] = np.nan
    out[empty, Col.W_NONFINITE] = 0.0
    return out
