"""``dualwatch.readers`` reads what real writers wrote, incrementally, and survives damage.

Runs are written by dualwatch's ``Writer``, ``visualdl.LogWriter``, torch's
``SummaryWriter`` and paddle's ``VisualDL`` callback, or framed directly with dualwatch's
encoders when the test needs to cut, zero-fill or flip bytes at exact record boundaries.
Nothing is mocked.
"""

from __future__ import annotations

import gc
import json
import math
import os
import struct
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

from dualwatch import Writer
from dualwatch._formats.jsonl import JsonlFormat
from dualwatch._formats.tensorboard import TensorBoardFormat
from dualwatch._formats.visualdl import VisualDLFormat
from dualwatch.readers import RunReader, Series, find_runs
from dualwatch.records import Scalars

WALL = 1_700_000_000.0
FILE_NAMES = {
    "tensorboard": "events.out.tfevents.1700000000.host.1.0.dualwatch",
    "visualdl": "vdlrecords.1700000000.host.1.0.log",
    "jsonl": "metrics.jsonl",
}
ENCODERS = {"tensorboard": TensorBoardFormat, "visualdl": VisualDLFormat, "jsonl": JsonlFormat}


def _records(steps: range, tags: tuple[str, ...] = ("a", "b"), offset: float = 0.0) -> list[Scalars]:
    return [
        Scalars(s, int(WALL * 1000) + s, {t: s * 0.5 + i + offset for i, t in enumerate(tags)}) for s in steps
    ]


def _framed(fmt: str, records: list[Scalars]) -> list[tuple[bytes, int]]:
    """``(bytes, scalars in them)`` of each record alone, after the file's header.

    A VisualDL scalar record holds one tag, so a ``Scalars`` becomes one record per tag.
    """
    encoder = ENCODERS[fmt]()
    frames = [(encoder.header(int(WALL * 1000), 0), 0)] if fmt != "jsonl" else []
    for record in records:
        if fmt == "visualdl":
            frames.extend(
                (encoder.encode([Scalars(record.step, record.wall_ms, {t: v})]), 1)
                for t, v in record.values.items()
            )
        else:
            frames.append((encoder.encode([record]), len(record.values)))
    return frames


def _joined(frames: list[tuple[bytes, int]]) -> bytes:
    return b"".join(data for data, _ in frames)


def _points(reader: RunReader) -> dict[str, list[tuple[int, float]]]:
    return {tag: list(zip(s.steps, s.values)) for tag, s in sorted(reader.series.items())}


def _expected(records: list[Scalars]) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for record in records:
        for tag, value in record.values.items():
            out.setdefault(tag, []).append((record.step, value))
    return {tag: sorted(points) for tag, points in sorted(out.items())}


# -- what real writers wrote --------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tensorboard", "visualdl", "jsonl"])
def test_each_format_written_by_dualwatch_reads_back_steps_values_and_wall_times(tmp_path, fmt) -> None:
    with Writer(tmp_path, run="r", formats=(fmt,)) as w:
        for step in range(40):
            w.log(step, {"train/loss": step * 0.25, "train/acc": 1 - step / 64}, walltime=WALL + step)
            w.add_scalar("lr", 0.5, step, walltime=WALL + step)
    reader = RunReader(str(tmp_path / "r"))
    assert reader.poll() == 120
    assert reader.format == fmt and reader.records == 120 and reader.corrupt == 0
    assert sorted(reader.series) == ["lr", "train/acc", "train/loss"]
    loss = reader.series["train/loss"]
    assert loss.steps == list(range(40))
    assert loss.values == [s * 0.25 for s in range(40)]
    assert loss.wall_times == [WALL + s for s in range(40)]
    assert loss.last() == (39, WALL + 39, 9.75)
    assert reader.poll() == 0


