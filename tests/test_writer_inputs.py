"""What a ``Writer`` call accepts is checked at the call; nothing bad reaches the writer thread.

A wrong argument raises there, naming the argument and the fix, before anything is queued or
created, so its neighbours are written as if it had never been made. The files are read back by
VisualDL's ``LogReader``, TensorBoard's ``EventAccumulator`` and a strict JSON parser.
"""

from __future__ import annotations

import glob
import os
import threading
import time
import warnings
from typing import Any, Callable

import numpy as np
import pytest
import torch
from conftest import _tb, read_metrics
from visualdl import LogReader

from dualwatch import Watcher, Writer
from dualwatch._formats import _codec
from dualwatch.compat import LogWriter, SummaryWriter

WALL = 1_700_000_000.0  # a wall time whose millisecond multiples are exact in float64
CLOSED = (
    r"this Writer is closed; {n} record\(s\) logged after close\(\) are dropped: log before close\(\) or "
    r"open the run again with resume=True"
)


def _scalars(run_dir: str, tag: str) -> dict[str, list[tuple[int, float]]]:
    """``(step, value)`` of ``tag`` as each viewer's own reader reads the run."""
    vdl_paths = glob.glob(os.path.join(run_dir, "vdlrecords*"))
    assert len(vdl_paths) == 1, os.listdir(run_dir)
    reader = LogReader(file_path=vdl_paths[0])
    vdl = (
        [(v.id, v.value) for v in reader.get_data("scalar", tag)]
        if tag in reader.get_tags()["scalar"]
        else []
    )
    accumulator = _tb(run_dir)
    tb = [(e.step, e.value) for e in accumulator.Scalars(tag)] if tag in accumulator.Tags()["scalars"] else []
    jsonl = [(o["step"], o[tag]) for o in read_metrics(run_dir) if "kind" not in o and tag in o]
    return {"visualdl": vdl, "tensorboard": tb, "jsonl": jsonl}


def _everywhere(points: list[tuple[int, float]]) -> dict[str, list[tuple[int, float]]]:
    return {"visualdl": points, "tensorboard": points, "jsonl": points}


def _file_bytes(run_dir: str) -> dict[str, bytes]:
    out = {}
    for path in sorted(glob.glob(os.path.join(run_dir, "*"))):
        with open(path, "rb") as f:
            out[os.path.basename(path)] = f.read()
    return out


# -- 1. walltime: checked at the call; a scalar that cannot be grouped costs only itself ----------


BAD_WALLTIMES = [
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    (-1.0, ValueError),
    (1e20, ValueError),
    ("now", TypeError),
    (True, TypeError),
]

#: every public call that takes a walltime, called with ``wall`` on writer ``w``
WALLTIME_CALLS: dict[str, Callable[[Writer, Any], None]] = {
    "add_scalar": lambda w, wall: w.add_scalar("b", 1.0, 1, walltime=wall),
    "log": lambda w, wall: w.log(1, {"b": 1.0}, walltime=wall),
    "add_scalars": lambda w, wall: w.add_scalars("b", {"x": 1.0}, 1, walltime=wall),
    "add_histogram": lambda w, wall: w.add_histogram("h", np.arange(5.0), 1, walltime=wall),
    "add_image": lambda w, wall: w.add_image("i", np.zeros((2, 2, 3)), 1, walltime=wall),
    "add_images": lambda w, wall: w.add_images("i", np.zeros((2, 3, 2, 2)), 1, walltime=wall),
    "add_text": lambda w, wall: w.add_text("t", "x", 1, walltime=wall),
    "add_hparams": lambda w, wall: w.add_hparams({"lr": 0.1}, ["b"], walltime=wall),
    "add_pr_curve": lambda w, wall: w.add_pr_curve(
        "p", np.array([0, 1]), np.array([0.2, 0.8]), 1, walltime=wall
    ),
    "add_roc_curve": lambda w, wall: w.add_roc_curve(
        "r", np.array([0, 1]), np.array([0.2, 0.8]), 1, walltime=wall
    ),
    "add_embeddings": lambda w, wall: w.add_embeddings(
        "e", mat=np.eye(2), metadata=["a", "b"], walltime=wall
    ),
}


