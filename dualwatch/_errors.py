"""The one error dualwatch's commands raise: a reason in one line and the exit status it means.

It is click's own kind of error (``click.ClickException``), so a command only raises it and
click prints it and exits; it prints as ``dualwatch <command>: <reason>`` on stderr, never a
traceback. ``transient`` marks a reason that may go away while a training run starts (no
logs yet, no such directory yet): a monitor that follows a run waits those out.
"""

from __future__ import annotations

from typing import IO, Any

import click


class DualwatchError(click.ClickException):
    """Why a command cannot do what was asked, in one line; ``exit_code`` is 2 unless told."""

    def __init__(self, message: str, *, transient: bool = False, exit_code: int = 2) -> None:
        super().__init__(message)
        self.transient = transient
        self.exit_code = exit_code
        context = click.get_current_context(silent=True)
        self.command = context.info_name if context is not None else None

    def show(self, file: IO[Any] | None = None) -> None:
        where = f"dualwatch {self.command}" if self.command else "dualwatch"
        click.echo(f"{where}: {self.message}", err=True, file=file)
