"""One check's reductions, the same for every framework: which path each tensor takes, one transfer.

A :class:`~dualwatch.backends.Backend` gives the primitives (list parameters, reduce one tensor
on its device, copy scalars home); the :class:`Reducer` decides how a whole model is reduced
and keeps what must live between checks (weight snapshots for ``weight_change``, the host
batches, the process groups of sharded parameters):

* small host tensors are reduced together (:class:`~dualwatch._host.HostBatch`);
* large host tensors by the fused C kernel (:class:`~dualwatch._host.FusedReducer`);
* the rest (accelerator tensors, or large ones when the kernel was not built) with the
  framework's ops: those of up to :data:`~dualwatch._device.LARGE` elements together, a fixed
  number of ops for any number of tensors (:mod:`dualwatch._device`), where the backend can
  (:meth:`~dualwatch.backends.Backend.batch_key`), larger ones one by one; every result is
  gathered into the single device-to-host transfer of the check;
* rows of parameters split across ranks are gathered and combined (:func:`combine_shards`).
"""

from __future__ import annotations

import math
from typing import Any, Hashable, Iterable, Sequence

import numpy as np

from dualwatch._device import LARGE, Layout
from dualwatch._host import FusedReducer, HostBatch, fused_kernel_built
from dualwatch._table import OFFSETS, Col, combine_shards
from dualwatch.backends.base import Backend

#: tensors up to this many elements are batched on the host when they live there
SMALL = 1 << 16


class Reducer:
    """Reduces a model's parameters to the ``[P, len(Col)]`` table of one check.

    ``host_paths`` off sends host tensors down the accelerator path, batches included, and
    ``batched`` off reduces accelerator tensors one at a time: switches for the tests and
    ``bench/stats.py``, which run and count the accelerator path on the CPU.
    """

    host_paths = True
    batched = True

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._device_batches: dict[tuple[Hashable, bool], tuple[tuple, Layout, dict[str, Any]]] = {}
        self._snapshots: dict[Any, Any] = {}
        self._batches: dict[tuple[int, ...], HostBatch] = {}
        self._fused = FusedReducer()
        self._shard_groups: dict[Hashable, Any] = {}  # shard key -> process group, made once

    def reduce(
        self, params: Sequence[Any], full: Sequence[bool], *, grads: bool, track_change: bool
    ) -> np.ndarray:
        """Reduce ``params`` to a ``[len(params), len(Col)]`` float64 table.

        ``full[i]`` selects per-parameter statistics for parameter ``i``; other rows get only
        what model-level totals need (``light_stats``). With ``grads=False`` the selected rows
        skip gradient statistics (model-level gradient totals still come from light reductions).
        """
        backend = self.backend
        table = np.full((len(params), len(Col)), np.nan)
        weights = [backend.weight(p) for p in params]
        gradients = [backend.grad(p) for p in params]
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
        batches: dict[tuple[Hashable, bool], list[tuple[int, Col, Any]]] = {}
        for row, (w, g, n) in enumerate(zip(weights, gradients, sizes)):
            if n == 0:
                continue
            if row not in host_weights:
                snapshot = full[row] and track_change
                key = self._batch_key(w, n)
                if key is not None:
                    batches.setdefault((key, snapshot), []).append((row, Col.W_SUM, w))
                elif full[row]:
                    prev = self._snapshots.get(row) if snapshot else None
                    device.put(row, Col.W_SUM, backend.full_stats(w, prev, backend.counts_on_device(w)), w)
                    if snapshot:
                        self._snapshots[row] = backend.snapshot(w, prev)
                else:
                    device.put(row, Col.W_SUM, backend.light_stats(w), w)
            if g is not None and row not in host_grads:
                key = self._batch_key(g, n)
                if key is not None:
                    batches.setdefault((key, False), []).append((row, Col.G_SUM, g))
                    continue
                full_grad = full[row] and grads
                stats = (
                    backend.full_stats(g, None, backend.counts_on_device(g))
                    if full_grad
                    else backend.light_stats(g)
                )
                device.put(row, Col.G_SUM, stats, g)
        for (key, snapshot), members in batches.items():
            self._reduce_batch(device, key, snapshot, members)
        device.into(table, backend)
        for group, rows in self._shard_groups_of(params):  # the same groups, in the same order, on every rank
            table[rows] = combine_shards(backend.all_gather(table[rows], group))
        return table

    def _batch_key(self, x: Any, n: int) -> Hashable | None:
        """Which batch ``x`` joins, or None to reduce it on its own. Host tensors join none while
        the host paths are on (those the host paths leave, large ones without the C kernel, pay no
        launches, and a batch's float64 rows would only add memory traffic)."""
        if not self.batched or n > LARGE or (self.host_paths and self.backend.framework.on_host(x)):
            return None
        return self.backend.batch_key(x)

    def _reduce_batch(
        self, device: _Gathered, key: Hashable, snapshot: bool, members: list[tuple[int, Col, Any]]
    ) -> None:
        """One batch of tensors sharing a device and dtype: its layout and state are kept while
        its tensors' shapes stay the same (a change starts afresh, without a snapshot)."""
        tensors = [x for _, _, x in members]
        shapes = tuple(tuple(x.shape) for x in tensors)
        kept = self._device_batches.get((key, snapshot))
        if kept is None or kept[0] != shapes:
            kept = self._device_batches[(key, snapshot)] = (shapes, Layout([_numel(x) for x in tensors]), {})
        _, layout, state = kept
        fresh = not state
        values = self.backend.reduce_rows(tensors, layout, state, snapshot)
        places = [(row, base) for row, base, _ in members]
        device.blocks.append(_Block(values, layout, places, snapshot, fresh))

    def _shard_groups_of(self, params: Sequence[Any]) -> list[tuple[Any, list[int]]]:
        """``(group, rows)`` for the parameters split across the ranks of ``group``.

        Their rows hold one shard each until ``all_gather`` brings the others. Rows are grouped
        by the backend's ``shard_key``; each key's group is looked up (or created) once.
        """
        rows: dict[Hashable, list[int]] = {}
        for row, param in enumerate(params):
            key = self.backend.shard_key(param)
            if key is not None:
                rows.setdefault(key, []).append(row)
        groups = self._shard_groups
        for key, members in rows.items():
            if key not in groups:
                groups[key] = self.backend.shard_group(key, params[members[0]])
        return [(groups[key], members) for key, members in rows.items() if groups[key] is not None]

    def _host_arrays(
        self, tensors: Sequence[Any], sizes: Sequence[int], rows: Iterable[int], small: bool
    ) -> dict[int, np.ndarray]:
        """Host views of the small (or, where the C kernel is built, large) tensors among ``rows``."""
        if not self.host_paths:
            return {}
        fits = (lambda n: 0 < n <= SMALL) if small else (lambda n: n > SMALL and fused_kernel_built())
        host_array = self.backend.host_array
        views = {i: host_array(tensors[i]) for i in rows if tensors[i] is not None and fits(sizes[i])}
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
                table[rows, base + OFFSETS[name]] = values[part]
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
            table[list(rows), Col.W_ABSDIFF if name == "absdiff" else base + OFFSETS[name]] = values

    def forget_snapshots(self) -> None:
        """Drop the weight snapshots kept for ``weight_change``."""
        self._snapshots.clear()
        self._device_batches.clear()


