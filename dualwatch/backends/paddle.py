"""PaddlePaddle backend: reductions with paddle ops on each tensor's own device.

Mirrors the torch backend: ``sum``, ``min``, ``max`` and a centred sum of
squares computed in a reusable scratch buffer (two-pass, so an all-equal tensor
has m2 exactly 0: the mean is clamped into ``[min, max]``, which makes it the
common value). The sum of squares is derived as ``m2 + sum * mean`` (two
non-negative terms: no cancellation); BLAS-backed ``dot``/``norm`` are avoided
because they lose precision on large tensors. Half-precision tensors are
reduced in float32. Paddle broadcasts a scalar slowly on CPU, so the mean is
expanded to the tensor's shape before subtracting.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import paddle

from dualwatch.backends.base import Backend, ParamInfo

_LOW_PRECISION = (paddle.float16, paddle.bfloat16)
# BatchNorm running statistics are parameters in paddle but buffers in torch.
_BATCH_NORMS = (paddle.nn.layer.norm._BatchNormBase, paddle.nn.BatchNorm)
_RUNNING_STATS = ("_mean", "_variance")


class PaddleBackend(Backend):
    framework = "paddle"

    def __init__(self, model: paddle.nn.Layer) -> None:
        super().__init__(model)
        self._scratch: dict[tuple[str, paddle.dtype], paddle.Tensor] = {}

    def parameters(self) -> list[tuple[str, Any]]:
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
            dtype=str(param.dtype).replace("paddle.", ""),
        )

    def weight(self, param: Any) -> paddle.Tensor:
        return param.detach()

    def grad(self, param: Any) -> paddle.Tensor | None:
        """``main_grad`` where a mixed-precision optimizer keeps the fp32 gradient, else ``grad``."""
        g = getattr(param, "main_grad", None)
        if g is None:
            g = param.grad
        return None if g is None else g.detach()

    def _work(self, x: paddle.Tensor) -> paddle.Tensor:
        """A flat float view of ``x``: float32 for half precision, else as is."""
        x = x.reshape([-1])
        return x.astype(paddle.float32) if x.dtype in _LOW_PRECISION else x

    def _buffer(self, x: paddle.Tensor) -> paddle.Tensor:
        key = (str(x.place), x.dtype)
        buf = self._scratch.get(key)
        n = int(x.shape[0])
        if buf is None or int(buf.shape[0]) < n:
            buf = paddle.empty_like(x)
            self._scratch[key] = buf
        return buf[:n]

    def full_stats(self, x: Any, prev: Any | None, count_nonfinite: bool) -> dict[str, Any]:
        x = self._work(x)
        n = int(x.shape[0])
        scratch = self._buffer(x)
        total = paddle.sum(x)
        lo = paddle.min(x)
        hi = paddle.max(x)
        mean = paddle.maximum(paddle.minimum(total / n, hi), lo)
        m2 = paddle.subtract(x, mean.expand([n]), out=scratch).square_().sum()
        stats = {"sum": total, "sumsq": m2 + total * mean, "m2": m2, "min": lo, "max": hi}
        if prev is not None:
            stats["absdiff"] = paddle.subtract(x, self._work(prev), out=scratch).abs_().sum()
        if count_nonfinite:
            stats["nonfinite"] = paddle.isfinite(x).logical_not_().sum()
        return stats

    def light_stats(self, x: Any) -> dict[str, Any]:
        x = self._work(x)
        sumsq = paddle.multiply(x, x, out=self._buffer(x)).sum()
        return {"sumsq": sumsq, "min": paddle.min(x), "max": paddle.max(x)}

    def snapshot(self, x: Any, prev: Any | None) -> Any:
        if prev is None:
            return x.clone()
        prev.copy_(x, False)
        return prev

    def count_nonfinite(self, x: Any) -> int:
        return int(paddle.isfinite(x).logical_not_().sum())

    def counts_on_device(self, x: Any) -> bool:
        return not x.place.is_cpu_place()

    def to_host(self, scalars: list[Any]) -> np.ndarray:
        """Stack per dtype, cast each stack to float64, concatenate, copy once, restore the order."""
        groups: dict[paddle.dtype, list[int]] = {}
        for i, s in enumerate(scalars):
            groups.setdefault(s.dtype, []).append(i)
        parts = [paddle.stack([scalars[i] for i in idx]).astype(paddle.float64) for idx in groups.values()]
        values = paddle.concat(parts).numpy()
        out = np.empty(len(scalars))
        out[np.concatenate([np.asarray(idx) for idx in groups.values()])] = values
        return out
