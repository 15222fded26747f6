"""``dualwatch plot``: images of real runs (dualwatch's Writer, VisualDL's LogWriter) and the errors."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result

from dualwatch import DualwatchError, Writer
from dualwatch._cli import main
from dualwatch._plot import POINTS, choose_tags, decimate, log_scale, plot_run
from dualwatch.readers import RunReader, Series
from dualwatch.readers._series import smooth

matplotlib_image = pytest.importorskip("matplotlib.image")

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAIN = ["Loss/Train", "Learning_Rate", "train/gradient/total_norm"]


def write_run(logdir: Path, run: str = "r", n: int = 50, extra: int = 0) -> Path:
    """A dualwatch run: loss (NaN at step 20, Inf at 30), lr, a decaying grad norm, ``extra`` more tags."""
    start = time.time() - n
    with Writer(logdir, run=run) as writer:
        for step in range(n):
            scalars = {
                "eval/accuracy": step / n,
                "Loss/Train": float("nan") if step == 20 else float("inf") if step == 30 else 1 / (step + 1),
                "Learning_Rate": 0.01,
                "train/gradient/total_norm": 10.0 ** (-step / 10),
            }
            scalars.update({f"extra/t{i:02d}": float(i + step) for i in range(extra)})
            writer.log(step, scalars, walltime=start + step)
    return logdir / run


def plot(*args: str, **env: str) -> Result:
    return CliRunner(env=env).invoke(main, ["plot", *args])


def read_png(path: Path) -> np.ndarray:
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    return matplotlib_image.imread(str(path))


def reader_of(run_dir: Path) -> RunReader:
    reader = RunReader(str(run_dir))
    reader.poll()
    return reader


def test_plot_writes_a_png_of_the_newest_run_with_nan_and_inf(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "older")
    write_run(tmp_path / "runs", "newer")
    out = tmp_path / "curves.png"
    result = plot(str(tmp_path / "runs"), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n" and result.stderr == ""
    height, width, _ = read_png(out).shape
    assert 500 < width < 2000 and 400 < height < 2000  # four panels in a 2 x 2 grid
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "runs"]  # no temporary file left


def test_default_panels_put_loss_lr_and_grad_norm_first_then_the_rest_sorted(tmp_path: Path) -> None:
    reader = reader_of(write_run(tmp_path, extra=2))
    tags = plot_run(reader, str(tmp_path / "c.png"))
    assert tags == [*MAIN, "eval/accuracy", "extra/t00", "extra/t01"]
    assert tags == list(dict.fromkeys(tags))


def test_panels_over_the_limit_are_left_out_and_said_on_stderr(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", extra=20)  # 24 tags
    out = tmp_path / "c.png"
    result = plot("--logdir", str(tmp_path / "runs"), "-o", str(out))
    assert result.exit_code == 0
    (line,) = result.stderr.splitlines()
    assert line == "dualwatch plot: 8 more tags not drawn (--max-panels 16); choose with --tags GLOB"
    read_png(out)
    chosen, left_out = choose_tags(reader_of(tmp_path / "runs" / "r").series)
    assert chosen[:3] == MAIN and len(chosen) == 16 and len(left_out) == 8
    assert plot(str(tmp_path / "runs"), "--max-panels", "30", "-o", str(out)).stderr == ""


def test_tags_globs_choose_the_panels_in_the_order_given(tmp_path: Path) -> None:
    reader = reader_of(write_run(tmp_path / "runs", extra=3))
    chosen, left_out = choose_tags(reader.series, ["train/*", "extra/t0[02]", "Loss/*", "train/*"])
    assert chosen == ["train/gradient/total_norm", "extra/t00", "extra/t02", "Loss/Train"] and not left_out
    out = tmp_path / "c.png"
    result = plot(str(tmp_path / "runs"), "--tags", "extra/*", "--tags", "Loss/*", "-o", str(out))
    assert result.exit_code == 0 and result.stderr == ""
    assert plot_run(reader, str(out), chosen[:2]) == chosen[:2]
    read_png(out)


def test_visualdl_logwriter_run_is_plotted_by_run_name(tmp_path: Path) -> None:
    from visualdl import LogWriter

    with LogWriter(logdir=str(tmp_path / "runs" / "vdl")) as writer:
        for step in range(40):
            writer.add_scalar("train/loss", 2.0 / (step + 1), step)
            writer.add_scalar("train/lr", 0.1, step)
    write_run(tmp_path / "runs", "dualwatch_run")  # newer: --run must pick the VisualDL one
    out = tmp_path / "vdl.png"
    result = plot(str(tmp_path / "runs"), "--run", "vdl", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert reader_of(tmp_path / "runs" / "vdl").format == "visualdl"
    assert plot_run(reader_of(tmp_path / "runs" / "vdl"), str(out)) == ["train/loss", "train/lr"]
    read_png(out)


def test_svg_and_pdf_outputs_follow_the_extension(tmp_path: Path) -> None:
    reader = reader_of(write_run(tmp_path))
    plot_run(reader, str(tmp_path / "c.svg"))
    plot_run(reader, str(tmp_path / "c.pdf"))
    assert b"<svg" in (tmp_path / "c.svg").read_bytes()[:1000]
    assert (tmp_path / "c.pdf").read_bytes().startswith(b"%PDF")


def test_output_is_replaced_whole_and_no_temporary_file_is_left(tmp_path: Path) -> None:
    reader = reader_of(write_run(tmp_path / "runs"))
    out = tmp_path / "out" / "c.png"
    out.parent.mkdir()
    out.write_bytes(b"old")
    plot_run(reader, str(out))
    read_png(out)
    with pytest.raises(DualwatchError, match=r"cannot write \.xyz images"):
        plot_run(reader, str(tmp_path / "out" / "c.xyz"))
    assert os.listdir(out.parent) == ["c.png"]


@pytest.mark.parametrize(
    ("args", "message", "code"),
    [
        (["--tags", "nope/*", "--tags", "zz"], "dualwatch plot: no tag matches nope/* or zz in ", 2),
        (["--run", "missing"], "dualwatch plot: no run 'missing' under ", 3),
        (["-o", "no/such/dir/c.png"], "dualwatch plot: cannot write no/such/dir/c.png: No such file", 2),
    ],
)
def test_nothing_to_plot_exits_3_a_bad_choice_2_with_one_line(
    tmp_path: Path, args: list[str], message: str, code: int
) -> None:
    write_run(tmp_path / "runs")
    result = CliRunner().invoke(main, ["plot", str(tmp_path / "runs"), *args], catch_exceptions=False)
    assert result.exit_code == code
    (line,) = result.stderr.splitlines()
    assert line.startswith(message), line
    assert result.stdout == ""


def test_missing_logdir_exits_3_with_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "gone")
    result = plot(missing)
    assert result.exit_code == 3
    assert result.stderr == f"dualwatch plot: no such directory: {missing}\n"
    from_env = plot(DUALWATCH_LOGDIR=missing)
    assert from_env.exit_code == 3 and from_env.stderr == result.stderr


def test_two_different_logdirs_exit_2(tmp_path: Path) -> None:
    result = plot(str(tmp_path / "a"), "--log_dir", str(tmp_path / "b"))
    assert result.exit_code == 2 and result.stderr.startswith("dualwatch plot: two log directories given")


def test_missing_matplotlib_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_run(tmp_path / "runs")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    result = plot(str(tmp_path / "runs"), "-o", str(tmp_path / "c.png"))
    assert result.exit_code == 2
    assert result.stderr == 'dualwatch plot: plotting needs matplotlib: pip install "dualwatch[plot]"\n'
    assert not (tmp_path / "c.png").exists()


def test_a_million_points_plot_decimated_with_spikes_and_nan(tmp_path: Path) -> None:
    n = 1_000_000
    values = 1 / np.sqrt(np.arange(n) + 1.0)
    values[654_321] = 50.0
    values[700_000:700_100] = np.nan
    s = Series()
    s.steps, s.wall_times, s.values = list(range(n)), [0.0] * n, values.tolist()
    run: Any = SimpleNamespace(run_dir=str(tmp_path / "big"), series={"loss": s, "lr": s})
    out = tmp_path / "big.png"
    assert plot_run(run, str(out), title="a million points") == ["loss", "lr"]
    read_png(out)


def test_decimate_keeps_ends_spikes_and_at_most_about_points() -> None:
    n = 1_000_003
    x = np.arange(n, dtype=np.float64)
    y = np.sin(x / 1000)
    y[123_456], y[765_432] = 9.0, -9.0
    dx, dy = decimate(x, y)
    assert len(dx) <= POINTS + 2
    assert dx[0] == 0 and dx[-1] == n - 1 and np.all(np.diff(dx) > 0)
    assert dy.max() == 9.0 and dy.min() == -9.0 and 123_456 in dx and 765_432 in dx
    short = np.arange(5.0)
    assert decimate(short, short)[1] is short


def test_smoothing_and_log_axis_rules() -> None:
    assert smooth([1.0, 0.0, 0.0]) == pytest.approx([1.0, 0.6, 0.36])
    assert log_scale(np.array([1.0, 1e-4]))  # a grad norm over four decades
    assert not log_scale(np.array([1.0, 0.01]))
    assert not log_scale(np.array([-1.0, 1e4]))
    assert not log_scale(np.array([0.0, 1e4]))


def test_unknown_tag_and_empty_run_raise_plot_error(tmp_path: Path) -> None:
    reader = reader_of(write_run(tmp_path))
    with pytest.raises(DualwatchError, match="no tag 'nope' in "):
        plot_run(reader, str(tmp_path / "c.png"), ["nope"])
    empty: Any = SimpleNamespace(run_dir=str(tmp_path / "empty"), series={})
    with pytest.raises(DualwatchError, match="no scalar records in "):
        plot_run(empty, str(tmp_path / "c.png"))


def test_all_nan_single_point_and_negative_inf_tags_still_get_panels(tmp_path: Path) -> None:
    def series(*points: tuple[int, float]) -> Series:
        s = Series()
        for step, value in points:
            s.put(step, 0.0, value)
        return s

    run: Any = SimpleNamespace(
        run_dir=str(tmp_path / "odd"),
        series={
            "all_nan": series((0, float("nan")), (5, float("nan"))),
            "one_point": series((3, 0.5)),
            "neg_inf": series((0, 1.0), (1, float("-inf")), (2, 0.5)),
        },
    )
    out = tmp_path / "odd.png"
    assert plot_run(run, str(out)) == ["all_nan", "neg_inf", "one_point"]
    read_png(out)
