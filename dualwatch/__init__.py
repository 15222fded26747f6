"""dualwatch: training telemetry that works the same for PyTorch and PaddlePaddle.

The public API, each name with one import path:

* watching a model: ``Watcher``, with ``Thresholds``, ``Health``, ``Verdict`` and the engine
  behind it, ``StatsEngine`` and its ``Report``;
* writing VisualDL, TensorBoard and JSON lines at once: ``Writer``, and in ``dualwatch.compat``
  ``SummaryWriter`` and ``LogWriter`` for code written for torch's and VisualDL's writers;
* edge maps and edge losses: ``EdgeMapGenerator``, ``edge_weighted_mse``, ``edge_map_mse``,
  ``sobel_edge_l1``, ``log_edge_maps``, ``TorchEdgeLoss`` (a ``torch.nn.Module``),
  ``PaddleEdgeLoss`` (a ``paddle.nn.Layer``);
* capturing layer outputs: ``ActivationCapture`` (``Monitor`` is the same class, under the name
  the layer-output Monitor script gives it) and ``MonitoredTrainer``;
* ``DualwatchError``: why a command could not do what was asked; ``RunInUseError``: the run is
  being written by another open ``Writer`` (one writer per run);
* the packages to extend or read with: ``dualwatch.backends`` (a framework),
  ``dualwatch.sinks`` and ``dualwatch.records`` (a sink), ``dualwatch.readers`` (reading runs),
  ``dualwatch.integrations.lightning``, ``.paddle``, ``.mmengine`` (trainers).

Every other module is internal (its name, or its package's, starts with ``_``).

``import dualwatch`` imports neither framework; a model's backend loads when a model is given.
The edge tools, activation capture and ``DualwatchError`` (a click exception) load on first use:
``EdgeMapGenerator`` and the losses import OpenCV, ``TorchEdgeLoss`` torch, ``PaddleEdgeLoss`` paddle.
"""

from typing import Any

from dualwatch._health import Health, Thresholds, Verdict
from dualwatch._runlock import RunInUseError
from dualwatch._stats import Report, StatsEngine
from dualwatch._version import __version__
from dualwatch._watcher import Watcher
from dualwatch._writer import Writer

_LAZY = {
    "DualwatchError": ("dualwatch._errors", "DualwatchError"),
    "EdgeMapGenerator": ("dualwatch._edge", "EdgeMapGenerator"),
    "edge_map_mse": ("dualwatch._edge", "edge_map_mse"),
    "edge_weighted_mse": ("dualwatch._edge", "edge_weighted_mse"),
    "log_edge_maps": ("dualwatch._edge", "log_edge_maps"),
    "sobel_edge_l1": ("dualwatch._edge", "sobel_edge_l1"),
    "PaddleEdgeLoss": ("dualwatch.backends.paddle_nn", "PaddleEdgeLoss"),
    "TorchEdgeLoss": ("dualwatch.backends.torch_nn", "TorchEdgeLoss"),
    "ActivationCapture": ("dualwatch._capture", "ActivationCapture"),
    "Monitor": ("dualwatch._capture", "Monitor"),
    "MonitoredTrainer": ("dualwatch._capture", "MonitoredTrainer"),
}

# The losses stay out of __all__: ``from dualwatch import *`` must not import a framework.
__all__ = [
    "ActivationCapture",
    "DualwatchError",
    "EdgeMapGenerator",
    "Health",
    "Monitor",
    "MonitoredTrainer",
    "Report",
    "RunInUseError",
    "StatsEngine",
    "Thresholds",
    "Verdict",
    "Watcher",
    "Writer",
    "__version__",
    "edge_map_mse",
    "edge_weighted_mse",
    "log_edge_maps",
    "sobel_edge_l1",
]


def __getattr__(name: str) -> Any:
    """The lazy names, imported on first access (they need OpenCV or a framework)."""
    if name not in _LAZY:
        raise AttributeError(f"module 'dualwatch' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
