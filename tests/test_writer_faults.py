"""Faults never reach the training loop: one warning per fault, the other sinks go on, files stay whole.

Every fault is real: a sink that raises, a run directory removed under a live writer, a
directory the process may not write, a file-size limit (``RLIMIT_FSIZE``), a stalled sink
that fills the queue. Files are read back with VisualDL's ``LogReader``, TensorBoard's
``EventFileLoader`` and ``json``.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from typing import Any, Iterator, Sequence

import numpy as np
import pytest
from conftest import build_model, clear_grads, set_grads

import dualwatch
from dualwatch._formats import formats_by_name
from dualwatch._writer import DROPPED_TAG, Writer
from dualwatch.records import Record, Scalars

MARKS = {"visualdl": "vdlrecords", "tensorboard": "tfevents", "jsonl": "metrics.jsonl"}
SINK_NAMES = {"visualdl": "VisualDL", "tensorboard": "TensorBoard", "jsonl": "JSON lines"}
KNOWN_FORMATS = r"\['jsonl', 'tensorboard', 'visualdl'\]"


class Tracker:
    """A sink beside the files (as one forwarding to another tracker would be): keeps what it gets."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.closed = False

    def __repr__(self) -> str:
        return "tracker"

    def write(self, records: Sequence[Record]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        self.closed = True

    def steps(self, tag: str) -> list[int]:
        return [r.step for r in self.records if isinstance(r, Scalars) and tag in r.values]


class FullDiskSink:
    """A sink whose every write fails as on a full disk."""

    def __init__(self) -> None:
        self.writes = 0

    def __repr__(self) -> str:
        return "full-disk sink"

    def write(self, records: Sequence[Record]) -> None:
        self.writes += 1
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def close(self) -> None:
        pass


@contextlib.contextmanager
def dualwatch_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """Every warning dualwatch gives inside the block, from any thread (filled in on exit)."""
    ours: list[warnings.WarningMessage] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield ours
    ours.extend(w for w in caught if str(w.message).startswith("dualwatch: "))


def log_file(run_dir: str, name: str) -> str:
    paths = glob.glob(os.path.join(run_dir, f"*{MARKS[name]}*"))
    assert len(paths) == 1, paths
    return paths[0]


def steps_in_file(path: str, name: str, tag: str) -> list[int]:
    """The steps of scalar ``tag`` as each viewer's own reader sees them (every record parses)."""
    if name == "visualdl":
        from visualdl import LogReader

        return [value.id for value in LogReader(file_path=path).get_data("scalar", tag)]
    if name == "tensorboard":
        from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

        return [e.step for e in EventFileLoader(path).Load() for v in e.summary.value if v.tag == tag]
    with open(path, encoding="utf-8") as f:
        lines = [json.loads(line) for line in f.read().splitlines()]
    return [line["step"] for line in lines if tag in line]


def last_values(run_dir: str, tag: str) -> dict[str, float]:
    """The last value of scalar ``tag`` in each of the three files."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.util import tensor_util
    from visualdl import LogReader

    vdl = LogReader(file_path=log_file(run_dir, "visualdl")).get_data("scalar", tag)
    tb = [
        float(tensor_util.make_ndarray(v.tensor))
        for e in EventFileLoader(log_file(run_dir, "tensorboard")).Load()
        for v in e.summary.value
        if v.tag == tag
    ]
    with open(log_file(run_dir, "jsonl"), encoding="utf-8") as f:
        jsonl = [line[tag] for line in map(json.loads, f.read().splitlines()) if tag in line]
    return {"visualdl": vdl[-1].value, "tensorboard": tb[-1], "jsonl": jsonl[-1]}


def read_bytes(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def ends_on_a_whole_record(path: str, name: str) -> bool:
    data = read_bytes(path)
    frames = formats_by_name()[name]().scan(data)
    return bool(frames) and frames[-1].end == len(data)


# -- a sink that raises ----------------------------------------------------------------------


def test_a_sink_that_raises_is_switched_off_with_one_warning_and_the_files_stay_complete(tmp_path) -> None:
    full, tracker = FullDiskSink(), Tracker()
    with dualwatch_warnings() as caught:
        w = Writer(tmp_path, run="r", sinks=[full, tracker], max_latency=60)
        for step in range(12):
            assert w.log(step, {"train/loss": 1.0 / (step + 1)}) is None
            if step % 3 == 2:
                w.flush()
        w.close()
    assert len(caught) == 1, [str(c.message) for c in caught]
    assert caught[0].category is RuntimeWarning
    assert re.search(
        r"failed to write: full-disk sink \(OSError: \[Errno 28\] No space left on device\)\. Switched off",
        str(caught[0].message),
    )
    assert full.writes == 1  # switched off at its first failure, never called again
    assert w.stats()["failed"] == ["full-disk sink (OSError: [Errno 28] No space left on device)"]
    for name in MARKS:
        assert steps_in_file(log_file(w.run_dir, name), name, "train/loss") == list(range(12)), name
    assert tracker.steps("train/loss") == list(range(12)) and tracker.closed


# -- the run directory removed under a live writer -------------------------------------------


def test_a_run_directory_removed_mid_run_warns_once_and_the_other_sinks_go_on(tmp_path) -> None:
    tracker = Tracker()
    with dualwatch_warnings() as caught:
        w = Writer(tmp_path, run="r", sinks=[tracker], max_latency=60)
        for step in range(10):
            assert w.add_scalar("train/loss", 0.1 * step, step) is None
            if step == 4:
                w.flush()  # the files are open and hold steps 0-4
                shutil.rmtree(w.run_dir)
            if step >= 4:
                w.flush()  # every later batch meets the removed directory
        w.close()
    assert len(caught) == 1, [str(c.message) for c in caught]
    message = str(caught[0].message)
    # the three files failed on the same batch: one warning names them all
    assert message.count("was deleted (was the run directory removed?)") == 3, message
    assert message.endswith("Switched off; tracker goes on, and so does training.")
    assert len(w.stats()["failed"]) == 3
    assert not os.path.exists(w.run_dir)  # nothing re-created it
    assert tracker.steps("train/loss") == list(range(10)) and tracker.closed


SEED_WEIGHTS = {"backbone.0.weight": np.ones((4, 3)), "head.weight": np.ones(4)}


def test_a_watcher_whose_run_directory_is_removed_keeps_training(
    framework: str, tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    model = build_model(framework, SEED_WEIGHTS)
    grads = {name: np.full(a.shape, 0.1) for name, a in SEED_WEIGHTS.items()}
    with dualwatch_warnings() as caught:
        w = dualwatch.Watcher(model, every=1, logdir=tmp_path, run="r", console=True)
        for step in range(6):
            clear_grads(framework, model)
            set_grads(framework, model, grads)
            assert w.step(step)["train/gradient/total_norm"] > 0
            w.log_training(step, loss=1.0 / (step + 1))
            if step == 2:
                w.writer.flush()
                shutil.rmtree(w.run_dir)
        w.close()
    assert len(caught) == 1, [str(c.message) for c in caught]
    assert "was deleted (was the run directory removed?)" in str(caught[0].message)
    assert str(caught[0].message).endswith("Switched off; training goes on.")
    out = "\n".join(caplog.messages)
    assert all(f"Model Monitor - Step {step}\n" in out for step in range(6))


# -- a directory the process may not write ---------------------------------------------------

_READ_ONLY_SCRIPT = r"""
import io, json, os, sys, warnings
from dualwatch import Writer
from dualwatch._formats import formats_by_name
from dualwatch.sinks import ConsoleSink

formats_by_name()
if os.geteuid() == 0:  # root writes through permission bits: become nobody
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


class Tracker:
    def __init__(self):
        self.steps = []

    def write(self, records):
        self.steps += [r.step for r in records if "train/loss" in getattr(r, "values", {})]

    def close(self):
        pass


console, tracker = io.StringIO(), Tracker()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    w = Writer("runs", console=ConsoleSink("Model Monitor", stream=console), sinks=[tracker])
    for step in range(5):
        w.log(step, {"train/loss": 1.0 / (step + 1)}, echo=True)
    w.flush()
    w.close()
print(json.dumps({
    "uid": os.geteuid(),
    "run_dir": w.run_dir,
    "warnings": [str(c.message) for c in caught if str(c.message).startswith("dualwatch: ")],
    "console": console.getvalue(),
    "tracker": tracker.steps,
}))
"""


def test_a_read_only_logdir_warns_once_and_the_console_and_sinks_still_get_records(tmp_path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    runs.chmod(0o555)
    tmp_path.chmod(0o755)  # nobody may look up "runs" in the working directory
    try:
        done = subprocess.run(
            [sys.executable, "-c", _READ_ONLY_SCRIPT],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        runs.chmod(0o755)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    if os.geteuid() == 0:
        assert result["uid"] == 65534
    assert result["run_dir"] is None
    assert len(result["warnings"]) == 1, result["warnings"]
    assert re.fullmatch(
        r"dualwatch: cannot create a run directory in 'runs' \(\[Errno 13\] Permission denied: .*\); "
        r"nothing is written to files, training goes on",
        result["warnings"][0],
    )
    assert all(f"Model Monitor - Step {step}\n" in result["console"] for step in range(5))
    assert result["tracker"] == list(range(5))  # sinks= are fed without a run directory
    assert os.listdir(runs) == []


# -- a file-size limit -----------------------------------------------------------------------

LIMIT_STEPS = 40

_SIZE_LIMIT_SCRIPT = r"""
import glob, json, os, resource, sys, warnings
import numpy as np
from dualwatch import Writer

MARKS = {"visualdl": "vdlrecords", "tensorboard": "tfevents", "jsonl": "metrics.jsonl"}
ALL = ("visualdl", "tensorboard", "jsonl")


def scalars(w, step):  # VisualDL's one record per value makes its file the biggest
    w.log(step, {f"train/metric_{i:02d}": 1.0 for i in range(20)})


def histograms(w, step):  # counts and edges as JSON text make metrics.jsonl the biggest
    w.add_histogram("weights", np.random.default_rng(step).standard_normal(1000), step)
    w.add_scalar("train/metric_00", 0.5, step)


def images(w, step):  # metrics.jsonl holds no image: the event file is the biggest
    pixels = np.random.default_rng(step).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    w.add_image("sample", pixels, step)
    w.add_scalar("train/metric_00", 0.5, step)


CASES = {
    "visualdl": (scalars, ALL),
    "jsonl": (histograms, ALL),
    "tensorboard": (images, ("tensorboard", "jsonl")),
}


def write(run, workload, formats):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = Writer(sys.argv[1], run=run, formats=formats, max_latency=60)
        for step in range(int(sys.argv[2])):
            workload(w, step)
            w.flush()  # one batch per step: the limit is met between two steps' records
        w.close()
    messages = [str(c.message) for c in caught if str(c.message).startswith("dualwatch: ")]
    sizes = {f: os.path.getsize(glob.glob(os.path.join(w.run_dir, f"*{MARKS[f]}*"))[0]) for f in formats}
    return w.run_dir, messages, sizes


soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
results = {}
for name, (workload, formats) in CASES.items():
    _, _, unlimited = write(name + "-unlimited", workload, formats)
    second, biggest = sorted(unlimited.values())[-2:]
    limit = (second + biggest) // 2
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        run_dir, messages, sizes = write(name, workload, formats)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    results[name] = {"unlimited": unlimited, "limit": limit, "run_dir": run_dir, "warnings": messages}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def size_limited(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Each case written twice in one subprocess: unlimited, then with the biggest file's limit halfway."""
    logdir = tmp_path_factory.mktemp("limited")
    done = subprocess.run(
        [sys.executable, "-c", _SIZE_LIMIT_SCRIPT, str(logdir), str(LIMIT_STEPS)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("biggest", ["visualdl", "tensorboard", "jsonl"])
def test_a_file_size_limit_cuts_the_file_at_a_whole_record_and_the_others_keep_everything(
    size_limited: dict[str, Any], biggest: str
) -> None:
    case = size_limited[biggest]
    limit, unlimited = case["limit"], case["unlimited"]
    assert max(unlimited, key=unlimited.get) == biggest
    assert all(size < limit for name, size in unlimited.items() if name != biggest), case
    assert len(case["warnings"]) == 1, case["warnings"]
    message = case["warnings"][0]
    assert re.search(
        rf"failed to write: {SINK_NAMES[biggest]} file \S+ "
        rf"\(OSError: \[Errno {errno.EFBIG}\] File too large\)\. Switched off",
        message,
    )
    assert message.count("(OSError") == 1, message  # only the file that hit the limit is switched off
    for name in unlimited:
        path = log_file(case["run_dir"], name)
        steps = steps_in_file(path, name, "train/metric_00")
        assert ends_on_a_whole_record(path, name), name
        if name == biggest:
            assert os.path.getsize(path) <= limit
            assert 0 < len(steps) < LIMIT_STEPS and steps == list(range(len(steps))), steps
        else:
            assert steps == list(range(LIMIT_STEPS)), name


# -- a full queue ----------------------------------------------------------------------------


def test_a_full_queue_drops_and_counts_instead_of_blocking_training(tmp_path) -> None:
    tracker = Tracker()
    with dualwatch_warnings() as caught:
        w = Writer(tmp_path, run="r", sinks=[tracker], max_pending=100)
        deepest = 0
        with w._lock:  # the writer thread held up (as by a long batch of images): the queue fills
            for i in range(10_000):  # the loop ends while the writer thread is still held: nothing waited
                w.add_scalar("train/loss", float(i), i)
                deepest = max(deepest, w.stats()["queued"])
        w.close()
    stats = w.stats()
    assert deepest <= 100
    # the writer thread took at most one queue before it was held, and the queue held one more
    assert stats["dropped"] >= 10_000 - 2 * 100
    assert stats["written"] + stats["dropped"] == 10_000
    assert last_values(w.run_dir, DROPPED_TAG) == dict.fromkeys(MARKS, float(stats["dropped"]))
    assert tracker.steps(DROPPED_TAG) and tracker.steps("train/loss")
    messages = [str(c.message) for c in caught]
    assert len(messages) == 1 and "the log queue is full (max_pending=100)" in messages[0], messages


# -- the visibility bound --------------------------------------------------------------------


def test_a_logged_record_is_in_every_file_within_max_latency(tmp_path) -> None:
    """The bound is the point, so it stays a time bound, with slack for a loaded 2-core machine (a
    thread can wait a second or more for a core): a writer that wrote only at close or on a 10 s
    flush still fails. The wait itself goes on far longer, so a miss reports how late it was."""
    max_latency, slack = 0.5, 3.0
    w = Writer(tmp_path, run="r", max_latency=max_latency)
    try:
        start = time.perf_counter()
        w.add_scalar("visible/loss", 0.25, 7)
        latency = None
        while latency is None and time.perf_counter() - start < 60:
            time.sleep(0.005)
            paths = glob.glob(os.path.join(w.run_dir, "*"))
            if len(paths) == 3 and all(b"visible/loss" in read_bytes(p) for p in paths):
                latency = time.perf_counter() - start
        assert latency is not None, "not in every file after 60 s"
        print(f"a record reached all three files {latency * 1000:.0f} ms after add_scalar")
        assert latency < max_latency + slack, f"in every file only after {latency:.2f} s"
        for name in MARKS:  # readable by each viewer before close()
            assert steps_in_file(log_file(w.run_dir, name), name, "visible/loss") == [7], name
    finally:
        w.close()


# -- bad input raises before training --------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "error", "match"),
    [
        ({"formats": "visualdl"}, ValueError, rf"formats= takes a list of {KNOWN_FORMATS}, got 'visualdl'"),
        ({"formats": ["visualdl", "wandb"]}, ValueError, rf"{KNOWN_FORMATS}, got \['visualdl', 'wandb'\]"),
        ({"resume": "yes"}, TypeError, r"resume= is True, False or the step to resume from, got 'yes'"),
        ({"max_latency": 0}, ValueError, r"max_latency= \(flush_secs=\) must be > 0 seconds, got 0"),
    ],
    ids=["formats-as-str", "unknown-format", "resume-as-str", "zero-latency"],
)
def test_bad_writer_settings_raise_before_anything_is_written(
    tmp_path, settings: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        Writer(tmp_path, run="r", **settings)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda w: w.add_hparams({"lr": 0.1, "layers": [64, 64]}),
            TypeError,
            r"hparam 'layers' is a list; pass a bool, int, float or str \(for example str\(value\)\)",
        ),
        (
            lambda w: w.add_histogram("w", np.ones(4), 0, bins=0),
            ValueError,
            "bins= must be a positive int, a rule such as 'tensorflow' or the edges, got 0",
        ),
        (
            lambda w: w.add_image("img", np.zeros((2, 8, 8, 3)), 0),
            ValueError,
            r"an image in HWC layout has 3 dimensions, got shape \(2, 8, 8, 3\)",
        ),
        (
            lambda w: w.add_image("img", np.zeros((8, 8, 3)), 0, dataformats="NHWC"),
            ValueError,
            r"dataformats= is one of \('HWC', 'CHW', 'HW'\), got 'NHWC'",
        ),
    ],
    ids=["hparam-list", "zero-bins", "image-ndim", "image-dataformats"],
)
def test_bad_records_raise_at_the_call_and_queue_nothing(call, error: type[Exception], match: str) -> None:
    w = Writer(None)
    try:
        with pytest.raises(error, match=match):
            call(w)
        assert w.stats() == {"queued": 0, "written": 0, "dropped": 0, "backlog_dropped": {}, "failed": []}
    finally:
        w.close()
