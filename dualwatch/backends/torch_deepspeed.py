"""DeepSpeed ZeRO, as dualwatch reads it: each rank reduces its own partition, the rows are combined.

Under ZeRO-2 and ZeRO-3 ``p.grad`` is None after ``engine.backward``: the averaged gradient of a
parameter lives in pieces, one per rank of its data-parallel group, in the optimizer's partition
buffers, until ``engine.step()`` applies and zeroes it. ZeRO-3 splits the weights the same way
(outside a forward the local ``p`` has shape ``(0,)``).

* ZeRO-1/2 (``p._hp_mapping``): the flattened parameter groups are cut into one contiguous range
  per rank, so a rank owns one slice of a parameter, or none. The weight is whole on every rank;
  dualwatch reduces only the slice this rank owns, of the weight and of the gradient alike, so
  the rows of all ranks add up to the parameter exactly once.
* ZeRO-3 (``p.ds_tensor``): rank ``r`` holds elements ``[r*s, (r+1)*s)`` of the flattened
  parameter, padded with zeros past its end; the padding is left out. The gradient partition is
  DeepSpeed's ``safe_get_local_grad``.

Each rank reduces its slices to rows of the usual table; the rows of every rank are gathered in
one ``all_gather`` per data-parallel group and combined exactly (:func:`dualwatch._table.combine_shards`,
as for FSDP2). A check moves ``ranks x parameters x 15`` float64 (120 bytes a parameter from each
rank) in one collective. Gathering whole tensors instead (``safe_get_full_grad`` and
``safe_get_full_fp32_param``) would cost one all-reduce of the full parameter per parameter and
per tensor kind: ``2 x 4 x numel`` bytes per parameter and ``2 x parameters`` collectives per check.

With fp16 the partitions hold loss-scaled gradients until ``step`` unscales them: they are read
divided by the optimizer's current loss scale (a float32 copy of the partition, only then).
Parameters ZeRO leaves whole (frozen ones under ZeRO-1/2) are read as on one process.

The moment the gradients are final is between ``engine.backward(loss)`` and ``engine.step()``:
:meth:`DeepSpeedBackend.hook_optimizer_step` wraps the engine's ``step`` so that a check runs
there, at the boundaries of gradient accumulation, before DeepSpeed clips, steps and zeroes.
"""

from __future__ import annotations

import functools
import sys
from typing import Any, Callable, Hashable

import torch

from dualwatch._table import ParamInfo
from dualwatch._warn import warn
from dualwatch.backends.torch import TorchBackend, TorchFramework


def is_engine(obj: Any) -> bool:
    """Whether ``obj`` is a ``DeepSpeedEngine`` (without importing DeepSpeed: one exists only once it is)."""
    module = sys.modules.get("deepspeed")
    engine = getattr(module, "DeepSpeedEngine", None)
    return engine is not None and isinstance(obj, engine)


def _partitioned(param: Any) -> bool:
    """Whether ZeRO splits ``param``'s gradient (ZeRO-1/2) or its weight and gradient (ZeRO-3)."""
    return hasattr(param, "ds_tensor") or hasattr(param, "_hp_mapping")


def _scale_unknown(param: Any) -> bool:
    """Whether ``param`` is a ZeRO-1/2 fp16 parameter with no link to its optimizer's loss scale."""
    return (
        hasattr(param, "_hp_mapping")
        and param.dtype == torch.float16
        and not hasattr(param, "_zero_optimizer")
    )


class DeepSpeedFramework(TorchFramework):
    """torch, for the models DeepSpeed drives: an engine, or a model whose parameters ZeRO
    partitions (an engine's ``module``, a Lightning module under ``strategy="deepspeed"``).
    Tensors stay torch's own (:data:`dualwatch.backends.torch.FRAMEWORK`)."""

    def is_tensor(self, x: Any) -> bool:
        return False

    def is_model(self, obj: Any) -> bool:
        if is_engine(obj):
            return True
        return isinstance(obj, torch.nn.Module) and any(_partitioned(p) for p in obj.parameters())

    def backend(self, model: Any) -> DeepSpeedBackend:
        if is_engine(model):
            return DeepSpeedBackend(model.module, self, engine=model)
        return DeepSpeedBackend(model, self)


