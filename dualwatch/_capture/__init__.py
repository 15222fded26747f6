"""Activation capture: chosen layers' outputs kept during training, for PyTorch and Paddle.

* :mod:`~dualwatch._capture.capture`: :class:`ActivationCapture` (``Monitor``), the hooks, the
  once-per-batch record decision, the captures held and how to read, save and clear them;
* :mod:`~dualwatch._capture.spec`: the user's request parsed and checked before training;
* :mod:`~dualwatch._capture.outputs`: walking nested layer outputs (tuples, named tuples, dicts);
* :mod:`~dualwatch._capture.store`: the ``.npz`` / native files and ``manifest.json``;
* :mod:`~dualwatch._capture.stats`: each capture's mean, std, min and max sent to a writer (an
  ``epoch_full`` layer's over its whole epoch, from running totals);
* :mod:`~dualwatch._capture.trainer`: :class:`MonitoredTrainer`, a training function run under a capture.
"""

from dualwatch._capture.capture import ActivationCapture, Monitor
from dualwatch._capture.trainer import MonitoredTrainer

__all__ = ["ActivationCapture", "Monitor", "MonitoredTrainer"]
