"""dualwatch: training telemetry that works the same for PyTorch and PaddlePaddle.

``import dualwatch`` imports neither framework; the backend for a model loads
when a model is given. The edge tools load on first use: ``dualwatch.EdgeMapGenerator``
and the losses import OpenCV, ``dualwatch.TorchEdgeLoss`` torch, ``dualwatch.PaddleEdgeLoss`` paddle.
"""

from typing import Any

from dualwatch._errors import DualwatchError
from dualwatch._health import Health, Thresholds, Verdict
from dualwatch._stats import Report, StatsEngine
from dualwatch._version import __version__
from dualwatch._watcher import Watcher
from dualwatch._writer import Writer

_LAZY = {
    "EdgeMapGenerator": ("dualwatch._edge", "EdgeMapGenerator"),
    "edge_map_mse": ("dualwatch._edge", "edge_map_mse"),
    "edge_weighted_mse": ("dualwatch._edge", "edge_weighted_mse"),
    "log_edge_maps": ("dualwatch._edge", "log_edge_maps"),
    "sobel_edge_l1": ("dualwatch._edge", "sobel_edge_l1"),
    "PaddleEdgeLoss": ("dualwatch.backends.paddle_nn", "PaddleEdgeLoss"),
    "TorchEdgeLoss": ("dualwatch.backends.torch_nn", "TorchEdgeLoss"),
    "Monitor": ("dualwatch._capture", "Monitor"),
    "MonitoredTrainer": ("dualwatch._capture", "MonitoredTrainer"),
}

# The edge tools stay out of __all__: ``from dualwatch import *`` must not import a framework.
__all__ = [
    "DualwatchError",
    "Health",
    "Report",
    "StatsEngine",
    "Thresholds",
    "Verdict",
    "Watcher",
    "Writer",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """The edge tools, imported on first access (they need OpenCV and a framework)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'dualwatch' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