class DeepSpeedBackend(TorchBackend):
    """The torch backend over ZeRO's partitions: ``weight`` and ``grad`` are this rank's slices."""

    def __init__(self, model: torch.nn.Module, framework: TorchFramework, engine: Any = None) -> None:
        super().__init__(model, framework)
        self.engine = engine
        self._ranks: dict[int, int] = {}  # id(process group) -> this rank in it
        if engine is None and any(_scale_unknown(p) for p in model.parameters()):
            warn(
                "under ZeRO-1/2 with fp16 the gradients carry DeepSpeed's loss scale until engine.step(), "
                "and a model's parameters do not lead to the engine's optimizer: pass the engine "
                "itself (Watcher(engine)) for gradient statistics that are not multiplied by the scale",
                UserWarning,
            )

    def info(self, name: str, param: Any) -> ParamInfo:
        """The whole parameter's shape, also under ZeRO-3 (where the local ``param`` is empty)."""
        shape = tuple(getattr(param, "ds_shape", param.shape))
        return ParamInfo(
            name=name,
            shape=shape,
            numel=int(getattr(param, "ds_numel", param.numel())),
            trainable=bool(param.requires_grad),
            dtype=self.framework.dtype_name(param),
        )

    def weight(self, param: Any) -> torch.Tensor:
        if hasattr(param, "ds_tensor"):
            return param.ds_tensor.detach().narrow(0, 0, self._zero3_valid(param))
        if hasattr(param, "_hp_mapping"):
            flat = param.detach().reshape(-1)
            mapping = param._hp_mapping
            if mapping is None:  # this rank owns no part of it
                return flat.narrow(0, 0, 0)
            address = mapping.lp_fragment_address
            return flat.narrow(0, address.start, address.numel)
        return super().weight(param)

    def grad(self, param: Any) -> torch.Tensor | None:
        if hasattr(param, "ds_tensor"):
            if not param.requires_grad:
                return None
            from deepspeed.utils import safe_get_local_grad

            part = safe_get_local_grad(param)
            if part is None:
                return None
            return self._unscaled(param, part.narrow(0, 0, self._zero3_valid(param)))
        if hasattr(param, "_hp_mapping"):
            mapping = param._hp_mapping
            if mapping is None:
                return None
            try:
                part = mapping.get_lp_grad_fragment(param._index_in_param_group)
            except ValueError:  # "only available immediately after backward and before engine step"
                return None
            part = part.detach().reshape(-1)
            address = mapping.lp_fragment_address
            if part.numel() == param.numel() != address.numel:  # a whole accumulation buffer (bf16 optimizer)
                part = part.narrow(0, address.start, address.numel)
            return self._unscaled(param, part)
        grad = super().grad(param)
        return None if grad is None else self._unscaled(param, grad)

    def shard_key(self, param: Any) -> Hashable | None:
        """The data-parallel group ZeRO partitions ``param`` over; None for a parameter it leaves whole."""
        group = self._group(param)
        return None if group is None else ("deepspeed", id(group))

    def shard_group(self, key: Hashable, param: Any) -> Any | None:
        from deepspeed.accelerator import get_accelerator

        return self._group(param), get_accelerator().current_device_name()  # where DeepSpeed communicates

    def hook_optimizer_step(self, check: Callable[[int], Any]) -> Callable[[], None] | None:
        """Wraps ``engine.step`` so that ``check(engine.global_steps)`` runs first at each boundary of
        gradient accumulation (where the optimizer steps); returns what takes the wrapper off again.

        None without an engine; also, with a warning, for a pipeline engine (its ``train_batch``
        steps without calling ``step``) and with ``managed_gradient_accumulation`` off, where
        DeepSpeed reduces the gradients only inside ``step``.
        """
        engine = self.engine
        if engine is None:
            return None
        if getattr(engine, "pipeline_parallelism", False):
            warn(
                "a DeepSpeed pipeline engine steps inside train_batch(), and each stage's parameters "
                "live on their own ranks: dualwatch does not watch it on its own",
                UserWarning,
            )
            return None
        managed = getattr(engine, "managed_gradient_accumulation", None)
        if managed is not None and not managed():
            warn(
                "this DeepSpeed engine leaves gradient accumulation to the caller "
                "(managed_gradient_accumulation=false), so its gradients are final only inside "
                "engine.step(): dualwatch runs no checks on its own; set it to true to have them",
                UserWarning,
            )
            return None
        original = engine.step
        hooked = [True]

        @functools.wraps(original)
        def step(*args: Any, **kwargs: Any) -> Any:
            if hooked[0] and engine.is_gradient_accumulation_boundary():
                check(int(engine.global_steps))
            return original(*args, **kwargs)

        engine.step = step

        def unhook() -> None:
            hooked[0] = False  # a wrapper put on top of ours since keeps calling it: it only passes on
            if engine.__dict__.get("step") is step:
                del engine.step
                if getattr(original, "__self__", None) is not engine:  # someone else's wrapper
                    engine.step = original

        return unhook

    @staticmethod
    def _group(param: Any) -> Any | None:
        if hasattr(param, "ds_tensor"):
            return param.ds_process_group
        if hasattr(param, "_hp_mapping"):
            return param._dp_group
        return None

    def _zero3_valid(self, param: Any) -> int:
        """How many elements of this rank's ZeRO-3 partition are the parameter's (the rest is padding)."""
        group = param.ds_process_group
        rank = self._ranks.get(id(group))
        if rank is None:
            rank = self._ranks[id(group)] = torch.distributed.get_rank(group=group)
        size = int(param.ds_tensor.ds_numel)
        return max(0, min(size, int(param.ds_numel) - rank * size))

    def _unscaled(self, param: Any, grad: torch.Tensor) -> torch.Tensor:
        """``grad`` divided by the fp16 loss scale it still carries (1 with bf16 and float32), which
        the engine's optimizer holds (ZeRO-3 parameters, and ZeRO-1/2 ones under CPU offload, also
        point to it)."""
        optimizer = (
            getattr(self.engine, "optimizer", None)
            or getattr(param, "_z3_optimizer", None)
            or getattr(param, "_zero_optimizer", None)
        )
        scale = float(getattr(optimizer, "loss_scale", 1.0) or 1.0)
        return grad.detach() if scale == 1.0 else grad.detach().float().div_(scale)


FRAMEWORK = DeepSpeedFramework()
