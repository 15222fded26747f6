"""``dualwatch convert``: a run converted either way is served by the other real viewer as the original.

Sources are written by the viewers' own writers (VisualDL's ``LogWriter``, torch's ``SummaryWriter``)
and by dualwatch; the converted runs sit beside them in one logdir that the real ``visualdl`` and
``tensorboard`` servers serve, and everything compared is read back over HTTP.
"""

from __future__ import annotations

import os
import urllib.request
from typing import Any, Iterator

import numpy as np
import pytest
from _servers import (
    Server,
    _eventually,
    _url,
    _vdl_run,
    as_visualdl,
    both_servers,
    f32,
    ms,
    tensorboard_scalars,
    visualdl_scalars,
)
from click.testing import CliRunner

from dualwatch._cli import main
from dualwatch._convert import convert_run
from dualwatch._writer import Writer

BASE_WALL = 1_700_000_000.0
STEPS = 40
SCALARS = {
    "loss/train": lambda step: 1.0 / (step + 1),
    "acc": lambda step: step * 0.013,
    "opt/lr": lambda step: 0.1 * 0.97**step,
}
HIST_STEP, IMAGE_STEP, TEXT_STEP = 5, 3, 7
TEXT = "hello **world**"


def _wall(step: int) -> float:
    """Wall times with a fraction of a millisecond, which the formats round away."""
    return BASE_WALL + step * 1.7 + 0.0126


def _expected() -> dict[str, list[tuple[int, float, float]]]:
    """``{tag: [(step, wall, value)]}`` as every source logs it."""
    return {tag: [(s, _wall(s), f(s)) for s in range(STEPS)] for tag, f in SCALARS.items()}


def _values() -> np.ndarray:
    return np.random.default_rng(0).normal(size=1000)


def _pixels() -> np.ndarray:
    """An 8 x 6 RGB image, HWC uint8."""
    return np.random.default_rng(1).integers(0, 256, size=(8, 6, 3), dtype=np.uint8)


def _write_visualdl(run_dir: str) -> None:
    from visualdl import LogWriter

    with LogWriter(logdir=run_dir) as writer:
        for step in range(STEPS):
            for tag, f in SCALARS.items():
                writer.add_scalar(tag, f(step), step, walltime=ms(_wall(step)))  # VisualDL takes ms
        writer.add_histogram("weights", _values(), HIST_STEP, buckets=10, walltime=ms(_wall(HIST_STEP)))
        writer.add_image("sample", _pixels(), IMAGE_STEP, walltime=ms(_wall(IMAGE_STEP)))
        writer.add_text("note", TEXT, TEXT_STEP, walltime=ms(_wall(TEXT_STEP)))


def _write_torch(run_dir: str) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(run_dir)
    for step in range(STEPS):
        for tag, f in SCALARS.items():
            writer.add_scalar(tag, f(step), step, walltime=_wall(step))
    writer.add_histogram("weights", _values(), HIST_STEP, walltime=_wall(HIST_STEP))
    writer.add_image("sample", _pixels(), IMAGE_STEP, walltime=_wall(IMAGE_STEP), dataformats="HWC")
    writer.add_text("note", TEXT, TEXT_STEP, walltime=_wall(TEXT_STEP))
    writer.close()


def _write_dualwatch(logdir: str, run: str) -> None:
    with Writer(logdir, run=run, formats=("visualdl", "tensorboard")) as writer:
        for step in range(STEPS):
            writer.log(step, {tag: f(step) for tag, f in SCALARS.items()}, walltime=_wall(step))
        writer.add_histogram("weights", _values(), HIST_STEP, bins=10, walltime=_wall(HIST_STEP))
        writer.add_image("sample", _pixels(), IMAGE_STEP, walltime=_wall(IMAGE_STEP))
        writer.add_text("note", TEXT, TEXT_STEP, walltime=_wall(TEXT_STEP))


def _snapshot(run_dir: str) -> dict[str, tuple[bytes, int]]:
    """Every file of a run: its bytes and modification time."""
    out = {}
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        with open(path, "rb") as f:
            out[name] = (f.read(), os.stat(path).st_mtime_ns)
    return out


class Runs:
    """The logdir, both servers, and the source runs' files as they were before converting."""

    def __init__(self, logdir: str, vdl: Server, tb: Server, sources: dict[str, Any]) -> None:
        self.logdir, self.vdl, self.tb, self.sources = logdir, vdl, tb, sources

    def vdl_scalars(self, run: str) -> dict[str, list[list[float]]]:
        return visualdl_scalars(self.vdl, self.logdir, run)

    def tb_scalars(self, run: str) -> dict[str, list[list[float]]]:
        return tensorboard_scalars(self.tb, run)

    def served(self, check: Any, what: str) -> Any:
        return _eventually(check, 30, what, self.vdl, self.tb)


