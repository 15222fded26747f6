"""PaddlePaddle, as dualwatch uses it: tensor operations, and the torch backend's reductions written
once for two array namespaces.

On an accelerator each tensor is reduced with paddle ops on its own device. On
the CPU the same lines run on zero-copy numpy views (``np.from_dlpack``), which
made a check about 1.3x faster: paddle's CPU kernels broadcast a scalar slowly
(or allocate to expand it) and its min/max are slow, while numpy's float32
``sum`` is pairwise and accurate. numpy and paddle share every name used here
(``sum``, ``min``, ``subtract(..., out=)``, ``isfinite``, ...), so there is one
code path; CPU results are numpy scalars, already on the host.

The centred sum of squares is two-pass in a reusable scratch buffer; the mean is
clamped into ``[min, max]``, which makes it exactly the common value of an
all-equal tensor, so its m2 is exactly 0. m2 is corrected by the deviations' own sum,
``sum d^2 - (sum d)^2 / n``, so a float32 mean's rounding does not inflate it (as in the torch
backend). The sum of squares is derived as ``m2 + sum * mean`` (two non-negative terms: no
cancellation); BLAS ``dot`` and paddle's ``vector_norm`` are avoided because they lose precision
on large tensors. Half-precision tensors are reduced in float32.

Accelerator tensors of up to a million elements are reduced together (:mod:`dualwatch._device`):
one ``paddle.concat`` packs them, with cached zero tensors as padding, into rows of a flat buffer,
and about twenty row-wise ops in float64 reduce them all. Paddle has no multi-tensor copy into
views (``torch._foreach_copy_``): ``concat`` needs each tensor flattened first, one ``reshape`` per
tensor, which shares the tensor's memory and launches no kernel; ``coalesce_tensor`` copies tensor
by tensor. The concatenated buffer of the weights is kept as the next check's snapshot, so it costs
no copy at all.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, BinaryIO, Callable, Hashable

import numpy as np
import paddle

from dualwatch._device import Layout
from dualwatch._table import ParamInfo
from dualwatch._warn import warn
from dualwatch.backends.base import Backend, Framework
from dualwatch.records import GraphNode

_LOW_PRECISION = frozenset((paddle.float16, paddle.bfloat16))  # a set: `in` a tuple costs 2 us a tensor
# Running statistics are parameters of these layers in paddle but buffers in torch.
_BATCH_NORMS = (paddle.nn.layer.norm._BatchNormBase, paddle.nn.BatchNorm)
_RUNNING_STATS = ("_mean", "_variance")
_WRAPPERS = {"DataParallel", "MetaParallelBase"}  # hold the user's layer in ``_layers``


class PaddleFramework(Framework):
    name = "paddle"
    native_extensions = (".pdtensor", ".pdparams")

    def compiling(self) -> bool:
        return not paddle.in_dynamic_mode()  # paddle.jit.to_static's static graph

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, paddle.Tensor)

    def is_model(self, obj: Any) -> bool:
        return isinstance(obj, paddle.nn.Layer)

    def backend(self, model: Any) -> PaddleBackend:
        """Looks through paddle.DataParallel and fleet's wrappers (``fleet.distributed_model``'s
        ``ShardingParallel``, ``TensorParallel``, ``PipelineParallel``...): parameter names are the
        inner layer's."""
        while _WRAPPERS.intersection(c.__name__ for c in type(model).__mro__) and hasattr(model, "_layers"):
            model = model._layers
        return PaddleBackend(model, self)

    def cuda_device_count(self) -> int:
        return int(paddle.device.cuda.device_count())

    def on_host(self, x: Any) -> bool:
        return x.place.is_cpu_place()

    def to_numpy(self, x: Any) -> np.ndarray:
        x = x.detach()
        return (x.astype("float32") if x.dtype == paddle.bfloat16 else x).numpy()

    def scalar(self, x: Any) -> Any:
        x = x.detach()  # never hold the graph
        return float(x.item()) if x.place.is_cpu_place() else x.clone()

    def device_histogram(self, x: Any, bins: int) -> Any:
        """The torch framework's ``device_histogram`` with paddle ops."""
        x = x.detach().reshape([-1])
        x = x.astype("float32") if x.dtype not in (paddle.float32, paddle.float64) else x
        finite = paddle.isfinite(x)
        inf = paddle.full_like(x, float("inf"))
        lo = paddle.where(finite, x, inf).min()
        hi = paddle.where(finite, x, -inf).max()
        same = lo == hi
        low = paddle.where(same, lo - 0.5, lo)
        width = paddle.where(same, paddle.ones_like(hi), hi - lo)
        index = paddle.clip(paddle.floor((x - low) / width * bins), 0, bins - 1).astype("int64")
        index = paddle.where(finite, index, paddle.full_like(index, bins))
        counts = paddle.zeros([bins + 1], dtype="float64")
        counts = paddle.put_along_axis(
            counts, index, paddle.ones_like(index, dtype="float64"), 0, reduce="add"
        )
        kept = paddle.where(finite, x, paddle.zeros_like(x)).astype("float64")
        head = paddle.stack(
            [
                lo.astype("float64"),
                hi.astype("float64"),
                counts[:bins].sum(),
                kept.sum(),
                (kept * kept).sum(),
                counts[bins],
            ]
        )
        return paddle.concat([head, counts[:bins]])

    def host_copy(self, x: Any) -> Any:
        """A CPU tensor's ``.cpu()`` is the tensor itself (an alias): it is cloned instead."""
        x = x.detach()
        return x.clone() if x.place.is_cpu_place() else x.cpu()

    def nbytes(self, x: Any) -> int:
        return int(x.size) * x.element_size()

    def save(self, obj: Any, path: str | BinaryIO) -> None:
        paddle.save(obj, path)

    def is_float(self, x: Any) -> bool:
        return x.dtype in (paddle.float16, paddle.bfloat16, paddle.float32, paddle.float64)

    def host_float(self, x: Any) -> Any:
        return x if x.dtype in (paddle.float32, paddle.float64) else x.astype("float32")

    def host_view(self, x: Any) -> np.ndarray:
        x = x.detach().contiguous()
        return np.from_dlpack(x) if x.place.is_cpu_place() else x.numpy()  # .numpy() copies even on the CPU

    def to_uint8(self, x: Any) -> Any:
        return x.astype("uint8")

    def from_numpy(self, array: np.ndarray, like: Any) -> Any:
        tensor = (
            paddle.from_dlpack(array)
            if like.place.is_cpu_place()
            else paddle.to_tensor(array, place=like.place)
        )
        return tensor if tensor.dtype == like.dtype else tensor.astype(like.dtype)

    def graph_example(self, example: Any) -> Any:
        from dualwatch.backends import paddle_graph

        return paddle_graph.example_of(example)

    def graph(
        self, model: Any, example: Any, verbose: bool, strict: bool
    ) -> tuple[list[GraphNode], dict[str, bytes]]:
        """``strict`` is torch's; ``paddle.jit.save`` has one way to convert."""
        from dualwatch.backends import paddle_graph

        return paddle_graph.trace(model, example, verbose)


