"""PyTorch, as dualwatch uses it: tensor operations and a model's reductions on each tensor's device.

Each tensor is reduced with a few plain kernels that read it while it is still in cache:
``sum``, ``aminmax``, and a centred sum of squares computed in a reusable scratch buffer
(two-pass, with the mean clamped into [min, max], so an all-equal tensor has std exactly 0).
The centred sum is corrected by the deviations' own sum, ``M2 = sum d^2 - (sum d)^2 / n``
(Chan, Golub and LeVeque's corrected two-pass): a float32 sum rounds at 1e-7 to 1e-6 relative,
so the mean of values near 1e4 can be off by 1e-3 to 1e-2, which alone would add up to
``n * 1e-4`` to ``M2``; the correction takes that error out again.
The sum of squares is derived as ``m2 + sum * mean`` (two non-negative terms: no
cancellation); BLAS ``dot`` and ``vector_norm`` are avoided because they lose precision on
large tensors. Half-precision tensors are reduced in float32.

Tensors of up to a million elements are reduced together instead (:mod:`dualwatch._device`):
one ``torch._foreach_copy_`` packs them into rows of a flat buffer (on CUDA a multi-tensor
kernel: one launch per ~100 tensors, not one per tensor), and about twenty row-wise ops in
float64 reduce them all.
"""

from __future__ import annotations

import datetime
import functools
import gc
import itertools
import sys
from typing import Any, BinaryIO, Callable, Hashable

import numpy as np
import torch

from dualwatch._device import Layout
from dualwatch._table import ParamInfo
from dualwatch.backends.base import Backend, Framework, RankMeeting
from dualwatch.records import GraphNode

_LOW_PRECISION = (torch.float16, torch.bfloat16)


@functools.cache
def _dtensor_type() -> type | None:
    """torch's ``DTensor`` class, if its module is loaded: a parameter can only be a DTensor (FSDP2)
    once it is, and importing it ourselves costs every torch process 1.3-1.9 s at its first check."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def _local(x: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (FSDP2), else ``x``."""
    dtensor = _dtensor_type()
    return x.to_local() if dtensor is not None and isinstance(x, dtensor) else x


def _shard_dim(param: Any) -> int | None:
    """The mesh dimension ``param`` is split over, or None when it is whole on every rank."""
    dtensor = _dtensor_type()
    if dtensor is None or not isinstance(param, dtensor):
        return None
    return next((dim for dim, placement in enumerate(param.placements) if placement.is_shard()), None)


class _StoreMeeting(RankMeeting):
    """A meeting in the job's ``TCPStore`` (``init_process_group``'s): the n-th Watcher made in this
    process announces itself under ``dualwatch/watchers/<n>``; closing, each rank counts itself in
    under ``dualwatch/closing/<n>`` and the last one sets ``dualwatch/closed/<n>``, which the others
    wait for. A few small messages to the store per Watcher; no gloo/NCCL traffic.

    Why at all: a gloo job whose ranks reach ``destroy_process_group()`` (or exit) at different
    moments can die at exit with ``terminate called without an active exception`` (SIGABRT), often
    so under torchrun's c10d rendezvous with launchers started seconds apart. Ranks that leave
    ``Watcher.close`` together reach the user's teardown together.
    """

    _made = itertools.count()  # Watchers made in this process: every rank makes them in the same order

    def __init__(self, store: Any, world: int) -> None:
        self._store, self._world = store, world
        self._n = next(self._made)
        store.add(f"dualwatch/watchers/{self._n}", 1)

    def meet(self, timeout_s: float) -> str | None:
        store, n = self._store, self._n
        try:
            if store.add(f"dualwatch/watchers/{n}", 0) < self._world:
                return None  # some rank made no Watcher (rank 0 alone watches): nobody would come
            if store.add(f"dualwatch/closing/{n}", 1) == self._world:
                store.set(f"dualwatch/closed/{n}", "1")
            store.wait([f"dualwatch/closed/{n}"], datetime.timedelta(seconds=timeout_s))
        except Exception as err:  # timed out, or the store's host is gone
            arrived = _count(store, f"dualwatch/closing/{n}")
            return f"{arrived} of {self._world} ranks came ({type(err).__name__}: {err})"
        return None


