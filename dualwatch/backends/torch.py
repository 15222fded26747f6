"""PyTorch backend: reductions with torch ops on each tensor's own device.

Each tensor is reduced with a few plain kernels that read it while it is still
in cache: ``sum``, ``aminmax``, and a centred sum of squares computed in a
reusable scratch buffer (two-pass, with the mean clamped into [min, max], so an
all-equal tensor has std exactly 0). The sum of squares is derived as
``m2 + sum * mean`` (two non-negative terms: no cancellation); BLAS ``dot`` and
``vector_norm`` are avoided because they lose precision on large tensors.
Half-precision tensors are reduced in float32.
"""

from __future__ import annotations

from typing import Any, Hashable

import numpy as np
import torch

from dualwatch.backends.base import Backend, ParamInfo

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return None
    return DTensor


_DTENSOR = _dtensor_type()


def _local(x: torch.Tensor) -> torch.Tensor:
    """This rank's part of a DTensor (FSDP2), else ``x``."""
    return x.to_local() if _DTENSOR is not None and isinstance(x, _DTENSOR) else x


def _shard_dim(param: Any) -> int | None:
    """The mesh dimension ``param`` is split over, or None when it is whole on every rank."""
    if _DTENSOR is None or not isinstance(param, _DTENSOR):
        return None
    return next((dim for dim, placement in enumerate(param.placements) if placement.is_shard()), None)


class TorchBackend(Backend):
    framework = "torch"

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__(model)
        self._scratch: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

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
            dtype=str(param.dtype).replace("torch.", ""),
        )

    def weight(self, param: Any) -> torch.Tensor:
        return _local(param.detach())

    def grad(self, param: Any) -> torch.Tensor | None:
        return None if param.grad is None else _local(param.grad.detach())

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
        m2 = scratch.mul_(scratch).sum()
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

    def to_host(self, scalars: list[Any]) -> np.ndarray:
        return torch.stack(scalars).to(torch.float64).cpu().numpy()
