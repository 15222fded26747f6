"""A training script stand-in for ``test_viewers_e2e.py``: writes a run with a real ``Writer``.

Usage: ``python _writer_child.py MODE LOGDIR RUN [PROGRESS_FILE]``

Modes:

* ``live``: logs ``live/value = step * 0.5`` and ``live/neg = -step`` every 50 ms (``max_latency=0.5``)
  until killed, up to ``LIVE_STEPS`` steps, and never closes the writer.
* ``kill``: logs two tags with ``log()`` and one with ``add_scalar()`` as fast as it can
  (``max_latency=0.5``) with deterministic values and wall times, until killed.
* ``term``: like ``kill`` but with ``max_latency=60``, so what is on disk after SIGTERM was written by
  the writer's SIGTERM flush, not by its thread.
* ``blocked``: like ``term``, with a user sink whose ``write()`` never returns (a tracker's server that
  stopped answering) beside the files: SIGTERM must still end the process within ``CLOSE_TIMEOUT``.
* ``noclose``: 50,000 ``add_scalar`` calls, then the script ends without ``close()``.

After each step is logged (the ``Writer`` call has returned), ``"<step> <time.time()>"`` is appended to
``PROGRESS_FILE`` with one unbuffered ``os.write``, so the parent knows what was logged and when even
if this process is killed with SIGKILL. The wall time logged for each step is that same float.
"""

from __future__ import annotations

import os
import sys
import threading
import time

from dualwatch._writer import Writer

LIVE_STEPS = 900  # stays below VisualDL's 1000-point scalar reservoir, so the server down-samples nothing
NOCLOSE_STEPS = 50_000


def kill_values(step: int) -> dict[str, float]:
    """The values a ``kill``/``term`` child logs at ``step`` (also used by the parent)."""
    return {"train/loss": step * 0.25, "train/acc": 1.0 / (step + 1)}


def kill_extra(step: int) -> float:
    return step * -2.0


class BlockedSink:
    """A sink stuck in its first ``write()`` for good."""

    def __repr__(self) -> str:
        return "blocked sink"

    def write(self, records: object) -> None:
        threading.Event().wait()

    def close(self) -> None:
        pass


def main() -> None:
    mode, logdir, run = sys.argv[1:4]
    progress = (
        os.open(sys.argv[4], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if len(sys.argv) > 4 else None
    )

    def done(step: int, wall: float) -> None:
        if progress is not None:
            os.write(progress, f"{step} {wall!r}\n".encode())

    if mode == "noclose":
        writer = Writer(logdir, run=run)
        for step in range(NOCLOSE_STEPS):
            writer.add_scalar("noclose/x", step * 0.5, step)
        done(NOCLOSE_STEPS - 1, time.time())
        return  # no close(): the interpreter's exit has to write what is queued

    if mode == "live":
        writer = Writer(logdir, run=run, max_latency=0.5)
        for step in range(LIVE_STEPS):
            wall = time.time()
            writer.log(step, {"live/value": step * 0.5, "live/neg": -step}, walltime=wall)
            done(step, wall)
            time.sleep(0.05)
        time.sleep(3600)  # stay alive (and unclosed) until the parent stops it
        return

    if mode in ("kill", "term", "blocked"):
        sinks = [BlockedSink()] if mode == "blocked" else []
        writer = Writer(logdir, run=run, max_latency=0.5 if mode == "kill" else 60.0, sinks=sinks)
        step = 0
        while True:
            wall = time.time()
            writer.log(step, kill_values(step), walltime=wall)
            writer.add_scalar("extra", kill_extra(step), step, walltime=wall)
            done(step, wall)
            step += 1
            time.sleep(0.002)

    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
