"""How a monitor report looks: a rich table on a terminal, plain lines in a pipe, JSON for scripts.

The plain text and the table show the same rows, so what a log file captures from a
container is what a person sees live. ``rich`` is imported only for the table.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

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
        if self.as_json:
            click.echo(render_json(report))
        elif self._live is not None:
            self._live.update(render_rich(report), refresh=True)
        elif self._console is not None:
            self._console.print(render_rich(report))
        else:
            click.echo(render_text(report) + ("\n" if self.follow else ""))

    def waiting(self, reason: str) -> None:
        """Why there is no report yet (only while following: ``--once`` exits 2 instead)."""
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
    lines += [f"{'warning':<9}{n.message}" for n in report.warnings]
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
        table.add_row(Text("warning", style="yellow"), Text(notice.message, style="yellow"))
    table.add_row("status", Text(status(report), style="bold green" if report.ok else "bold red"))
    return table


def status(report: RunReport) -> str:
    if report.ok:
        return "OK" + (f" ({len(report.warnings)} warnings)" if report.warnings else "")
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
