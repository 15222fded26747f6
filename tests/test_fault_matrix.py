"""The fault matrix: a real training loop under each fault users hit, in torch and in paddle.

Each test runs ``_fault_child.py`` (a tiny model trained with SGD, a ``Watcher`` checking every
few steps, ``train/loss`` logged at every step) in a child process under one fault, and proves:

* training went on to its last step, or the process ended as asked, with the expected status;
* every step the child reported logged long enough ago is in every file that was not the
  faulted one, once, with the framework's own value: all of them when the process closed its
  writer or was stopped by SIGTERM/SIGINT (both write what is queued), and after a SIGKILL those
  older than the visibility bound, ``max_latency`` plus :data:`GRACE` for a busy machine;
* VisualDL's ``LogReader`` and TensorBoard's ``EventAccumulator`` read every file without error.

The parent learns what was logged from the child's stdout (a JSON line per step, written before
the next step starts) and waits on those lines, never on a guessed delay. Faults of one sink or
one call in-process are in ``test_writer_faults.py``; here they meet a whole training run.
"""

from __future__ import annotations

import errno
import functools
import glob
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, NoReturn

import pytest

import dualwatch
from dualwatch._formats import formats_by_name

pytestmark = pytest.mark.skipif(os.name != "posix", reason="signals, RLIMIT_FSIZE and file locks are POSIX")

HERE = os.path.dirname(os.path.abspath(__file__))
CHILD = os.path.join(HERE, "_fault_child.py")
REPO = os.path.dirname(HERE)
FORMATS = ("visualdl", "tensorboard", "jsonl")
FILE_MARKS = {"visualdl": "vdlrecords", "tensorboard": "tfevents", "jsonl": "metrics.jsonl"}
SINK_LABELS = {"visualdl": "VisualDL", "tensorboard": "TensorBoard", "jsonl": "JSON lines"}
LOSS_TAG = "train/loss"
NORM_TAG = "train/gradient/total_norm"
STEPS = 30
MAX_LATENCY = 0.2  # the child's visibility bound: short runs, the same guarantee as the default 2 s
GRACE = 2.0  # seconds a busy machine may add to max_latency before a record must be on disk
CLOSE_TIMEOUT = 5.0  # the documented shutdown bound (dualwatch._writer.CLOSE_TIMEOUT)
EXIT_MARGIN = 5.0  # seconds a busy machine may add to CLOSE_TIMEOUT before the process has exited
START_TIMEOUT = 90.0  # importing a framework on a machine shared with other jobs


# -- the child process ----------------------------------------------------------------------