class PaddleBackend(Backend):
    def __init__(self, model: paddle.nn.Layer, framework: PaddleFramework) -> None:
        super().__init__(model, framework)
        self._scratch: dict[tuple[str, Any], Any] = {}
        self._sharding: _Sharding | None = None
        self._unlinked_sharding_checked = False

    def parameters(self) -> list[tuple[str, Any]]:
        """Parameters as torch would list them: BatchNorm running statistics left out."""
        running = {
            id(getattr(layer, attr))
            for layer in self.model.sublayers(include_self=True)
            if isinstance(layer, _BATCH_NORMS)
            for attr in _RUNNING_STATS
            if getattr(layer, attr, None) is not None
        }
        return [(name, p) for name, p in self.model.named_parameters() if id(p) not in running]

    def module_names(self) -> list[str]:
        return [name for name, _ in self.model.named_sublayers(include_self=True)]

    def info(self, name: str, param: Any) -> ParamInfo:
        return ParamInfo(
            name=name,
            shape=tuple(int(d) for d in param.shape),
            numel=int(param.size),
            trainable=bool(getattr(param, "trainable", True) and not param.stop_gradient),
            dtype=self.framework.dtype_name(param),
        )

    def read_owned_rows(self, owner: dict[int, int], rank: int, group: Any) -> None:
        """Fleet sharding stage 1: parameter ``id -> owner rank`` in ``group``; this is ``rank``.

        From here on a parameter owned by another rank reads as empty on this one, weight and
        gradient, and its row comes whole from its owner when the rows are gathered (the
        owner's is the only one with elements, so :func:`~dualwatch._table.combine_shards`
        returns it unchanged). Only the owner holds the averaged gradient once fleet has
        reduced it; every rank holds the same weights, so the owner's are as good as any.
        """
        self._sharding = _Sharding({i: r == rank for i, r in owner.items()}, group)

    def weight(self, param: Any) -> paddle.Tensor:
        if self._sharding is not None and self._sharding.owned.get(id(param)) is False:
            return self._sharding.nothing(param)
        return _local(param.detach())

    def grad(self, param: Any) -> paddle.Tensor | None:
        """``main_grad`` where a mixed-precision optimizer keeps the fp32 gradient, else ``grad``."""
        if self._sharding is not None:
            if self._sharding.owned.get(id(param)) is False:
                return None
        elif not self._unlinked_sharding_checked:
            self._unlinked_sharding_checked = True
            _warn_if_sharded_by_fleet()
        g = getattr(param, "main_grad", None)
        if g is None:
            g = param.grad
        return None if g is None else _local(g.detach())

    def register_forward_hook(self, layer: str, hook: Callable[[Any, Any, Any], None]) -> Any:
        return self.model.get_submodule(layer).register_forward_hook(hook)

    def shard_key(self, param: Any) -> Hashable | None:
        """Parameters whose rows come from other ranks: three kinds.

        Auto-parallel DistTensors with a ``Shard`` placement (``shard_tensor``), keyed by the
        mesh dimension they are split over; fleet's tensor-parallel layers
        (``ColumnParallelLinear``, ...), whose parameters are marked ``is_distributed`` and
        split over the model-parallel group, the group Paddle's own ``HybridParallelClipGrad``
        reduces them over; and, once :meth:`read_owned_rows` was called, the parameters of fleet's
        sharding stage 1, whole on their owner rank and empty on the others.
        """
        if self._sharding is not None and id(param) in self._sharding.owned:
            return ("sharding",)
        if param.is_dist():
            dim = next((i for i, p in enumerate(param.placements) if p.is_shard()), None)
            if dim is None:
                return None
            mesh = param.process_mesh
            return tuple(mesh.process_ids), tuple(mesh.shape), dim
        return ("mp",) if getattr(param, "is_distributed", False) else None

    def shard_group(self, key: Hashable, param: Any) -> Any | None:
        """``(group, ranks)`` for a :meth:`shard_key`: gather over ``group``, keep ``ranks`` (None: all).

        A mesh's parts are gathered over the job's default group, which every rank already
        holds, and each rank keeps those of its own line of the mesh along the split dimension.
        Creating a group per line instead was measured to fail under load with gloo (a peer not
        yet listening); and a group is a collective that every rank must create in step. A mesh
        that spans only part of the job (pipeline stages) is not gathered: a warning says so.
        """
        import paddle.distributed as dist

        if key == ("sharding",):
            return self._sharding.group, None
        if key == ("mp",):
            from paddle.distributed import fleet

            try:
                hcg = fleet.get_hybrid_communicate_group()
            except AttributeError:  # fleet.init was not called: nothing says which ranks hold the rest
                warn(
                    "parameters are marked is_distributed but fleet.init(is_collective=True, strategy=...) "
                    "was not called: their statistics are this rank's part only"
                )
                return None
            return (hcg.get_model_parallel_group(), None) if hcg.get_model_parallel_world_size() > 1 else None
        process_ids, shape, dim = key
        if sorted(process_ids) != list(range(dist.get_world_size())):
            warn(
                f"parameters are sharded over a process mesh of ranks {list(process_ids)}, part of the "
                "job only: their statistics are this rank's part only"
            )
            return None
        lines = np.moveaxis(np.array(process_ids).reshape(shape), dim, -1).reshape(-1, shape[dim]).tolist()
        return dist.get_group(0), next(line for line in lines if dist.get_rank() in line)

    def all_gather(self, rows: np.ndarray, group: Any) -> np.ndarray:
        import paddle.distributed as dist

        process_group, ranks = group
        gathered: list[paddle.Tensor] = []
        dist.all_gather(gathered, paddle.to_tensor(rows), group=process_group)
        parts = np.stack([part.numpy() for part in gathered])
        return parts if ranks is None else parts[ranks]  # the default group's order is the global rank

    def stage(self) -> tuple[int, int, Any] | None:
        """A fleet ``PipelineLayer``: this rank's stage, the stage count and the pipeline's group."""
        module = sys.modules.get("paddle.distributed.fleet.meta_parallel.parallel_layers.pp_layers")
        pipeline = getattr(module, "PipelineLayer", None)
        if pipeline is None or not isinstance(self.model, pipeline):
            return None
        if self.model._num_virtual_pipeline_stages > 1 or getattr(self.model, "_use_dualpipev", False):
            raise ValueError(
                "this PipelineLayer runs several stages on each rank (num_virtual_pipeline_stages > 1 or "
                "dualpipev): dualwatch watches one stage per rank; build it with one stage per rank"
            )
        from paddle.distributed import fleet

        try:
            hcg = fleet.get_hybrid_communicate_group()
        except AttributeError:  # fleet.init was not called: nothing says which ranks hold the other stages
            warn(
                "a PipelineLayer without fleet.init(is_collective=True, strategy=...): its statistics "
                "are this stage's parameters only"
            )
            return None
        return self.model._stage_id, self.model._num_stages, (hcg.get_pipe_parallel_group(), None)

    def shared_with_other_stages(self) -> set[str]:
        """A ``PipelineLayer``'s ``SharedLayerDesc`` weights that several stages hold: Paddle broadcasts
        them when the layer is built and all-reduces their gradients at the end of
        ``forward_backward_pipeline``, so each copy holds the whole model's gradient."""
        shared = {
            id(getattr(comm["layer"], attr))
            for comm in getattr(self.model, "shared_comm", {}).values()
            for attr in comm["weight_attr"]
        }
        return {name for name, p in self.parameters() if id(p) in shared}

    def all_gather_object(self, obj: Any, group: Any) -> list[Any]:
        import paddle.distributed as dist

        gathered: list[Any] = []
        dist.all_gather_object(gathered, obj, group=group[0])
        return gathered

    def _array(self, x: paddle.Tensor) -> tuple[Any, ModuleType]:
        """A flat float view of ``x`` (float32 for half precision) and the namespace that reduces it."""
        if x.dtype in _LOW_PRECISION:
            x = x.astype(paddle.float32)
        if x.place.is_cpu_place():
            return np.from_dlpack(x).reshape(-1), np  # numpy's reshape costs far less than paddle's
        return x.reshape([-1]), paddle

    def _buffer(self, a: Any, xp: ModuleType) -> Any:
        """Scratch space the size of ``a``, reused across tensors of the same device and dtype."""
        key = ("numpy" if xp is np else str(a.place), a.dtype)
        n = a.shape[0]
        buf = self._scratch.get(key)
        if buf is None or buf.shape[0] < n:
            buf = xp.empty_like(a)
            self._scratch[key] = buf
        return buf[:n]

    def full_stats(self, x: Any, prev: Any | None, count_nonfinite: bool) -> dict[str, Any]:
        a, xp = self._array(x)
        scratch = self._buffer(a, xp)
        with np.errstate(all="ignore"):  # NaN/Inf are counted, not warned about
            total, lo, hi = xp.sum(a), xp.min(a), xp.max(a)
            mean = xp.maximum(xp.minimum(total / a.shape[0], hi), lo)
            centred = xp.subtract(a, mean, out=scratch)
            residual = centred.sum()  # n * (true mean - mean)
            m2 = xp.multiply(centred, centred, out=scratch).sum() - residual * residual / a.shape[0]
            stats = {"sum": total, "sumsq": m2 + total * mean, "m2": m2, "min": lo, "max": hi}
            if prev is not None:
                diff = xp.subtract(a, self._array(prev)[0], out=scratch)
                stats["absdiff"] = xp.abs(diff, out=scratch).sum()
            if count_nonfinite:
                stats["nonfinite"] = _nonfinite(a, xp)
        return stats

    def light_stats(self, x: Any) -> dict[str, Any]:
        a, xp = self._array(x)
        with np.errstate(all="ignore"):
            sumsq = xp.multiply(a, a, out=self._buffer(a, xp)).sum()
        return {"sumsq": sumsq, "min": xp.min(a), "max": xp.max(a)}

    def snapshot(self, x: Any, prev: Any | None) -> Any:
        if prev is None:
            return x.clone()
        prev.copy_(x, False)  # non-blocking: ordered on the device's stream like every other op
        return prev

    def count_nonfinite(self, x: Any) -> int:
        return int(_nonfinite(*self._array(x)))

    def counts_on_device(self, x: Any) -> bool:
        return not x.place.is_cpu_place()

    def host_array(self, x: Any) -> np.ndarray | None:
        a, xp = self._array(x)
        return a if xp is np else None

    def batch_key(self, x: Any) -> Hashable | None:
        return str(x.place), x.dtype

    def reduce_rows(self, tensors: list[Any], layout: Layout, state: dict[str, Any], snapshot: bool) -> Any:
        """Per slice: one ``concat`` of the flattened tensors and their zero padding, a float64 copy,
        then row reductions; the padding is set to +inf and -inf for the minimum and maximum, and
        zeroed after centring, by ``index_put_``, which touches only the padding (``index_fill_``
        would add a transpose before and after it). The first check
        compares the weights with themselves (its change is not reported)."""
        if not state:
            state["slices"] = self._slices(tensors, layout)
            state["snapshots"] = [None] * len(layout.slices)
            place = tensors[0].place
            state["fills"] = {
                v: paddle.to_tensor(float(v), dtype=paddle.float64, place=place) for v in ("inf", "-inf", "0")
            }
        f64 = paddle.float64
        columns = []
        pad = state["fills"]
        for k, (s, (padding, pads, counts)) in enumerate(zip(layout.slices, state["slices"])):
            parts = []
            for i in s.members:
                parts.append(tensors[i].reshape([-1]))  # a view: no copy, no kernel
                if i in padding:
                    parts.append(padding[i])
            flat = paddle.concat(parts)
            x = flat.astype(f64) if flat.dtype != f64 else flat.clone()  # flat may become the snapshot
            rows = x.reshape([s.rows, -1])  # a view: what is filled into x shows in rows
            columns_of_slice = []
            if snapshot:
                prev = state["snapshots"][k]
                before = (flat if prev is None else prev).astype(f64)
                columns_of_slice.append(paddle.abs(x - before).reshape([s.rows, -1]).sum(1))
                state["snapshots"][k] = flat
            nonfinite = paddle.isnan(rows * 0.0).sum(1, dtype=f64)
            nans = paddle.isnan(rows).sum(1, dtype=f64)
            total = rows.sum(1)
            x.index_put_((pads,), pad["inf"])
            lo = rows.min(1)
            x.index_put_((pads,), pad["-inf"])
            hi = rows.max(1)
            centred = rows - paddle.maximum(paddle.minimum(total / counts, hi), lo).unsqueeze(1)
            centred.reshape([-1]).index_put_((pads,), pad["0"])
            squares = (centred * centred).sum(1)
            columns += [total, squares, centred.sum(1), lo, hi, nonfinite, nans, *columns_of_slice]
        return paddle.concat(columns)

    @staticmethod
    def _slices(tensors: list[Any], layout: Layout) -> list[tuple]:
        """Once per layout, for each slice: the zeros padding each tensor to whole rows (views of one
        row of zeros), the padding's places and each row's count of real elements."""
        like = tensors[0]
        place = like.place
        longest = max(int(s.padding.max()) for s in layout.slices)
        zeros = paddle.to_tensor(np.zeros(longest + 1), dtype=like.dtype, place=place)
        return [
            (
                {i: zeros[:p] for i, p in zip(s.members, s.padding.tolist()) if p},
                paddle.to_tensor(s.pads, place=place),
                paddle.to_tensor(s.counts, dtype=paddle.float64, place=place),
            )
            for s in layout.slices
        ]

    def to_host(self, scalars: list[Any]) -> np.ndarray:
        """numpy scalars are already on the host; device scalars, stacked per dtype, and the 1-D
        results of batches are copied in one ``concat``."""
        sizes = [int(s.shape[0]) if isinstance(s, paddle.Tensor) and s.ndim == 1 else 1 for s in scalars]
        ends = np.cumsum(sizes)
        out = np.empty(int(ends[-1]) if sizes else 0)
        groups: dict[Any, list[int]] = {}
        blocks = []
        for i, s in enumerate(scalars):
            if not isinstance(s, paddle.Tensor):
                out[ends[i] - 1] = s
            elif s.ndim == 1:
                blocks.append(i)
            else:
                groups.setdefault(s.dtype, []).append(i)
        pieces = [paddle.stack([scalars[i] for i in idx]).astype(paddle.float64) for idx in groups.values()]
        pieces += [scalars[i] for i in blocks]
        if pieces:
            places = [ends[idx] - 1 for idx in groups.values()]
            places += [np.arange(ends[i] - sizes[i], ends[i]) for i in blocks]
            out[np.concatenate(places)] = paddle.concat(pieces).numpy()
        return out


