"""Framework backends, chosen from the model's type without importing a framework.

A torch model can only exist once torch is imported, so looking torch (or
paddle) up in ``sys.modules`` is enough to recognise its models; ``import
dualwatch`` itself never imports either framework.
"""

from __future__ import annotations

import sys
from typing import Any

from dualwatch.backends.base import Backend, Col, ParamInfo

__all__ = ["Backend", "Col", "ParamInfo", "backend_for"]


def backend_for(model: Any) -> Backend:
    """The backend for a ``torch.nn.Module`` or a ``paddle.nn.Layer``."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        from dualwatch.backends.torch import TorchBackend

        return TorchBackend(_unwrap_torch(model))
    paddle = sys.modules.get("paddle")
    if paddle is not None and isinstance(model, paddle.nn.Layer):
        from dualwatch.backends.paddle import PaddleBackend

        return PaddleBackend(_unwrap_paddle(model))
    raise TypeError(
        f"dualwatch needs a torch.nn.Module or a paddle.nn.Layer, got {type(model).__module__}."
        f"{type(model).__qualname__}: pass the model itself (for example Watcher(model)), "
        "not its parameters, its state_dict or an optimizer."
    )


def _unwrap_torch(model: Any) -> Any:
    """The module whose parameter names users see: inside DDP/DataParallel and torch.compile."""
    while True:
        inner = getattr(model, "_orig_mod", None)  # torch.compile's OptimizedModule
        if inner is None and type(model).__name__ in ("DistributedDataParallel", "DataParallel"):
            inner = model.module
        if inner is None:
            return model
        model = inner


def _unwrap_paddle(model: Any) -> Any:
    """The layer inside paddle.DataParallel, whose parameter names users see."""
    while type(model).__name__ == "DataParallel" and hasattr(model, "_layers"):
        model = model._layers
    return model
