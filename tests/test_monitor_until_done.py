"""``dualwatch monitor --until-done``: following until the runs end, on runs of real ``Writer``\\ s.

A poll is one pass of the monitor's loop; ``time.sleep`` between polls is replaced by a hook that
does what the test needs at that poll (close a writer, start one), so no test waits an interval.
The writer killed before ``close()`` is a real child process (``_writer_child.py``), killed with
SIGKILL.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest
from click.testing import CliRunner, Result

from dualwatch import Writer
from dualwatch._cli import main
from dualwatch._runlock import ABANDONED, ABSENT, LOCK_NAME, OPEN, writer_state

HERE = os.path.dirname(os.path.abspath(__file__))
HEALTHY = {"Loss/Train": 0.5, "train/gradient/total_norm": 0.5, "train/gradient/health": 0.0}


def until_done(
    monkeypatch: pytest.MonkeyPatch, logdir: Path, at_poll: dict[int, Callable[[], Any]], *args: str
) -> tuple[Result, int]:
    """``monitor --until-done --json LOGDIR`` in this process, ``at_poll[n]()`` run after poll ``n``
    (1-based); the result and the number of polls. More than 20 polls fails the test."""
    polls = 0

    def sleep(seconds: float) -> None:
        nonlocal polls
        polls += 1
        at_poll.get(polls, lambda: None)()
        if polls > 20:
            raise AssertionError("the monitor was still following after 20 polls")

    monkeypatch.setattr(time, "sleep", sleep)
    argv = ["monitor", "--until-done", "--json", str(logdir), *args]
    result = CliRunner().invoke(main, argv if "--grace" in args else [*argv, "--grace", "0"])
    if isinstance(result.exception, AssertionError):
        raise result.exception
    return result, polls + 1


def reports_of(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


def open_writer(logdir: Path, run: str, wall: float | None = None, **values: float) -> Writer:
    """A Writer that logged 3 steps (``HEALTHY``, then ``values`` at the last), left open."""
    writer = Writer(logdir, run=run, console=None)
    for step in range(3):
        scalars = {**HEALTHY, **(values if step == 2 else {})}
        writer.log(step, scalars, walltime=(wall if wall is not None else time.time()) + step)
    writer.flush()
    return writer


def test_an_open_run_keeps_the_monitor_following_and_closing_its_writer_exits_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    writer = open_writer(tmp_path, "r")
    try:
        result, polls = until_done(monkeypatch, tmp_path, {4: writer.close})
    finally:
        writer.close()
    # polls 1-4 see the writer open; 5 sees it closed, 6 confirms (no run started meanwhile)
    assert result.exit_code == 0 and polls == 6, result.output
    assert [r["step"] for r in reports_of(result)] == [2] * 6
    assert result.stderr == "dualwatch monitor: the run ended (1 closed): exit status 0\n"


def test_a_run_that_ends_with_a_nan_loss_exits_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = open_writer(tmp_path, "r", **{"Loss/Train": math.nan})
    try:
        result, _ = until_done(monkeypatch, tmp_path, {2: writer.close})
    finally:
        writer.close()
    assert result.exit_code == 1, result.output
    final = reports_of(result)[-1]
    assert [a["kind"] for a in final["alerts"]] == ["nonfinite"]
    assert "exit status 1" in result.stderr


def test_with_many_runs_it_exits_only_once_every_writer_has_closed_and_a_closed_run_is_not_stalled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first run closes early and its last record is older than --stall when the last one
    closes: finished, it carries no stall alert; while open, it did."""
    early = open_writer(tmp_path, "early", wall=time.time() - 1000)
    late = open_writer(tmp_path, "late")
    try:
        result, polls = until_done(monkeypatch, tmp_path, {2: early.close, 5: late.close}, "--stall", "60")
    finally:
        early.close()
        late.close()
    assert result.exit_code == 0 and polls == 7, result.output
    reports = reports_of(result)
    assert len(reports) == 2 * polls
    by_poll = [{r["run"]: r for r in reports[i : i + 2]} for i in range(0, len(reports), 2)]
    assert [a["kind"] for a in by_poll[0]["early"]["alerts"]] == ["stalled"]  # open: silent 1000 s
    assert all(p["early"]["alerts"] == [] for p in by_poll[2:])  # closed: finished
    assert result.stderr == "dualwatch monitor: every run ended (2 closed): exit status 0\n"


def test_the_runs_must_stay_ended_for_grace_seconds_before_it_exits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    open_writer(tmp_path, "r").close()
    real_sleep, started = time.sleep, time.monotonic()
    at_poll = {n: lambda: real_sleep(0.1) for n in range(1, 20)}
    result, polls = until_done(monkeypatch, tmp_path, at_poll, "--grace", "0.5")
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started >= 0.5 and polls >= 6


