"""dualwatch: training telemetry that works the same for PyTorch and PaddlePaddle.

``import dualwatch`` imports neither framework; the backend for a model loads
when a model is given.
"""

from dualwatch._version import __version__
from dualwatch.health import Health, Thresholds, Verdict
from dualwatch.stats import Report, StatsEngine
from dualwatch.watcher import Watcher
from dualwatch.writer import Writer

__all__ = ["Health", "Report", "StatsEngine", "Thresholds", "Verdict", "Watcher", "Writer", "__version__"]