def test_a_run_with_all_three_formats_is_read_from_tensorboard(tmp_path) -> None:
    with Writer(tmp_path, run="r") as w:
        w.log(3, {"x": 1.0, "y": float("nan")}, walltime=WALL)
    reader = RunReader(str(tmp_path / "r"))
    assert reader.poll() == 2 and reader.format == "tensorboard"
    assert math.isnan(reader.series["y"].values[0])


def test_non_finite_values_in_jsonl_are_read_as_floats(tmp_path) -> None:
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "wall_time": 5.0, "a": "NaN", "b": "Infinity", "c": "-Infinity", "d": 2, "e": true}\n'
        '{"step": 1, "wall_time": 5.0, "kind": "text", "tag": "t", "text": "hi"}\n'
    )
    reader = RunReader(str(tmp_path))
    assert reader.poll() == 4
    a, b, c, d = (reader.series[t].values[0] for t in "abcd")
    assert math.isnan(a) and b == math.inf and c == -math.inf and d == 2.0


def test_visualdl_logwriter_scalars_and_add_scalars_read_back_as_flat_tags(tmp_path) -> None:
    from visualdl import LogWriter

    with LogWriter(logdir=str(tmp_path)) as w:
        for step in range(30):
            w.add_scalar("loss", step * 0.5, step, walltime=int(WALL * 1000) + step)
            w.add_scalars("grp", {"a": step * 1.0, "b": -step * 1.0}, step, walltime=int(WALL * 1000) + step)
    reader = RunReader(str(tmp_path))
    assert reader.poll() == 90 and reader.format == "visualdl" and reader.corrupt == 0
    assert sorted(reader.series) == ["grp/a", "grp/b", "loss"]
    assert reader.series["loss"].values == [s * 0.5 for s in range(30)]
    assert reader.series["grp/b"].last() == (29, WALL + 0.029, -29.0)


