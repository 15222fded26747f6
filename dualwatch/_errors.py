"""The one error dualwatch's commands raise: a reason in one line and the exit status it means.

It is click's own kind of error (``click.ClickException``), so a command only raises it and
click prints it and exits; it prints as ``dualwatch <command>: <reason>`` on stderr, never a
traceback. ``transient`` marks a reason that may go away while a training run starts (no
logs yet, no such directory yet): a monitor that follows a run waits those out.

The exit statuses are stable, so a script can tell "nothing to read yet" from "you asked wrong":
0 healthy, 1 an alert, 2 a usage error (a bad option or rules file, a path that is not a
directory, a file or directory this user may not read: waiting would not help), 3 no logs or no
readable records (yet). A transient reason is a status 3 unless told otherwise.
"""

from __future__ import annotations

from typing import IO, Any

import click

#: exit statuses of ``dualwatch monitor``, ``plot`` and ``convert``
OK, ALERT, USAGE, NO_LOGS = 0, 1, 2, 3


class DualwatchError(click.ClickException):
    """Why a command cannot do what was asked, in one line; ``exit_code`` is :data:`NO_LOGS` for a
    transient reason, else :data:`USAGE`, unless told."""

    def __init__(self, message: str, *, transient: bool = False, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.exit_code = exit_code if exit_code is not None else NO_LOGS if transient else USAGE
        context = click.get_current_context(silent=True)
        self.command = context.info_name if context is not None else None

    def show(self, file: IO[Any] | None = None) -> None:
        where = f"dualwatch {self.command}" if self.command else "dualwatch"
        click.echo(f"{where}: {self.message}", err=True, file=file)
