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
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

from dualwatch.backends.host import FusedReducer, HostBatch, fused_kernel_built


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
        self._snapshots: dict[Any, Any] = {}
        self._batches: dict[tuple[int, ...], HostBatch] = {}
        self._fused = FusedReducer()
        self._shard_groups: dict[Hashable, Any] = {}  # shard key -> process group, made once

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
    def host_array(self, x: Any) -> np.ndarray | None:
        """A zero-copy numpy view of ``x`` (float32 or float64) when it lives in host memory, else None."""

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

        Three paths: small host tensors are reduced together (:class:`HostBatch`),
        large host tensors by the fused C kernel (:class:`FusedReducer`), and the
        rest (accelerator tensors, or large ones when the kernel was not built)
        one by one with framework ops, gathered into the single transfer.
        """
        table = np.full((len(params), len(Col)), np.nan)
        weights = [self.weight(p) for p in params]
        gradients = [self.grad(p) for p in params]
        sizes = [_numel(w) for w in weights]
        table[:, Col.NUMEL] = sizes
        table[:, Col.HAS_GRAD] = [g is not None and n > 0 for g, n in zip(gradients, sizes)]
        table[[n == 0 for n in sizes], Col.W_NONFINITE] = 0.0
        small = self._host_arrays(weights, sizes, range(len(params)), small=True)
        self._reduce_small_on_host(table, small, Col.W_SUM, track_change)
        small_grads = self._host_arrays(gradients, sizes, small, small=True)
        self._reduce_small_on_host(table, small_grads, Col.G_SUM, False)
        large = self._host_arrays(weights, sizes, range(len(params)), small=False)
        large_grads = self._host_arrays(gradients, sizes, large, small=False)
        self._reduce_large_on_host(table, large, large_grads, track_change)
        host_weights, host_grads = {**small, **large}, {**small_grads, **large_grads}
        device = _Gathered()
        for row, (w, g, n) in enumerate(zip(weights, gradients, sizes)):
            if n == 0:
                continue
            if row not in host_weights and full[row]:
                prev = self._snapshots.get(row) if track_change else None
                device.put(row, Col.W_SUM, self.full_stats(w, prev, self.counts_on_device(w)), w)
                if track_change:
                    self._snapshots[row] = self.snapshot(w, prev)
            elif row not in host_weights:
                device.put(row, Col.W_SUM, self.light_stats(w), w)
            if g is not None and row not in host_grads:
                full_grad = full[row] and grads
                stats = (
                    self.full_stats(g, None, self.counts_on_device(g)) if full_grad else self.light_stats(g)
                )
                device.put(row, Col.G_SUM, stats, g)
        device.into(table, self)
        for group, rows in self.shard_groups(params):  # the same groups, in the same order, on every rank
            from dualwatch.shards import combine_shards

            table[rows] = combine_shards(self.all_gather(table[rows], group))
        return table

    def shard_groups(self, params: Sequence[Any]) -> list[tuple[Any, list[int]]]:
        """``(group, rows)`` for the parameters split across the ranks of ``group``.

        Their rows hold one shard each until :meth:`all_gather` brings the others. Rows are
        grouped by :meth:`shard_key`; each key's group is looked up (or created) once.
        """
        rows: dict[Hashable, list[int]] = {}
        for row, param in enumerate(params):
            key = self.shard_key(param)
            if key is not None:
                rows.setdefault(key, []).append(row)
        for key, members in rows.items():
            if key not in self._shard_groups:
                self._shard_groups[key] = self.shard_group(key, params[members[0]])
        groups = self._shard_groups
        return [(groups[key], members) for key, members in rows.items() if groups[key] is not None]

    def shard_key(self, param: Any) -> Hashable | None:
        """What identifies the ranks holding ``param``'s other parts; None when it is whole here."""
        return None

    def shard_group(self, key: Hashable, param: Any) -> Any | None:
        """The process group for ``key`` (``param`` is one of its parameters), or None if there is none."""
        raise NotImplementedError

    def all_gather(self, rows: np.ndarray, group: Any) -> np.ndarray:
        """``[ranks, *rows.shape]``: every rank's ``rows`` in ``group``, in one collective."""
        raise NotImplementedError

    def _host_arrays(
        self, tensors: Sequence[Any], sizes: Sequence[int], rows: Iterable[int], small: bool
    ) -> dict[int, np.ndarray]:
        """Host views of the small (or, where the C kernel is built, large) tensors among ``rows``."""
        fits = (lambda n: 0 < n <= SMALL) if small else (lambda n: n > SMALL and fused_kernel_built())
        views = {i: self.host_array(tensors[i]) for i in rows if tensors[i] is not None and fits(sizes[i])}
        return {i: v for i, v in views.items() if v is not None}

    def _reduce_large_on_host(
        self, table: np.ndarray, weights: dict[int, np.ndarray], grads: dict[int, np.ndarray], snapshot: bool
    ) -> None:
        """The fused kernel over large host weights and gradients, in one round of threads.

        Weight snapshots are host buffers that the kernel refreshes in the same pass.
        """
        if not weights and not grads:
            return
        prevs: list[np.ndarray | None] = []
        fresh = []
        for row, a in weights.items():
            prev = self._snapshots.get(("large", row)) if snapshot else None
            if snapshot and (prev is None or prev.size != a.size or prev.dtype != a.dtype):
                # Flat, whatever a's layout: the kernel reads a flattened (possibly copied) a.
                prev = self._snapshots[("large", row)] = np.empty(a.size, a.dtype)
                fresh.append(row)
            prevs.append(prev)
        arrays = [*weights.values(), *grads.values()]
        stats = self._fused.stats(arrays, prevs + [None] * len(grads))
        absdiff = stats.pop("absdiff")[: len(weights)]
        for rows, base, part in (
            (list(weights), Col.W_SUM, slice(0, len(weights))),
            (list(grads), Col.G_SUM, slice(len(weights), None)),
        ):
            for name, values in stats.items():
                table[rows, base + _OFFSETS[name]] = values[part]
        if snapshot:
            table[list(weights), Col.W_ABSDIFF] = absdiff
            table[fresh, Col.W_ABSDIFF] = np.nan  # compared with an empty buffer: no change to report yet

    def _reduce_small_on_host(
        self, table: np.ndarray, arrays: dict[int, np.ndarray], base: Col, snapshot: bool
    ) -> None:
        """Batched reductions of host arrays, written straight into ``table``."""
        if not arrays:
            return
        rows = tuple(arrays)
        batch = self._batches.get(rows)
        if batch is None:
            batch = self._batches[rows] = HostBatch([int(table[i, Col.NUMEL]) for i in rows])
        key = ("host", rows)
        stats, flat = batch.stats(list(arrays.values()), self._snapshots.get(key) if snapshot else None)
        if snapshot:
            self._snapshots[key] = flat
        for name, values in stats.items():
            table[list(rows), Col.W_ABSDIFF if name == "absdiff" else base + _OFFSETS[name]] = values

    def forget_snapshots(self) -> None:
        """Drop the weight snapshots kept for ``weight_change``."""
        self._snapshots.clear()


