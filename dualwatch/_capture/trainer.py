"""Runs a whole training function under an :class:`~dualwatch._capture.capture.ActivationCapture`:
the layer-output Monitor script's wrapper pattern, for training code that takes ``epoch_callback`` /
``batch_callback`` keywords and should not be edited to save and clear each epoch itself."""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from dualwatch._capture.capture import ActivationCapture


class MonitoredTrainer:
    """Runs a training function that takes ``epoch_callback`` / ``batch_callback`` keywords with a
    monitor: each finished epoch is saved and cleared, and the hooks are removed at the end."""

    def __init__(self, monitor: ActivationCapture) -> None:
        if not isinstance(monitor, ActivationCapture):
            raise TypeError(
                "MonitoredTrainer needs an ActivationCapture (dualwatch.Monitor is the same class), "
                f"got {type(monitor).__name__}"
            )
        self.monitor = monitor

    def wrap_training_function(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` called with the monitor's callbacks; checked now, before any training runs."""
        params = inspect.signature(fn).parameters.values()
        takes = {p.name for p in params} | (
            {"epoch_callback", "batch_callback"} if any(p.kind is p.VAR_KEYWORD for p in params) else set()
        )
        if not {"epoch_callback", "batch_callback"} <= takes:
            raise TypeError(
                f"{getattr(fn, '__name__', fn)!r} must accept epoch_callback and batch_callback keyword "
                "arguments (or **kwargs) and call them at each epoch and batch start"
            )
        monitor = self.monitor

        def on_epoch(epoch: int) -> None:
            self._flush()
            monitor.set_epoch(epoch)

        @functools.wraps(fn)
        def monitored(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("epoch_callback", on_epoch)
            kwargs.setdefault("batch_callback", monitor.create_batch_callback())
            try:
                return fn(*args, **kwargs)
            finally:
                self._flush()
                monitor.remove_hooks()

        return monitored

    def _flush(self) -> None:
        if any(
            record["data"]
            for store in (self.monitor.single_data, self.monitor.epoch_data)
            for record in store.values()
        ):
            self.monitor.save_single_outputs()
            self.monitor.save_epoch_outputs()
            self.monitor.clear_current_epoch_data()