class _Block:
    """The per-row results of one batch (:meth:`Backend.reduce_rows`) and whose rows they are."""

    def __init__(
        self, values: Any, layout: Layout, places: list[tuple[int, Col]], snapshot: bool, fresh: bool
    ) -> None:
        self.values = values
        self.layout = layout
        self.places = places  # (table row, Col.W_SUM or Col.G_SUM) of each tensor, in order
        self.snapshot = snapshot
        self.fresh = fresh  # compared with a snapshot of zeros: no change to report yet

    def into(self, table: np.ndarray, values: np.ndarray) -> None:
        stats = self.layout.combine(values, self.snapshot)
        absdiff = stats.pop("absdiff", None)  # present with a snapshot
        rows = np.array([row for row, _ in self.places])
        bases = np.array([base for _, base in self.places])
        for name, column in stats.items():
            table[rows, bases + OFFSETS[name]] = column
        if absdiff is not None:
            table[rows, Col.W_ABSDIFF] = np.nan if self.fresh else absdiff


class _Gathered:
    """Device scalars and batch results of one check, their places in the table, and the one copy
    that brings them home."""

    def __init__(self) -> None:
        self.blocks: list[_Block] = []
        self.scalars: list[Any] = []
        self.slots: list[tuple[int, int]] = []
        self.recount: list[tuple[int, int, list[int], Any]] = []

    def put(self, row: int, base: Col, stats: dict[str, Any], x: Any) -> None:
        filled = []
        for key, value in stats.items():
            col = Col.W_ABSDIFF if key == "absdiff" else base + OFFSETS[key]
            self.scalars.append(value)
            self.slots.append((row, col))
            filled.append(col)
        if "nonfinite" not in stats:
            self.recount.append((row, base + OFFSETS["nonfinite"], filled, x))

    def into(self, table: np.ndarray, backend: Backend) -> None:
        """Copy the scalars to the host (once) and count NaN/Inf only where some were seen."""
        if self.scalars or self.blocks:
            values = backend.to_host(self.scalars + [block.values for block in self.blocks])
            if self.scalars:
                rows, cols = zip(*self.slots)
                table[list(rows), list(cols)] = values[: len(self.scalars)]
            at = len(self.scalars)
            for block in self.blocks:
                size = block.layout.values(block.snapshot)
                block.into(table, values[at : at + size])
                at += size
        for row, count_col, filled, x in self.recount:
            seen_nonfinite = not np.all(np.isfinite(table[row, filled]))
            table[row, count_col] = backend.count_nonfinite(x) if seen_nonfinite else 0.0


def _numel(x: Any) -> int:
    return math.prod(int(d) for d in x.shape)
