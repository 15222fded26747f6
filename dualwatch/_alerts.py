"""``dualwatch monitor --on-alert CMD``: a user's command run once per newly raised alert.

This is how a container pages someone without dualwatch knowing any paging service: CMD (a
shell command: ``curl``, ``mail``, a script) gets the alert as one JSON object on stdin and in
``DUALWATCH_ALERT_*`` environment variables. An alert is new when the previous poll did not
have it (same run, kind and tags): one that persists is not sent again every poll, one that
clears and comes back is. A command that fails, hangs past :data:`TIMEOUT` or cannot start costs
one warning line on stderr; the monitor goes on.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any, Sequence

import click

from dualwatch._formats.jsonl import to_json
from dualwatch._report import Notice, RunReport

#: seconds a command may run before it is killed (and warned about)
TIMEOUT = 30.0


def alert_data(report: RunReport, notice: Notice, now: float) -> dict[str, Any]:
    """What CMD is told about one alert, as JSON on stdin."""
    return {
        "kind": notice.kind,
        "run": report.run,
        "run_dir": report.run_dir,
        "step": report.step,
        "message": notice.message,
        "tags": list(notice.tags),
        "hint": notice.hint,
        "time": now,
    }


def alert_env(data: dict[str, Any]) -> dict[str, str]:
    """The same as environment variables: DUALWATCH_ALERT_KIND, _RUN, _RUN_DIR, _STEP, _MESSAGE,
    _TAGS (comma-separated), _HINT, _TIME."""
    env = {}
    for key, value in data.items():
        text = ",".join(value) if isinstance(value, list) else "" if value is None else str(value)
        env[f"DUALWATCH_ALERT_{key.upper()}"] = text
    return env


class AlertHook:
    """Runs ``command`` for each alert not active at the previous :meth:`check`."""

    def __init__(self, command: str, timeout: float = TIMEOUT) -> None:
        self.command = command
        self.timeout = timeout
        self._active: set[tuple[str, str, tuple[str, ...]]] = set()

    def check(self, reports: Sequence[RunReport]) -> None:
        """Sends the alerts of ``reports`` that are new since the last call."""
        active = set()
        now = time.time()
        for report in reports:
            for notice in report.alerts:
                key = (report.run_dir, notice.kind, notice.tags)
                active.add(key)
                if key not in self._active:
                    self._send(alert_data(report, notice, now))
        self._active = active

    def _send(self, data: dict[str, Any]) -> None:
        what = f"{data['kind']} alert of {data['run']}"
        try:
            done = subprocess.run(
                self.command,
                shell=True,
                input=json.dumps(to_json(data), ensure_ascii=False) + "\n",
                text=True,
                stdout=2,  # its own output goes to stderr: the monitor's stdout is reports (JSON)
                env={**os.environ, **alert_env(data)},
                timeout=self.timeout,
            )
        except subprocess.TimeoutExpired:
            why = f"still running after {self.timeout:g}s, killed"
        except OSError as err:
            why = f"could not start ({err.strerror or err})"
        else:
            if done.returncode == 0:
                return
            why = f"exit status {done.returncode}"
        click.echo(f"dualwatch monitor: warning: --on-alert command failed on the {what}: {why}", err=True)
