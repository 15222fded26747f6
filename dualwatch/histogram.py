"""Histograms computed once, where the values live, for every format.

``summarize(values, bins)`` returns a function giving ``(counts, edges, num, sum,
sum_squares, nonfinite)``. Host values are copied (the caller may change them after the
call) and counted later on the writer thread; torch and paddle tensors on an accelerator
are counted on their device with a few kernels, and only ``bins + 6`` numbers are copied
to the host, also on the writer thread. Buckets are ``bins`` equal widths between the
finite min and max (numpy's rule; a constant input spans ``value +- 0.5``); NaN and Inf
are counted in ``nonfinite``, not bucketed.
"""

from __future__ import annotations

import sys
from typing import Any, Callable

import numpy as np

Summary = tuple[np.ndarray, np.ndarray, int, float, float, int]


def summarize(values: Any, bins: int) -> Callable[[], Summary]:
    device = _device_summary(values, bins)
    if device is not None:
        return device
    array = np.array(_host(values), dtype=np.float64, copy=True).reshape(-1)
    return lambda: _numpy_summary(array, bins)


def _host(values: Any) -> Any:
    """Host values as something numpy reads (framework tensors in float64, whatever their dtype)."""
    if "paddle" in type(values).__module__ and hasattr(values, "astype"):
        return values.detach().astype("float64").numpy()
    if hasattr(values, "detach") and hasattr(values, "numpy"):
        return values.detach().double().numpy()
    return values


def _numpy_summary(array: np.ndarray, bins: int) -> Summary:
    finite = array[np.isfinite(array)]
    nonfinite = array.size - finite.size
    if finite.size == 0:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1), 0, 0.0, 0.0, nonfinite
    counts, edges = np.histogram(finite, bins=bins)
    return counts, edges, int(finite.size), float(finite.sum()), float(np.dot(finite, finite)), nonfinite


def _from_packed(packed: np.ndarray, bins: int) -> Summary:
    """``[lo, hi, num, sum, sum_squares, nonfinite, counts...]`` from a device back to a summary."""
    lo, hi, num, total, squares, nonfinite = packed[:6]
    if num == 0:
        return np.zeros(bins, np.int64), np.linspace(0.0, 1.0, bins + 1), 0, 0.0, 0.0, int(nonfinite)
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    return packed[6:].astype(np.int64), edges, int(num), float(total), float(squares), int(nonfinite)


def _device_summary(values: Any, bins: int) -> Callable[[], Summary] | None:
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(values, torch.Tensor) and values.device.type != "cpu":
        packed = _torch_packed(torch, values.detach().reshape(-1), bins)
        return lambda: _from_packed(packed.cpu().numpy(), bins)
    paddle = sys.modules.get("paddle")
    if paddle is not None and isinstance(values, paddle.Tensor) and not values.place.is_cpu_place():
        packed = _paddle_packed(paddle, values.detach().reshape([-1]), bins)
        return lambda: _from_packed(packed.cpu().numpy(), bins)
    return None


def _torch_packed(torch: Any, x: Any, bins: int) -> Any:
    """No ``.item()``, no boolean indexing, no ``bincount``: nothing here waits for the device."""
    x = x if x.is_floating_point() and x.dtype not in (torch.float16, torch.bfloat16) else x.float()
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


def _paddle_packed(paddle: Any, x: Any, bins: int) -> Any:
    """The same as ``_torch_packed`` with paddle ops."""
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
    counts = paddle.put_along_axis(counts, index, paddle.ones_like(index, dtype="float64"), 0, reduce="add")
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