class Child:
    """One run of ``_fault_child.py``; its stdout lines arrive in :attr:`lines` as they are written."""

    def __init__(self, settings: dict[str, Any], prefix: tuple[str, ...] = ()) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH")) if p)
        self.settings = settings
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, CHILD, json.dumps(settings)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )
        self.lines: list[dict[str, Any]] = []
        self.stderr = b""
        self._changed = threading.Condition()
        self._ended = False
        self._readers = [
            threading.Thread(target=self._read_stdout, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read_stdout(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(json.loads(raw))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self.stderr = self.proc.stderr.read()

    def fail(self, why: str) -> NoReturn:
        tail = self.stderr.decode(errors="replace")[-3000:]
        pytest.fail(
            f"{why}\nchild status: {self.proc.poll()}\nlast lines: {self.lines[-3:]}\nstderr:\n{tail}"
        )

    def wait_for(
        self, what: str, found: Callable[[dict[str, Any]], bool], timeout: float = START_TIMEOUT
    ) -> dict:
        """The first line for which ``found`` is true, waiting for it as long as ``timeout``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                line = next((line for line in self.lines if found(line)), None)
                if line is not None:
                    return line
                left = deadline - time.monotonic()
                if self._ended or left <= 0:
                    break
                self._changed.wait(left)
        self.fail(
            f"the child {'ended' if self._ended else f'wrote no line within {timeout:g} s'} before {what}"
        )

    def event(self, name: str, timeout: float = START_TIMEOUT) -> dict[str, Any]:
        return self.wait_for(f"the {name!r} line", lambda line: line.get("event") == name, timeout)

    def step_at_least(self, step: int) -> dict[str, Any]:
        return self.wait_for(f"step {step}", lambda line: line.get("step", -1) >= step)

    def tell(self) -> None:
        """Ends the child's wait at ``pause_at`` or ``hold``."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.flush()

    def end(self, timeout: float = START_TIMEOUT, why: str = "later") -> int:
        """The exit status once the process has ended (its last lines read); fails after ``timeout``."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = None
            self.kill()
        for reader in self._readers:
            reader.join(10)
        if status is None:
            self.fail(f"the child was still running {timeout:g} s {why}")
        return status

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        """Kills the process if it still runs and closes its pipes."""
        self.kill()
        for reader in self._readers:
            reader.join(10)
        for pipe in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [line for line in self.lines if "step" in line]

    @property
    def warnings(self) -> list[str]:
        return [line["warning"] for line in self.lines if "warning" in line]


@pytest.fixture
def spawn(tmp_path, framework: str):
    """Starts children of this test's framework writing ``<tmp>/runs/r``; kills any left running."""
    children: list[Child] = []

    def start(prefix: tuple[str, ...] = (), **settings: Any) -> Child:
        base = {
            "framework": framework,
            "logdir": str(tmp_path / "runs"),
            "run": "r",
            "max_latency": MAX_LATENCY,
        }
        children.append(Child({**base, **settings}, prefix))
        return children[-1]

    yield start
    for child in children:
        child.stop()


def run_dir_of(child: Child) -> str:
    return os.path.join(child.settings["logdir"], child.settings["run"])


def stopped_by(child: Child, signum: int, t_sent: float, bound: float, status: int | None = None) -> None:
    """Asserts the child ended within ``bound`` seconds of ``signum`` with ``status`` (default: the
    signal's own, as the shell shows ``128 + signum``)."""
    expected = -signum if status is None else status
    got = child.end(bound, why=f"after {signal.Signals(signum).name}")
    took = time.time() - t_sent
    assert got == expected, f"exit status {got}, expected {expected}; stderr: {child.stderr[-2000:]!r}"
    assert took <= bound, f"ended {took:.1f} s after {signal.Signals(signum).name}, bound {bound:g} s"


# -- what the viewers read -------------------------------------------------------------------


def read_run(run_dir: str) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """Every scalar of the run, ``{format: {tag: [(step, value)]}}``, as each viewer reads it.

    VisualDL's ``LogReader`` reads every VisualDL file (the newest is the one VisualDL shows),
    TensorBoard's ``EventAccumulator`` the run directory, ``json`` every line of
    ``metrics.jsonl``; any error reading fails the test."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from visualdl import LogReader

    scalars: dict[str, dict[str, list[tuple[int, float]]]] = {name: {} for name in FORMATS}
    for path in sorted(glob.glob(os.path.join(run_dir, "*vdlrecords*"))):
        reader = LogReader(file_path=path)
        scalars["visualdl"] = {
            tag: [(v.id, v.value) for v in reader.get_data("scalar", tag)]
            for tag in reader.get_tags().get("scalar", [])
        }
    accumulator = ea.EventAccumulator(run_dir, size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
    accumulator.Reload()
    scalars["tensorboard"] = {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }
    jsonl = os.path.join(run_dir, "metrics.jsonl")
    if os.path.exists(jsonl):
        with open(jsonl, encoding="utf-8") as f:
            text = f.read()
        assert text == "" or text.endswith("\n"), "metrics.jsonl ends in half a line"
        for line in map(json.loads, text.splitlines()):
            for tag, value in line.items():
                if tag not in ("step", "wall_time"):
                    # float() reads the non-finite values' strings, "NaN", "Infinity", "-Infinity"
                    scalars["jsonl"].setdefault(tag, []).append((line["step"], float(value)))
    return scalars


def same(a: float, b: float) -> bool:
    """Equal to 1e-5 relative (both viewers store float32); NaN equals NaN, inf equals inf."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-5)


def assert_logged(
    scalars: dict[str, dict[str, list[tuple[int, float]]]],
    required: list[dict[str, Any]],
    formats: tuple[str, ...] = FORMATS,
    last_possible: int | None = None,
) -> None:
    """Every step of ``required`` is in each of ``formats`` once, with the loss the framework computed.

    Steps beyond ``required`` may be there (logged, not yet reported, when the process was
    stopped) up to ``last_possible``."""
    expected = {line["step"]: line["loss"] for line in required}
    last = max(expected, default=-1) if last_possible is None else last_possible
    for name in formats:
        got = scalars[name].get(LOSS_TAG, [])
        steps = [step for step, _ in got]
        assert len(set(steps)) == len(steps), f"{name}: a step is shown twice: {steps}"
        missing = sorted(set(expected) - set(steps))
        assert not missing, f"{name} lacks steps {missing} of {sorted(expected)}"
        assert max(steps, default=-1) <= last, f"{name} has steps never logged: {steps}"
        wrong = [
            (step, value, expected[step])
            for step, value in got
            if step in expected and not same(value, expected[step])
        ]
        assert not wrong, f"{name}: (step, read, logged) differ: {wrong}"


def ends_on_a_whole_record(path: str, name: str) -> bool:
    """The file's last record is whole (by the format's own framing: VisualDL's reader does not say)."""
    with open(path, "rb") as f:
        data = f.read()
    frames = formats_by_name()[name]().scan(data)
    return bool(frames) and frames[-1].end == len(data)


def failed_files(warnings: list[str]) -> list[str]:
    """The formats whose file a warning says failed (``<label> file <path> (<error>)``)."""
    return [
        name for name in FORMATS if any(re.search(rf"{SINK_LABELS[name]} file \S+ \(", w) for w in warnings)
    ]


def log_files(run_dir: str) -> dict[str, list[str]]:
    return {name: sorted(glob.glob(os.path.join(run_dir, f"*{mark}*"))) for name, mark in FILE_MARKS.items()}


def visible_after(run_dir: str, steps: list[dict[str, Any]], within: float) -> None:
    """Waits until every step of ``steps`` is in every file; fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        try:
            assert_logged(read_run(run_dir), steps)
            return
        except AssertionError as err:
            if time.monotonic() > deadline:
                raise AssertionError(f"not in every file within {within:g} s: {err}") from None
        time.sleep(0.05)


# -- root's ways to make a fault --------------------------------------------------------------


@functools.cache
def cannot(command: tuple[str, ...]) -> str | None:
    """Why ``command`` (a probe of what a fault needs) cannot run here; None when it can."""
    if shutil.which(command[0]) is None:
        return f"{command[0]} is not installed"
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        return f"{' '.join(command)} failed here (exit {done.returncode}): {done.stderr.strip()[-300:]}"
    return None


PID_NAMESPACE = ("unshare", "--pid", "--fork", "--kill-child")
MOUNT_NAMESPACE = ("unshare", "--mount", "--propagation", "private")
READ_ONLY_PROBE = (
    *MOUNT_NAMESPACE,
    "sh",
    "-ec",
    'd=$(mktemp -d); mount --bind "$d" "$d"; mount -o remount,ro,bind "$d"; umount "$d"; rmdir "$d"',
)


# -- a sink that raises -----------------------------------------------------------------------


def test_a_sink_that_raises_is_switched_off_with_one_warning_and_training_and_the_files_go_on(spawn) -> None:
    child = spawn(sink="raise", steps=STEPS)
    assert child.end() == 0
    closed = child.event("closed")
    assert [line["step"] for line in child.steps] == list(range(STEPS))
    assert len(child.warnings) == 1, child.warnings
    assert "raising sink (ConnectionError: the tracker's server refused the batch)" in child.warnings[0]
    assert "Switched off" in child.warnings[0]
    assert closed["tracker"] == list(range(STEPS))
    assert_logged(read_run(run_dir_of(child)), child.steps)


# -- a sink that blocks -----------------------------------------------------------------------


def test_a_blocked_sink_starves_no_file_and_close_returns_within_the_shutdown_bound(spawn) -> None:
    """A tracker whose server never answers must cost neither the files nor more than the bound at close."""
    child = spawn(sink="block", steps=STEPS, hold=True)
    child.event("trained")
    # the sink is stuck since the first batch; every file still gets every record within the bound
    visible_after(run_dir_of(child), child.steps, MAX_LATENCY + GRACE)
    child.tell()
    closed = child.event("closed", CLOSE_TIMEOUT + EXIT_MARGIN)
    assert closed["close_s"] <= CLOSE_TIMEOUT + EXIT_MARGIN, closed
    assert child.end(EXIT_MARGIN) == 0
    assert len(child.warnings) == 1 and "blocking sink" in child.warnings[0], child.warnings
    assert closed["tracker"] == list(range(STEPS))  # the sink beside the stuck one got everything
    assert_logged(read_run(run_dir_of(child)), child.steps)


# -- a file-size limit ------------------------------------------------------------------------

FSIZE = 21_000  # between the TensorBoard file (~17 KB) and the VisualDL and JSON-lines files (~25 KB)
RECORD_MAX = 4096  # no record of this run is this big: a file cut record by record ends closer


def test_a_file_size_limit_keeps_what_fits_record_by_record_and_the_smaller_files_whole(spawn) -> None:
    """A file that meets ``RLIMIT_FSIZE`` keeps every whole record that fits (not 0 bytes because
    the batch did not fit); the files under the limit keep everything."""
    # max_latency 2 s (the default): the whole run is one or two batches, as in a long step
    child = spawn(fsize=FSIZE, steps=STEPS, max_latency=2.0)
    assert child.end() == 0
    assert [line["step"] for line in child.steps] == list(range(STEPS))
    run_dir = run_dir_of(child)
    scalars = read_run(run_dir)
    hit = failed_files(child.warnings)
    assert hit and len(hit) < len(FORMATS), (hit, child.warnings)  # the limit is between the files' sizes
    assert all(f"[Errno {errno.EFBIG}] File too large" in w for w in child.warnings), child.warnings
    assert_logged(scalars, child.steps, tuple(name for name in FORMATS if name not in hit))
    for name in hit:
        (path,) = log_files(run_dir)[name]
        size = os.path.getsize(path)
        assert FSIZE - RECORD_MAX < size <= FSIZE, f"{name}: {size} bytes under a {FSIZE}-byte limit"
        assert ends_on_a_whole_record(path, name), name
        steps = [step for step, _ in scalars[name][LOSS_TAG]]
        assert steps == list(range(len(steps))) and 0 < len(steps) < STEPS, (name, steps)
        assert_logged(scalars, child.steps[: len(steps)], (name,))


# -- the run directory deleted ----------------------------------------------------------------


def test_a_run_directory_deleted_mid_run_warns_once_per_file_and_training_goes_on(spawn) -> None:
    child = spawn(rmtree_at=10, steps=STEPS)
    assert child.end() == 0
    closed = child.event("closed")
    assert [line["step"] for line in child.steps] == list(range(STEPS))
    text = " ".join(child.warnings)
    assert 1 <= len(child.warnings) <= len(FORMATS), child.warnings  # no warning per batch
    assert text.count("was deleted (was the run directory removed?)") == len(FORMATS), child.warnings
    assert not os.path.exists(run_dir_of(child))  # nothing re-created it
    assert closed["tracker"] == list(range(STEPS))  # the sink beside the files got everything


# -- the run directory made read-only ---------------------------------------------------------


def test_a_run_directory_made_read_only_mid_run_loses_no_record(spawn) -> None:
    """Root ignores permission bits, so the directory is bind-mounted read-only over itself, in a
    mount namespace of the child's own. Files open stay writable, as on any read-only directory;
    what the writer would create there later (and close()) must not stop training."""
    why = cannot(READ_ONLY_PROBE)
    if why:
        pytest.skip(f"no read-only bind mount in a private mount namespace: {why}")
    child = spawn(MOUNT_NAMESPACE, readonly_at=10, steps=STEPS)
    assert child.end() == 0
    assert child.event("readonly")["errno"] == errno.EROFS
    assert [line["step"] for line in child.steps] == list(range(STEPS))
    closed = child.event("closed")
    assert closed["tracker"] == list(range(STEPS))
    hit = failed_files(child.warnings)
    assert_logged(
        read_run(run_dir_of(child)), child.steps, tuple(name for name in FORMATS if name not in hit)
    )


# -- signals ----------------------------------------------------------------------------------


def test_sigterm_writes_every_logged_step_then_ends_the_process_as_sigterm(spawn) -> None:
    child = spawn(steps=None, max_latency=60.0)  # nothing reaches disk unless SIGTERM writes it
    child.step_at_least(8)
    t_sent = time.time()
    child.proc.send_signal(signal.SIGTERM)
    stopped_by(child, signal.SIGTERM, t_sent, CLOSE_TIMEOUT + EXIT_MARGIN)
    steps = child.steps
    assert_logged(read_run(run_dir_of(child)), steps, last_possible=steps[-1]["step"] + 1)


def test_sigterm_with_a_blocked_sink_ends_within_the_shutdown_bound_with_every_step_in_every_file(
    spawn,
) -> None:
    child = spawn(steps=None, sink="block")
    child.step_at_least(8)
    t_sent = time.time()
    child.proc.send_signal(signal.SIGTERM)
    stopped_by(child, signal.SIGTERM, t_sent, CLOSE_TIMEOUT + EXIT_MARGIN)
    steps = child.steps
    assert_logged(read_run(run_dir_of(child)), steps, last_possible=steps[-1]["step"] + 1)


def test_sigint_raises_keyboard_interrupt_and_exit_writes_every_logged_step(spawn) -> None:
    child = spawn(steps=None, max_latency=60.0)  # nothing reaches disk unless exit writes it
    child.step_at_least(8)
    t_sent = time.time()
    child.proc.send_signal(signal.SIGINT)
    stopped_by(child, signal.SIGINT, t_sent, CLOSE_TIMEOUT + EXIT_MARGIN)
    assert b"KeyboardInterrupt" in child.stderr
    steps = child.steps
    assert_logged(read_run(run_dir_of(child)), steps, last_possible=steps[-1]["step"] + 1)


def test_after_sigkill_the_visible_steps_survive_and_resume_continues_with_no_step_twice(spawn) -> None:
    """SIGKILL writes nothing more: what was older than the visibility bound is on disk, readable,
    and a new process resuming from a checkpoint continues the curves (the OS released the run lock)."""
    first = spawn(steps=None)
    started = first.step_at_least(0)["t"]
    first.wait_for("a step old enough", lambda line: line.get("t", 0) > started + MAX_LATENCY + GRACE + 0.5)
    t_kill = time.time()
    first.proc.kill()
    assert first.end() == -signal.SIGKILL
    visible = [line for line in first.steps if line["t"] <= t_kill - MAX_LATENCY - GRACE]
    run_dir = run_dir_of(first)
    assert_logged(read_run(run_dir), visible, last_possible=first.steps[-1]["step"] + 1)

    # a new process resumes from the last visible step's checkpoint: later records are dropped
    checkpoint = len(visible)
    second = spawn(resume=True, start=checkpoint, steps=10)
    assert second.end() == 0, second.stderr
    assert second.warnings == []
    scalars = read_run(run_dir)
    assert_logged(scalars, visible + second.steps)
    assert all(len(paths) == 1 for name, paths in log_files(run_dir).items() if name != "tensorboard")


def test_a_second_writer_on_a_live_run_raises_run_in_use_and_the_first_goes_on(spawn) -> None:
    """Opening a run another process writes (resume=True, or log_dir= of a live run) would cut or
    interleave its files: it raises before touching them, naming the holder and the fix."""
    from dualwatch import RunInUseError

    child = spawn(steps=STEPS, pause_at=10)
    ready = child.event("ready")
    child.event("paused")
    run_dir = run_dir_of(child)
    visible_after(run_dir, child.steps, MAX_LATENCY + GRACE)  # the first writer has nothing left to write
    before = {path: os.path.getsize(path) for paths in log_files(run_dir).values() for path in paths}
    for second in (
        lambda: dualwatch.Writer(child.settings["logdir"], run="r", resume=True),
        lambda: dualwatch.Writer(log_dir=run_dir),
    ):
        try:
            opened = second()
        except RunInUseError as err:
            message = str(err)
        else:
            opened.close()
            pytest.fail("a second writer opened the run another process is writing")
        assert str(ready["pid"]) in message and ready["host"] in message, message
        assert "run=" in message, message  # the fix is named
    after = {path: os.path.getsize(path) for paths in log_files(run_dir).values() for path in paths}
    assert after == before  # the second writers created, cut or wiped nothing
    child.tell()
    assert child.end() == 0
    assert [line["step"] for line in child.steps] == list(range(STEPS))
    assert child.warnings == []
    assert_logged(read_run(run_dir), child.steps)


# -- NaN and Inf gradients --------------------------------------------------------------------


def test_nan_and_inf_gradients_are_logged_as_the_framework_computed_them_and_training_goes_on(spawn) -> None:
    """Non-finite values are data, not faults of the writer: every file keeps them as they were,
    the Watcher's norm matches the framework's own, and the loop (skipping those updates) goes on."""
    child = spawn(steps=STEPS, nonfinite={"6": "nan", "12": "inf"})
    assert child.end() == 0
    steps = child.steps
    assert [line["step"] for line in steps] == list(range(STEPS))
    assert math.isnan(steps[6]["loss"]) and math.isinf(steps[12]["loss"])
    assert all(math.isfinite(line["loss"]) for line in steps if line["step"] not in (6, 12))
    scalars = read_run(run_dir_of(child))
    assert_logged(scalars, steps)
    norms = {line["step"]: line["grad_norm"] for line in steps if line["grad_norm"] is not None}
    assert not math.isfinite(norms[6]) and not math.isfinite(norms[12])
    for name in FORMATS:
        got = dict(scalars[name][NORM_TAG])
        assert sorted(got) == sorted(norms), name
        assert all(same(got[step], norms[step]) for step in norms), (name, got, norms)
    assert child.warnings and all("gradients are" in w for w in child.warnings), child.warnings


# -- as PID 1 ---------------------------------------------------------------------------------


def test_as_pid_1_sigterm_writes_every_logged_step_and_exits_143(spawn) -> None:
    """PID 1 of a container ignores a signal's default action: the writer must exit by itself."""
    why = cannot((*PID_NAMESPACE, "true"))
    if why:
        pytest.skip(f"no new PID namespace for the child: {why}")
    child = spawn(PID_NAMESPACE, steps=None, max_latency=60.0)
    ready = child.event("ready")
    assert ready["pid"] == 1
    child.step_at_least(8)
    t_sent = time.time()
    os.kill(ready["host_pid"], signal.SIGTERM)
    # unshare exits with its child's status
    stopped_by(child, signal.SIGTERM, t_sent, CLOSE_TIMEOUT + EXIT_MARGIN, status=143)
    steps = child.steps
    assert_logged(read_run(run_dir_of(child)), steps, last_possible=steps[-1]["step"] + 1)