class _Sharding:
    """Which parameters this rank owns under fleet sharding stage 1, and the sharding group."""

    def __init__(self, owned: dict[int, bool], group: Any) -> None:
        self.owned = owned  # id(parameter) -> owned by this rank
        self.group = group
        self._empty: dict[Any, paddle.Tensor] = {}

    def nothing(self, like: Any) -> paddle.Tensor:
        """An empty tensor of ``like``'s dtype: a row with no elements, kept per dtype."""
        empty = self._empty.get(like.dtype)
        if empty is None:
            empty = self._empty[like.dtype] = paddle.zeros([0], dtype=like.dtype)
        return empty


def _warn_if_sharded_by_fleet() -> None:
    """Fleet's sharding stage 1 averages each gradient onto one rank inside ``optimizer.step()``:
    before that every rank holds its own batch's gradients, and the statistics would be this rank's."""
    from paddle.distributed import fleet

    try:
        sharded = fleet.get_hybrid_communicate_group().get_sharding_parallel_world_size() > 1
    except AttributeError:  # fleet.init was not called
        return
    if sharded:
        warn(
            "fleet sharding is on: each gradient is averaged over the ranks only inside optimizer.step(), "
            "so these statistics are this rank's own batch's; call "
            "dualwatch.integrations.paddle.watch_fleet_optimizer(watcher, optimizer) once, with the "
            "optimizer fleet.distributed_optimizer returned, to check the averaged gradients there"
        )


def _local(x: paddle.Tensor) -> paddle.Tensor:
    """This rank's part of a DistTensor (auto-parallel), else ``x``."""
    return x._local_value() if x.is_dist() else x


def _nonfinite(a: Any, xp: ModuleType) -> Any:
    return xp.logical_not(xp.isfinite(a)).sum()


FRAMEWORK = PaddleFramework()
