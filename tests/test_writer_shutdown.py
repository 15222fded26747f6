"""Shutdown is bounded, a stuck sink starves no one, one writer per run, and faults keep what fit.

Every fault is real: a sink whose ``write()`` never returns, SIGTERM (also as PID 1 of a new PID
namespace), a second writer in this process and in another one, SIGKILL, ``RLIMIT_FSIZE``,
symlinks planted in the run directory. Files are read back with VisualDL's ``LogReader``,
TensorBoard's ``EventAccumulator``/``EventFileLoader`` and ``json``.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import pytest

import dualwatch
import dualwatch.compat
from dualwatch import _writer
from dualwatch._files import atomic_write
from dualwatch._writer import Writer
from dualwatch.readers._discover import find_runs, log_files
from dualwatch.records import Record

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_writer_child.py")
MARKS = {"visualdl": "vdlrecords", "tensorboard": "tfevents", "jsonl": "metrics.jsonl"}
MARGIN = 3.0  # seconds of slack on a shared CI machine for bounds measured around a subprocess


class Tracker:
    """A sink beside the files: keeps the steps of ``tag`` in the order it got them."""

    def __init__(self, delay: float = 0.0) -> None:
        self.steps: list[int] = []
        self.delay = delay
        self.closed = False

    def __repr__(self) -> str:
        return "tracker"

    def write(self, records: Sequence[Record]) -> None:
        time.sleep(self.delay)
        self.steps += [r.step for r in records if "train/loss" in getattr(r, "values", {})]

    def close(self) -> None:
        self.closed = True


class StuckSink(Tracker):
    """A tracker whose server stopped answering: ``write()`` waits until ``gate`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def __repr__(self) -> str:
        return "stuck sink"

    def write(self, records: Sequence[Record]) -> None:
        self.gate.wait()
        super().write(records)


@contextlib.contextmanager
def dualwatch_warnings() -> Iterator[list[str]]:
    """Every warning dualwatch gives inside the block, from any thread (filled in on exit)."""
    ours: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield ours
    ours.extend(str(w.message) for w in caught if str(w.message).startswith("dualwatch: "))


def steps_by_format(run_dir: str, tag: str) -> dict[str, list[int]]:
    """The steps of scalar ``tag`` as each viewer's own reader shows the run (formats written only)."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from visualdl import LogReader

    found: dict[str, list[int]] = {}
    vdl = sorted(glob.glob(os.path.join(run_dir, "*vdlrecords*")))  # VisualDL shows the newest file
    if vdl:
        found["visualdl"] = [p.id for p in LogReader(file_path=vdl[-1]).get_data("scalar", tag)]
    if glob.glob(os.path.join(run_dir, "*tfevents*")):
        acc = ea.EventAccumulator(run_dir, size_guidance={ea.SCALARS: 0})
        acc.Reload()
        found["tensorboard"] = [e.step for e in acc.Scalars(tag)] if tag in acc.Tags()["scalars"] else []
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
            rows = [json.loads(line) for line in f.read().splitlines()]
        found["jsonl"] = [row["step"] for row in rows if tag in row]
    return found


def every_format(steps: int) -> dict[str, list[int]]:
    """Steps ``0 .. steps - 1`` in each of the three formats."""
    return {name: list(range(steps)) for name in MARKS}


def write_steps(logdir: Any, run: str, steps: range, **options: Any) -> str:
    w = Writer(logdir, run=run, **options)
    for step in steps:
        w.add_scalar("train/loss", 1.0 / (step + 1), step)
    w.close()
    return w.run_dir


# -- resume never cuts more than asked (item 4) -------------------------------------------------


def test_a_50_step_run_resumed_at_step_20_keeps_steps_0_to_19_in_every_format(tmp_path) -> None:
    run_dir = write_steps(tmp_path, "r", range(50))
    write_steps(tmp_path, "r", range(20, 30), resume=20)
    assert steps_by_format(run_dir, "train/loss") == every_format(30)


def test_a_negative_resume_step_is_refused_before_any_file_is_touched(tmp_path) -> None:
    run_dir = write_steps(tmp_path, "r", range(50))
    before = {name: os.path.getsize(os.path.join(run_dir, name)) for name in os.listdir(run_dir)}
    with pytest.raises(ValueError, match=r"resume=.*-5"):
        Writer(tmp_path, run="r", resume=-5)
    assert {name: os.path.getsize(os.path.join(run_dir, name)) for name in os.listdir(run_dir)} == before
    assert steps_by_format(run_dir, "train/loss") == every_format(50)
    Writer(tmp_path, run="r", resume=True).close()  # the refused writer did not keep the run locked


# -- a stuck sink starves no one; close() is bounded (item 6) ----------------------------------


def test_a_stuck_sink_starves_no_file_and_close_abandons_it_within_close_timeout(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(_writer, "CLOSE_TIMEOUT", 1.0)
    stuck, tracker = StuckSink(), Tracker()
    with dualwatch_warnings() as caught:
        w = Writer(tmp_path, run="r", sinks=[stuck, tracker], max_latency=0.2)
        for step in range(10):
            w.add_scalar("train/loss", 1.0 / (step + 1), step)
            time.sleep(0.05)
        deadline = time.monotonic() + 30  # the files are written while the sink hangs (no close, no flush)
        while time.monotonic() < deadline and steps_by_format(w.run_dir, "train/loss") != every_format(10):
            time.sleep(0.05)
        assert steps_by_format(w.run_dir, "train/loss") == every_format(10)
        w.add_scalar("train/loss", 0.5, 10)  # queued, written by close()
        start = time.monotonic()
        w.close()
        took = time.monotonic() - start
    stuck.gate.set()
    assert 1.0 <= took <= 1.0 + MARGIN, f"close() took {took:.2f} s with CLOSE_TIMEOUT=1"
    assert steps_by_format(w.run_dir, "train/loss") == every_format(11)
    assert tracker.steps == list(range(11)) and tracker.closed
    assert len(caught) == 1, caught
    assert re.fullmatch(
        r"dualwatch: stuck sink \(\d+ record\(s\)\) still stuck in write\(\) after close\(\) waited "
        r"CLOSE_TIMEOUT=1 s: abandoned with what it had not written\. "
        r"Every other sink has written everything",
        caught[0],
    )
    assert w.stats()["failed"] == ["stuck sink (stuck in write() at close)"]
    Writer(tmp_path, run="r", resume=True).close()  # the lock was released: the run opens again


def test_a_stuck_sinks_full_backlog_drops_and_counts_for_that_sink_alone(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(_writer, "CLOSE_TIMEOUT", 0.5)
    stuck = StuckSink()
    with dualwatch_warnings() as caught:
        w = Writer(tmp_path, run="r", sinks=[stuck], max_pending=100, max_latency=60)
        for step in range(1000):
            w.add_scalar("train/loss", 1.0 / (step + 1), step)
            if step % 10 == 9:
                w.flush()  # one batch of 10 records handed out per flush; the stuck sink holds 100 at most
        stats = w.stats()
        w.close()
    stuck.gate.set()
    assert stats["dropped"] == 0 and stats["written"] == 1000
    # the first batch is in the stuck write(), ten more wait: 89 batches of 10 were dropped for it alone
    assert stats["backlog_dropped"] == {"stuck sink": 890}
    assert steps_by_format(w.run_dir, "train/loss") == every_format(1000)
    backlog = [m for m in caught if "records behind" in m]
    assert backlog == [
        "dualwatch: stuck sink is 100 records behind (stuck in write()?); its batches are dropped and "
        "counted in Writer.stats()['backlog_dropped'] until it catches up. The other sinks get every record"
    ]


def test_a_slow_sink_gets_every_batch_in_order_while_flush_waits_for_it(tmp_path) -> None:
    slow = Tracker(delay=0.02)
    w = Writer(tmp_path, run="r", sinks=[slow], max_latency=0.05)
    for step in range(60):
        w.add_scalar("train/loss", 1.0, step)
        time.sleep(0.002)
    w.flush()
    assert slow.steps == list(range(60))  # flush() returned: the slow sink has written everything
    w.close()
    assert slow.closed


# -- one writer per run (item 7) ---------------------------------------------------------------


def test_a_second_writer_on_an_open_run_raises_run_in_use_naming_this_process(tmp_path) -> None:
    first = Writer(tmp_path, run="r", max_latency=60)
    for step in range(5):
        first.add_scalar("train/loss", 1.0, step)
    first.flush()
    holder = rf"pid {os.getpid()} on host '{re.escape(socket.gethostname())}'"
    fix = rf"close\(\) the other writer, wait for pid {os.getpid()} to exit, or pass another run="
    for attempt in (
        lambda: Writer(tmp_path, run="r", resume=True),
        lambda: Writer(tmp_path, run="r", resume=3),
        lambda: Writer(tmp_path, run="r"),
        lambda: Writer(log_dir=os.path.join(tmp_path, "r")),  # torch's "new files beside the old"
        lambda: dualwatch.compat.SummaryWriter(os.path.join(tmp_path, "r")),
    ):
        with pytest.raises(
            dualwatch.RunInUseError, match=rf"is being written by another Writer \({holder}.*{fix}"
        ):
            attempt()
    assert issubclass(dualwatch.RunInUseError, RuntimeError)
    first.add_scalar("train/loss", 1.0, 5)
    first.close()
    assert steps_by_format(first.run_dir, "train/loss") == every_format(6)
    write_steps(tmp_path, "r", range(6, 8), resume=True)  # close() released it
    assert steps_by_format(first.run_dir, "train/loss") == every_format(8)


def _wait_for_lines(path: str, child: subprocess.Popen, lines: int, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                if len(f.read().splitlines()) >= lines:
                    return
        assert child.poll() is None, f"the child exited with status {child.returncode}"
        time.sleep(0.05)
    raise AssertionError(f"the child logged fewer than {lines} steps in {seconds} s")


def _child(mode: str, logdir: str, run: str, progress: str, prefix: Sequence[str] = ()) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.dirname(HERE), HERE])}
    return subprocess.Popen(
        [*prefix, sys.executable, CHILD, mode, logdir, run, progress],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _logged(progress: str) -> list[int]:
    with open(progress, encoding="utf-8") as f:
        return [int(line.split()[0]) for line in f.read().splitlines()]


def test_a_run_held_by_another_process_raises_and_its_sigkill_releases_the_lock(tmp_path) -> None:
    logdir, progress = str(tmp_path / "logs"), str(tmp_path / "progress")
    child = _child("live", logdir, "r", progress)
    try:
        _wait_for_lines(progress, child, 30)  # 1.5 s: three max_latency, some steps are on disk
        with pytest.raises(
            dualwatch.RunInUseError, match=rf"\(pid {child.pid} on host .*wait for pid {child.pid}"
        ):
            Writer(logdir, run="r", resume=True)
        child.kill()
        child.wait(10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    w = Writer(logdir, run="r", resume=True)  # the OS released the lock of the killed process
    w.add_scalar("resumed", 1.0, 10_000)
    w.close()
    kept = steps_by_format(w.run_dir, "live/value")
    assert all(steps == list(range(len(steps))) and steps for steps in kept.values()), kept


def test_readers_and_the_cli_ignore_the_lock_file(tmp_path) -> None:
    from click.testing import CliRunner

    from dualwatch._cli import main

    w = Writer(tmp_path, run="r")
    assert os.path.exists(os.path.join(w.run_dir, ".dualwatch.lock"))
    assert find_runs(str(tmp_path)) == []  # a lock alone is no run
    w.add_scalar("train/loss", 0.5, 3)
    w.flush()
    assert sorted(log_files(w.run_dir)) == sorted(MARKS)
    assert ".dualwatch.lock" not in {name for files in log_files(w.run_dir).values() for name in files}
    done = CliRunner().invoke(main, ["monitor", w.run_dir, "--once", "--json"])
    w.close()
    assert done.exit_code == 0, done.output
    assert "train/loss" in done.output


# -- a file-size limit keeps every whole record that fit (item 8) ------------------------------

_FSIZE_SCRIPT = r"""
import resource, sys, warnings
from dualwatch import Writer

limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    w = Writer(sys.argv[1], run="r", max_latency=60)  # every step goes in one batch, written by close()
    for step in range(2000):
        w.log(step, {"train/loss": 1.0 / (step + 1), "train/acc": step / 2000})
    w.close()
for c in caught:
    print(c.message)
"""


def test_a_file_size_limit_keeps_every_whole_record_of_the_batch_that_fit(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    from dualwatch._formats import formats_by_name

    limit = 24 * 1024
    done = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(tmp_path), str(limit)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.path.dirname(HERE)},
    )
    assert done.returncode == 0, done.stderr
    messages = [line for line in done.stdout.splitlines() if line.startswith("dualwatch: ")]
    assert len(messages) == 1 and messages[0].count("File too large") == 3, messages  # one warning, 3 files
    run_dir = str(tmp_path / "r")
    kept = steps_by_format(run_dir, "train/loss")
    for name, steps in kept.items():
        path = glob.glob(os.path.join(run_dir, f"*{MARKS[name]}*"))[0]
        with open(path, "rb") as f:
            data = f.read()
        frames = formats_by_name()[name]().scan(data)
        assert 0 < len(data) <= limit and frames[-1].end == len(data), name  # whole records only
        assert 100 < len(steps) < 2000 and steps == list(range(len(steps))), (name, steps[-3:])
    tb = glob.glob(os.path.join(run_dir, "*tfevents*"))[0]
    events = [e for e in EventFileLoader(tb).Load() if e.summary.value]
    assert len(events) == len(kept["tensorboard"])  # every record EventFileLoader reads is whole


# -- SIGTERM is bounded, and ends the process as SIGTERM would (item 9) ------------------------


def _terminated(
    mode: str, tmp_path: Any, prefix: Sequence[str] = (), in_namespace: bool = False
) -> tuple[int, float, list[int], str]:
    """Starts a child, lets it log 200 steps, sends SIGTERM; returns its status, the seconds it took
    to end, the steps it logged and its run directory."""
    logdir, progress = str(tmp_path / "logs"), str(tmp_path / "progress")
    child = _child(mode, logdir, "r", progress, prefix)
    try:
        _wait_for_lines(progress, child, 200)
        target = child.pid
        if in_namespace:  # unshare --fork: the Python process is unshare's child, PID 1 inside
            with open(f"/proc/{child.pid}/task/{child.pid}/children", encoding="utf-8") as f:
                target = int(f.read().split()[0])
        start = time.monotonic()
        os.kill(target, signal.SIGTERM)
        status = child.wait(_writer.CLOSE_TIMEOUT + 30)
        took = time.monotonic() - start
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
    return status, took, _logged(progress), str(tmp_path / "logs" / "r")


def _assert_every_logged_step_on_disk(run_dir: str, logged: list[int]) -> None:
    from _writer_child import kill_values

    on_disk = steps_by_format(run_dir, "train/loss")
    assert on_disk == dict.fromkeys(MARKS, on_disk["jsonl"]), on_disk
    assert on_disk["jsonl"][: len(logged)] == logged  # the child may log one more after its progress line
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f.read().splitlines()]
    values = [row["train/loss"] for row in rows if "train/loss" in row]
    np.testing.assert_allclose(values, [kill_values(s)["train/loss"] for s in on_disk["jsonl"]], rtol=1e-5)


def test_sigterm_writes_every_record_then_ends_the_process_by_sigterm(tmp_path) -> None:
    status, took, logged, run_dir = _terminated("term", tmp_path)
    assert status == -signal.SIGTERM
    assert took < _writer.CLOSE_TIMEOUT + MARGIN
    _assert_every_logged_step_on_disk(run_dir, logged)


def test_sigterm_with_a_blocked_sink_ends_within_close_timeout_with_every_file_written(tmp_path) -> None:
    status, took, logged, run_dir = _terminated("blocked", tmp_path)
    assert status == -signal.SIGTERM
    assert _writer.CLOSE_TIMEOUT - 0.5 < took < _writer.CLOSE_TIMEOUT + MARGIN, took
    _assert_every_logged_step_on_disk(run_dir, logged)


def _unshare_reason() -> str | None:
    if shutil.which("unshare") is None:
        return "the unshare tool (util-linux) is not installed"
    if os.geteuid() != 0:
        return f"a new PID namespace (unshare --pid --fork) needs root; this test runs as uid {os.geteuid()}"
    probe = subprocess.run(["unshare", "--pid", "--fork", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"unshare --pid --fork is refused in this container: {probe.stderr.strip()}"
    return None


@pytest.mark.skipif(_unshare_reason() is not None, reason=str(_unshare_reason()))
def test_sigterm_to_pid_1_writes_every_record_then_exits_with_status_143(tmp_path) -> None:
    status, took, logged, run_dir = _terminated(
        "term", tmp_path, prefix=["unshare", "--pid", "--fork", "--kill-child"], in_namespace=True
    )
    assert status == 143  # 128 + SIGTERM: what docker stop expects, where the default action is ignored
    assert took < _writer.CLOSE_TIMEOUT + MARGIN
    _assert_every_logged_step_on_disk(run_dir, logged)


# -- symlinks planted in the run never redirect a write (item 21) ------------------------------


def test_a_symlink_planted_at_a_temporary_name_is_never_followed(tmp_path) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    run_dir = write_steps(tmp_path, "r", range(50))
    for name in (".dualwatch-resume.tmp", ".metrics.jsonl.tmp", ".projector_config.pbtxt.tmp"):
        os.symlink(target, os.path.join(run_dir, name))
    write_steps(tmp_path, "r", range(20, 25), resume=20)
    notes = tmp_path / "r" / "notes.txt"
    atomic_write(notes, lambda tmp: notes.with_name(os.path.basename(tmp)).write_text("new"))
    assert target.read_text() == "keep me"
    assert notes.read_text() == "new"
    assert steps_by_format(run_dir, "train/loss") == every_format(25)


def test_a_log_file_replaced_by_a_symlink_is_refused_and_its_target_stays_unchanged(tmp_path) -> None:
    run_dir = write_steps(tmp_path, "r", range(50))
    jsonl = os.path.join(run_dir, "metrics.jsonl")
    target = tmp_path / "elsewhere.jsonl"
    shutil.move(jsonl, target)
    before = target.read_bytes()
    os.symlink(target, jsonl)
    with dualwatch_warnings() as caught:
        write_steps(tmp_path, "r", range(20, 25), resume=20)
    assert target.read_bytes() == before
    assert len(caught) == 1 and "JSON lines file" in caught[0] and "Switched off" in caught[0], caught
    kept = steps_by_format(run_dir, "train/loss")
    assert kept["visualdl"] == kept["tensorboard"] == list(range(25))


def test_a_projector_file_that_resolves_outside_the_run_is_refused(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    w = Writer(tmp_path, run="r", formats=["tensorboard"])
    os.symlink(outside, os.path.join(w.run_dir, "00000"))  # where the step-0 embedding's files go
    with dualwatch_warnings() as caught:
        w.add_embedding(np.eye(3), metadata=["a", "b", "c"], global_step=0, tag="points")
        w.add_scalar("train/loss", 1.0, 0)
        w.close()
    assert os.listdir(outside) == []
    assert len(caught) == 1 and "resolves outside the run directory" in caught[0], caught
    assert steps_by_format(w.run_dir, "train/loss")["tensorboard"] == [0]
