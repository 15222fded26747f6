"""``WatchCallback``: the VisualDL training guide's scalars and dualwatch's statistics in ``Model.fit``.

Add it to ``fit(..., callbacks=[WatchCallback(logdir="runs")])``. Per epoch (step = epoch) it
writes ``Loss/Train``, ``Learning_Rate``, ``Time/Epoch_Duration`` and, with ``eval_data``,
``Loss/Validation``; every ``every`` optimizer steps (step = global batch number) it runs one
:class:`~dualwatch.Watcher` check: ``Model/Gradient_Norm``, ``Model/Parameter_Norm``,
``Model/Total_Parameters``, the per-parameter weight/gradient statistics and the health verdict.

Where the gradients are read, and why there: hapi's ``train_batch`` runs ``loss.backward()``,
then ``optimizer.minimize(loss)`` (AMP: ``GradScaler.minimize``, which unscales first), then
``network.clear_gradients()``, and only then the ``on_train_batch_end`` callbacks, so no
callback method sees a gradient. Paddle has no optimizer step hook, and tensor hooks
(``register_hook``) fire inside backward with one parameter's gradient at a time, before
gradient accumulation and AMP unscaling. So for the length of ``fit`` this callback wraps the
optimizer's own ``minimize`` and ``step`` (instance attributes, removed at ``on_train_end``): a
check runs just before the update, where the gradients are accumulated, all-reduced
(DataParallel), unscaled and not yet clipped (clipping happens inside the update), and the
weights are the ones those gradients belong to. Under AMP, paddle's own optimizers are called
on overflow steps too (the update kernel skips itself), so the check reports the NaN/Inf there.
Steps that are not checked cost one bool test.

hapi's epoch-end ``logs["loss"]`` is the last batch's loss only, so the epoch's ``Loss/Train``
(and ``Loss/Validation``) is the mean of its per-batch losses, averaged here.
``Time/Epoch_Duration`` is the wall time from one epoch's end to the next (the first from
the start of training), validation included.

Every rank builds the Watcher and checks: where parameters are split across ranks
(``shard_tensor`` DistTensors, fleet's tensor-parallel layers) a check gathers the shards'
statistics in a collective that all ranks must join, so a Watcher on rank 0 alone would wait
there forever. Only global rank 0 writes (dualwatch's writer is silent on other ranks).
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Callable

import paddle

from dualwatch._watcher import Watcher

_UPDATES = ("minimize", "step")  # the optimizer entry points hapi and custom loops call


class WatchCallback(paddle.callbacks.Callback):
    """Watches the network of the ``paddle.Model`` being fitted: every rank checks, rank 0 writes.

    Args:
        every: check the weights and gradients every ``every`` optimizer steps.
        logdir / run: where the run is written (``<logdir>/<run>``, the guide's ``logs_%m%d%H%M``
            by default), in VisualDL, TensorBoard and ``metrics.jsonl`` at once.
        console: print the framed block at every check.
        watch: any other keyword of :class:`~dualwatch.Watcher` (``module``, ``include``,
            ``groups``, ``log_weights``, ``log_gradients``, ``thresholds``...).
    """

    def __init__(
        self,
        *,
        every: int = 10,
        logdir: str | os.PathLike[str] = "runs",
        run: str | None = None,
        console: bool = True,
        **watch: Any,
    ) -> None:
        super().__init__()
        self._options: dict[str, Any] = dict(every=every, logdir=logdir, run=run, console=console, **watch)
        inspect.signature(Watcher).bind(None, **self._options)  # a misspelt keyword fails here, not in fit
        self.watcher: Watcher | None = None
        self._optimizer: Any = None
        self._step = 0  # global train batch number, across epochs
        self._epoch = 0
        self._due = False  # a check is due at the next optimizer update
        self._lr: float | None = None
        self._losses: list[float] = []
        self._val_losses: list[float] = []

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.watcher = Watcher(self.model.network, **self._options)
        self._optimizer = self.model._optimizer
        for name in _UPDATES:
            setattr(self._optimizer, name, self._checked(getattr(self._optimizer, name)))

    def _checked(self, update: Callable[..., Any]) -> Callable[..., Any]:
        """``update`` preceded by the check when one is due: the gradients are final there."""

        def checked_update(*args: Any, **kwargs: Any) -> Any:
            if self._due:
                self._due = False
                self.watcher.check(self._step)
            return update(*args, **kwargs)

        return checked_update

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch
        self._losses = []

    def on_train_batch_begin(self, step: int, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        self._due = self._due or self._step % self.watcher.every == 0
        self._lr = float(self._optimizer.get_lr())

    def on_train_batch_end(self, step: int, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        self._step += 1
        self._losses.append(_batch_loss(logs))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        self.watcher.log_training(epoch, loss=_mean(self._losses), lr=self._lr)
        self.watcher.end_epoch(epoch)

    def on_eval_begin(self, logs: dict | None = None) -> None:
        self._val_losses = []

    def on_eval_batch_end(self, step: int, logs: dict | None = None) -> None:
        if self.watcher is not None:
            self._val_losses.append(_batch_loss(logs))

    def on_eval_end(self, logs: dict | None = None) -> None:
        if self.watcher is not None:
            self.watcher.log_training(self._epoch, val_loss=_mean(self._val_losses))

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.watcher is None:
            return
        for name in _UPDATES:
            vars(self._optimizer).pop(name, None)
        self.watcher.close()


def _batch_loss(logs: dict | None) -> float | None:
    """hapi logs ``loss`` as a list, one value per loss output; their sum is what was minimised."""
    loss = (logs or {}).get("loss")
    if loss is None:
        return None
    return float(sum(float(v) for v in (loss if isinstance(loss, (list, tuple)) else [loss])))


def _mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None
