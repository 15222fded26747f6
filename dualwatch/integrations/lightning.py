"""``EdgeMonitorCallback``: the StableSR edge monitor's Lightning callback, on :class:`dualwatch.Watcher`.

Why a callback and why this hook: Lightning's ``on_before_optimizer_step`` is the one point
where gradients are final. It runs once per optimizer step (after ``accumulate_grad_batches``
micro-batches), after AMP unscaling and before gradient clipping and ``optimizer.step()``;
``on_after_backward`` would see every micro-batch's partial, still-scaled gradient.

The step is ``trainer.global_step`` (optimizer steps so far), so ``check_frequency=10`` checks
steps 0, 10, 20... Each check's scalars (the ``edge_processor/<param>/<stat>`` tags plus
the Watcher's global ones) go to every logger the trainer has (TensorBoard, WandB, CSV...) and,
with ``logdir=``, to dualwatch's own VisualDL/TensorBoard/JSON-lines files.

Every rank builds the Watcher in ``setup``, so a wrong ``module=`` fails on all ranks before
training rather than leaving the others waiting, and every rank checks: under FSDP a check
gathers the shards' statistics in a collective that all ranks must join. Only global rank 0
writes (dualwatch's writer is silent on other ranks) and logs to the trainer's loggers.
The ``__init__`` takes plain YAML values only, so the callback is built from latent-diffusion's
``target:``/``params:`` config as well as from LightningCLI's ``class_path``/``init_args``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

try:
    import lightning.pytorch as pl
except ImportError:  # the pre-2.0 package name (latent-diffusion pins pytorch_lightning)
    import pytorch_lightning as pl

from dualwatch._watcher import Watcher
from dualwatch._writer import DEFAULT_FORMATS


class EdgeMonitorCallback(pl.Callback):
    """Every ``check_frequency`` optimizer steps, logs weight and gradient statistics of ``module``.

    Args:
        check_frequency: check every this many optimizer steps (counting from step 0).
        log_gradients / log_weights: per-parameter gradient and weight statistics.
        module: the watched submodule of the LightningModule; ``None`` watches all of it.
        include: globs or ``"re:<regex>"`` strings selecting parameters inside ``module``.
        groups: group name to regex or module prefix; each group's norm and share is logged.
        logdir: also write dualwatch's own run directory here (``None``: trainer loggers only).
        run / formats: that run's name and file formats, see :class:`dualwatch.Writer`.
        console: print the "Edge Processor Monitor - Step N" block at each check.

    After ``setup``, ``watcher`` is the :class:`~dualwatch.Watcher` and ``last`` holds the
    scalars of the latest check.
    """

    def __init__(
        self,
        check_frequency: int = 10,
        log_gradients: bool = True,
        log_weights: bool = True,
        module: Optional[str] = "edge_processor",
        include: Union[str, List[str], None] = None,
        groups: Optional[Dict[str, str]] = None,
        logdir: Optional[str] = None,
        run: Optional[str] = None,
        formats: Sequence[str] = DEFAULT_FORMATS,
        console: bool = True,
    ) -> None:
        super().__init__()
        self.check_frequency = check_frequency
        self.log_gradients = log_gradients
        self.log_weights = log_weights
        self.module = module
        self.include = include
        self.groups = groups
        self.logdir = logdir
        self.run = run
        self.formats = tuple(formats)
        self.console = console
        self.watcher: Optional[Watcher] = None
        self.last: Dict[str, float] = {}

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Optional[str] = None) -> None:
        if stage not in (None, "fit") or self.watcher is not None:
            return
        self.watcher = Watcher(
            pl_module,
            every=self.check_frequency,
            module=self.module,
            include=self.include,
            groups=self.groups,
            log_weights=self.log_weights,
            log_gradients=self.log_gradients,
            logdir=self.logdir,
            run=self.run,
            formats=self.formats,
            console=self.console,
        )

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        if self.watcher is None:
            return
        step = trainer.global_step
        scalars = self.watcher.step(step)
        if scalars:
            self.last = scalars
            for logger in trainer.loggers if trainer.is_global_zero else ():
                logger.log_metrics(scalars, step=step)

    def teardown(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: Optional[str] = None
    ) -> None:
        if self.watcher is not None and stage in (None, "fit"):
            self.watcher.close()
            self.watcher = None
