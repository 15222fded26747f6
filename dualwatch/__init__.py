"""dualwatch: training telemetry that works the same for PyTorch and PaddlePaddle.

``import dualwatch`` imports neither framework; the backend for a model loads
when a model is given. The edge tools load on first use: ``dualwatch.EdgeMapGenerator``
and the losses import OpenCV, ``dualwatch.TorchEdgeLoss`` torch, ``dualwatch.PaddleEdgeLoss`` paddle.
"""

from typing import Any

from dualwatch._version import __version__
from dualwatch.health import Health, Thresholds, Verdict
from dualwatch.stats import Report, StatsEngine
from dualwatch.watcher import Watcher
from dualwatch.writer import Writer

_LAZY = {
    "EdgeMapGenerator": ("dualwatch.edge", "EdgeMapGenerator"),
    "edge_map_mse": ("dualwatch.edge", "edge_map_mse"),
    "edge_weighted_mse": ("dualwatch.edge", "edge_weighted_mse"),
    "log_edge_maps": ("dualwatch.edge", "log_edge_maps"),
    "sobel_edge_l1": ("dualwatch.edge", "sobel_edge_l1"),
    "PaddleEdgeLoss": ("dualwatch.edge_paddle", "EdgeLoss"),
    "TorchEdgeLoss": ("dualwatch.edge_torch", "EdgeLoss"),
    "Monitor": ("dualwatch.capture", "Monitor"),
    "MonitoredTrainer": ("dualwatch.capture", "MonitoredTrainer"),
}

# The edge tools stay out of __all__: ``from dualwatch import *`` must not import a framework.
__all__ = ["Health", "Report", "StatsEngine", "Thresholds", "Verdict", "Watcher", "Writer", "__version__"]


def __getattr__(name: str) -> Any:
    """The edge tools, imported on first access (they need OpenCV and a framework)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'dualwatch' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