_OFFSETS = {"sum": 0, "sumsq": 1, "m2": 2, "min": 3, "max": 4, "nonfinite": 5}
# Tensors up to this many elements are batched on the host when they live there.
SMALL = 1 << 16


class _Gathered:
    """Device scalars of one check, their places in the table, and the one copy that brings them home."""

    def __init__(self) -> None:
        self.scalars: list[Any] = []
        self.slots: list[tuple[int, int]] = []
        self.recount: list[tuple[int, int, list[int], Any]] = []

    def put(self, row: int, base: Col, stats: dict[str, Any], x: Any) -> None:
        filled = []
        for key, value in stats.items():
            col = Col.W_ABSDIFF if key == "absdiff" else base + _OFFSETS[key]
            self.scalars.append(value)
            self.slots.append((row, col))
            filled.append(col)
        if "nonfinite" not in stats:
            self.recount.append((row, base + _OFFSETS["nonfinite"], filled, x))

    def into(self, table: np.ndarray, backend: Backend) -> None:
        """Copy the scalars to the host (once) and count NaN/Inf only where some were seen."""
        if self.scalars:
            rows, cols = zip(*self.slots)
            table[list(rows), list(cols)] = backend.to_host(self.scalars)
        for row, count_col, filled, x in self.recount:
            seen_nonfinite = not np.all(np.isfinite(table[row, filled]))
            table[row, count_col] = backend.count_nonfinite(x) if seen_nonfinite else 0.0


def _numel(x: Any) -> int:
    return math.prod(int(d) for d in x.shape)
