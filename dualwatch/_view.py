"""How a monitor report looks: a rich table on a terminal, plain lines in a pipe, JSON for scripts.

The plain text and the table show the same rows, so what a log file captures from a
container is what a person sees live. ``rich`` is imported only for the table. One run gets
its full report; many runs one line each (run, status, step, loss, last record age, alerts),
alerting runs first, so the runs that need a look are on top of a sweep of dozens.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any, Sequence

import click

from dualwatch._report import Latest, Loss, RunReport, format_duration

if TYPE_CHECKING:
    from rich.console import RenderableType


class Display:
    """Where each poll's report goes: JSON lines, rich on a terminal, or plain text.

    Following (not ``--once``) on a terminal redraws one rich table in place; in a pipe each
    poll appends a report and a blank line, so a log file keeps the history.
    """

    def __init__(self, *, as_json: bool, follow: bool, tty: bool) -> None:
        self.as_json = as_json
        self.follow = follow
        self._console: Any = None
        self._live: Any = None
        if tty and not as_json:
            from rich.console import Console

            self._console = Console()
            if follow:
                from rich.live import Live

                self._live = Live(console=self._console, auto_refresh=False)

    def __enter__(self) -> Display:
        if self._live is not None:
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.stop()

    def show(self, report: RunReport) -> None:
        """One run's full report."""
        self.show_runs([report])

    def show_runs(self, reports: Sequence[RunReport]) -> None:
        """One poll: one run's full report, or a line per run when there are several."""
        if self.as_json:
            for report in sort_runs(reports):
                click.echo(render_json(report))
        elif self._console is not None:
            shown = render_rich(reports[0]) if len(reports) == 1 else render_runs_rich(reports)
            if self._live is not None:
                self._live.update(shown, refresh=True)
            else:
                self._console.print(shown)
        else:
            text = render_text(reports[0]) if len(reports) == 1 else render_runs_text(reports)
            click.echo(text + ("\n" if self.follow else ""))

    def waiting(self, reason: str) -> None:
        """Why there is no report yet (only while following: ``--once`` exits 3 or 2 instead)."""
        if self.as_json:
            click.echo(json.dumps({"waiting": reason}, ensure_ascii=False))
        elif self._live is not None:
            from rich.text import Text

            self._live.update(Text(f"waiting: {reason}"), refresh=True)
        else:
            click.echo(f"waiting: {reason}\n")


def render_json(report: RunReport) -> str:
    """The report as one line of JSON."""
    return json.dumps(report.to_dict(), ensure_ascii=False, allow_nan=False)


def render_text(report: RunReport) -> str:
    """The report as plain lines, for pipes and log files."""
    lines = [f"{name:<9}{value}" for name, value in rows(report)]
    for notice in report.alerts:
        lines.append(f"{'ALERT':<9}{notice.message}")
        if notice.hint:
            lines.append(f"{'':<9}{notice.hint}")
    for notice in report.warnings:
        lines.append(f"{notice.label:<9}{notice.message}")
        if notice.advice:
            lines.append(f"{'':<9}{notice.advice}")
    lines.append(f"{'status':<9}{status(report)}")
    return "\n".join(lines)


def render_rich(report: RunReport) -> RenderableType:
    """The report as a rich table: alerts in red, warnings in yellow, the status coloured."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"dualwatch monitor: {report.run}",
        box=box.SIMPLE,
        show_header=False,
        title_justify="left",
    )
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    for name, value in rows(report):
        table.add_row(name, Text(value))  # Text: tags and paths may hold "[...]", not markup
    for notice in report.alerts:
        hint = f"\n{notice.hint}" if notice.hint else ""
        table.add_row(Text("ALERT", style="bold red"), Text(notice.message + hint, style="red"))
    for notice in report.warnings:
        advice = f"\n{notice.advice}" if notice.advice else ""
        style = "cyan" if notice.label == "info" else "yellow"
        table.add_row(Text(notice.label, style=style), Text(notice.message + advice, style=style))
    table.add_row("status", Text(status(report), style="bold green" if report.ok else "bold red"))
    return table


RUN_COLUMNS = ("run", "status", "step", "loss", "last", "alerts")


def sort_runs(reports: Sequence[RunReport]) -> list[RunReport]:
    """Alerting runs first, then the rest, each by name."""
    return sorted(reports, key=lambda r: (r.ok, r.run))


def run_row(report: RunReport) -> tuple[str, ...]:
    """One run's line: the cells of :data:`RUN_COLUMNS`."""
    state = status(report) if report.records else "no records"
    step = "" if report.step is None else str(report.step)
    loss = "" if report.loss is None else _num(report.loss.latest)
    age = "" if report.since_last_s is None else format_duration(max(0.0, report.since_last_s))
    alerts = "; ".join(n.message for n in report.alerts)
    return (report.run, state, step, loss, age, alerts)


