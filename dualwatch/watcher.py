"""``Watcher``: weight and gradient telemetry for a plain training loop, in either framework.

Call ``w.step(step)`` after ``loss.backward()`` and before ``optimizer.step()``:
there the gradients are final (accumulated, and unscaled if you unscale) and the
weights are those the gradients belong to. Every ``every`` steps it runs one
check (one device-to-host transfer), writes the scalars to its sinks and returns
them; other steps cost a modulo and return ``{}``. Bad configuration raises
before training starts; a failure during a check only warns.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Mapping, Sequence

from dualwatch._warn import warn
from dualwatch.backends import backend_for
from dualwatch.health import Health, Thresholds, Verdict
from dualwatch.selection import (
    Pattern,
    assign_groups,
    compile_groups,
    compile_include,
    module_prefix,
    select,
)
from dualwatch.sinks import ConsoleSink, FanOut, JsonlSink
from dualwatch.stats import Report, StatsEngine

OTHER_GROUP = "other"


class Watcher:
    """Watches one model's weights and gradients.

    Args:
        model: a ``torch.nn.Module`` or a ``paddle.nn.Layer`` (DDP/DataParallel and
            ``torch.compile`` wrappers are looked through).
        every: check every ``every`` steps (seed 000's ``check_frequency``).
        module: watch only this submodule (``"edge_processor"``); tags use names relative to it.
        include: globs (``"backbone.*"``), ``"re:<regex>"`` strings or compiled regexes that
            further select parameters (names relative to ``module``).
        groups: group name to regex or module prefix (``{"backbone": "backbone.*"}``), matched
            against full parameter names or names relative to ``module``; each group's gradient
            norm and share of the squared global norm are logged. Parameters in no group form the
            group ``"other"``, so shares sum to 1.
        log_weights / log_gradients: per-parameter weight and gradient statistics.
        prefix: head of per-parameter tags; defaults to ``module`` or ``"model"``.
        thresholds: global-norm bounds of the health verdict.
        logdir / run: write ``<logdir>/<run>/metrics.jsonl``; ``logdir=None`` writes no file.
        console: print seed 000's framed block at every check.
    """

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
        prefix: str | None = None,
        thresholds: Thresholds | None = None,
        logdir: str | os.PathLike[str] | None = "runs",
        run: str | None = None,
        console: bool = True,
    ) -> None:
        if isinstance(every, bool) or not isinstance(every, int):
            raise TypeError(f"every= must be an int number of steps, got {type(every).__name__}")
        if every < 1:
            raise ValueError(f"every= must be >= 1 (check every N steps), got {every}")
        self.backend = backend_for(model)
        self.every = every
        params = self.backend.parameters()
        names = [name for name, _ in params]
        prefix_path = module_prefix(module, self.backend.module_names())
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
        self._full = chosen
        self.log_weights = log_weights
        self.log_gradients = log_gradients
        self.engine = StatsEngine(
            [self.backend.info(name, p) for name, p in params],
            selected=chosen,
            local_names=local_names,
            groups=group_of,
            group_names=group_names,
            prefix=prefix or module or "model",
            log_weights=log_weights,
            log_gradients=log_gradients,
            thresholds=thresholds or Thresholds(),
        )
        self.run_dir = _run_dir(logdir, run) if logdir is not None else None
        sinks: list[Any] = []
        if self.run_dir is not None:
            sinks.append(JsonlSink(os.path.join(self.run_dir, "metrics.jsonl")))
        if console:
            sinks.append(ConsoleSink(_title(prefix or module or "model")))
        self.sinks = FanOut(sinks)
        self.last: Report | None = None

    @property
    def health(self) -> Health | None:
        """The verdict of the latest check (None before the first)."""
        return self.last.health if self.last else None

    def step(self, step: int) -> dict[str, float]:
        """Check on every ``every``-th step; returns the scalars (``{}`` on skipped steps)."""
        if step % self.every:
            return {}
        return self.check(step)

    def check(self, step: int) -> dict[str, float]:
        """Check now, whatever the step; a failure warns and returns ``{}``."""
        try:
            table = self.backend.reduce(
                self._params, self._full, grads=self.log_gradients, track_change=self.log_weights
            )
            report = self.engine.report(table, step)
        except Exception as err:
            warn(f"check at step {step} failed ({type(err).__name__}: {err}); training goes on")
            return {}
        self._warn_on_change(report.health)
        self.last = report
        self.sinks.write(step, report.scalars)
        return report.scalars

    def _warn_on_change(self, health: Health) -> None:
        """Advice is given when the verdict turns, not at every check."""
        before = self.health.verdict if self.health else Verdict.HEALTHY
        if health.verdict is not Verdict.HEALTHY and health.verdict is not before:
            where = f" (first at {health.first_nonfinite})" if health.first_nonfinite else ""
            warn(
                f"gradients are {health.verdict.value}{where}, global norm {health.global_norm:.4g}. "
                + " ".join(health.advice)
            )

    def close(self) -> None:
        """Flush and close the sinks and drop the weight snapshots."""
        self.sinks.close()
        self.backend.forget_snapshots()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _title(prefix: str) -> str:
    """``edge_processor`` -> ``Edge Processor Monitor`` (seed 000's heading)."""
    words = re.split(r"[_\W]+", prefix)
    return " ".join(w.capitalize() for w in words if w) + " Monitor"


def _run_dir(logdir: str | os.PathLike[str], run: str | None) -> str:
    """``<logdir>/<run>``; by default the seed's ``logs_%m%d%H%M``, made unique with a suffix."""
    base = os.path.join(os.fspath(logdir), run or time.strftime("logs_%m%d%H%M"))
    path, n = base, 1
    while run is None:
        try:
            os.makedirs(path)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}_{n}"
    os.makedirs(path, exist_ok=True)
    return path
