"""The contract every framework backend fulfils.

A backend walks a model's parameters and reduces each tensor to a handful of
numbers on the tensor's own device. The reductions of one check are gathered
into a single device tensor and copied to the host once (``_to_host``): one
transfer per check, never one per parameter or per statistic. The framework-free
:class:`~dualwatch.stats.StatsEngine` turns the resulting table into metrics.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Sequence

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


@dataclass(frozen=True)
class ParamInfo:
    """What the engine needs to know about a parameter besides its numbers."""

    name: str
    shape: tuple[int, ...]
    numel: int
    trainable: bool
    dtype: str


class Backend(ABC):
    """One framework's way of listing parameters and reducing tensors.

    Subclasses implement the tensor primitives; the orchestration (which
    columns, snapshots for ``weight_change``, the single host transfer, the
    non-finite recount) lives here so every framework behaves the same.
    """

    framework: str = ""

    def __init__(self, model: Any) -> None:
        self.model = model
        self._snapshots: dict[int, Any] = {}

    # -- primitives a framework provides -------------------------------------
    @abstractmethod
    def parameters(self) -> list[tuple[str, Any]]:
        """``(name, parameter)`` in model order, frozen ones included, buffers excluded."""

    @abstractmethod
    def module_names(self) -> list[str]:
        """Names of every submodule (the root is ``""``)."""

    @abstractmethod
    def info(self, name: str, param: Any) -> ParamInfo:
        """Static description of one parameter."""

    @abstractmethod
    def weight(self, param: Any) -> Any:
        """The parameter's data as a detached tensor (no copy)."""

    @abstractmethod
    def grad(self, param: Any) -> Any | None:
        """The parameter's final gradient, or None when it has none."""

    @abstractmethod
    def full_stats(self, x: Any, prev: Any | None, count_nonfinite: bool) -> dict[str, Any]:
        """Device scalars for one tensor.

        Keys: ``sum``, ``sumsq``, ``m2``, ``min``, ``max``, plus ``absdiff``
        (sum |x - prev|) when ``prev`` is given and ``nonfinite`` when
        ``count_nonfinite``. Reductions accumulate in at least float32.
        """

    @abstractmethod
    def light_stats(self, x: Any) -> dict[str, Any]:
        """Device scalars ``sumsq``, ``min``, ``max`` for one tensor."""

    @abstractmethod
    def snapshot(self, x: Any, prev: Any | None) -> Any:
        """Copy ``x`` into ``prev`` (allocating it when None) and return it."""

    @abstractmethod
    def count_nonfinite(self, x: Any) -> int:
        """NaN/Inf count of one tensor (only called after such values were seen)."""

    @abstractmethod
    def counts_on_device(self, x: Any) -> bool:
        """True where counting non-finite values in the main pass is cheaper than a recount.

        On an accelerator the count rides along in the single transfer; on the
        CPU a recount reads host memory directly, so it is done only for the
        rare tensors whose min/max/sum show a NaN or Inf.
        """

    @abstractmethod
    def to_host(self, scalars: list[Any]) -> np.ndarray:
        """Stack device scalars and copy them to the host: the one transfer of a check."""

    # -- orchestration ---------------------------------------------------------
    def reduce(
        self, params: Sequence[Any], full: Sequence[bool], *, grads: bool, track_change: bool
    ) -> np.ndarray:
        """Reduce ``params`` to a ``[len(params), len(Col)]`` float64 table.

        ``full[i]`` selects per-parameter statistics for parameter ``i``; other
        rows get only what model-level totals need (``light_stats``). With
        ``grads=False`` the selected rows skip gradient statistics (model-level
        gradient totals still come from light reductions).
        """
        table = np.full((len(params), len(Col)), np.nan)
        scalars: list[Any] = []
        slots: list[tuple[int, int]] = []
        recount: list[tuple[int, Col, list[int], Any]] = []

        def put(row: int, base: Col, stats: dict[str, Any], x: Any) -> None:
            filled = []
            for key, value in stats.items():
                col = Col.W_ABSDIFF if key == "absdiff" else base + _OFFSETS[key]
                scalars.append(value)
                slots.append((row, col))
                filled.append(col)
            if "nonfinite" not in stats:
                recount.append((row, base + _OFFSETS["nonfinite"], filled, x))

        for row, (param, is_full) in enumerate(zip(params, full)):
            w = self.weight(param)
            table[row, Col.NUMEL] = _numel(w)
            if table[row, Col.NUMEL] == 0:  # nothing to reduce; counted as a parameter of size 0
                table[row, [Col.W_NONFINITE, Col.HAS_GRAD]] = 0.0
                continue
            if is_full:
                prev = self._snapshots.get(row) if track_change else None
                put(row, Col.W_SUM, self.full_stats(w, prev, self.counts_on_device(w)), w)
                if track_change:
                    self._snapshots[row] = self.snapshot(w, prev)
            else:
                put(row, Col.W_SUM, self.light_stats(w), w)
            g = self.grad(param)
            table[row, Col.HAS_GRAD] = 0.0 if g is None else 1.0
            if g is not None:
                full_grad = is_full and grads
                stats = (
                    self.full_stats(g, None, self.counts_on_device(g)) if full_grad else self.light_stats(g)
                )
                put(row, Col.G_SUM, stats, g)
        if scalars:
            rows, cols = zip(*slots)
            table[list(rows), list(cols)] = self.to_host(scalars)
        for row, count_col, filled, x in recount:
            seen_nonfinite = not np.all(np.isfinite(table[row, filled]))
            table[row, count_col] = self.count_nonfinite(x) if seen_nonfinite else 0.0
        return table

    def forget_snapshots(self) -> None:
        """Drop the weight snapshots kept for ``weight_change``."""
        self._snapshots.clear()


_OFFSETS = {"sum": 0, "sumsq": 1, "m2": 2, "min": 3, "max": 4, "nonfinite": 5}


def _numel(x: Any) -> int:
    return math.prod(int(d) for d in x.shape)