@pytest.mark.parametrize(
    ("wall", "error"), BAD_WALLTIMES, ids=["nan", "inf", "negative", "1e20", "now", "True"]
)
@pytest.mark.parametrize("call", list(WALLTIME_CALLS))
def test_a_walltime_no_format_stores_is_refused_at_the_call_and_its_neighbours_are_written(
    tmp_path, call: str, wall: Any, error: type[Exception]
) -> None:
    with Writer(tmp_path, run="r") as w:
        w.add_scalar("a", 1.0, 0, walltime=WALL)
        with pytest.raises(
            error, match=r"walltime= is .*since 1970.*got .*[Ll]eave it out to use the current time"
        ):
            WALLTIME_CALLS[call](w, wall)
        assert w.stats()["queued"] == 1  # nothing of the refused call was queued
        w.add_scalar("c", 3.0, 2, walltime=WALL + 1)
    assert _scalars(w.run_dir, "a") == _everywhere([(0, 1.0)])
    assert _scalars(w.run_dir, "c") == _everywhere([(2, 3.0)])
    assert _scalars(w.run_dir, "b") == _everywhere([])


def test_the_walltime_range_ends_are_written_and_read_back_exactly(tmp_path) -> None:
    last = 253402300799.0  # the last second of the year 9999
    with Writer(tmp_path, run="r") as w:
        w.add_scalar("first", 1.0, 0, walltime=0.0)
        w.add_scalar("last", 2.0, 1, walltime=last)
        with pytest.raises(ValueError, match="walltime="):
            w.add_scalar("past", 3.0, 2, walltime=last + 1)
    reader = LogReader(file_path=glob.glob(os.path.join(w.run_dir, "vdlrecords*"))[0])
    assert [v.timestamp for v in reader.get_data("scalar", "last")] == [int(last * 1000)]
    assert [e.wall_time for e in _tb(w.run_dir).Scalars("last")] == [last]
    assert [(o["wall_time"], o["last"]) for o in read_metrics(w.run_dir) if "last" in o] == [(last, 2.0)]
    assert _scalars(w.run_dir, "first") == _everywhere([(0, 1.0)])


def test_a_logwriter_walltime_is_checked_in_milliseconds(tmp_path) -> None:
    with LogWriter(str(tmp_path / "r")) as w:
        w.add_scalar("a", 1.0, 0, walltime=WALL * 1000)  # VisualDL's unit: fine
        with pytest.raises(ValueError, match=r"walltime= is milliseconds .* to 253402300800000"):
            w.add_scalar("b", 1.0, 1, walltime=WALL * 1e9)
    assert [o["wall_time"] for o in read_metrics(w.run_dir) if "a" in o] == [WALL]


@pytest.mark.parametrize("codec", ["C", "python"])
def test_a_queued_scalar_that_cannot_be_grouped_costs_only_itself(tmp_path, monkeypatch, codec: str) -> None:
    """A scalar that slipped past the checks (the queue is the writer's own, so only a bug puts one
    there) is skipped with one warning naming it; its batch is written."""
    if codec == "python":
        monkeypatch.setattr(_codec, "codec", None)
    else:
        assert _codec.codec is not None, (
            "the C scalar encoder is not built: pip install -e . with a C compiler"
        )
    with Writer(tmp_path, run="r", max_latency=3600) as w:
        w.add_scalar("a", 1.0, 0, walltime=WALL)
        w._queue.append(("b", 2.0, 1, float("nan")))  # a wall time no millisecond stands for
        w.add_scalar("c", 3.0, 1, walltime=WALL + 1)
        with pytest.warns(
            RuntimeWarning, match=r"scalar 'b' at step 1 is not written \(ValueError"
        ) as caught:
            w.flush()
        assert len([m for m in caught if "'b'" in str(m.message)]) == 1
    assert _scalars(w.run_dir, "a") == _everywhere([(0, 1.0)])
    assert _scalars(w.run_dir, "c") == _everywhere([(1, 3.0)])
    assert _scalars(w.run_dir, "b") == _everywhere([])


# -- 2. text that is not UTF-8 ---------------------------------------------------------------


