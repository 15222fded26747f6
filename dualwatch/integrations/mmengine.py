"""``DualwatchHook``: the ESAM BiFusion training report for an MMEngine ``Runner``.

Importing this module registers the hook in MMEngine's ``HOOKS`` registry. A config file says

    custom_imports = dict(imports=["dualwatch.integrations.mmengine"], allow_failed_imports=False)
    custom_hooks = [dict(type="DualwatchHook", log_interval=20, groups={"backbone": "backbone.*"})]

``custom_imports`` is acted on by ``Config.fromfile`` only; a ``Runner`` built in Python (or from
``Config(dict(...))``) needs ``import dualwatch.integrations.mmengine`` before it is built.

Every ``log_interval`` iterations (step = ``runner.iter + 1``, MMEngine's own logging step) it
writes and prints, in the guide's framed layout:

* the loss breakdown: every entry of the ``train_step`` outputs (``loss``, ``loss_<name>``...)
  as ``train/detailed_loss/<name>``;
* the user's stat groups: a model that sets ``self.dualwatch_stats = {"fusion": {"gate_mean":
  ...}, "projection": {...}}`` (numbers or one-element tensors; typically in ``forward``) gets
  ``train/fusion/gate_mean``... The attribute is read after the iteration, so it holds that
  iteration's values; nothing else of the model is assumed;
* gradient health from a :class:`~dualwatch.Watcher` check: the verdict, each ``groups`` entry's
  norm and share (``train/gradient/<group>/norm|share``), ``train/gradient/total_norm`` and
  ``max_grad``, plus the per-parameter weight/gradient statistics and ``Model/*``.

Where the gradients are read, and why there: MMEngine has no hook point between backward and
the optimizer step: ``model.train_step`` calls ``OptimWrapper.update_params``, which runs
backward, ``step()`` (clipping, then ``optimizer.step()``) and ``zero_grad()`` in one go, so by
``after_train_iter`` the gradients are zeroed or ``None``. For the length of training the hook
wraps the wrapper's ``step`` (an instance attribute, removed in ``after_train``): the check runs
there, after accumulation (``step`` only runs on update iterations) and the DDP all-reduce,
before clipping, on the weights the gradients belong to. ``AmpOptimWrapper`` gradients are still
loss-scaled at that point, so there the check runs in a step pre-hook of the torch optimizer
instead, after ``GradScaler`` unscaled them: after clipping, and skipped on overflow steps, which
the scaler skips too. Every rank checks (sharded statistics need all of them); only rank 0 writes and prints.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

from mmengine.dist import is_main_process
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.optim import AmpOptimWrapper
from mmengine.registry import HOOKS

from dualwatch._health import Thresholds, Verdict
from dualwatch._selection import Pattern
from dualwatch._tags import GRADIENT, TOTAL_NORM
from dualwatch._watcher import Watcher

RULE = "=" * 80
STATUS = {Verdict.HEALTHY: "✅", Verdict.EXPLODING: "💥", Verdict.VANISHING: "🧊", Verdict.NAN: "❌"}


@HOOKS.register_module()
class DualwatchHook(Hook):
    """The ESAM guide's detailed loss, user statistics and group gradient health every ``log_interval`` iters.

    Args:
        log_interval: report every ``log_interval`` training iterations.
        groups: group name to regex or module prefix (``{"bifusion": "bi_encoder.fusion.*"}``);
            each group's gradient norm and share of the squared total are reported.
        module / include / log_weights / log_gradients: as for :class:`~dualwatch.Watcher`.
        exploding / vanishing: total-gradient-norm bounds of the verdict (the ESAM guide's 10 and 1e-6).
        logdir / run: the run is written to ``<logdir>/<run>``; ``logdir`` defaults to the
            runner's ``log_dir`` (``<work_dir>/<timestamp>``), beside MMEngine's ``vis_data``.
        console: print the framed report.
    """

    priority = "BELOW_NORMAL"  # as LoggerHook: after hooks that change the outputs

    def __init__(
        self,
        log_interval: int = 10,
        groups: Mapping[str, Pattern] | None = None,
        module: str | None = None,
        include: Pattern | Sequence[Pattern] | None = None,
        log_weights: bool = True,
        log_gradients: bool = True,
        exploding: float = 10.0,
        vanishing: float = 1e-6,
        logdir: str | os.PathLike[str] | None = None,
        run: str = "dualwatch",
        console: bool = True,
    ) -> None:
        self.log_interval = log_interval
        self.logdir = logdir
        self.console = console
        self._options: dict[str, Any] = dict(
            every=log_interval,
            module=module,
            include=include,
            groups=groups,
            log_weights=log_weights,
            log_gradients=log_gradients,
            thresholds=Thresholds(exploding=exploding, vanishing=vanishing),
            run=run,
            console=False,
        )
        self.watcher: Watcher | None = None
        self._model: Any = None
        self._undo: Callable[[], None] = lambda: None
        self._due = False  # a check is due at the next optimizer step
        self._step = 0

    def before_train(self, runner: Any) -> None:
        # Every rank checks (under FSDP a check gathers the shards' statistics in a collective
        # that all ranks join); dualwatch's writer is silent on ranks other than 0.
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        self._model = model
        self.watcher = Watcher(model, logdir=self.logdir or runner.log_dir, **self._options)
        wrapper = runner.optim_wrapper
        if isinstance(wrapper, AmpOptimWrapper):
            handle = wrapper.optimizer.register_step_pre_hook(lambda *_: self._check())
            self._undo = handle.remove
        else:
            step = wrapper.step

            def checked_step(*args: Any, **kwargs: Any) -> Any:
                self._check()
                return step(*args, **kwargs)

            wrapper.step = checked_step
            self._undo = lambda: vars(wrapper).pop("step", None)

    def _check(self) -> None:
        if self._due:
            self._due = False
            self.watcher.check(self._step)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        if self.watcher is not None:
            self._step = runner.iter + 1
            self._due = self._due or self.every_n_train_iters(runner, self.log_interval)

    def after_train_iter(
        self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Mapping[str, Any] | None = None
    ) -> None:
        if self.watcher is None or not self.every_n_train_iters(runner, self.log_interval):
            return
        step = runner.iter + 1
        losses = {name: _number(value) for name, value in (outputs or {}).items()}
        self.watcher.log_losses(step, losses)
        stats = {
            group: {name: _number(value) for name, value in values.items()}
            for group, values in (getattr(self._model, "dualwatch_stats", None) or {}).items()
        }
        for group, values in stats.items():
            self.watcher.writer.log(step, {f"train/{group}/{name}": v for name, v in values.items()})
        if self.console and is_main_process():
            print(self._report(step, losses, stats), flush=True)

    def _report(self, step: int, losses: dict[str, float], stats: dict[str, dict[str, float]]) -> str:
        """The ESAM guide's block: loss breakdown, one section per stat group, gradient health."""
        lines = [RULE, f"📊 Dualwatch Training Stats - Iter {step}", RULE, "🔥 Detailed Loss Breakdown:"]
        lines += [f"  {name:<20}: {value:.6f}" for name, value in losses.items()]
        for group, values in stats.items():
            lines.append(f"🎯 {group}:")
            lines += [f"  {name:<20}: {value:.4f}" for name, value in values.items()]
        lines.append("🔥 Gradient Health:")
        last = self.watcher.last
        if last is None or last.step != step:
            lines.append("  (no optimizer step in this iteration)")
        else:
            verdict = last.health.verdict
            lines.append(f"  status: {STATUS[verdict]} {verdict.value}")
            for group in self.watcher.engine.group_rows:
                norm, share = (last.scalars[f"{GRADIENT}/{group}/{key}"] for key in ("norm", "share"))
                lines.append(f"  {group}: {norm:.4f} ({share:.1%})")
            lines.append(f"  total grad norm: {last.scalars[TOTAL_NORM]:.4f}")
            lines.append(f"  max grad: {last.scalars[f'{GRADIENT}/max_grad']:.4f}")
        lines.append(RULE)
        return "\n".join(lines)

    def after_train(self, runner: Any) -> None:
        if self.watcher is not None:
            self._undo()
            self.watcher.close()


def _number(value: Any) -> float:
    """A float from a number or a one-element tensor (``.item()``: no warning for a loss with a graph)."""
    return float(value.item() if hasattr(value, "item") else value)
