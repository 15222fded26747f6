"""The monitor and convert commands never trace back: bad options and rules files are usage errors
(exit 2, one line, before anything runs), unreadable logs are named, huge or lying files are read in
bounded memory, and tensors are never allocated past the bytes they came in.

Files are written by dualwatch's own encoders and by TensorBoard's protobuf messages (the crafted
events a real writer would not make); VisualDL's ``LogReader`` reads the converted run back.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import CLI_AS_NOBODY
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from visualdl import LogReader

from dualwatch import Writer
from dualwatch._cli import main
from dualwatch._formats.jsonl import JsonlFormat
from dualwatch._formats.tensorboard import TensorBoardFormat, crc32c, masked
from dualwatch._formats.visualdl import VisualDLFormat
from dualwatch.readers import RunReader
from dualwatch.records import Image, Scalars

REPO = Path(__file__).resolve().parents[1]
WALL = 1_700_000_000.0
NAMES = {
    "tensorboard": "events.out.tfevents.1700000000.host.1.0.dualwatch",
    "visualdl": "vdlrecords.1700000000.host.1.0.log",
    "jsonl": "metrics.jsonl",
}
ENCODERS = {"tensorboard": TensorBoardFormat, "visualdl": VisualDLFormat, "jsonl": JsonlFormat}
#: runs ``python ARGS...`` and writes its peak RSS (KiB) to the file named first: started from this
#: small process, the command's ``ru_maxrss`` does not start at pytest's (Linux keeps a forked
#: child's high-water mark across ``exec``)
LAUNCH = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[2:]], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def healthy_run(logdir: Path) -> Path:
    with Writer(logdir, run="r") as writer:
        for step in range(5):
            writer.log(step, {"Loss/Train": 1.0 / (step + 1)})
    return logdir / "r"


def one_line_usage_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == "", "nothing may run before the usage error"
    return result.stderr


def encoded(fmt: str, steps: range, header: bool = True, tag: str = "loss") -> bytes:
    encoder = ENCODERS[fmt]()
    head = encoder.header(int(WALL * 1000), steps.start) if header else b""
    return head + encoder.encode([Scalars(s, int(WALL * 1000) + s, {tag: 1.0 / (s + 1)}) for s in steps])


def tb_frame(event: event_pb2.Event) -> bytes:
    data = event.SerializeToString()
    head = struct.pack("<Q", len(data))
    return head + struct.pack("<I", masked(crc32c()(head))) + data + struct.pack("<I", masked(crc32c()(data)))


def tensor_event(plugin: str, dims: list[int], step: int, **fields: object) -> bytes:
    shape = tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]
    )
    tensor = tensor_pb2.TensorProto(tensor_shape=shape, **fields)
    meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))
    value = summary_pb2.Summary.Value(tag=f"{plugin}_tensor", metadata=meta, tensor=tensor)
    return tb_frame(event_pb2.Event(wall_time=WALL, step=step, summary=summary_pb2.Summary(value=[value])))


# -- 15: --interval and --stall ---------------------------------------------------------------------


@pytest.mark.parametrize("value", ["nan", "inf", "1e10", "0", "-1", "86401"])
def test_interval_not_finite_positive_and_at_most_a_day_is_a_usage_error_before_any_report(
    tmp_path: Path, value: str
) -> None:
    healthy_run(tmp_path)
    err = one_line_usage_error(CliRunner().invoke(main, ["monitor", str(tmp_path), "--interval", value]))
    assert f"Invalid value for '--interval': '{value}' is not a number of seconds above 0" in err
    assert "at most 86400" in err


@pytest.mark.parametrize("value", ["nan", "inf", "-5"])
def test_stall_that_could_never_fire_is_a_usage_error(tmp_path: Path, value: str) -> None:
    healthy_run(tmp_path)
    err = one_line_usage_error(
        CliRunner().invoke(main, ["monitor", str(tmp_path), "--once", "--stall", value])
    )
    assert f"Invalid value for '--stall': '{value}'" in err


def test_interval_of_a_day_is_accepted(tmp_path: Path) -> None:
    healthy_run(tmp_path)
    result = CliRunner().invoke(main, ["monitor", str(tmp_path), "--once", "--interval", "86400"])
    assert result.exit_code == 0, result.output


# -- 16: rules files --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, text, why",
    [
        (
            "big.json",
            '{"loss": {"above": 1' + "0" * 400 + "}}",
            "'loss': above must be a finite number, got 1000",
        ),
        ("deep.json", "[" * 100_000, "nested too deeply"),
        ("deep.yaml", "[" * 100_000, "nested too deeply"),
        ("key.yaml", "1:\n  above: 3\n", "rule key 1 is not a tag glob but a int: quote it"),
        ("nan.json", '{"loss": {"above": NaN}}', "'loss': above must be a finite number, got nan"),
        ("nan.yaml", "loss:\n  below: .nan\n", "'loss': below must be a finite number, got nan"),
        (
            "inf.yaml",
            "loss:\n  normal: [0, .inf]\n",
            "'loss': normal's high must be a finite number, got inf",
        ),
    ],
    ids=[
        "400-digit-number",
        "nested-json",
        "nested-yaml",
        "yaml-int-key",
        "nan-bound",
        "nan-yaml",
        "inf-normal",
    ],
)
def test_rules_that_cannot_work_are_a_usage_error_naming_the_rule(
    tmp_path: Path, name: str, text: str, why: str
) -> None:
    healthy_run(tmp_path)
    rules = tmp_path / name
    rules.write_text(text)
    err = one_line_usage_error(
        CliRunner().invoke(main, ["monitor", str(tmp_path), "--once", "--rules", str(rules)])
    )
    assert err == f"dualwatch monitor: bad rules file {rules}: {err.split(': ', 2)[2]}"
    assert why in err and len(err.splitlines()) == 1


# -- 17: unreadable log files -------------------------------------------------------------------------


def test_unreadable_log_file_says_permission_denied_with_its_path() -> None:
    base = Path(tempfile.mkdtemp())  # not under pytest's 0700 tmp root: another user must reach it
    try:
        base.chmod(0o755)
        run = healthy_run(base / "runs")
        for directory in (base / "runs", run):
            directory.chmod(0o755)
        log = run / "events.out.tfevents.x"  # the format a run is read from: TensorBoard's
        (tb,) = run.glob("events.out.tfevents.*")
        tb.rename(log)
        log.chmod(0o000)
        # root reads anything: the child imports what the command needs, then drops to nobody
        code = (
            "import os, sys\n"
            "import dualwatch._cli, dualwatch._report, dualwatch._view, dualwatch.readers\n"
            "import dualwatch._formats.tensorboard, dualwatch._formats._columns as c\n"
            "c.columns(); c.tensorboard_event()\n"
            "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
            "dualwatch._cli.main()"
        )
        for command in (["monitor", str(run), "--once"], ["plot", str(run), "-o", str(base / "c.png")]):
            proc = subprocess.run(
                [sys.executable, "-c", code, *command], capture_output=True, text=True, timeout=60
            )
            assert proc.returncode == 2 and proc.stdout == "", proc.stderr
            assert proc.stderr == f"dualwatch {command[0]}: cannot read log file: {log} (Permission denied)\n"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_unreadable_run_directory_under_logdir_is_named_not_no_logs() -> None:
    base = Path(tempfile.mkdtemp())
    try:
        base.chmod(0o755)
        run = healthy_run(base / "runs")
        (base / "runs").chmod(0o755)
        run.chmod(0o000)
        code = CLI_AS_NOBODY
        proc = subprocess.run(
            [sys.executable, "-c", code, "monitor", str(base / "runs"), "--once"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and proc.stdout == "", proc.stderr
        assert proc.stderr == f"dualwatch monitor: cannot read directory: {run} (Permission denied)\n"
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


# -- 18: bounded memory -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, zeros, sparse",
    [
        ("tensorboard", 2 << 30, True),
        ("visualdl", 2 << 30, True),
        ("jsonl", 2 << 30, True),
        ("tensorboard", 256 << 20, False),
        ("visualdl", 256 << 20, False),
        ("jsonl", 256 << 20, False),
    ],
    ids=lambda x: {True: "sparse", False: "written", 2 << 30: "2GiB", 256 << 20: "256MiB"}.get(x, x),
)
def test_monitor_reads_past_gigabytes_of_zeros_in_bounded_memory(
    tmp_path: Path, fmt: str, zeros: int, sparse: bool
) -> None:
    """Records, a zero-filled stretch (a hole, or zeros written out), then the records a resumed
    writer appended: the monitor reads both sides in a child whose peak RSS stays under 150 MB."""
    path = tmp_path / NAMES[fmt]
    path.write_bytes(encoded(fmt, range(3)))
    with open(path, "r+b" if sparse else "ab") as f:
        if sparse:
            f.truncate(path.stat().st_size + zeros)
        else:
            for _ in range(zeros >> 24):
                f.write(bytes(1 << 24))
    with open(path, "ab") as f:
        f.write(encoded(fmt, range(3, 6), header=False))
    peak = tmp_path / "peak_rss_kib"
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, str(peak), "-c", "from dualwatch._cli import main; main()",
         "monitor", str(tmp_path), "--once", "--json", "--tags", "loss"],
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    out, err, rss_mb = proc.stdout, proc.stderr, int(peak.read_text()) / 1024
    assert proc.returncode == 1, err  # stalled: the records are from 2023
    report = json.loads(out)
    assert report["tags"]["loss"]["step"] == 5 and report["tags"]["loss"]["value"] == pytest.approx(1 / 6)
    assert report["corrupt"] >= 1  # the zeros are damage
    assert rss_mb <= 150, f"peak RSS {rss_mb:.0f} MB"


def test_a_record_bigger_than_the_reader_holds_is_passed_over_and_the_next_ones_read(tmp_path: Path) -> None:
    encoder = TensorBoardFormat()
    big = Image("photo", 1, int(WALL * 1000), os.urandom(20 << 20), 1, 1, 3)  # a 20 MiB image event
    data = (
        encoded("tensorboard", range(2)) + encoder.encode([big]) + encoded("tensorboard", range(2, 4), False)
    )
    (tmp_path / NAMES["tensorboard"]).write_bytes(data)
    reader = RunReader(str(tmp_path))
    reader.poll()
    assert reader.series["loss"].steps == [0, 1, 2, 3] and reader.corrupt == 0
    assert reader.series["loss"].values == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4], rel=1e-6)


def test_a_jsonl_line_longer_than_the_reader_holds_is_one_damaged_record(tmp_path: Path) -> None:
    path = tmp_path / NAMES["jsonl"]
    path.write_bytes(encoded("jsonl", range(2)) + b'{"step": 2, "x": "' + b"y" * (40 << 20) + b'"}\n')
    with open(path, "ab") as f:
        f.write(encoded("jsonl", range(3, 5), header=False))
    reader = RunReader(str(tmp_path))
    reader.poll()
    assert reader.series["loss"].steps == [0, 1, 3, 4] and reader.corrupt == 1


# -- 19: tensors bounded by their bytes ---------------------------------------------------------------


def crafted_tensors() -> bytes:
    f32 = types_pb2.DT_FLOAT
    return b"".join(
        [
            tensor_event("scalars", [], 0, dtype=f32, float_val=[0.25]),  # the one real scalar
            tensor_event("scalars", [2], 1, dtype=f32, tensor_content=np.array([1, 2], "<f4").tobytes()),
            tensor_event("scalars", [4_000_000_000], 2, dtype=f32, float_val=[1.0]),
            tensor_event("histograms", [4_000_000_000, 3], 3, dtype=f32, float_val=[1.0]),
            tensor_event("text", [4_000_000_000], 4, dtype=types_pb2.DT_STRING, string_val=[b"x"]),
            tensor_event("pr_curves", [6, 4_000_000_000], 5, dtype=f32, float_val=[1.0]),
        ]
    )


def test_convert_skips_tensors_that_are_not_what_their_plugin_holds_without_allocating_them(
    tmp_path: Path,
) -> None:
    run = tmp_path / "tb"
    run.mkdir()
    (run / NAMES["tensorboard"]).write_bytes(crafted_tensors())
    assert (run / NAMES["tensorboard"]).stat().st_size < 1000  # claims 4e9 elements four times
    result = CliRunner().invoke(main, ["convert", str(run), "--to", "visualdl", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{tmp_path / 'out'}\n"
    assert result.stderr == (
        f"dualwatch convert: 5 record(s) of {run} not converted: damaged, or of a kind convert leaves out\n"
    )
    (vdl,) = (tmp_path / "out").glob("vdlrecords*")
    reader = LogReader(file_path=str(vdl))
    assert {k: v for k, v in reader.get_tags().items() if k != "meta_data"} == {"scalar": ["scalars_tensor"]}
    (point,) = reader.get_data("scalar", "scalars_tensor")
    assert (point.id, point.value) == (0, 0.25)


def test_monitor_counts_a_non_scalar_scalars_tensor_as_damaged(tmp_path: Path) -> None:
    (tmp_path / NAMES["tensorboard"]).write_bytes(crafted_tensors())
    reader = RunReader(str(tmp_path))
    reader.poll()
    assert list(reader.series) == ["scalars_tensor"] and reader.series["scalars_tensor"].values == [0.25]
    assert reader.corrupt == 2  # shape [2] and shape [4e9]: not scalars