def render_runs_text(reports: Sequence[RunReport]) -> str:
    """Many runs as aligned plain lines, a header first and a count of alerting runs last."""
    rows = [RUN_COLUMNS, *(run_row(r) for r in sort_runs(reports))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(RUN_COLUMNS) - 1)]
    lines = ["  ".join([*(c.ljust(w) for c, w in zip(row, widths)), row[-1]]).rstrip() for row in rows]
    lines.append(_many_status(reports))
    return "\n".join(lines)


def render_runs_rich(reports: Sequence[RunReport]) -> RenderableType:
    """Many runs as a rich table, alerting runs in red."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"dualwatch monitor: {len(reports)} runs",
        caption=_many_status(reports),
        box=box.SIMPLE,
        title_justify="left",
        caption_justify="left",
    )
    for name in RUN_COLUMNS:
        right = name in ("step", "loss", "last")
        table.add_column(name, overflow="fold", justify="right" if right else "left")
    for report in sort_runs(reports):
        style = "" if report.ok else "red"
        table.add_row(*(Text(cell, style=style) for cell in run_row(report)))
    return table


def _many_status(reports: Sequence[RunReport]) -> str:
    alerting = sum(not r.ok for r in reports)
    return f"{len(reports)} runs, {alerting} with alerts" if alerting else f"{len(reports)} runs, all OK"


def status(report: RunReport) -> str:
    if report.ok:
        warned = sum(notice.label == "warning" for notice in report.warnings)
        info = len(report.warnings) - warned
        shown = []
        if warned:
            shown.append(f"{warned} warning{'s' if warned > 1 else ''}")
        if info:
            shown.append(f"{info} info")
        return "OK" + (f" ({', '.join(shown)})" if shown else "")
    return f"{len(report.alerts)} alert{'s' if len(report.alerts) > 1 else ''}"


def rows(report: RunReport) -> list[tuple[str, str]]:
    """``(name, value)`` rows shared by the text and the table; rows without data are left out."""
    out = [("run", f"{report.run}  [{report.format or 'no log'}, {report.records} points]")]
    progress = []
    if report.step is not None:
        progress.append(f"step {report.step}" + (f"/{report.total_steps}" if report.total_steps else ""))
    if report.epoch is not None:
        progress.append(f"epoch {_num(report.epoch)}")
    if report.steps_per_s is not None:
        progress.append(f"{report.steps_per_s:.3g} steps/s")
    if report.eta_s is not None:
        progress.append(f"ETA {format_duration(report.eta_s)}")
    if progress:
        out.append(("progress", "  ".join(progress)))
    if report.since_last_s is not None:
        out.append(("last", f"{format_duration(max(0.0, report.since_last_s))} ago"))
    for name, loss in (("loss", report.loss), ("val loss", report.val_loss)):
        if loss is not None:
            out.append((name, _loss(loss)))
    if report.lr is not None:
        out.append(("lr", _latest(report.lr)))
    if report.grad_norm is not None or report.health is not None:
        grad = _latest(report.grad_norm) if report.grad_norm is not None else ""
        health = f"health {report.health}" if report.health is not None else ""
        out.append(("grad", "  ".join(p for p in (grad, health) if p)))
    if report.shares:
        out.append(("shares", "  ".join(f"{g} {_percent(v)}" for g, v in report.shares.items())))
    out += [("tag", _latest(latest)) for latest in report.tags.values()]
    return out


def _loss(loss: Loss) -> str:
    parts = [f"{loss.tag} {_num(loss.latest)}"]
    if loss.smoothed is not None:
        parts.append(f"smoothed {_num(loss.smoothed)}")
    if loss.trend_percent is not None:
        parts.append(f"{loss.direction} {abs(loss.trend_percent):.1f}%")
    if loss.best is not None:
        parts.append(f"best {_num(loss.best)} @ {loss.best_step}")
    return "  ".join(parts)


def _latest(latest: Latest) -> str:
    return f"{latest.tag} {_num(latest.value)}"


def _num(x: float) -> str:
    if math.isfinite(x) and float(x).is_integer() and abs(x) < 1e15:
        return str(int(x))
    return f"{x:.4g}"


def _percent(x: float) -> str:
    return f"{x * 100:.1f}%" if math.isfinite(x) else _num(x)
