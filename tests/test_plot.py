"""``dualwatch plot``: images of real runs (dualwatch's Writer, VisualDL's LogWriter) and the errors.

An image is checked for what it shows, not only that it decodes: the panels are found by
their black frames, and in each the curve's pixels (matplotlib's ``tab:blue``) and the red
NaN/Inf marks are located, so a test sees how many panels there are, that each has a line,
which way the line goes, and where the marks sit. Which run was drawn is proven by comparing
the image pixel for pixel with one drawn from the series the test itself wrote. The SVG
output, whose text matplotlib keeps as comments, shows the titles and labels.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import matplotlib.image as matplotlib_image
import numpy as np
import pytest
from click.testing import CliRunner, Result
from matplotlib.colors import to_rgb

from dualwatch import DualwatchError, Writer
from dualwatch._cli import main
from dualwatch._plot import POINTS, choose_tags, decimate, log_scale, plot_run
from dualwatch.readers import RunReader, Series
from dualwatch.readers._series import smooth

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAIN = ["Loss/Train", "Learning_Rate", "train/gradient/total_norm"]
LINE = np.array(to_rgb("tab:blue"))  # the smoothed curve
RAW = 0.7 + 0.3 * LINE  # the raw values: the same colour at alpha 0.3 on white
MARK = np.array(to_rgb("red"))  # NaN/Inf marks


def scalars_of(step: int, n: int, extra: int = 0, rising: bool = False) -> dict[str, float]:
    """Loss (NaN at step 20, Inf at 30; falling, or ``rising``), lr, a decaying grad norm, ``extra`` more."""
    loss = (
        float("nan") if step == 20 else float("inf") if step == 30 else 1 / (n - step if rising else step + 1)
    )
    scalars = {
        "eval/accuracy": step / n,
        "Loss/Train": loss,
        "Learning_Rate": 0.01,
        "train/gradient/total_norm": 10.0 ** (-step / 10),
    }
    scalars.update({f"extra/t{i:02d}": float(i + step) for i in range(extra)})
    return scalars


def write_run(logdir: Path, run: str = "r", n: int = 50, extra: int = 0, rising: bool = False) -> Path:
    """A dualwatch run of :func:`scalars_of` at steps ``0..n-1``."""
    start = time.time() - n
    with Writer(logdir, run=run) as writer:
        for step in range(n):
            writer.log(step, scalars_of(step, n, extra, rising), walltime=start + step)
    return logdir / run


def known_run(run_dir: Path, n: int = 50, extra: int = 0, rising: bool = False) -> Any:
    """The series :func:`write_run` writes, built here without reading any file (as float32: the
    precision of the TensorBoard events the reader prefers)."""
    series: dict[str, Series] = {}
    for step in range(n):
        for tag, value in scalars_of(step, n, extra, rising).items():
            series.setdefault(tag, Series()).put(step, 0.0, float(np.float32(value)))
    return SimpleNamespace(run_dir=str(run_dir), series=series)


def plot(*args: str, **env: str) -> Result:
    return CliRunner(env=env).invoke(main, ["plot", *args])


def read_png(path: Path) -> np.ndarray:
    assert path.read_bytes().startswith(PNG_SIGNATURE)
    return matplotlib_image.imread(str(path))[..., :3]


def _lines(rows: list[int]) -> list[list[int]]:
    """Consecutive row numbers grouped: one group per drawn line (a spine may be 1-2 px thick)."""
    groups: list[list[int]] = []
    for row in rows:
        if groups and row - groups[-1][-1] <= 1:
            groups[-1].append(row)
        else:
            groups.append([row])
    return groups


def panel_boxes(img: np.ndarray) -> list[tuple[int, int, int, int]]:
    """``(top, bottom, left, right)`` inside each panel's frame, top-left first.

    A frame's top and bottom spines are dark horizontal runs of the same extent, at least
    100 px long (tick labels and text are far shorter)."""
    dark = img.max(axis=-1) < 0.25
    spans: dict[tuple[int, int], list[int]] = {}
    for y, row in enumerate(dark):
        edges = np.diff(np.concatenate(([0], row.astype(np.int8), [0])))
        for start, end in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)):
            if end - start >= 100:
                spans.setdefault((int(start), int(end)), []).append(y)
    boxes = []
    for (start, end), rows in spans.items():
        lines = _lines(rows)
        assert len(lines) % 2 == 0, f"a frame {start}..{end} without its bottom spine: rows {lines}"
        boxes += [
            (top[-1] + 1, bottom[0], start + 1, end - 1) for top, bottom in zip(lines[::2], lines[1::2])
        ]
    return sorted(boxes)


def pixels(img: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.abs(img - colour).max(axis=-1) < 0.08


def curve(img: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """Per pixel column of the panel that the line crosses: the mean row of the line's pixels
    (0 = the panel's top), left to right."""
    top, bottom, left, right = box
    line = pixels(img[top + 2 : bottom - 2, left + 2 : right - 2], LINE)
    return np.array([np.flatnonzero(col).mean() for col in line.T if col.any()])


def marks(img: np.ndarray, box: tuple[int, int, int, int]) -> tuple[int, int]:
    """Red pixels ``(on the top edge, on the bottom edge)`` of a panel: where NaN/Inf are marked."""
    top, bottom, left, right = box
    red = pixels(img, MARK)
    return int(red[top - 8 : top + 8, left:right].sum()), int(red[bottom - 8 : bottom + 8, left:right].sum())


def svg_texts(path: Path) -> list[str]:
    """The text drawn into an SVG, in drawing order: matplotlib writes each text as a comment."""
    return re.findall(r"<!-- (.*?) -->", path.read_text(encoding="utf-8"))


def reader_of(run_dir: Path) -> RunReader:
    reader = RunReader(str(run_dir))
    reader.poll()
    return reader


def test_plot_writes_a_png_of_the_newest_run_with_nan_and_inf(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "older", rising=True)
    write_run(tmp_path / "runs", "newer")
    out = tmp_path / "curves.png"
    result = plot(str(tmp_path / "runs"), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{out}\n" and result.stderr == ""
    assert sorted(os.listdir(tmp_path)) == ["curves.png", "runs"]  # no temporary file left
    img = read_png(out)
    boxes = panel_boxes(img)
    assert len(boxes) == 4  # loss, lr, grad norm, accuracy in a 2 x 2 grid
    assert [top for top, *_ in boxes] == [boxes[0][0]] * 2 + [boxes[2][0]] * 2
    for box in boxes:
        assert len(curve(img, box)) > 0.8 * (box[3] - box[2])  # a line across each panel
    loss, lr, _, accuracy = (curve(img, box) for box in boxes)
    assert loss[0] < loss[-1] - 100  # the newer run's falling loss (the older one's rises)
    assert accuracy[0] > accuracy[-1] + 100 and np.ptp(lr) < 1  # rising accuracy, flat lr
    assert marks(img, boxes[0])[0] > 0 and marks(img, boxes[0])[1] == 0  # NaN and +Inf on the top edge
    assert all(marks(img, box) == (0, 0) for box in boxes[1:])
    # pixel for pixel the image of the newer run's series as written, not of the older run's
    expected = tmp_path / "expected"
    expected.mkdir()
    plot_run(known_run(tmp_path / "runs" / "newer"), str(expected / "newer.png"))
    plot_run(known_run(tmp_path / "runs" / "older", rising=True), str(expected / "older.png"))
    assert np.array_equal(img, read_png(expected / "newer.png"))
    assert not np.array_equal(img, read_png(expected / "older.png"))


def test_svg_text_names_the_run_the_tags_the_axis_and_the_bad_points(tmp_path: Path) -> None:
    out = tmp_path / "c.svg"
    assert plot_run(reader_of(write_run(tmp_path, "my_run")), str(out)) == [*MAIN, "eval/accuracy"]
    texts = svg_texts(out)
    assert texts.count("my_run") == 1  # the title (first line) names the run
    assert "faint: raw · solid: EMA smoothing 0.6 · red x: NaN/Inf" in texts
    assert [t for t in texts if t in [*MAIN, "eval/accuracy"]] == [*MAIN, "eval/accuracy"]  # panel order
    assert texts.count("step") == 2  # under the lowest panel of each column
    assert "2 NaN/Inf · last 0.02" in texts  # the loss panel counts its NaN and Inf
    assert len(re.findall(r'<g id="axes_\d+">', out.read_text(encoding="utf-8"))) == 4  # one per panel


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
    img = read_png(out)
    boxes = panel_boxes(img)
    assert len(boxes) == 16 and all(len(curve(img, box)) > 0 for box in boxes)
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
    img = read_png(out)
    assert len(panel_boxes(img)) == 4  # extra/t00..t02, then Loss/Train
    expected = tmp_path / "expected.png"
    plot_run(
        known_run(tmp_path / "runs" / "r", extra=3),
        str(expected),
        ["extra/t00", "extra/t01", "extra/t02", "Loss/Train"],
    )
    assert np.array_equal(img, read_png(expected))
    assert plot_run(reader, str(out), chosen[:2]) == chosen[:2]
    img = read_png(out)
    grad_norm, extra = (curve(img, box) for box in panel_boxes(img))
    assert grad_norm[0] < grad_norm[-1] - 100 and extra[0] > extra[-1] + 100  # falling norm, rising t00


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
    img = read_png(out)
    boxes = panel_boxes(img)
    assert len(boxes) == 2  # train/loss and train/lr: the VisualDL run's tags, not the dualwatch run's four
    loss, lr = (curve(img, box) for box in boxes)
    assert loss[0] < loss[-1] - 100 and np.ptp(lr) < 1
    assert plot_run(reader_of(tmp_path / "runs" / "vdl"), str(out)) == ["train/loss", "train/lr"]


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
    assert len(panel_boxes(read_png(out))) == 4
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
    img = read_png(out)
    for box in panel_boxes(img):
        top, bottom, left, right = box
        raw = pixels(img[top + 2 : bottom - 2, left + 2 : right - 2], RAW)
        peak_row = np.argmax(raw.any(axis=1))  # the highest row the raw line reaches
        # the spike (50 at step 654,321 of a curve below 1 elsewhere) survives decimation: it reaches the
        # top (under matplotlib's 5 % margin), where the x axis (5 % margins too) puts step 654,321
        assert peak_row < 0.06 * raw.shape[0]
        where = np.flatnonzero(raw[peak_row]).mean() / raw.shape[1]
        assert where == pytest.approx((0.05 + 654_321 / (n - 1)) / 1.1, abs=0.01)
    assert len(panel_boxes(img)) == 2


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
    img = read_png(out)
    all_nan, neg_inf, one_point = boxes = panel_boxes(img)
    assert len(curve(img, all_nan)) == 0 and marks(img, all_nan)[0] > 0  # no line, NaN marked on top
    assert len(curve(img, neg_inf)) > 0 and marks(img, neg_inf)[0] == 0 and marks(img, neg_inf)[1] > 0
    assert 0 < len(curve(img, one_point)) < 20 and marks(img, one_point) == (0, 0)  # one dot
    assert len(boxes) == 3