def _count(store: Any, key: str) -> str:
    try:
        return str(store.add(key, 0))
    except Exception:
        return "an unknown number"


def _stage_type() -> type | None:
    """torch's pipeline stage base class (``PipelineStage`` and the stages ``pipeline()`` builds), if
    its module is loaded: nothing can be a stage before it is."""
    module = sys.modules.get("torch.distributed.pipelining.stage")
    return getattr(module, "_PipelineStageBase", None)


def _is_stage(obj: Any) -> bool:
    stage = _stage_type()
    return stage is not None and isinstance(obj, stage)


def _is_schedule(obj: Any) -> bool:
    """A ``torch.distributed.pipelining`` schedule (``ScheduleGPipe``, ``Schedule1F1B``, ...)."""
    module = sys.modules.get("torch.distributed.pipelining.schedules")
    schedule = getattr(module, "_PipelineSchedule", None)
    return schedule is not None and isinstance(obj, schedule)


def _stage_of_schedule(schedule: Any) -> Any:
    """The one stage a schedule runs on this rank; a ValueError for schedules that run several."""
    stages = getattr(schedule, "_stages", None)
    if stages is None:
        return schedule._stage
    if len(stages) == 1:
        return stages[0]
    raise ValueError(
        f"{type(schedule).__name__} runs {len(stages)} pipeline stage(s) on each rank: dualwatch watches "
        "one stage per rank (ScheduleGPipe, Schedule1F1B); pass a single-stage schedule or its stage"
    )


def _stage_holding(module: torch.nn.Module) -> Any | None:
    """The pipeline stage whose ``submod`` is ``module``, or None.

    A stage leaves no mark on its module, so it is looked for among the objects that refer to
    the module (the stage itself, or its ``__dict__``): one walk over the garbage collector's
    objects (30 to 40 ms for 0.3 to 1.3 million of them here), done once per Watcher and only in
    a job that has imported ``torch.distributed.pipelining`` and initialised a process group.
    """
    stage = _stage_type()
    if stage is None or not torch.distributed.is_initialized():
        return None
    for referrer in gc.get_referrers(module):
        if isinstance(referrer, stage) and referrer.submod is module:
            return referrer
        if isinstance(referrer, dict) and referrer.get("submod") is module:
            for owner in gc.get_referrers(referrer):
                if isinstance(owner, stage) and owner.submod is module:
                    return owner
    return None


