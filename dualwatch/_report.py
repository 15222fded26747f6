"""What ``dualwatch monitor`` says about a run: the report and the alerts behind its exit code.

:func:`build_report` is pure: it reads a run's scalar series (a
:class:`~dualwatch.readers.RunReader` or anything shaped like one), the time now and the
:class:`Options`, so it is tested on hand-built series. Rates and ETAs come from the wall
times in the logs, not from when the monitor happened to poll; only "since the last
record" uses ``now``. Finding the run is :func:`~dualwatch.readers._discover.locate_run`'s
job, reading the rules file :mod:`dualwatch._rules`'.

Alerts (``--once`` exits 1 while one is active):

- ``nonfinite``: a tag's latest value is NaN or Inf (the tags are named);
- ``exploding`` / ``vanishing`` / ``nan``: the health verdict, read from
  ``train/gradient/health``; runs of other tools have no such tag, so it is judged from the
  global gradient norm by the same rule (:func:`~dualwatch._health.norm_verdict`);
- ``stalled``: no new record for longer than ``Options.stall`` seconds;
- ``not_updating``: a parameter's ``weight_change`` is exactly 0 although its gradient is not
  negligible (:func:`~dualwatch._health.negligible`, the Watcher's rule; a dualwatch run's own
  count, ``train/gradient/not_updating_params``, decides when it is there);
- ``rule``: a tag crossed a rule's abnormal bound (below);
- ``unreadable``: with many runs, a log file of one this user may not read (the monitor of one
  run exits 2 instead: a report without that file's records would be wrong).

Warnings are shown but leave the exit code alone, because what is shown is still right:
damaged records the reader skipped (it resumes after them), and a value outside a rule's
normal range that has not reached its abnormal bounds; and information with advice, never an
alert: parameters with no gradient (exactly zero, or none while others have one), and weights held
still by a negligible gradient (rounding noise, such as a conv bias right before a BatchNorm
under plain SGD).
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Mapping, Sequence

from dualwatch._formats.jsonl import to_json
from dualwatch._health import ADVICE, Verdict, listing, negligible, norm_verdict
from dualwatch._rules import Rule
from dualwatch._tags import (
    EPOCH_TAGS,
    GRAD_NORM_TAGS,
    HEALTH,
    LOSS_TAGS,
    LR_TAGS,
    MODEL,
    NEGLIGIBLE_GRAD_COUNT,
    NOT_UPDATING_COUNT,
    VAL_LOSS_TAGS,
    ZERO_GRAD_COUNT,
    group_of_share,
)
from dualwatch.readers._series import RunLike, SeriesLike, smooth

#: points of the most-logged tag that steps/s is measured over
RATE_POINTS = 20
#: points of the loss its trend is measured over
TREND_POINTS = 50
#: points before the trend window that warm the EMA up, so the window starts smoothed too
WARMUP_POINTS = 10
#: a trend smaller than this (percent) is "flat"
FLAT_PERCENT = 1.0


@dataclass(frozen=True)
class Options:
    """What the user chose: ``--stall``, ``--total-steps``, ``--rules`` and ``--tags``."""

    stall: float = 300.0
    total_steps: int | None = None
    rules: tuple[Rule, ...] = ()
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Latest:
    """The latest point of one tag."""

    tag: str
    step: int
    value: float


@dataclass(frozen=True)
class Loss:
    """The main loss: latest, EMA-smoothed with its trend over the recent window, and best."""

    tag: str
    step: int
    latest: float
    smoothed: float | None
    trend_percent: float | None
    best: float | None
    best_step: int | None

    @property
    def direction(self) -> str | None:
        if self.trend_percent is None:
            return None
        if abs(self.trend_percent) < FLAT_PERCENT:
            return "flat"
        return "falling" if self.trend_percent < 0 else "rising"


#: the findings that are information with advice, not warnings: a parameter with no gradient
#: (the StableSR edge monitor's "check it is used in the forward pass") or held still by a negligible one
INFO_KINDS = frozenset({"zero_grad", "negligible_grad"})


@dataclass(frozen=True)
class Notice:
    """An alert or a warning: what kind, one line for people, the tags concerned, advice."""

    kind: str
    message: str
    tags: tuple[str, ...] = ()
    hint: str = ""

    @property
    def label(self) -> str:
        """``info`` for a finding that is information with advice (a parameter without gradient),
        else ``warning``: the word the report shows it under."""
        return "info" if self.kind in INFO_KINDS else "warning"

    @property
    def advice(self) -> str:
        """The hint shown under a warning-level finding: information is worth reading for its
        advice; a warning's hint is left to ``--format json``, to keep the report short."""
        return self.hint if self.label == "info" else ""


