"""The Lightning integration on the ``pytorch_lightning`` package (2.x): same classes, other base classes.

``pytorch_lightning.Trainer`` and its ``LightningCLI`` check that callbacks and loggers subclass
``pytorch_lightning``'s own ``Callback`` and ``Logger`` (a single callback that is not one is
not recognised), so code that imports ``pytorch_lightning`` uses these::

    from dualwatch.integrations.pytorch_lightning import DualwatchLogger, EdgeMonitorCallback

Everything else is :mod:`dualwatch.integrations.lightning`'s, documented there.
"""

from __future__ import annotations

import pytorch_lightning as pl
from pytorch_lightning.loggers.logger import Logger

from dualwatch.integrations.lightning import _EdgeMonitor, _Logger

__all__ = ["DualwatchLogger", "EdgeMonitorCallback"]


class DualwatchLogger(_Logger, Logger):
    __doc__ = _Logger.__doc__


class EdgeMonitorCallback(_EdgeMonitor, pl.Callback):
    __doc__ = _EdgeMonitor.__doc__