def _bytes(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read()


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    """Sources and their conversions, written before both servers start on their logdir."""
    root = tmp_path_factory.mktemp("convert")
    logdir = str(root / "logs")
    _write_visualdl(os.path.join(logdir, "vdl_only"))
    _write_torch(os.path.join(logdir, "torch_only"))
    _write_dualwatch(logdir, "dualwatch")
    sources = {run: _snapshot(os.path.join(logdir, run)) for run in ("vdl_only", "torch_only", "dualwatch")}

    def at(run: str) -> str:
        return os.path.join(logdir, run)

    result = CliRunner().invoke(main, ["convert", at("vdl_only"), "--to", "tensorboard"])
    assert result.exit_code == 0, result.output
    assert result.stdout == at("vdl_only_tensorboard") + "\n"  # the default OUT, beside the run
    assert convert_run(at("torch_only"), "visualdl") == at("torch_only_visualdl")
    convert_run(at("dualwatch"), "tensorboard", at("dw_as_tensorboard"))
    convert_run(at("dualwatch"), "visualdl", at("dw_as_visualdl"))
    convert_run(at("dw_as_tensorboard"), "visualdl", at("dw_back_visualdl"))
    convert_run(at("dw_as_visualdl"), "tensorboard", at("dw_back_tensorboard"))
    with both_servers(logdir, str(root), vdl_cache=0.5, tb_reload=1) as (vdl, tb):
        yield Runs(logdir, vdl, tb, sources)


# -- VisualDL -> TensorBoard -------------------------------------------------------------------------


def test_visualdl_run_converted_to_tensorboard_serves_the_same_scalars(runs: Runs) -> None:
    expected = _expected()
    original = runs.served(lambda: runs.vdl_scalars("vdl_only"), "VisualDL serving the original")
    assert original == as_visualdl(expected)

    def check() -> None:
        assert runs.tb_scalars("vdl_only_tensorboard") == {
            tag: [[wall_ms / 1000, step, value] for wall_ms, step, value in points]
            for tag, points in original.items()
        }

    runs.served(check, "TensorBoard serving the converted run")


def test_visualdl_histogram_image_and_text_are_served_by_tensorboard(runs: Runs) -> None:
    from visualdl import LogReader

    run, tb = "vdl_only_tensorboard", runs.tb
    source = os.path.join(runs.logdir, "vdl_only")
    (name,) = (n for n in os.listdir(source) if "vdlrecords" in n)
    reader = LogReader(file_path=os.path.join(source, name))
    (histogram,) = reader.get_data("histogram", "weights")
    (image,) = reader.get_data("image", "sample")

    def check() -> None:
        ((wall, step, buckets),) = tb.tb("/data/plugin/histograms/histograms", run=run, tag="weights")
        assert (wall, step) == (ms(_wall(HIST_STEP)) / 1000, HIST_STEP)
        assert [count for _, _, count in buckets] == list(histogram.histogram.hist)
        assert [left for left, _, _ in buckets] == pytest.approx(list(histogram.histogram.bin_edges[:-1]))
        (shown,) = tb.tb("/data/plugin/images/images", run=run, tag="sample")
        assert (shown["wall_time"], shown["step"]) == (ms(_wall(IMAGE_STEP)) / 1000, IMAGE_STEP)
        png = _bytes(f"{tb.base}/data/plugin/images/individualImage?{shown['query']}")
        assert png == image.image.encoded_image_string
        (text,) = tb.tb("/data/plugin/text/text", run=run, tag="note")
        assert (text["wall_time"], text["step"]) == (ms(_wall(TEXT_STEP)) / 1000, TEXT_STEP)
        assert "hello <strong>world</strong>" in text["text"]

    runs.served(check, "TensorBoard serving the converted histogram, image and text")


# -- TensorBoard -> VisualDL -------------------------------------------------------------------------


def test_torch_run_converted_to_visualdl_serves_the_same_scalars(runs: Runs) -> None:
    expected = _expected()
    original = runs.served(lambda: runs.tb_scalars("torch_only"), "TensorBoard serving the original")
    assert original == {t: [[w, s, f32(v)] for s, w, v in points] for t, points in expected.items()}

    def check() -> None:
        assert runs.vdl_scalars("torch_only_visualdl") == {
            tag: [[ms(wall), step, value] for wall, step, value in points] for tag, points in original.items()
        }

    runs.served(check, "VisualDL serving the converted run")


def test_torch_histogram_image_and_text_are_served_by_visualdl(runs: Runs) -> None:
    from tensorboard.backend.event_processing import event_accumulator as ea

    acc = ea.EventAccumulator(os.path.join(runs.logdir, "torch_only"))
    acc.Reload()
    (histogram,) = acc.Histograms("weights")
    (image,) = acc.Images("sample")
    vdl = runs.vdl

    def check() -> None:
        run = _vdl_run(vdl, runs.logdir, "torch_only_visualdl")
        ((wall_ms, step, buckets),) = vdl.vdl("histogram/list", run=run, tag="weights")
        assert (wall_ms, step) == (ms(_wall(HIST_STEP)), HIST_STEP)
        assert [count for _, _, count in buckets] == list(histogram.histogram_value.bucket)
        (shown,) = vdl.vdl("image/list", run=run, tag="sample")
        assert (shown["wallTime"], shown["step"]) == (ms(_wall(IMAGE_STEP)), IMAGE_STEP)
        png = _bytes(_url(vdl.base, "/app/api/image/image", run=run, tag="sample", index="0"))
        assert png == image.encoded_image_string
        (text,) = vdl.vdl("text/list", run=run, tag="note/text_summary")
        assert (text["wallTime"], text["step"]) == (ms(_wall(TEXT_STEP)), TEXT_STEP)
        shown_text = _bytes(_url(vdl.base, "/app/api/text/text", run=run, tag="note/text_summary", index="0"))
        assert TEXT in shown_text.decode("utf-8")

    runs.served(check, "VisualDL serving the converted histogram, image and text")


# -- a dualwatch run, both ways and back ----------------------------------------------------------


def test_dualwatch_run_converted_each_way_is_served_as_the_original(runs: Runs) -> None:
    def check() -> None:
        assert runs.tb_scalars("dw_as_tensorboard") == runs.tb_scalars("dualwatch")
        assert runs.vdl_scalars("dw_as_visualdl") == runs.vdl_scalars("dualwatch")
        expected = _expected()
        assert runs.vdl_scalars("dualwatch") == as_visualdl(expected)

    runs.served(check, "both servers serving the converted dualwatch run")


def test_round_trip_back_to_the_original_format_keeps_every_value(runs: Runs) -> None:
    def check() -> None:
        assert runs.tb_scalars("dw_back_tensorboard") == runs.tb_scalars("dualwatch")
        assert runs.vdl_scalars("dw_back_visualdl") == runs.vdl_scalars("dualwatch")

    runs.served(check, "both servers serving the round-tripped runs")

    # VisualDL -> TensorBoard -> VisualDL loses nothing at all: the records are the original bytes.
    def vdl_bytes(run: str) -> bytes:
        run_dir = os.path.join(runs.logdir, run)
        (name,) = (n for n in os.listdir(run_dir) if "vdlrecords" in n)
        with open(os.path.join(run_dir, name), "rb") as f:
            return f.read()

    assert vdl_bytes("dw_back_visualdl") == vdl_bytes("dualwatch")


def test_conversion_only_reads_the_source_run(runs: Runs) -> None:
    for run, files in runs.sources.items():
        assert _snapshot(os.path.join(runs.logdir, run)) == files, run


# -- the command's errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["{tmp}/missing", "--to", "tensorboard"], "{tmp}/missing is not a run directory", 3),
        (["{tmp}/vdl", "--to", "tfevents"], "cannot convert to 'tfevents'", 2),
        (["{tmp}/vdl"], "--to tensorboard or --to visualdl", 2),
        (
            ["{tmp}/vdl", "--to", "tensorboard", "-o", "{tmp}/taken"],
            "{tmp}/taken already exists and is not empty",
            2,
        ),
        (["{tmp}/vdl", "--to", "visualdl"], "{tmp}/vdl has no TensorBoard logs", 3),
    ],
    ids=["missing-run", "bad-to", "no-to", "existing-out", "nothing-to-convert"],
)
def test_cli_errors_are_one_line_and_exit_3_for_nothing_to_convert_else_2(
    tmp_path: os.PathLike[str], args: list[str], message: str, code: int
) -> None:
    tmp = str(tmp_path)
    _write_visualdl(os.path.join(tmp, "vdl"))
    os.makedirs(os.path.join(tmp, "taken"))
    open(os.path.join(tmp, "taken", "keep.txt"), "w").close()
    before = _snapshot(os.path.join(tmp, "vdl"))
    result = CliRunner().invoke(main, ["convert", *(a.format(tmp=tmp) for a in args)])
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("dualwatch convert: ")
    assert message.format(tmp=tmp) in result.stderr
    assert _snapshot(os.path.join(tmp, "vdl")) == before
    assert sorted(os.listdir(tmp)) == ["taken", "vdl"]  # nothing written on failure


def test_an_empty_out_directory_is_used(tmp_path: os.PathLike[str]) -> None:
    source, out = os.path.join(tmp_path, "vdl"), os.path.join(tmp_path, "out")
    _write_visualdl(source)
    os.makedirs(out)
    assert convert_run(source, "tensorboard", out) == out
    assert [n for n in os.listdir(out) if "tfevents" in n]