def test_torch_summary_writer_old_and_new_style_scalars_and_add_scalars_sub_runs(tmp_path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(log_dir=str(tmp_path)) as w:
        for step in range(25):
            w.add_scalar("old", step * 0.5, step, walltime=WALL + step)
            w.add_scalar("new", step * 0.25, step, walltime=WALL + step, new_style=True)
            w.add_scalar("wide", step + 0.1, step, new_style=True, double_precision=True)
            w.add_scalars("pair", {"x": step, "y": -step}, step, walltime=WALL + step)
    reader = RunReader(str(tmp_path))
    assert reader.poll() == 75 and reader.format == "tensorboard" and reader.corrupt == 0
    assert reader.series["old"].values == [s * 0.5 for s in range(25)]
    assert reader.series["new"].values == [s * 0.25 for s in range(25)]
    assert reader.series["wide"].values == [s + 0.1 for s in range(25)]  # float64 kept
    runs = find_runs(str(tmp_path))
    assert sorted(runs) == sorted([str(tmp_path), str(tmp_path / "pair_x"), str(tmp_path / "pair_y")])
    sub = RunReader(str(tmp_path / "pair_y"))
    assert sub.poll() == 25 and sub.series["pair"].last() == (24, WALL + 24, -24.0)


def test_tensorflow2_style_tensor_scalars_with_metadata_only_on_the_first_value(tmp_path) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

    def value(step: int, first: bool) -> summary_pb2.Summary.Value:
        tensor = tensor_pb2.TensorProto(dtype=1, tensor_content=struct.pack("<f", step * 2.0))
        v = summary_pb2.Summary.Value(tag="tf2", tensor=tensor)
        if first:
            v.metadata.plugin_data.plugin_name = "scalars"
        return v

    text = summary_pb2.Summary.Value(tag="txt", tensor=tensor_pb2.TensorProto(dtype=7, string_val=[b"x"]))
    text.metadata.plugin_data.plugin_name = "text"
    events = [event_pb2.Event(wall_time=WALL, file_version="brain.Event:2")]
    for step in range(5):
        values = [value(step, step == 0)] + ([text] if step == 0 else [])
        events.append(
            event_pb2.Event(wall_time=WALL + step, step=step, summary=summary_pb2.Summary(value=values))
        )
    (tmp_path / FILE_NAMES["tensorboard"]).write_bytes(
        b"".join(TensorBoardFormat()._frame(e) for e in events)
    )
    reader = RunReader(str(tmp_path))
    assert reader.poll() == 5 and list(reader.series) == ["tf2"]
    assert reader.series["tf2"].values == [s * 2.0 for s in range(5)]


@pytest.mark.parametrize("fmt", ["tensorboard", "visualdl"])
def test_many_records_with_zero_steps_and_values_read_the_same_as_one_by_one(tmp_path, fmt) -> None:
    """Zeros are left out of protobuf bytes: the chunked parse must notice and still be exact."""
    records = [
        Scalars(s // 3, int(WALL * 1000) + s, {f"t{s % 3}": 0.0 if s % 37 == 0 else s * 0.5})
        for s in range(5000)
    ]
    (tmp_path / FILE_NAMES[fmt]).write_bytes(_joined(_framed(fmt, records)))
    reader = RunReader(str(tmp_path))
    assert reader.poll() == 5000 and reader.corrupt == 0
    assert _points(reader) == _expected(records)


# -- following a file while it is written ---------------------------------------------------

_COPIER = textwrap.dedent(
    """
    import os, random, sys, time
    source, target = sys.argv[1:]
    data, rng, at = open(source, "rb").read(), random.Random(7), 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    while at < len(data):
        n = rng.choice([1, 3, 7, 40, 300, 2000])
        os.write(fd, data[at:at + n])
        at += n
        time.sleep(0.0005)
    os.close(fd)
    """
)


@pytest.mark.parametrize("fmt", ["tensorboard", "visualdl", "jsonl"])
def test_a_file_appended_by_another_process_in_odd_pieces_yields_every_record_once(tmp_path, fmt) -> None:
    records = _records(range(600))
    source = tmp_path / "source.bin"
    source.write_bytes(_joined(_framed(fmt, records)))
    run = tmp_path / "run"
    run.mkdir()
    child = subprocess.Popen([sys.executable, "-c", _COPIER, str(source), str(run / FILE_NAMES[fmt])])
    reader, polls, seen = RunReader(str(run)), 0, 0
    while child.poll() is None:
        seen += reader.poll()
        polls += 1
        time.sleep(0.002)
    seen += reader.poll()
    assert child.returncode == 0 and polls > 5
    assert seen == reader.records == 1200 and reader.corrupt == 0
    assert _points(reader) == _expected(records)


# -- damaged files ----------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tensorboard", "visualdl", "jsonl"])
def test_a_file_cut_anywhere_in_its_last_records_is_read_up_to_the_cut_then_completed(tmp_path, fmt) -> None:
    records = _records(range(12))
    frames = _framed(fmt, records)
    data = _joined(frames)
    for cut in range(len(_joined(frames[:-3])), len(data), 3):
        run = tmp_path / f"cut{cut}"
        run.mkdir()
        path = run / FILE_NAMES[fmt]
        path.write_bytes(data[:cut])
        reader = RunReader(str(run))
        reader.poll()
        complete = [n for i, (_, n) in enumerate(frames) if len(_joined(frames[: i + 1])) <= cut]
        assert reader.corrupt == 0 and reader.records == sum(complete)
        with open(path, "ab") as f:
            f.write(data[cut:])
        reader.poll()
        assert reader.corrupt == 0 and _points(reader) == _expected(records)


@pytest.mark.parametrize("fmt", ["tensorboard", "visualdl"])
def test_a_zero_filled_tail_waits_quietly_and_records_after_it_are_still_read(tmp_path, fmt) -> None:
    first, later = _records(range(10)), _records(range(10, 15))
    path = tmp_path / FILE_NAMES[fmt]
    path.write_bytes(_joined(_framed(fmt, first)) + bytes(4096))
    reader = RunReader(str(tmp_path))
    assert reader.poll() == 20 and reader.corrupt == 0
    assert reader.poll() == 0 and reader.corrupt == 0
    with open(path, "ab") as f:
        f.write(_joined(_framed(fmt, later)[1:]))  # no second header: its START would purge
    assert reader.poll() == 10 and reader.corrupt == 1
    assert _points(reader) == _expected(first + later)


def _flip(data: bytes, at: int, mask: int = 0xFF) -> bytes:
    return data[:at] + bytes([data[at] ^ mask]) + data[at + 1 :]


@pytest.mark.parametrize(
    ("fmt", "where"),
    [
        ("tensorboard", "payload"),  # data checksum fails: that record alone is skipped
        ("tensorboard", "length"),  # header checksum fails: resynchronised at the next header
        ("visualdl", "length"),  # a length past the end of the file
        ("visualdl", "huge"),  # a length of 10**12
        ("visualdl", "payload"),  # the record does not parse
        ("jsonl", "payload"),
    ],
)
def test_a_damaged_record_is_counted_and_every_record_after_it_is_read(tmp_path, fmt, where) -> None:
    records = _records(range(30), tags=("a",))
    frames = _framed(fmt, records)
    victim = 11  # a frame index: step 10 after a header, step 11 in JSON lines
    at = len(_joined(frames[:victim]))
    data = _joined(frames)
    if where == "length":
        data = _flip(data, at + 1, 0x40)
    elif where == "huge":
        data = data[:at] + struct.pack("<Q", 10**12) + data[at + 8 :]
    else:
        data = _flip(data, at + 8 if fmt == "visualdl" else at + len(frames[victim][0]) // 2)
    (tmp_path / FILE_NAMES[fmt]).write_bytes(data)
    reader = RunReader(str(tmp_path))
    reader.poll()
    assert reader.corrupt == 1
    lost = victim if fmt == "jsonl" else victim - 1
    assert _points(reader) == _expected([r for r in records if r.step != lost])


def test_random_garbage_and_bit_flips_never_raise_or_hang(tmp_path) -> None:
    import random

    rng = random.Random(3)
    for fmt in ("tensorboard", "visualdl", "jsonl"):
        data = bytearray(_joined(_framed(fmt, _records(range(200)))))
        for _ in range(40):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        data[500:500] = bytes(rng.randrange(256) for _ in range(300))
        run = tmp_path / fmt
        run.mkdir()
        (run / FILE_NAMES[fmt]).write_bytes(bytes(data))
        reader = RunReader(str(run))
        start = time.perf_counter()
        reader.poll()
        assert time.perf_counter() - start < 5
        assert reader.corrupt >= 1 and reader.records > 100


# -- history that changes -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["tensorboard", "visualdl", "jsonl"])
def test_a_resumed_dualwatch_run_gives_each_step_once_with_the_new_values(tmp_path, fmt) -> None:
    with Writer(tmp_path, run="r", formats=(fmt,)) as w:
        for step in range(100):
            w.add_scalar("loss", float(step), step, walltime=WALL + step)
    reader = RunReader(str(tmp_path / "r"))
    assert reader.poll() == 100
    with Writer(tmp_path, run="r", formats=(fmt,), resume=50) as w:
        for step in range(50, 80):
            w.add_scalar("loss", -float(step), step, walltime=WALL + 1000 + step)
    reader.poll()
    expected = [(s, float(s)) for s in range(50)] + [(s, -float(s)) for s in range(50, 80)]
    assert _points(reader) == {"loss": expected}
    fresh = RunReader(str(tmp_path / "r"))
    fresh.poll()
    assert _points(fresh) == {"loss": expected}


def test_a_session_start_drops_later_points_and_new_points_replace_old_ones(tmp_path) -> None:
    from tensorboard.compat.proto import event_pb2

    tb = TensorBoardFormat()
    start = event_pb2.Event(wall_time=WALL, step=5, session_log=event_pb2.SessionLog(status=1))
    data = tb.encode(_records(range(10))) + tb._frame(start) + tb.encode(_records(range(5, 8), offset=100))
    (tmp_path / FILE_NAMES["tensorboard"]).write_bytes(data)
    reader = RunReader(str(tmp_path))
    reader.poll()
    assert _points(reader) == _expected(_records(range(5)) + _records(range(5, 8), offset=100))


def test_every_file_of_the_format_is_read_in_name_order(tmp_path) -> None:
    vdl = VisualDLFormat()
    (tmp_path / "vdlrecords.1000000000.log").write_bytes(vdl.encode(_records(range(100))))
    (tmp_path / "vdlrecords.1000000001.log").write_bytes(vdl.encode(_records(range(50, 60), offset=7)))
    reader = RunReader(str(tmp_path))
    reader.poll()
    assert _points(reader) == _expected(
        _records(range(50)) + _records(range(50, 60), offset=7) + _records(range(60, 100))
    )
    (tmp_path / "vdlrecords.1000000002.log").write_bytes(vdl.encode(_records(range(100, 105))))
    assert reader.poll() == 10  # a new file is picked up


def test_a_shrunk_or_replaced_file_is_read_again_from_the_start(tmp_path) -> None:
    path = tmp_path / FILE_NAMES["visualdl"]
    vdl = VisualDLFormat()
    path.write_bytes(vdl.encode(_records(range(20))))
    reader = RunReader(str(tmp_path))
    reader.poll()
    os.truncate(path, len(vdl.encode(_records(range(5)))))
    reader.poll()
    assert _points(reader) == _expected(_records(range(5)))
    replacement = tmp_path / ".tmp"
    replacement.write_bytes(vdl.encode(_records(range(3), offset=9)))
    os.replace(replacement, path)
    reader.poll()
    assert _points(reader) == _expected(_records(range(3), offset=9)) and reader.records == 6


def test_a_run_switches_to_tensorboard_once_its_file_appears(tmp_path) -> None:
    (tmp_path / "metrics.jsonl").write_bytes(JsonlFormat().encode(_records(range(3))))
    reader = RunReader(str(tmp_path))
    assert reader.poll() == 6 and reader.format == "jsonl"
    (tmp_path / FILE_NAMES["tensorboard"]).write_bytes(TensorBoardFormat().encode(_records(range(4))))
    assert reader.poll() == 8 and reader.format == "tensorboard"


def test_an_empty_or_missing_directory_reads_nothing(tmp_path) -> None:
    reader = RunReader(str(tmp_path / "nope"))
    assert reader.poll() == 0 and reader.format is None and reader.series == {}
    assert find_runs(str(tmp_path / "nope")) == []


def test_find_runs_lists_every_run_directory_most_recently_modified_last(tmp_path) -> None:
    for i, (run, name) in enumerate(
        [("b", FILE_NAMES["visualdl"]), ("a/deep", FILE_NAMES["tensorboard"]), ("c", "metrics.jsonl")]
    ):
        (tmp_path / run).mkdir(parents=True)
        (tmp_path / run / name).write_bytes(b"")
        os.utime(tmp_path / run / name, (WALL + 10 - i, WALL + 10 - i))
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "metrics.jsonl").write_bytes(b"")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_bytes(b"")
    assert find_runs(str(tmp_path)) == [
        str(tmp_path / "c"),
        str(tmp_path / "a" / "deep"),
        str(tmp_path / "b"),
    ]


def test_series_keeps_one_point_per_step_in_step_order() -> None:
    s = Series()
    for step, value in [(1, 1.0), (3, 3.0), (2, 2.0), (3, 30.0), (0, 0.5)]:
        s.put(step, float(step), value)
    assert s.steps == [0, 1, 2, 3] and s.values == [0.5, 1.0, 2.0, 30.0]
    s.drop_from(2)
    assert s.last() == (1, 1.0, 1.0) and Series().last() is None


def test_series_columns_equal_lists_convert_to_numpy_and_accept_lists() -> None:
    s = Series()
    s.steps, s.wall_times, s.values = [0, 2, 4], [1.0, 2.0, 3.0], [0.5, -1.0, 2.5]
    s.put(3, 2.5, 9.0)
    assert (s.steps.typecode, s.wall_times.typecode, s.values.typecode) == ("q", "d", "d")
    assert s.steps == [0, 2, 3, 4] and s.steps != [0, 2, 4] and s.values == [0.5, -1.0, 9.0, 2.5]
    assert s.values == pytest.approx([0.5, -1.0, 9.0, 2.5]) and list(s.values[-2:]) == [9.0, 2.5]
    assert np.asarray(s.steps).dtype == np.int64
    np.testing.assert_array_equal(np.asarray(s.values), np.array([0.5, -1.0, 9.0, 2.5]))
    assert s.best() == (2, -1.0)
    s.put(5, 4.0, math.nan)
    # the same tuple until the series changes: a report built twice from it compares equal, NaN and all
    assert s.last() is s.last() and s.last() == s.last()
    s.put(5, 4.0, 1.0)
    assert s.last() == (5, 4.0, 1.0) and len(s) == 5


@pytest.mark.parametrize("fmt", ["tensorboard", "visualdl", "jsonl"])
def test_a_read_run_holds_about_24_bytes_a_point_in_typed_columns_exactly(tmp_path, fmt) -> None:
    """Steps, wall times and values live in int64/float64 arrays (lists of Python numbers took
    about 80 bytes a point); float32 values (TensorBoard, VisualDL) and float64 ones (JSON lines)
    come back exactly."""
    tags, steps = tuple(f"m{i}" for i in range(10)), 2000
    records = _records(range(steps), tags, offset=1 / 7)
    (tmp_path / FILE_NAMES[fmt]).write_bytes(_joined(_framed(fmt, records)))
    RunReader(str(tmp_path)).poll()  # loads the parsers once: not memory held per point
    gc.collect()
    tracemalloc.start()
    try:
        reader = RunReader(str(tmp_path))
        assert reader.poll() == steps * len(tags) and reader.corrupt == 0
        gc.collect()
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert held / (steps * len(tags)) < 30  # lists of Python numbers held 53-57 here
    stored = np.float64 if fmt == "jsonl" else np.float32
    for i, tag in enumerate(tags):
        s = reader.series[tag]
        np.testing.assert_array_equal(np.asarray(s.steps), np.arange(steps))
        want = (np.arange(steps) * 0.5 + i + 1 / 7).astype(stored).astype(np.float64)
        np.testing.assert_array_equal(np.asarray(s.values), want)
        np.testing.assert_array_equal(np.asarray(s.wall_times), (int(WALL * 1000) + np.arange(steps)) / 1000)


def test_thousands_of_jsonl_lines_read_alike_across_batches_with_damage_and_a_step_again(tmp_path) -> None:
    """A block of JSON lines is handed over a batch at a time; new tags, damage and a step logged
    again in a later batch read as in one go."""
    lines, expected = [], {"loss": {}, "val": {}}
    for step in range(3000):
        record = {"step": step, "wall_time": WALL + step, "loss": step / 3}
        if step >= 1500 and step % 7 == 0:
            record["val"] = -step / 3
        lines.append(json.dumps(record))
        if step == 2100:
            lines.append('{"step": 2100, "loss": ')  # damaged
    lines.append(json.dumps({"step": 1000, "wall_time": WALL + 5000, "loss": 42.0}))  # logged again
    for line in lines[:-1]:
        if line.endswith("}"):
            record = json.loads(line)
            for tag in ("loss", "val"):
                if tag in record:
                    expected[tag][record["step"]] = record[tag]
    expected["loss"][1000] = 42.0
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    reader = RunReader(str(tmp_path))
    assert reader.poll() == 3000 + len(expected["val"]) + 1 and reader.corrupt == 1
    assert _points(reader) == {tag: sorted(points.items()) for tag, points in expected.items()}
    assert reader.series["loss"].wall_times[1000] == WALL + 5000