NOT_UTF8: dict[str, tuple[Callable[[Writer], None], str]] = {
    "log-tag": (
        lambda w: w.log(1, {"loss": 1.0, "bad\ud800": 2.0}),
        r"a tag is not UTF-8 text \('bad\\ud800'\)",
    ),
    "add_scalar-tag": (lambda w: w.add_scalar("x\udcff", 1.0, 1), r"a tag is not UTF-8 text"),
    "add_text": (lambda w: w.add_text("t", "note \ud800", 1), r"the text is not UTF-8 text"),
    "hparam-name": (lambda w: w.add_hparams({"lr\ud800": 0.1}, {}), r"a hparam name is not UTF-8 text"),
    "hparam-value": (
        lambda w: w.add_hparams({"opt": "sgd\ud800"}, {}),
        r"the value of hparam 'opt' is not UTF-8 text",
    ),
}


@pytest.mark.parametrize("case", list(NOT_UTF8))
def test_text_that_is_not_utf8_is_refused_at_the_call_and_the_record_beside_it_is_kept(
    tmp_path, case: str
) -> None:
    call, match = NOT_UTF8[case]
    with Writer(tmp_path, run="r") as w:
        w.log(0, {"loss": 0.5}, walltime=WALL)
        with pytest.raises(ValueError, match=match + r".*lone surrogate.*encode\('utf-8', 'replace'\)"):
            call(w)
        assert w.stats()["queued"] == 1
        w.log(1, {"loss": 1.0}, walltime=WALL + 1)
    assert _scalars(w.run_dir, "loss") == _everywhere([(0, 0.5), (1, 1.0)])


# -- 3. after close(): dropped, counted, one warning --------------------------------------------


#: every way a record is queued, with the number of records it queues
ENQUEUE_CALLS: list[tuple[str, Callable[[Writer], None], int]] = [
    ("add_scalar", lambda w: w.add_scalar("late", 1.0, 9), 1),
    ("log", lambda w: w.log(9, {"late": 1.0, "later": 2.0}), 2),
    ("add_scalars", lambda w: w.add_scalars("late", {"a": 1.0, "b": 2.0, "c": 3.0}, 9), 3),
    ("add_histogram", lambda w: w.add_histogram("late", np.arange(4.0), 9), 1),
    ("add_image", lambda w: w.add_image("late", np.zeros((2, 2, 3)), 9), 1),
    ("add_images", lambda w: w.add_images("late", np.zeros((2, 3, 2, 2)), 9), 1),
    ("add_text", lambda w: w.add_text("late", "x", 9), 1),
    ("add_hparams", lambda w: w.add_hparams({"lr": 0.1}, ["late"]), 1),
    ("add_pr_curve", lambda w: w.add_pr_curve("late", np.array([0, 1]), np.array([0.1, 0.9]), 9), 1),
    ("add_embedding", lambda w: w.add_embedding(np.eye(3), global_step=9), 1),
]