class TorchFramework(Framework):
    name = "torch"
    native_extensions = (".pt", ".pth")

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, torch.Tensor)

    def is_model(self, obj: Any) -> bool:
        return isinstance(obj, torch.nn.Module) or _is_stage(obj) or _is_schedule(obj)

    def backend(self, model: Any) -> TorchBackend:
        """Looks through DDP/DataParallel and torch.compile: parameter names are the inner module's.
        A pipeline stage (``PipelineStage``, or the one a schedule runs here) is watched as its module,
        together with the other stages."""
        stage = _stage_of_schedule(model) if _is_schedule(model) else model if _is_stage(model) else None
        given = model = stage.submod if stage is not None else model
        while True:
            inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
            if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
                inner = model.module
            if inner is None:
                return TorchBackend(model, self, stage=stage, given=given)
            model = inner

    def process_rank(self) -> int | None:
        dist = torch.distributed
        return int(dist.get_rank()) if dist.is_available() and dist.is_initialized() else None

    def rank_meeting(self) -> RankMeeting | None:
        dist = torch.distributed
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
            return None
        try:
            return _StoreMeeting(dist.distributed_c10d._get_default_store(), dist.get_world_size())
        except Exception:  # a store that cannot be reached now will not be at the end either
            return None

    def cuda_device_count(self) -> int:
        return int(torch.cuda.device_count())

    def on_host(self, x: Any) -> bool:
        return x.device.type == "cpu"

    def to_numpy(self, x: Any) -> np.ndarray:
        x = x.detach()
        return (x.float() if x.dtype == torch.bfloat16 else x).cpu().numpy()

    def compiling(self) -> bool:
        return bool(torch.compiler.is_compiling())  # torch.compile's Dynamo tracing

    def scalar(self, x: Any) -> Any:
        x = x.detach()  # never hold the graph
        return float(x.item()) if x.device.type == "cpu" else x.clone()

    def device_histogram(self, x: Any, bins: int) -> Any:
        """No ``.item()``, no boolean indexing, no ``bincount``: nothing here waits for the device."""
        x = x.detach().reshape(-1)
        x = x if x.is_floating_point() and x.dtype not in _LOW_PRECISION else x.float()
        finite = torch.isfinite(x)
        lo = torch.where(finite, x, float("inf")).amin()
        hi = torch.where(finite, x, float("-inf")).amax()
        same = lo == hi
        low = torch.where(same, lo - 0.5, lo)
        width = torch.where(same, torch.ones_like(hi), hi - lo)
        index = ((x - low) / width * bins).floor().clamp_(0, bins - 1).long()
        index = torch.where(finite, index, bins)
        counts = torch.zeros(bins + 1, dtype=torch.float64, device=x.device)
        counts.scatter_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        kept = torch.where(finite, x, 0).double()
        head = torch.stack(
            [lo.double(), hi.double(), counts[:bins].sum(), kept.sum(), (kept * kept).sum(), counts[bins]]
        )
        return torch.cat([head, counts[:bins]])

    def host_copy(self, x: Any) -> Any:
        """``.cpu()`` of a CPU tensor is the tensor itself (an alias), and ``.to("cpu", copy=True)``
        grew RSS ~1 MiB per capture here (``clone`` did not)."""
        x = x.detach()
        return x.clone() if x.device.type == "cpu" else x.cpu()

    def nbytes(self, x: Any) -> int:
        return x.nbytes

    def save(self, obj: Any, path: str | BinaryIO) -> None:
        torch.save(obj, path)

    def is_float(self, x: Any) -> bool:
        return x.is_floating_point()

    def host_float(self, x: Any) -> Any:
        return x if x.dtype in (torch.float32, torch.float64) else x.float()

    def host_view(self, x: Any) -> np.ndarray:
        return x.detach().contiguous().cpu().numpy()

    def to_uint8(self, x: Any) -> Any:
        return x.to(torch.uint8)

    def from_numpy(self, array: np.ndarray, like: Any) -> Any:
        return torch.from_numpy(array).to(device=like.device, dtype=like.dtype)

    def graph_example(self, example: Any) -> Any:
        from dualwatch.backends import torch_graph

        return torch_graph.example_of(example)

    def graph(
        self, model: Any, example: Any, verbose: bool, strict: bool
    ) -> tuple[list[GraphNode], dict[str, bytes]]:
        from dualwatch.backends import torch_graph

        return torch_graph.trace(model, example, verbose, strict)