@dataclass(frozen=True)
class RunReport:
    """Everything one poll shows about one run."""

    run: str
    run_dir: str
    format: str | None
    records: int
    corrupt: int
    step: int | None
    epoch: float | None
    steps_per_s: float | None
    since_last_s: float | None
    eta_s: float | None
    total_steps: int | None
    loss: Loss | None
    val_loss: Loss | None
    lr: Latest | None
    grad_norm: Latest | None
    health: str | None
    health_source: str | None
    shares: dict[str, float] = field(default_factory=dict)
    tags: dict[str, Latest] = field(default_factory=dict)
    alerts: tuple[Notice, ...] = ()
    warnings: tuple[Notice, ...] = ()

    @property
    def ok(self) -> bool:
        """No alert is active (warnings do not count)."""
        return not self.alerts

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON data; non-finite numbers are the strings metrics.jsonl uses ("NaN", "Infinity")."""
        data = asdict(self)
        for key in ("loss", "val_loss"):
            if data[key] is not None:
                data[key]["direction"] = getattr(self, key).direction
        data["ok"] = self.ok
        return to_json(data)


def build_report(
    run: RunLike, now: float, options: Options = Options(), name: str | None = None
) -> RunReport:
    """The report on ``run`` at time ``now`` (seconds since the epoch, as log wall times are)."""
    series = run.series
    lasts = {tag: point for tag, s in series.items() if (point := s.last()) is not None}
    step = max((p[0] for p in lasts.values()), default=None)
    last_wall = max((p[1] for p in lasts.values()), default=None)
    since = now - last_wall if last_wall is not None else None
    rate = _steps_per_s(series)
    eta = None
    if options.total_steps is not None and rate and step is not None:
        eta = max(0, options.total_steps - step) / rate
    grad_norm = _first(series, GRAD_NORM_TAGS)
    health, health_source = _health(series, grad_norm)
    epoch = _first(series, EPOCH_TAGS)
    alerts: list[Notice] = []
    warnings: list[Notice] = []
    nonfinite = sorted(tag for tag, p in lasts.items() if not math.isfinite(p[2]))
    if nonfinite:
        alerts.append(Notice("nonfinite", f"NaN/Inf in {listing(nonfinite)}", tuple(nonfinite)))
    if health in (Verdict.EXPLODING.value, Verdict.VANISHING.value, Verdict.NAN.value):
        norm = f" (global norm {grad_norm.value:.4g})" if grad_norm else ""
        alerts.append(
            Notice(health, f"gradients {health}{norm}", (health_source or "",), ADVICE[Verdict(health)])
        )
    stalled = _stalled(since, options)
    if stalled is not None:
        alerts.append(stalled)
    (frozen, frozen_text), zero, small = _gradient_findings(lasts)
    if frozen_text:
        alerts.append(
            Notice(
                "not_updating",
                f"weights not updating although their gradients are not negligible: {frozen_text}",
                tuple(frozen),
                ADVICE["not_updating"],
            )
        )
    for kind, (names, text), what in (
        ("zero_grad", zero, "no gradient"),
        ("negligible_grad", small, "not moved by a negligible gradient (rounding noise)"),
    ):
        if text:
            warnings.append(Notice(kind, f"{what}: {text}", tuple(names), ADVICE[kind]))
    for rule in options.rules:
        for tag in sorted(t for t in lasts if fnmatchcase(t, rule.glob)):
            value = lasts[tag][2]
            verdict = rule.judge(value) if math.isfinite(value) else None
            if verdict is not None:
                level, why = verdict
                label = f" ({rule.label})" if rule.label else ""
                notice = Notice("rule", f"{tag} = {value:.4g} {why}{label}", (tag,))
                (alerts if level == "alert" else warnings).append(notice)
    if run.corrupt:
        warnings.append(Notice("corrupt", f"{run.corrupt} damaged records skipped"))
    extra = {
        tag: Latest(tag, *_step_value(lasts[tag]))
        for tag in sorted(lasts)
        if any(fnmatchcase(tag, glob) for glob in options.tags)
    }
    return RunReport(
        run=name or os.path.basename(os.path.abspath(run.run_dir)),
        run_dir=run.run_dir,
        format=run.format,
        records=run.records,
        corrupt=run.corrupt,
        step=step,
        epoch=epoch.value if epoch else None,
        steps_per_s=rate,
        since_last_s=since,
        eta_s=eta,
        total_steps=options.total_steps,
        loss=_loss(series, LOSS_TAGS),
        val_loss=_loss(series, VAL_LOSS_TAGS),
        lr=_first(series, LR_TAGS),
        grad_norm=grad_norm,
        health=health,
        health_source=health_source,
        shares=_shares(lasts),
        tags=extra,
        alerts=tuple(alerts),
        warnings=tuple(warnings),
    )


def aged(report: RunReport, seconds: float, options: Options) -> RunReport:
    """``report`` as :func:`build_report` makes it ``seconds`` later when nothing new was read: only
    the time since the last record, and with it the stall alert, change. A monitor of many runs
    rebuilds only the reports of runs that logged since its last poll."""
    if report.since_last_s is None:
        return report
    since = report.since_last_s + seconds
    alerts = [notice for notice in report.alerts if notice.kind != "stalled"]
    stalled = _stalled(since, options)
    if stalled is not None:  # in build_report's order: after the value and gradient alerts
        at = sum(notice.kind in _BEFORE_STALLED for notice in alerts)
        alerts.insert(at, stalled)
    return _changed(report, since_last_s=since, alerts=tuple(alerts))


def with_alert(report: RunReport, notice: Notice) -> RunReport:
    """``report`` with one more alert (what the monitor of many runs adds for a file it cannot read)."""
    return _changed(report, alerts=(*report.alerts, notice))


def finished(report: RunReport) -> RunReport:
    """``report`` on a run whose Writer closed: done, so its silence since is no stall (the monitor
    that waits for runs to end shows a sweep's early finishers without a stall alert)."""
    return _changed(report, alerts=tuple(n for n in report.alerts if n.kind != "stalled"))


def _changed(report: RunReport, **fields: Any) -> RunReport:
    """A copy of ``report`` with ``fields`` changed. ``dataclasses.replace`` runs ``__init__`` and
    costs ten times more, which a monitor of hundreds of runs pays every poll."""
    copy = object.__new__(RunReport)
    copy.__dict__.update(report.__dict__, **fields)
    return copy


#: the alerts build_report lists before ``stalled``
_BEFORE_STALLED = ("nonfinite", Verdict.EXPLODING.value, Verdict.VANISHING.value, Verdict.NAN.value)


def format_duration(seconds: float) -> str:
    """``45s``, ``12m05s``, ``3h02m``, ``2d04h``: short enough for a table cell (``?`` for a
    duration that is not a number, from a damaged wall time)."""
    if not math.isfinite(seconds):
        return "?"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


# -- helpers ---------------------------------------------------------------------------------


def _stalled(since: float | None, options: Options) -> Notice | None:
    if since is None or not since > options.stall:
        return None
    return Notice(
        "stalled",
        f"stalled: no new record for {format_duration(since)} (limit {format_duration(options.stall)})",
    )


def _step_value(point: tuple[int, float, float]) -> tuple[int, float]:
    return point[0], point[2]


def _first(series: Mapping[str, SeriesLike], tags: Sequence[str]) -> Latest | None:
    """The latest point of the first of ``tags`` that has one."""
    for tag in tags:
        s = series.get(tag)
        point = s.last() if s is not None else None
        if point is not None:
            return Latest(tag, *_step_value(point))
    return None


def _steps_per_s(series: Mapping[str, SeriesLike]) -> float | None:
    """Steps per second of log wall time over the recent points of the most-logged tag."""
    if not series:
        return None
    s = max(series.values(), key=lambda s: len(s.steps))
    first = max(0, len(s.steps) - RATE_POINTS)
    steps = s.steps[-1] - s.steps[first]
    seconds = s.wall_times[-1] - s.wall_times[first]
    return steps / seconds if steps > 0 and seconds > 0 else None


def _loss(series: Mapping[str, SeriesLike], tags: Sequence[str]) -> Loss | None:
    main = _first(series, tags)
    if main is None:
        return None
    s = series[main.tag]
    values = s.values
    best = s.best()
    recent = [v for v in values[-(TREND_POINTS + 1 + WARMUP_POINTS) :] if math.isfinite(v)]
    smoothed = trend = None
    if recent:
        ema = smooth(recent)
        smoothed = ema[-1]
        start = ema[max(0, len(ema) - 1 - TREND_POINTS)]
        if len(ema) > 1 and start != 0:
            trend = (smoothed - start) / abs(start) * 100
    return Loss(
        tag=main.tag,
        step=main.step,
        latest=main.value,
        smoothed=smoothed,
        trend_percent=trend,
        best=best[1] if best is not None else None,
        best_step=best[0] if best is not None else None,
    )


def _health(series: Mapping[str, SeriesLike], grad_norm: Latest | None) -> tuple[str | None, str | None]:
    """The verdict and where it came from: the health tag, else the global gradient norm."""
    s = series.get(HEALTH)
    point = s.last() if s is not None else None
    if point is not None:
        code, verdicts = float(point[2]), list(Verdict)
        if code.is_integer() and 0 <= code < len(verdicts):
            return verdicts[int(code)].value, HEALTH
        return None, HEALTH
    if grad_norm is None:
        return None, None
    return norm_verdict(grad_norm.value).value, grad_norm.tag


def _gradient_findings(
    lasts: Mapping[str, tuple[int, float, float]],
) -> tuple[tuple[list[str], str], ...]:
    """Who is not updating (an alert), who has no gradient, and whose weight a negligible gradient
    held still (information),
    each as the parameters named and one line for people ("" when none), by the Watcher's rule
    read from the logged tags.

    A parameter is judged from its latest ``<param>/<stat>`` tags: the rms of its gradient is
    ``sqrt(grad_mean^2 + grad_std^2)`` (else ``grad_norm``, which is no smaller), that of its
    weight ``sqrt(weight_mean^2 + weight_std^2)`` (else the model's ``Parameter_Norm`` over the
    root of ``Total_Parameters``) -- what a reduced ``stats=`` selection leaves; with no weight
    scale at all (another tool's logs), any non-zero gradient counts as not negligible. A dualwatch run
    also logs each count, computed exactly; where a count is logged it decides, and names the
    parameters found here (or says how many when its tags do not show them).
    """
    value = {tag: point[2] for tag, point in lasts.items()}
    ends = ("/weight_change", "/grad_norm")
    params = sorted({tag.rsplit("/", 1)[0] for tag in value if tag.endswith(ends)})
    model_rms = _rms_of(value.get(f"{MODEL}/Parameter_Norm"), value.get(f"{MODEL}/Total_Parameters"))
    graded = {tag.rsplit("/", 1)[0] for tag in value if tag.endswith(_GRAD_STATS)}
    frozen, zero, small = [], [], []
    for param in params:
        if graded and param not in graded:  # others have gradient tags, it has none: no gradient
            zero.append(param)
            continue
        stat = {name: value.get(f"{param}/{name}") for name in _RULE_STATS}
        grad = _hypot(stat["grad_mean"], stat["grad_std"])
        grad = grad if grad is not None else stat["grad_norm"]
        weight = _hypot(stat["weight_mean"], stat["weight_std"])
        weight = weight if weight is not None else model_rms
        if grad is None or not math.isfinite(grad):
            continue
        if grad == 0 or stat["grad_norm"] == 0:
            zero.append(param)
        elif stat["weight_change"] == 0:
            (small if negligible(grad, weight if weight is not None else 0.0) else frozen).append(param)
    return (
        _named(frozen, value.get(NOT_UPDATING_COUNT)),
        _named(zero, value.get(ZERO_GRAD_COUNT)),
        _named(small, value.get(NEGLIGIBLE_GRAD_COUNT)),
    )


_GRAD_STATS = ("/grad_mean", "/grad_std", "/grad_min", "/grad_max", "/grad_norm")
_RULE_STATS = ("grad_mean", "grad_std", "grad_norm", "weight_mean", "weight_std", "weight_change")


def _hypot(mean: float | None, std: float | None) -> float | None:
    """The rms ``sqrt(mean^2 + std^2)`` of a tensor (None without both); the sample or
    population std makes no difference that matters to a bound of ``sqrt(eps)``."""
    return math.hypot(mean, std) if mean is not None and std is not None else None


def _rms_of(norm: float | None, count: float | None) -> float | None:
    return norm / math.sqrt(count) if norm is not None and count else None


def _named(names: list[str], count: float | None) -> tuple[list[str], str]:
    """The names found, unless a logged count says otherwise: none at 0, how many when unnamed."""
    if count is None or not math.isfinite(count):
        return names, listing(names)
    if count <= 0:
        return [], ""
    if len(names) == count:
        return names, listing(names)
    among = f" (among {listing(names)})" if names else ""
    return names, f"{int(count)} parameter{'s' if count != 1 else ''}{among}"


def _shares(lasts: Mapping[str, tuple[int, float, float]]) -> dict[str, float]:
    """``{group: share}`` of ``train/gradient/<group>/share``, largest first."""
    shares = {group: point[2] for tag, point in lasts.items() if (group := group_of_share(tag)) is not None}
    return dict(sorted(shares.items(), key=lambda item: -item[1] if math.isfinite(item[1]) else 0.0))