@pytest.mark.parametrize("writer_class", [Writer, SummaryWriter])
def test_records_logged_after_close_are_dropped_counted_and_warned_about_once(tmp_path, writer_class) -> None:
    w = writer_class(log_dir=str(tmp_path / "r"))
    w.add_scalar("kept", 1.0, 0, walltime=WALL)
    w.close()
    before = _file_bytes(w.run_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _, call, _ in ENQUEUE_CALLS:
            call(w)  # never raises
        w.close()  # a second close() is fine too
    assert [str(m.message) for m in caught if m.category is RuntimeWarning] == [
        "dualwatch: this Writer is closed; 1 record(s) logged after close() are dropped: log before close() "
        "or open the run again with resume=True (stats()['dropped'] counts them)"
    ]
    assert w.stats() == {
        "queued": 0,
        "written": 1,
        "dropped": sum(n for _, _, n in ENQUEUE_CALLS),
        "backlog_dropped": {},
        "failed": [],
    }
    assert _file_bytes(w.run_dir) == before
    assert _scalars(w.run_dir, "kept") == _everywhere([(0, 1.0)])


@pytest.mark.parametrize(("name", "call", "count"), ENQUEUE_CALLS, ids=[c[0] for c in ENQUEUE_CALLS])
def test_each_way_of_logging_after_close_is_dropped_and_counted(
    tmp_path, name: str, call, count: int
) -> None:
    w = Writer(tmp_path, run="r", formats=["jsonl"])
    w.close()
    with pytest.warns(RuntimeWarning, match=CLOSED.format(n=count)):
        call(w)
    assert w.stats()["dropped"] == count
    assert w.stats()["queued"] == 0


def test_a_watcher_whose_writer_was_closed_goes_on_training(tmp_path) -> None:
    """The ``Watcher(writer=...)`` path logs through the same calls: dropped, counted, one warning."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    writer = Writer(tmp_path, run="r", formats=["jsonl"])
    watcher = Watcher(model, writer=writer, console=False)
    writer.close()
    logged = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            model(torch.ones(4, 3)).sum().backward()
            scalars = watcher.check(step)
            assert scalars  # the check itself ran
            logged += len(scalars)
    closed = [m for m in caught if "this Writer is closed" in str(m.message)]
    assert len(closed) == 1
    assert writer.stats()["dropped"] == logged
    watcher.close()


# -- 5. max_latency ------------------------------------------------------------------------------


@pytest.mark.parametrize("latency", [float("inf"), float("nan"), 0, -1.0])
def test_a_max_latency_that_is_not_finite_and_positive_is_refused_naming_flush_and_close(
    tmp_path, latency: float
) -> None:
    with pytest.raises(
        ValueError, match=r"max_latency= \(flush_secs=\) must be > 0 seconds.*flush\(\) or close\(\)"
    ):
        Writer(tmp_path, run="r", max_latency=latency)
    with pytest.raises(ValueError, match=r"flush_secs="):
        SummaryWriter(str(tmp_path / "s"), flush_secs=latency)
    assert os.listdir(tmp_path) == []


def test_a_huge_max_latency_keeps_the_writer_thread_writing(tmp_path) -> None:
    """1e12 s used to overflow the thread's wait and kill it; max_queue still wakes it."""
    died: list[Any] = []
    previous, threading.excepthook = threading.excepthook, died.append
    try:
        w = Writer(tmp_path, run="r", max_latency=1e12, max_queue=1)
        w.add_scalar("a", 1.0, 0, walltime=WALL)
        w.add_scalar("a", 2.0, 1, walltime=WALL + 1)
        deadline = time.monotonic() + 10
        while w.stats()["written"] < 2 and time.monotonic() < deadline:  # the thread writes, not flush()
            time.sleep(0.01)
        assert w.stats()["written"] == 2
        assert [o["a"] for o in read_metrics(w.run_dir)] == [1.0, 2.0]
        w.add_scalar("a", 3.0, 2, walltime=WALL + 2)
        w.close()
    finally:
        threading.excepthook = previous
    assert died == []
    assert _scalars(w.run_dir, "a") == _everywhere([(0, 1.0), (1, 2.0), (2, 3.0)])


# -- 4, 12, 13: Writer arguments -------------------------------------------------------------------


class _NoClose:
    def write(self, records: Any) -> None:
        pass


BAD_SETTINGS = [
    ({"max_queue": True}, ValueError, r"max_queue= must be a positive int, got True"),
    ({"formats": []}, ValueError, r"formats= names at least one of .* pass write_to_disk=False"),
    ({"sinks": [object()]}, TypeError, r"sinks= takes sinks with a write\(records\) and a close\(\) method"),
    ({"sinks": [_NoClose()]}, TypeError, r"sinks= takes sinks with a write\(records\) and a close\(\)"),
    ({"sinks": _NoClose()}, TypeError, r"sinks= is a list of sinks, got .*; pass sinks=\[my_sink\]"),
    ({"console": object()}, TypeError, r"console= takes sinks with a write\(records\) and a close\(\)"),
    ({"max_latency": "2"}, TypeError, r"max_latency= \(flush_secs=\) is a number of seconds, got '2'"),
    ({"run": "a\0b"}, ValueError, r"run= is one directory name inside logdir, without '/' or '\\x00', got"),
    ({"run": "a/b"}, ValueError, r"run= is one directory name .* put the parent directories in logdir="),
    ({"run": 5}, TypeError, r"run= is the run's directory name, a str such as 'baseline', got 5"),
    ({"run": "r\ud800"}, ValueError, r"run= is not UTF-8 text"),
]


@pytest.mark.parametrize(
    ("settings", "error", "match"),
    BAD_SETTINGS,
    ids=[
        "max_queue-True", "formats-empty", "sink-object", "sink-without-close", "sinks-not-a-list",
        "console-object", "latency-str", "run-NUL", "run-separator", "run-int", "run-surrogate",
    ],
)  # fmt: skip
def test_a_bad_writer_argument_is_refused_before_anything_is_created(
    tmp_path, settings: dict[str, Any], error: type[Exception], match: str
) -> None:
    settings = {"run": "r", **settings}
    with pytest.raises(error, match=match):
        Writer(tmp_path / "logs", **settings)
    assert os.listdir(tmp_path) == []


def test_write_to_disk_false_is_how_to_write_no_file(tmp_path) -> None:
    with Writer(tmp_path, run="r", write_to_disk=False) as w:
        w.add_scalar("a", 1.0, 0)
    assert os.listdir(w.run_dir) == []


@pytest.mark.parametrize(
    "make",
    [lambda: Writer(123, run="r"), lambda: SummaryWriter(123), lambda: LogWriter(123)],
    ids=["Writer", "SummaryWriter", "LogWriter"],
)
def test_a_logdir_that_is_no_path_is_a_type_error_naming_it(make) -> None:
    with pytest.raises(
        TypeError, match=r"log_?dir=.* is a directory path, a str or pathlib.Path .*got 123 \(int\)"
    ):
        make()


def test_a_negative_resume_step_is_refused_and_the_run_is_kept(tmp_path) -> None:
    with Writer(tmp_path, run="r") as w:
        for step in range(50):
            w.add_scalar("loss", 1.0 / (step + 1), step, walltime=WALL + step)
    before = _file_bytes(w.run_dir)
    for make in (
        lambda: Writer(tmp_path, run="r", resume=-5),
        lambda: SummaryWriter(w.run_dir, purge_step=-5),
    ):
        with pytest.raises(
            ValueError, match=r"resume= \(purge_step=\) is the step to resume from, an int >= 0, got -5"
        ):
            make()
    assert _file_bytes(w.run_dir) == before
    expected = [(step, float(np.float32(1.0 / (step + 1)))) for step in range(50)]
    got = _scalars(w.run_dir, "loss")
    assert got["visualdl"] == got["tensorboard"] == expected
    assert got["jsonl"] == [(step, 1.0 / (step + 1)) for step in range(50)]


# -- 12, 13: call arguments ------------------------------------------------------------------------


BAD_CALLS: dict[str, tuple[Callable[[Writer], None], type[Exception], str]] = {
    "tag-list": (lambda w: w.add_scalar(["a"], 1.0, 1), TypeError, r"a tag is a non-empty str .*got \['a'\]"),
    "tag-empty": (lambda w: w.add_scalar("", 1.0, 1), TypeError, r"a tag is a non-empty str"),
    "log-tag-int": (lambda w: w.log(1, {3: 1.0}), TypeError, r"a tag is a non-empty str .*got 3"),
    "log-not-a-dict": (lambda w: w.log(1, [("a", 1.0)]), TypeError, r"log\(step, scalars\) takes a dict"),
    "scalars-main-tag": (lambda w: w.add_scalars(["m"], {"a": 1.0}, 1), TypeError, r"add_scalars\(main_tag"),
    "value-10**400": (
        lambda w: w.add_scalar("big", 10**400, 1),
        ValueError,
        r"the value of scalar 'big' is too large for a float .*got 1000.*\(401 characters\)",
    ),
    "value-10**5000": (
        lambda w: w.add_scalar("big", 10**5000, 1),
        ValueError,
        r"the value of scalar 'big' is too large for a float .*got an int of 16610 bits",
    ),
    "value-str": (lambda w: w.add_scalar("s", "1.0", 1), TypeError, r"the value of scalar 's' is a number"),
    "log-value-10**400": (lambda w: w.log(1, {"big": 10**400}), ValueError, r"scalar 'big' is too large"),
    "step-2**63": (
        lambda w: w.add_scalar("a", 1.0, 2**63),
        ValueError,
        r"a step is stored as a 64-bit int .*got 9223372036854775808",
    ),
    "step-below-int64": (lambda w: w.log(-(2**63) - 1, {"a": 1.0}), ValueError, r"64-bit int"),
    "step-str": (
        lambda w: w.add_scalar("a", 1.0, "10"),
        TypeError,
        r"a step is an int .*got '10' \(str\); pass int",
    ),
    "step-float": (lambda w: w.add_text("t", "x", 1.5), TypeError, r"a step is an int .*got 1.5 \(float\)"),
    "histogram-tag-list": (
        lambda w: w.add_histogram(["a"], np.ones(3), 1),
        TypeError,
        r"a tag is a non-empty str .*got \['a'\]",
    ),
    "image-complex": (
        lambda w: w.add_image("i", np.ones((4, 4, 3), complex), 1),
        TypeError,
        r"an image is an array of real numbers .*got dtype complex128 .*pass np.abs\(img\) or img.real",
    ),
    "image-0x0": (
        lambda w: w.add_image("i", np.ones((0, 0, 3)), 1),
        ValueError,
        r"an image has at least one pixel, got 0x0 pixels",
    ),
    "image-0x5-chw": (
        lambda w: w.add_image("i", torch.ones(3, 0, 5), 1),
        ValueError,
        r"an image has at least one pixel, got 0x5 pixels \(shape \(3, 0, 5\) in CHW layout\)",
    ),
    "image-object": (
        lambda w: w.add_image("i", np.ones((4, 4), dtype=object), 1),
        TypeError,
        r"got dtype object of shape \(4, 4\); pass np.asarray\(img, dtype=np.float32\)",
    ),
    "images-0x0": (
        lambda w: w.add_images("i", np.ones((2, 3, 0, 0)), 1),
        ValueError,
        r"images have at least one pixel, got 0x0 pixels",
    ),
    "images-complex": (
        lambda w: w.add_images("i", np.ones((2, 3, 4, 4), complex), 1),
        TypeError,
        r"got dtype complex128",
    ),
    "hparam-10**400": (
        lambda w: w.add_hparams({"n": 10**400}, {}),
        ValueError,
        r"hparam 'n' is too large for the float both viewers store.*pass str\(value\)",
    ),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_a_bad_call_argument_is_refused_at_the_call_naming_it_and_nothing_is_queued(
    tmp_path, case: str
) -> None:
    call, error, match = BAD_CALLS[case]
    with Writer(tmp_path, run="r") as w:
        w.add_scalar("a", 1.0, 0, walltime=WALL)
        with pytest.raises(error, match=match):
            call(w)
        assert w.stats()["queued"] == 1
    assert _scalars(w.run_dir, "a") == _everywhere([(0, 1.0)])
    assert w.stats()["written"] == 1


@pytest.mark.parametrize("case", ["tag-list", "value-10**400", "step-2**63", "image-complex", "images-0x0"])
def test_the_compat_writers_refuse_the_same_calls(tmp_path, case: str) -> None:
    call, error, match = BAD_CALLS[case]
    for w in (
        SummaryWriter(str(tmp_path / "s"), formats=["jsonl"]),
        LogWriter(str(tmp_path / "v"), formats=["jsonl"]),
    ):
        with w, pytest.raises(error, match=match):
            call(w)


def test_the_int64_step_range_ends_are_written_and_read_back_exactly(tmp_path) -> None:
    ends = [-(2**63), 2**63 - 1]
    with Writer(tmp_path, run="r") as w:
        for i, step in enumerate(ends):
            w.add_scalar("a", float(i), step, walltime=WALL + i)
        w.log(np.int64(2**63 - 1), {"b": 5.0}, walltime=WALL + 3)
    assert _scalars(w.run_dir, "a") == _everywhere([(step, float(i)) for i, step in enumerate(ends)])
    assert _scalars(w.run_dir, "b") == _everywhere([(2**63 - 1, 5.0)])