class TorchBackend(Backend):
    def __init__(
        self, model: torch.nn.Module, framework: TorchFramework, stage: Any = None, given: Any = None
    ) -> None:
        super().__init__(model, framework)
        self._scratch: dict[tuple[torch.device, Any], torch.Tensor] = {}
        self._stage = stage  # the pipeline stage the user gave, if any
        self._given = model if given is None else given  # the module the user gave (or the stage's)

    def parameters(self) -> list[tuple[str, Any]]:
        return list(self.model.named_parameters())

    def module_names(self) -> list[str]:
        return [name for name, _ in self.model.named_modules()]

    def info(self, name: str, param: Any) -> ParamInfo:
        return ParamInfo(
            name=name,
            shape=tuple(param.shape),
            numel=param.numel(),
            trainable=bool(param.requires_grad),
            dtype=self.framework.dtype_name(param),
        )

    def weight(self, param: Any) -> torch.Tensor:
        return _local(param.detach())

    def grad(self, param: Any) -> torch.Tensor | None:
        return None if param.grad is None else _local(param.grad.detach())

    def register_forward_hook(self, layer: str, hook: Callable[[Any, Any, Any], None]) -> Any:
        return self.model.get_submodule(layer).register_forward_hook(hook)

    def shard_key(self, param: Any) -> Hashable | None:
        """DTensor parameters (FSDP2, tensor parallel): the mesh and the dimension they are split over."""
        dim = _shard_dim(param)
        return None if dim is None else (id(param.device_mesh), dim)

    def shard_group(self, key: Hashable, param: Any) -> Any | None:
        mesh = param.device_mesh
        return mesh.get_group(_shard_dim(param)), mesh.device_type

    def all_gather(self, rows: np.ndarray, group: Any) -> np.ndarray:
        import torch.distributed as dist

        process_group, device = group
        local = torch.from_numpy(rows).to(device)
        gathered = [torch.empty_like(local) for _ in range(dist.get_world_size(process_group))]
        dist.all_gather(gathered, local, group=process_group)
        return torch.stack(gathered).cpu().numpy()

    def stage(self) -> tuple[int, int, Any] | None:
        """A ``torch.distributed.pipelining`` stage given to the Watcher, or the stage whose module
        was given: its index, the pipeline's stage count, and its group, the stage's own (None is
        the default group, named so and not held: a reference to it kept past the job's
        ``destroy_process_group()`` tears gloo down at exit instead, which aborted jobs)."""
        stage = self._stage if self._stage is not None else _stage_holding(self._given)
        if stage is None:
            return None
        return stage.stage_index, stage.num_stages, (stage.group, torch.device(stage.device).type)

    def all_gather_object(self, obj: Any, group: Any) -> list[Any]:
        import torch.distributed as dist

        process_group, _ = group
        gathered: list[Any] = [None] * dist.get_world_size(process_group)
        dist.all_gather_object(gathered, obj, group=process_group)
        return gathered

    def _work(self, x: torch.Tensor) -> torch.Tensor:
        """A flat float view of ``x``: float32 for half precision, else as is."""
        x = x.reshape(-1)
        return x.float() if x.dtype in _LOW_PRECISION else x

    def _buffer(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype)
        buf = self._scratch.get(key)
        if buf is None or buf.numel() < x.numel():
            buf = torch.empty(x.numel(), device=x.device, dtype=x.dtype)
            self._scratch[key] = buf
        return buf[: x.numel()]

    def full_stats(self, x: Any, prev: Any | None, count_nonfinite: bool) -> dict[str, Any]:
        x = self._work(x)
        n = x.numel()
        scratch = self._buffer(x)
        total = x.sum()
        lo, hi = torch.aminmax(x)
        mean = torch.clamp(total / n, lo, hi)  # exactly the common value of an all-equal tensor
        torch.sub(x, mean, out=scratch)
        residual = scratch.sum()  # n * (true mean - mean): what a float32 sum of x got wrong
        m2 = scratch.mul_(scratch).sum() - residual * residual / n
        stats = {"sum": total, "sumsq": m2 + total * mean, "m2": m2, "min": lo, "max": hi}
        if prev is not None:
            torch.sub(x, self._work(prev), out=scratch)
            stats["absdiff"] = scratch.abs_().sum()
        if count_nonfinite:
            stats["nonfinite"] = torch.isfinite(x).logical_not_().sum()
        return stats

    def light_stats(self, x: Any) -> dict[str, Any]:
        x = self._work(x)
        scratch = self._buffer(x)
        lo, hi = torch.aminmax(x)
        return {"sumsq": torch.mul(x, x, out=scratch).sum(), "min": lo, "max": hi}

    def snapshot(self, x: Any, prev: Any | None) -> Any:
        if prev is None:
            return x.detach().clone()
        return prev.copy_(x)

    def count_nonfinite(self, x: Any) -> int:
        return int(torch.isfinite(x).logical_not_().sum())

    def counts_on_device(self, x: Any) -> bool:
        return x.device.type != "cpu"

    def host_array(self, x: Any) -> np.ndarray | None:
        if x.device.type != "cpu":
            return None
        return (x.float() if x.dtype in _LOW_PRECISION else x).numpy()  # the host kernels take float32/64

    def batch_key(self, x: Any) -> Hashable | None:
        return x.device, x.dtype

    def reduce_rows(self, tensors: list[Any], layout: Layout, state: dict[str, Any], snapshot: bool) -> Any:
        """Per slice: one multi-tensor copy into the slice's rows, a float64 copy of them, then
        row reductions. Padding is zeroed for the sums, set to +inf and -inf for the minimum and
        maximum, and zeroed again after centring, each by an ``index_fill_`` that touches only the
        padding. The snapshot is refreshed from the float64 rows (an exact cast back). Every
        elementwise result goes into two float64 work buffers kept between checks: a fresh
        allocation per op cost more than the op itself on the CPU (new pages each time)."""
        if not state:
            state["slices"] = self._slices(tensors, layout, snapshot)
        like = tensors[0]
        work = self._row_buffers(like.device, max(s.size for s in layout.slices))
        inf = float("inf")
        columns = []
        for s, (views, rows, pads, counts, prev) in zip(layout.slices, state["slices"]):
            torch._foreach_copy_(views, [tensors[i] for i in s.members])
            flat, spare = work[0, : s.size], work[1, : s.size]
            x = flat.copy_(rows).view(s.rows, -1)
            flat.index_fill_(0, pads, 0.0)
            torch.mul(flat, 0.0, out=spare)  # NaN where a value is NaN or infinite, else 0
            nonfinite = spare.ne_(spare).view(s.rows, -1).sum(1)
            nans = torch.isnan(x).sum(1)
            if prev is not None:
                changed = torch.sub(flat, prev, out=spare).abs_().view(s.rows, -1).sum(1)
                prev.copy_(flat)
            total = x.sum(1)
            flat.index_fill_(0, pads, inf)
            lo = x.amin(1)
            flat.index_fill_(0, pads, -inf)
            hi = x.amax(1)
            x.sub_(torch.clamp(total / counts, lo, hi).unsqueeze(1))
            flat.index_fill_(0, pads, 0.0)
            deviation = x.sum(1)
            columns += [total, x.mul_(x).sum(1), deviation, lo, hi, nonfinite, nans]
            if prev is not None:
                columns.append(changed)
        return torch.cat(columns)

    def _row_buffers(self, device: torch.device, size: int) -> torch.Tensor:
        """``[2, size]`` float64 work buffers on ``device``, shared by every batch there."""
        key = (device, "rows")
        buf = self._scratch.get(key)
        if buf is None or buf.shape[-1] < size:
            buf = self._scratch[key] = torch.empty(2, size, device=device, dtype=torch.float64)
        return buf

    @staticmethod
    def _slices(tensors: list[torch.Tensor], layout: Layout, snapshot: bool) -> list[tuple]:
        """Once per layout, for each slice: the views each tensor is copied to (shaped like the
        tensor, in a scratch buffer of this batch), the rows they fill, the padding's places, each
        row's count of real elements, and the slice's part of the snapshot (zeros at first)."""
        like = tensors[0]
        device = like.device
        scratch = torch.empty(max(s.size for s in layout.slices), device=device, dtype=like.dtype)
        snapshots = torch.zeros(layout.size, device=device, dtype=like.dtype) if snapshot else None
        return [
            (
                [
                    scratch[offset : offset + tensors[i].numel()].view(tensors[i].shape)
                    for i, offset in zip(s.members, s.offsets.tolist())
                ],
                scratch[: s.size],
                torch.as_tensor(s.pads, device=device),
                torch.as_tensor(s.counts, device=device),
                None if snapshots is None else snapshots[s.start : s.start + s.size],
            )
            for s in layout.slices
        ]

    def to_host(self, scalars: list[Any]) -> np.ndarray:
        """0-dim scalars (tensors reduced one at a time), then the 1-D results of batches, in one copy."""
        single = [s for s in scalars if s.dim() == 0]
        parts = ([torch.stack(single)] if single else []) + [s for s in scalars if s.dim() == 1]
        return torch.cat(parts).to(torch.float64).cpu().numpy()


FRAMEWORK = TorchFramework()
