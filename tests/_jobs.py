"""Running a multi-process job from a test: a hung job fails the test instead of stalling CI."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

import pytest


def run_job(command: list[str], timeout: float, **popen: Any) -> subprocess.CompletedProcess[str]:
    """Runs ``command`` in a session of its own and returns its output (stderr captured apart unless
    ``popen`` says otherwise). A job still running after ``timeout`` seconds hung: its ranks, which
    share its session, are killed with it and the test fails with the end of its output."""
    popen.setdefault("stderr", subprocess.PIPE)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, start_new_session=True, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"the job hung: still running after {timeout} s\n{(err or out)[-3000:]}")
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
