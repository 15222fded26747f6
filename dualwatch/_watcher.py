"""``Watcher``: weight and gradient telemetry for a plain training loop, in either framework.

Call ``w.step(step)`` after ``loss.backward()`` and before ``optimizer.step()``:
there the gradients are final (accumulated, and unscaled if you unscale) and the
weights are those the gradients belong to. Every ``every`` steps it runs one
check (one device-to-host transfer), writes the scalars to its sinks and returns
them; other steps cost a modulo and return ``{}``. Bad configuration raises
before training starts; a failure during a check only warns.

Given a DeepSpeed engine (``Watcher(engine)``) the Watcher finds that moment itself: it
wraps ``engine.step()`` and checks first, every ``every`` optimizer steps (the engine's
``global_steps``), so a loop of ``engine.backward(loss); engine.step()`` needs no call.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dualwatch import _log
from dualwatch._health import ADVICE, Health, Thresholds, Verdict, listing, thresholds_from
from dualwatch._reducer import Reducer
from dualwatch._rules import ESAM_RULES, Rule
from dualwatch._selection import (
    Pattern,
    assign_groups,
    check_aggregate,
    check_stats,
    compile_groups,
    compile_include,
    module_prefix,
    select,
)
from dualwatch._stages import stages_of
from dualwatch._stats import Report, StatsEngine
from dualwatch._tags import DETAILED_LOSS, EPOCH_DURATION, LEARNING_RATE, LOSS, PARAMETER_STATS, VAL_LOSS
from dualwatch._training_report import Number, number, render, stat_tags
from dualwatch._warn import warn
from dualwatch._writer import DEFAULT_FORMATS, Writer
from dualwatch.backends import backend_for
from dualwatch.records import Scalars, wall_ms
from dualwatch.sinks import ConsoleSink, FanOut

OTHER_GROUP = "other"


class Watcher:
    """Watches one model's weights and gradients.

    Args:
        model: a ``torch.nn.Module`` or a ``paddle.nn.Layer`` (DDP/DataParallel and
            ``torch.compile`` wrappers are looked through), one stage of a pipeline (see below), or a
            DeepSpeed engine: its ``module`` is watched, and the Watcher checks on its own inside
            ``engine.step()``, before the optimizer step, every ``every`` optimizer steps (``w.step``
            is then not needed).
        every: check every ``every`` steps (the edge monitor callback's ``check_frequency``).
        module: watch only this submodule (``"edge_processor"``); tags use names relative to it.
        include: globs (``"backbone.*"``), ``"re:<regex>"`` strings or compiled regexes that
            further select parameters (names relative to ``module``).
        groups: group name to regex or module prefix (``{"backbone": "backbone.*"}``), matched
            against full parameter names or names relative to ``module``; each group's gradient
            norm and share of the squared global norm are logged. Parameters in no group form the
            group ``"other"``, so shares sum to 1.
        log_weights / log_gradients: per-parameter weight and gradient statistics.
        stats: which per-parameter statistics to log, by name (all ten by default, as the StableSR
            edge monitor callback logs them): ``weight_mean``, ``weight_std``, ``weight_min``,
            ``weight_max``, ``weight_change``, ``grad_mean``, ``grad_std``, ``grad_min``,
            ``grad_max``, ``grad_norm``. ``stats=("grad_norm", "weight_change")`` keeps the two
            that answer "is it learning?" and cuts the charts by five.
        aggregate: log the statistics per module at this depth below ``module`` instead of per
            parameter (``aggregate=1``: ``<prefix>/backbone/grad_norm`` over all of ``backbone``'s
            parameters, combined exactly); None (default) logs each parameter. For big models,
            where ten tags per tensor is thousands of charts.
        prefix: head of per-parameter tags; defaults to ``module`` or ``"model"``.
        thresholds: global-norm bounds of the health verdict: :class:`Thresholds` or a dict
            ``{"exploding": 10.0, "vanishing": 1e-6}`` (either key may be left out).
        logdir / run / resume / formats: where and how the run is written, see
            :class:`~dualwatch._writer.Writer`; ``logdir=None`` writes no file.
        writer: write into this open :class:`~dualwatch.Writer` instead (a Lightning logger's
            or an MMEngine vis backend's run), which ``close`` then leaves open.
        console: log the framed "... Monitor - Step N" block at every check, and the framed
            report of :meth:`report`, on the ``dualwatch`` logger (``logging``; rank 0 only).
        graph: an example input (what ``Writer.add_graph`` takes after the model); the model's
            graph is then traced and logged once, here, before training changes anything. A
            model that cannot be traced warns once and is watched all the same.

    Pipeline parallelism: each rank watches its own stage, and every statistic is the whole
    model's, named as one process names the whole model (:mod:`dualwatch._stages`). In torch pass
    the ``PipelineStage`` or its module (``Watcher(stage)``, ``Watcher(stage.submod)``, created
    after the stage) and check after ``schedule.step(...)``, before ``optimizer.step()``; in Paddle
    pass the ``PipelineLayer`` or ``fleet.distributed_model``'s wrapper of it, and check between
    ``model.forward_backward_pipeline(batch)`` and ``optimizer.step()`` (``train_batch`` steps the
    optimizer itself). Every rank of the pipeline creates its Watcher and checks at the same steps.

    ``watcher.writer`` takes any other record (``add_scalar``, ``add_image``...); the
    methods below write the VisualDL training guide's and the ESAM guide's tags, and
    :meth:`report` gives the ESAM guide's framed report in any training loop.
    """

    #: how long ``close`` waits for the other ranks of a multi-process job (see :meth:`close`)
    close_timeout_s: float = 60.0

    def __init__(
        self,
        model: Any,
        *,
        every: int = 10,
        module: str | None = None,
        include: Pattern | Sequence[Pattern] | None = None,
        groups: Mapping[str, Pattern] | None = None,
        log_weights: bool = True,
        log_gradients: bool = True,
        stats: str | Sequence[str] = PARAMETER_STATS,
        aggregate: int | None = None,
        prefix: str | None = None,
        thresholds: Thresholds | Mapping[str, float] | None = None,
        logdir: str | os.PathLike[str] | None = "runs",
        run: str | None = None,
        resume: bool | int = False,
        formats: Sequence[str] = DEFAULT_FORMATS,
        console: bool = True,
        graph: Any = None,
        writer: Writer | None = None,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int):
            raise TypeError(f"every= must be an int number of steps, got {type(every).__name__}")
        if every < 1:
            raise ValueError(f"every= must be >= 1 (check every N steps), got {every}")
        thresholds = thresholds_from(thresholds)
        stats = check_stats(stats, PARAMETER_STATS)
        aggregate = check_aggregate(aggregate)
        for name, flag in (
            ("log_weights", log_weights),
            ("log_gradients", log_gradients),
            ("console", console),
        ):
            if not isinstance(flag, (bool, np.bool_)):
                raise TypeError(f"{name}= must be True or False, got {type(flag).__name__} {flag!r}")
        if prefix is not None and (
            not isinstance(prefix, str) or not prefix.strip("/") or prefix != prefix.strip("/")
        ):
            raise ValueError(
                f"prefix= must be a non-empty string without a leading or trailing '/' (tags are "
                f"<prefix>/<parameter>/<stat>), got {prefix!r}: e.g. prefix='edge_processor'"
            )
        if writer is not None and not isinstance(writer, Writer):
            raise TypeError(
                f"writer= takes an open dualwatch.Writer, got {type(writer).__name__}: leave it unset "
                "(the Watcher opens one under logdir) or pass e.g. a DualwatchLogger's writer"
            )
        self.backend = backend_for(model)
        self._meeting = self.backend.framework.rank_meeting()
        self._reducer = Reducer(self.backend)
        self._settled = False  # whether the first check has looked at the parameters' layout again
        self.every = every
        params = self.backend.parameters()
        self._stages = stages_of(self.backend, params)  # one stage of a pipeline: the whole model's list
        local_infos = [self.backend.info(name, p) for name, p in params]
        infos = self._stages.infos if self._stages else local_infos
        names = [info.name for info in infos]
        module_names = self._stages.module_names if self._stages else self.backend.module_names()
        prefix_path = module_prefix(module, module_names)
        local_names = [n[len(prefix_path) :] for n in names]
        chosen = select(names, prefix_path, compile_include(include))
        if not any(chosen):
            where = f"module={module!r}" if module else "the model"
            raise ValueError(
                f"no parameter of {where} matches include={include!r}; "
                f"parameter names look like: {', '.join(local_names[:5]) or '(none)'}"
            )
        group_patterns = compile_groups(groups)
        group_of = assign_groups(names, prefix_path, group_patterns)
        group_names = list(group_patterns)
        for group in group_names:
            if group not in group_of:
                warn(f"group {group!r} matches no parameter", UserWarning)
        if group_patterns and None in group_of:
            group_names.append(OTHER_GROUP)
            group_of = [g or OTHER_GROUP for g in group_of]
        self._params = [p for _, p in params]
        self._full = [chosen[row] for row in self._stages.mine] if self._stages else chosen
        self.log_weights = log_weights
        self.log_gradients = log_gradients
        self.engine = StatsEngine(
            infos,
            selected=chosen,
            local_names=local_names,
            groups=group_of,
            group_names=group_names,
            prefix=prefix or module or "model",
            log_weights=log_weights,
            log_gradients=log_gradients,
            thresholds=thresholds,
            stats=stats,
            aggregate=aggregate,
        )
        # a split parameter's part on this rank may be empty: only whole ones are worth a word
        empty = [
            i.name
            for i, (_, p) in zip(local_infos, params)
            if i.numel == 0 and self.backend.shard_key(p) is None
        ]
        if empty:
            warn(
                f"{len(empty)} parameter(s) hold no values ({listing(empty)}): they add 0 to the norms "
                "and get no per-parameter statistics (a mean of nothing is undefined); check the "
                "layer sizes if that is not meant",
                UserWarning,
            )
        self._own_writer = writer is None
        self.writer = writer if writer is not None else Writer(logdir, run, resume=resume, formats=formats)
        self.writer.start_overview()  # the per-parameter charts would fill the viewers' first page
        self._console = FanOut([ConsoleSink(_title(prefix or module or "model"))] if console else [])
        self.run_dir = self.writer.run_dir
        self.model = model
        self.console = console
        self._stats: dict[str, dict[str, Number]] = {}  # the stat groups logged at ``_stats_step``
        self._stats_step: int | None = None
        if graph is not None:
            self.writer.add_graph(model, graph)
        self.last: Report | None = None
        self._warned_zero: set[str] = set()
        self._epoch_started = time.perf_counter()
        self._warned_hooked = False
        self._unhook = self.backend.hook_optimizer_step(self._check_if_due)

    @property
    def health(self) -> Health | None:
        """The verdict of the latest check (None before the first)."""
        return self.last.health if self.last else None

    def step(self, step: int) -> dict[str, float]:
        """Check on every ``every``-th step; returns the scalars (``{}`` on skipped steps)."""
        step = _step(step)
        if self._unhook is not None:
            if not self._warned_hooked:
                self._warned_hooked = True
                warn(
                    "this Watcher checks on its own inside engine.step(), where the engine's gradients "
                    "are final; w.step() is not needed and does nothing (w.last holds the latest check)",
                    UserWarning,
                )
            return {}
        return self._check_if_due(step)

    def _settle(self) -> None:
        """At the first check, the backend again: an engine set up after this Watcher (DeepSpeed
        under Lightning, or ``deepspeed.initialize`` called after ``Watcher(model)``) has since
        split the same parameters into partitions, which only its own backend reads."""
        self._settled = True
        backend = backend_for(self.model)
        if type(backend) is not type(self.backend):
            self.backend, self._reducer = backend, Reducer(backend)

    def _check_if_due(self, step: int) -> dict[str, float]:
        """A check on every ``every``-th step (``{}`` on the others): what :meth:`step` does, and what
        an engine's optimizer step runs first (see :meth:`Backend.hook_optimizer_step`)."""
        return {} if step % self.every else self.check(step)

    def check(self, step: int) -> dict[str, float]:
        """Check now, whatever the step; a failure warns and returns ``{}``."""
        step = _step(step)
        try:
            if not self._settled:
                self._settle()

            def reduce() -> np.ndarray:
                return self._reducer.reduce(
                    self._params, self._full, grads=self.log_gradients, track_change=self.log_weights
                )

            table = self._stages.whole(reduce) if self._stages else reduce()
            report = self.engine.report(table, step)
        except Exception as err:
            warn(f"check at step {step} failed ({type(err).__name__}: {err}); training goes on")
            return {}
        self._warn_on_change(report.health)
        self._warn_on_missing_gradients(report.health)
        self.last = report
        self.writer.log(step, report.scalars)
        if self._console.sinks and self.writer.rank == 0:
            self._console.write([Scalars(step, wall_ms(time.time()), report.scalars)])
        return report.scalars

    def log_training(
        self,
        step: int,
        *,
        loss: float | None = None,
        val_loss: float | None = None,
        lr: float | None = None,
    ) -> None:
        """The VisualDL guide's ``Loss/Train``, ``Loss/Validation``, ``Learning_Rate`` (those given)."""
        tags = {LOSS: loss, VAL_LOSS: val_loss, LEARNING_RATE: lr}
        scalars = {tag: value for tag, value in tags.items() if value is not None}
        if scalars:
            self.writer.log(step, scalars)

    def end_epoch(self, epoch: int) -> float:
        """Writes ``Time/Epoch_Duration`` (seconds since the previous call or since start)."""
        now = time.perf_counter()
        duration, self._epoch_started = now - self._epoch_started, now
        self.writer.add_scalar(EPOCH_DURATION, duration, epoch)
        return duration

    def log_losses(self, step: int, losses: Mapping[str, Any]) -> None:
        """The ESAM guide's loss breakdown: ``train/detailed_loss/<name>`` per named loss."""
        breakdown = {f"{DETAILED_LOSS}/{name}": value for name, value in _losses(losses).items()}
        self.writer.log(step, breakdown)

    def log_stats(self, step: int, group: str, values: Mapping[str, Any]) -> None:
        """A stat group of the ESAM guide (``fusion``, ``projection``...): ``train/<group>/<name>``.

        ``values`` are numbers or one-element tensors; :meth:`report` at the same step shows them.
        """
        if not isinstance(group, str) or not group or "/" in group:
            raise ValueError(
                f"stat group name {group!r} must be a non-empty string without '/' (its tags are "
                "train/<group>/<name>): pass e.g. 'fusion'"
            )
        if not isinstance(values, Mapping):
            raise TypeError(
                f"stat group {group!r} takes a mapping of name to number, got {type(values).__name__}: "
                "pass e.g. {'gate_mean': 0.62}"
            )
        numbers = _numbers(values, f"stat {group}/", "reduce it first, e.g. gate.mean()")
        if self._stats_step != step:
            self._stats, self._stats_step = {}, step
        self._stats[group] = numbers
        self.writer.log(step, stat_tags(group, numbers))

    def report(
        self,
        step: int,
        losses: Mapping[str, Any] | None = None,
        *,
        rules: Sequence[Rule] = ESAM_RULES,
        log: Callable[[str], None] | None = None,
    ) -> str:
        """Writes ``losses`` and returns the ESAM guide's framed report of ``step`` (also logged).

        The report holds the loss breakdown, the stat groups of :meth:`log_stats` at this step
        (else those the model sets in a ``dualwatch_stats`` attribute, ``{"fusion":
        {"gate_mean": ...}}``, which are logged here), gradient health if a check ran at this
        step, and ``rules`` (the guide's normal ranges by default) applied to all of them.
        With ``console=True`` rank 0 logs it through ``log`` (the ``dualwatch`` logger by default).
        """
        numbers = _losses(losses or {})
        if numbers:
            self.log_losses(step, numbers)
        if self._stats_step != step:
            self._log_model_stats(step)
        stats = self._stats if self._stats_step == step else {}
        text = render(step, numbers, stats, self.last, list(self.engine.group_rows), rules)
        if self.console and self.writer.rank == 0:
            (log or _log.info)(text)
        return text

    def _log_model_stats(self, step: int) -> None:
        """Logs the model's ``dualwatch_stats`` groups; a malformed one warns and is left out.

        The attribute is read mid-training, so a mistake in it must not stop the run.
        """
        stats = _model_stats(self.model)
        if stats is None:
            return
        if not isinstance(stats, Mapping):
            warn(
                f"the model's dualwatch_stats must map group names to {{name: number}}, got "
                f"{type(stats).__name__}; it is left out of the report, training goes on"
            )
            return
        for group, values in stats.items():
            try:
                self.log_stats(step, group, values)
            except (TypeError, ValueError) as err:
                warn(f"the model's dualwatch_stats: {err}; left out of the report, training goes on")

    def _warn_on_change(self, health: Health) -> None:
        """Advice is given when the verdict turns, not at every check."""
        before = self.health.verdict if self.health else Verdict.HEALTHY
        if health.verdict is not Verdict.HEALTHY and health.verdict is not before:
            where = f" (first at {health.first_nonfinite})" if health.first_nonfinite else ""
            warn(
                f"gradients are {health.verdict.value}{where}, global norm {health.global_norm:.4g}. "
                + " ".join(health.advice)
            )

    def _warn_on_missing_gradients(self, health: Health) -> None:
        """One warning per parameter whose gradient is exactly zero (or absent while others have
        one), when first seen: that is the StableSR edge monitor's "gradient is 0" case, worth a word
        once; its tag (``train/gradient/zero_grad_params``) keeps counting at every check."""
        new = [name for name in health.zero_grad if name not in self._warned_zero]
        if new and health.global_norm > 0:  # when nothing has a gradient, the verdict says so
            self._warned_zero.update(new)
            warn(f"{ADVICE['zero_grad']} ({listing(new)})", UserWarning)

    def close(self) -> None:
        """Write what is queued, close the files (of a writer this Watcher opened), drop the snapshots,
        and, in a multi-process job where every rank made this Watcher, wait until every rank has
        closed it too (at most :attr:`close_timeout_s`; if some rank never comes a warning says how
        many came, and this rank goes on), so the ranks reach the job's teardown together."""
        if self._unhook is not None:
            self._unhook()
            self._unhook = None
        if self._own_writer:
            self.writer.close()
        self._reducer.forget_snapshots()
        self._meet_every_rank()

    def _meet_every_rank(self) -> None:
        meeting, self._meeting = self._meeting, None  # once: a second close meets nobody
        if meeting is None:
            return
        problem = meeting.meet(self.close_timeout_s)
        if problem:
            warn(
                f"Watcher.close waited {self.close_timeout_s:g} s for every rank to close its Watcher: "
                f"{problem}; a rank may have died, or closes its Watcher elsewhere (close it on every rank "
                "at the same point of the script). Going on"
            )

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self._meeting = None  # this rank stops early: the others time out, it does not wait for them
        self.close()


def _numbers(values: Mapping[str, Any], what: str, fix: str) -> dict[str, Number]:
    """Each value as a number, or a TypeError naming the one that is not (``what`` heads its name)."""
    numbers = {}
    for name, value in values.items():
        try:
            numbers[name] = number(value)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"{what}{name} must be a number or a one-element tensor, got {_describe(value)}: {fix}"
            ) from None
    return numbers


def _losses(losses: Any) -> dict[str, Number]:
    """The loss breakdown ``{name: loss}`` as numbers, or a TypeError saying what is expected."""
    if not isinstance(losses, Mapping):
        raise TypeError(
            f"losses must map loss names to numbers, got {type(losses).__name__}: "
            "e.g. {'total': loss.item(), 'edge': edge_loss.item()}"
        )
    return _numbers(losses, "loss named ", "pass loss.item() or the loss tensor itself")


def _step(step: Any) -> int:
    """``step`` as an int, or a TypeError that says so (a string step would fail at every check)."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise TypeError(
            f"step must be an int (the training step), got {type(step).__name__} {step!r}: "
            "pass the loop counter, e.g. w.step(step) or w.step(int(step))"
        )
    return int(step)


def _model_stats(model: Any) -> Mapping[str, Mapping[str, Any]] | None:
    """The ``dualwatch_stats`` attribute of the model, looking through DDP/DataParallel/compile wrappers."""
    for inner in (model, getattr(model, "module", None), getattr(model, "_layers", None)):
        stats = getattr(inner, "dualwatch_stats", None)
        if stats:
            return stats
    return getattr(getattr(model, "_orig_mod", None), "dualwatch_stats", None)


def _describe(value: Any) -> str:
    """``Tensor of shape [8]`` for an array-like, else the value's type and repr."""
    shape = getattr(value, "shape", None)
    if shape is not None:
        return f"{type(value).__name__} of shape {list(shape)}"
    return f"{type(value).__name__} {value!r}"


def _title(prefix: str) -> str:
    """``edge_processor`` -> ``Edge Processor Monitor`` (the edge monitor's heading)."""
    words = re.split(r"[_\W]+", prefix)
    return " ".join(w.capitalize() for w in words if w) + " Monitor"