def test_a_run_that_starts_right_after_the_others_ended_is_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the demo trains torch, then paddle: the first run ended, the second appears one poll later."""
    first = open_writer(tmp_path, "first")
    writers = [first]

    def start_second() -> None:
        writers.append(open_writer(tmp_path, "second"))

    try:
        at_poll = {1: first.close, 2: start_second, 3: lambda: writers[1].close()}
        result, polls = until_done(monkeypatch, tmp_path, at_poll)
    finally:
        for writer in writers:
            writer.close()
    assert result.exit_code == 0 and polls == 5, result.output
    assert {r["run"] for r in reports_of(result)[-2:]} == {"first", "second"}


def test_it_waits_for_the_first_run_and_a_run_closed_before_it_started_ends_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logdir = tmp_path / "runs"
    result, polls = until_done(monkeypatch, logdir, {2: lambda: open_writer(logdir, "r").close()})
    assert result.exit_code == 0 and polls == 4, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[:2] == [{"waiting": f"no such directory: {logdir}"}] * 2
    # the lock was never seen held: the Writer's metrics.jsonl says whose run it was
    again, polls = until_done(monkeypatch, logdir, {})
    assert again.exit_code == 0 and polls == 2, again.output


def test_a_run_closed_without_scalar_records_exits_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Writer(tmp_path, run="r", console=None) as writer:
        writer.add_text("note", "text only", 0)  # log files, but no scalar
    result, _ = until_done(monkeypatch, tmp_path, {})
    assert result.exit_code == 3, result.output
    assert result.stderr == (
        f"dualwatch monitor: no scalar records in {tmp_path / 'r'}, and the run ended (1 closed)\n"
    )


def test_a_run_no_writer_locked_ends_once_silent_for_stall_with_the_stall_alert(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TensorBoard files alone and no lock file: as another tool's run, nothing says it finished."""
    with Writer(tmp_path, run="r", console=None, formats=("tensorboard",)) as writer:
        writer.log(0, HEALTHY, walltime=time.time() - 1000)
    result, polls = until_done(monkeypatch, tmp_path, {}, "--stall", "60")
    assert result.exit_code == 1 and polls == 2, result.output
    assert [a["kind"] for a in reports_of(result)[-1]["alerts"]] == ["stalled"]
    assert "the run ended (1 silent)" in result.stderr
    with Writer(tmp_path, run="fresh", console=None, formats=("tensorboard",)) as writer:
        writer.log(0, HEALTHY)
    with pytest.raises(AssertionError, match="still following after 20 polls"):
        until_done(monkeypatch, tmp_path / "fresh", {}, "--stall", "60")


def test_a_writer_killed_before_close_is_an_unclosed_alert_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logdir, progress = tmp_path / "logs", tmp_path / "progress"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE])}
    child = subprocess.Popen(
        [sys.executable, os.path.join(HERE, "_writer_child.py"), "live", str(logdir), "r", str(progress)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (progress.exists() and progress.read_text().count("\n") >= 12):  # 0.6 s on disk
            assert child.poll() is None and time.monotonic() < deadline, "the child logged nothing"
            time.sleep(0.05)
        assert writer_state(str(logdir / "r")) == OPEN

        def kill() -> None:
            child.kill()
            child.wait()  # no timeout: that would call the replaced time.sleep

        result, polls = until_done(monkeypatch, logdir, {2: kill})
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert writer_state(str(logdir / "r")) == ABANDONED  # the lock file is left, unlocked
    assert result.exit_code == 1 and polls == 4, result.output
    (alert,) = reports_of(result)[-1]["alerts"]
    assert alert["kind"] == "unclosed" and "ended without close()" in alert["message"]
    assert result.stderr == "dualwatch monitor: the run ended (1 abandoned): exit status 1\n"


def test_a_writer_starting_while_a_monitor_probes_its_lock_file_waits_and_gets_the_lock(
    tmp_path: Path,
) -> None:
    """A monitor's probe holds a shared lock for a moment; the Writer waits it out, never fails."""
    Writer(tmp_path, run="warm", console=None).close()  # the file formats imported: a Writer starts fast
    run = tmp_path / "r"
    run.mkdir()
    lock = run / LOCK_NAME
    lock.write_text("{}")  # left by a killed writer
    fd = os.open(lock, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)  # the probe, caught holding it
    threading.Timer(0.3, os.close, [fd]).start()
    started = time.monotonic()
    with Writer(tmp_path, run="r", resume=True, console=None) as writer:
        assert time.monotonic() - started > 0.25  # it waited for the probe to let go
        assert writer_state(writer.run_dir) == OPEN
    assert writer_state(str(run)) == ABSENT


def test_once_and_until_done_ask_for_opposite_things(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["monitor", "--once", "--until-done", str(tmp_path)])
    assert result.exit_code == 2 and "--once and --until-done" in result.stderr
