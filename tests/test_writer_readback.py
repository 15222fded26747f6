"""What ``Writer`` writes is read back by the viewers' own readers, exactly.

VisualDL's ``LogReader``, TensorBoard's ``EventAccumulator`` / ``EventFileLoader`` and a
strict JSON parser read the files of a closed run; nothing is mocked. Wall times are
given explicitly so that every step, value and timestamp has one exact expected value.
"""

from __future__ import annotations

import glob
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
import warnings
from typing import Any

import numpy as np
import pytest
from conftest import _import, _tb, _tb_plugins, read_metrics
from PIL import Image as PILImage
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.plugins.hparams import metadata as hparams_metadata
from visualdl import LogReader
from visualdl.component import base_component

from dualwatch import Writer
from dualwatch import _histogram as histogram
from dualwatch.backends import framework_of

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WALL = 1_700_000_000.0  # a wall time whose millisecond multiples are exact in float64


# -- reading a run back ---------------------------------------------------------------------


def _ms(wall: float) -> int:
    return int(wall * 1000 + 0.5)


def _only(run_dir: str, mark: str) -> str:
    paths = glob.glob(os.path.join(run_dir, f"*{mark}*"))
    assert len(paths) == 1, f"expected one {mark} file in {run_dir}, found {os.listdir(run_dir)}"
    return paths[0]


def _vdl(run_dir: str) -> LogReader:
    return LogReader(file_path=_only(run_dir, "vdlrecords"))


def _tb_events(run_dir: str) -> list[Any]:
    """Every event of every TensorBoard file of the run, in file order, as written."""
    events = []
    for path in sorted(glob.glob(os.path.join(run_dir, "*tfevents*"))):
        events.extend(event_file_loader.EventFileLoader(path).Load())
    return events


def _jsonl_scalars(run_dir: str, tag: str) -> list[tuple[int, float, Any]]:
    return [
        (o["step"], o["wall_time"], o[tag]) for o in read_metrics(run_dir) if "kind" not in o and tag in o
    ]


def _f32(value: float) -> float:
    return float(np.float32(value))


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def _png_pixels(png: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(png)) as image:
        pixels = np.asarray(image)
    return pixels if pixels.ndim == 3 else pixels[:, :, None]


@pytest.fixture
def logdir(tmp_path: Any) -> str:
    return str(tmp_path / "runs")


# -- 1. scalars ------------------------------------------------------------------------------

SCALARS = [0.1, 1 / 3, -2.5e10, 1e-8, 123456789.123, 7.0, 0.0]


def test_add_scalar_values_steps_and_wall_times_read_back_exactly_in_every_format(logdir: str) -> None:
    walls = [WALL + 0.001 * i + 0.25 * i for i in range(len(SCALARS))]
    walls[-1] = WALL + 0.1234  # sub-millisecond: rounded to the nearest millisecond
    with Writer(logdir, run="r") as w:
        for step, (value, wall) in enumerate(zip(SCALARS, walls)):
            w.add_scalar("loss", value, step * 10, walltime=wall)
    run = os.path.join(logdir, "r")

    vdl = _vdl(run).get_data("scalar", "loss")
    assert [v.id for v in vdl] == [10 * i for i in range(len(SCALARS))]
    assert [v.timestamp for v in vdl] == [_ms(wall) for wall in walls]
    assert vdl[-1].timestamp == 1_700_000_000_123
    assert [v.value for v in vdl] == [_f32(v) for v in SCALARS]

    tb = _tb(run).Scalars("loss")
    assert [e.step for e in tb] == [10 * i for i in range(len(SCALARS))]
    assert [e.wall_time for e in tb] == [_ms(wall) / 1000 for wall in walls]
    assert [e.value for e in tb] == [_f32(v) for v in SCALARS]

    assert _jsonl_scalars(run, "loss") == [
        (10 * i, _ms(wall) / 1000, value) for i, (value, wall) in enumerate(zip(SCALARS, walls))
    ]


def test_log_writes_a_dict_of_scalars_as_one_event_and_one_json_line(logdir: str) -> None:
    with Writer(logdir, run="r") as w:
        for step in range(3):
            w.log(
                step,
                {"loss": 1.0 / (step + 1), "acc": step / 10, "lr": np.float32(0.5)},
                walltime=WALL + step,
            )
    run = os.path.join(logdir, "r")

    reader = _vdl(run)
    for tag, expected in (("loss", [1.0, 0.5, 1 / 3]), ("acc", [0.0, 0.1, 0.2]), ("lr", [0.5] * 3)):
        data = reader.get_data("scalar", tag)
        assert [(v.id, v.timestamp, v.value) for v in data] == [
            (s, _ms(WALL + s), _f32(e)) for s, e in enumerate(expected)
        ]
        assert [(e.step, e.wall_time, e.value) for e in _tb(run).Scalars(tag)] == [
            (s, WALL + s, _f32(e)) for s, e in enumerate(expected)
        ]

    summaries = [e for e in _tb_events(run) if e.HasField("summary")]
    assert [(e.step, sorted(v.tag for v in e.summary.value)) for e in summaries] == [
        (s, ["acc", "loss", "lr"]) for s in range(3)
    ]
    assert read_metrics(run) == [
        {"step": s, "wall_time": WALL + s, "loss": 1.0 / (s + 1), "acc": s / 10, "lr": 0.5} for s in range(3)
    ]


def test_add_scalars_writes_flat_main_slash_sub_tags_and_no_sub_directories(logdir: str) -> None:
    with Writer(logdir, run="r") as w:
        for step in range(4):
            w.add_scalars("loss", {"train": 1.0 + step, "val": 2.0 + step}, step, walltime=WALL + step)
    run = os.path.join(logdir, "r")

    assert os.listdir(logdir) == ["r"]
    assert all(os.path.isfile(os.path.join(run, name)) for name in os.listdir(run)), os.listdir(run)
    reader = _vdl(run)
    assert sorted(reader.get_tags()["scalar"]) == ["loss/train", "loss/val"]
    assert [v.value for v in reader.get_data("scalar", "loss/val")] == [2.0, 3.0, 4.0, 5.0]
    tb = _tb(run)
    assert sorted(tb.Tags()["scalars"]) == ["loss/train", "loss/val"]
    assert [(e.step, e.wall_time, e.value) for e in tb.Scalars("loss/train")] == [
        (s, WALL + s, 1.0 + s) for s in range(4)
    ]
    assert [o["loss/train"] for o in read_metrics(run)] == [1.0, 2.0, 3.0, 4.0]


def test_nan_and_infinities_are_written_in_every_format_and_jsonl_stays_strict(logdir: str) -> None:
    values = {"nan": float("nan"), "pinf": float("inf"), "ninf": float("-inf"), "np_nan": np.float32("nan")}
    with Writer(logdir, run="r") as w:
        w.log(0, values, walltime=WALL)
        w.add_scalar("single_nan", float("nan"), 1, walltime=WALL + 1)
        w.add_scalar("nan", 1.5, 2, walltime=WALL + 2)
    run = os.path.join(logdir, "r")

    expected = {"nan": [math.nan, 1.5], "pinf": [math.inf], "ninf": [-math.inf], "np_nan": [math.nan]}
    expected["single_nan"] = [math.nan]
    reader, tb = _vdl(run), _tb(run)
    for tag, want in expected.items():
        got_vdl = [v.value for v in reader.get_data("scalar", tag)]
        got_tb = [e.value for e in tb.Scalars(tag)]
        assert len(got_vdl) == len(want) and all(map(_same, got_vdl, want)), (tag, got_vdl)
        assert len(got_tb) == len(want) and all(map(_same, got_tb, want)), (tag, got_tb)

    lines = read_metrics(run)  # strict parse: a bare NaN would raise
    assert lines[0] == {
        "step": 0,
        "wall_time": WALL,
        "nan": "NaN",
        "pinf": "Infinity",
        "ninf": "-Infinity",
        "np_nan": "NaN",
    }
    assert lines[1] == {"step": 1, "wall_time": WALL + 1, "single_nan": "NaN"}
    assert lines[2] == {"step": 2, "wall_time": WALL + 2, "nan": 1.5}


def test_numpy_numbers_and_one_element_tensors_are_logged_as_scalars(logdir: str, framework: str) -> None:
    fw = _import(framework)
    tensor = fw.tensor([0.25]) if framework == "torch" else fw.to_tensor([0.25])
    with Writer(logdir, run="r") as w:
        w.add_scalar("a", tensor, np.int64(1), walltime=WALL)
        w.add_scalar("b", np.float64(0.1), 2, walltime=WALL)
        w.add_scalar("c", 3, 3, walltime=WALL)
    run = os.path.join(logdir, "r")
    reader = _vdl(run)
    assert [(v.id, v.value) for t in "abc" for v in reader.get_data("scalar", t)] == [
        (1, 0.25),
        (2, _f32(0.1)),
        (3, 3.0),
    ]
    assert [o[t] for o, t in zip(read_metrics(run), "abc")] == [0.25, 0.1, 3.0]


# -- 2. hyper-parameters -------------------------------------------------------------------


def test_add_hparams_writes_into_the_same_run_for_both_viewers(logdir: str) -> None:
    hparams = {"lr": 0.1, "opt": "adam", "flag": True, "layers": 3, "skipped": None}
    with Writer(logdir, run="r") as w:
        w.add_scalar("loss", 1.0, 0, walltime=WALL)
        w.add_hparams(hparams, {"acc": 0.75, "loss": 0.5}, step=7)
    run = os.path.join(logdir, "r")

    assert os.listdir(logdir) == ["r"]
    assert all(os.path.isfile(os.path.join(run, name)) for name in os.listdir(run)), os.listdir(run)

    reader = _vdl(run)
    (record,) = reader.get_data("hyper_parameters", "hparam")
    infos = {i.name: getattr(i, i.WhichOneof("type")) for i in record.hparam.hparamInfos}
    assert infos == {"lr": 0.1, "opt": "adam", "flag": "True", "layers": 3}
    assert [m.name for m in record.hparam.metricInfos] == ["acc", "loss"]
    assert [(v.id, v.value) for v in reader.get_data("scalar", "acc")] == [(7, 0.75)]
    assert [(v.id, v.value) for v in reader.get_data("scalar", "loss")] == [(0, 1.0), (7, 0.5)]

    tb = _tb_plugins(run)
    content = tb.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    assert {hparams_metadata.EXPERIMENT_TAG, hparams_metadata.SESSION_START_INFO_TAG} <= set(content)
    experiment = hparams_metadata.parse_experiment_plugin_data(content[hparams_metadata.EXPERIMENT_TAG])
    assert sorted(i.name for i in experiment.hparam_infos) == ["flag", "layers", "lr", "opt"]
    assert [m.name.tag for m in experiment.metric_infos] == ["acc", "loss"]
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    assert start.hparams["lr"].number_value == 0.1
    assert start.hparams["layers"].number_value == 3
    assert start.hparams["opt"].string_value == "adam"
    assert start.hparams["flag"].bool_value is True
    assert "skipped" not in start.hparams
    assert [(e.step, e.tensor_proto.float_val[0]) for e in tb.Tensors("acc")] == [(7, 0.75)]

    lines = read_metrics(run)
    assert next(o for o in lines if o.get("kind") == "hparams")["hparams"] == {
        "lr": 0.1,
        "opt": "adam",
        "flag": True,
        "layers": 3,
    }
    assert _jsonl_scalars(run, "acc")[0][::2] == (7, 0.75)


def test_add_hparams_with_metric_names_only_logs_no_scalars(logdir: str) -> None:
    with Writer(logdir, run="r") as w:
        w.add_hparams({"lr": 0.01}, ["acc"])
    run = os.path.join(logdir, "r")
    assert "scalar" not in _vdl(run).get_tags()
    assert _tb(run).Tags()["scalars"] == []
    (line,) = read_metrics(run)
    assert (line["kind"], line["metrics"]) == ("hparams", ["acc"])


def test_a_non_finite_hparam_still_reaches_metrics_jsonl_as_a_string(logdir: str) -> None:
    # metrics.jsonl promises "Infinity"/"NaN" strings for non-finite values; _finite() in
    # formats/jsonl.py does not look inside the nested "hparams" dict, so the line is skipped.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Writer(logdir, run="r") as w:
            w.add_hparams({"clip": float("inf"), "lr": 0.1}, ["loss"])
    run = os.path.join(logdir, "r")
    assert [str(c.message) for c in caught if "dualwatch" in str(c.message)] == []
    (line,) = read_metrics(run)
    assert line["hparams"] == {"clip": "Infinity", "lr": 0.1}


# -- 3. text and images ---------------------------------------------------------------------


def test_add_text_reads_back_in_both_viewers(logdir: str) -> None:
    text = "héllo ✓ 步 — **markdown**\nsecond line"
    with Writer(logdir, run="r") as w:
        w.add_text("notes", text, 3, walltime=WALL)
    run = os.path.join(logdir, "r")
    (record,) = _vdl(run).get_data("text", "notes")
    assert (record.id, record.timestamp, record.text.encoded_text_string) == (3, _ms(WALL), text)
    tb = _tb(run)
    (event,) = tb.Tensors("notes")
    assert (event.step, event.wall_time) == (3, WALL)
    assert event.tensor_proto.string_val == [text.encode("utf-8")]
    assert tb.SummaryMetadata("notes").plugin_data.plugin_name == "text"
    (line,) = read_metrics(run)
    assert (line["kind"], line["tag"], line["text"], line["step"]) == ("text", "notes", text, 3)


def _levels(shape: tuple[int, ...], seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape)


IMAGE_CASES = {
    # name: (input, dataformats, the HWC uint8 pixels a viewer must show)
    "float01_hwc_rgb": (_levels((5, 7, 3), 1) / 255.0, "HWC", _levels((5, 7, 3), 1)),
    "uint8_hwc_rgba": (_levels((4, 6, 4), 2).astype(np.uint8), "HWC", _levels((4, 6, 4), 2)),
    "uint8_chw_rgb": (
        _levels((3, 4, 6), 3).astype(np.uint8),
        "CHW",
        _levels((3, 4, 6), 3).transpose(1, 2, 0),
    ),
    "float32_chw_gray": (
        (_levels((1, 5, 3), 4) / 255.0).astype(np.float32),
        "CHW",
        _levels((1, 5, 3), 4).transpose(1, 2, 0),
    ),
    "uint8_hw": (_levels((6, 5), 5).astype(np.uint8), "HW", _levels((6, 5), 5)[:, :, None]),
    "float_out_of_range_is_clipped": (
        np.array([[-0.5, 0.0, 0.5, 1.0, 2.0]]),
        "HW",
        np.array([[0, 0, 128, 255, 255]])[:, :, None],
    ),
}


@pytest.mark.parametrize("case", list(IMAGE_CASES))
def test_add_image_pngs_decode_to_the_same_pixels_in_both_viewers(logdir: str, case: str) -> None:
    image, layout, expected = IMAGE_CASES[case]
    expected = expected.astype(np.uint8)
    with Writer(logdir, run="r") as w:
        w.add_image("img", image, 2, dataformats=layout, walltime=WALL)
    run = os.path.join(logdir, "r")
    (record,) = _vdl(run).get_data("image", "img")
    assert (record.id, record.timestamp) == (2, _ms(WALL))
    np.testing.assert_array_equal(_png_pixels(record.image.encoded_image_string), expected)
    (event,) = _tb(run).Images("img")
    assert (event.step, event.wall_time) == (2, WALL)
    assert (event.height, event.width) == expected.shape[:2]
    np.testing.assert_array_equal(_png_pixels(event.encoded_image_string), expected)
    assert _jsonl_scalars(run, "img") == []  # images are not copied into the text file


def test_add_image_never_changes_the_callers_array(logdir: str) -> None:
    original = _levels((4, 4, 3), 6) / 255.0
    # VisualDL's own image() multiplies a [0, 1] float array by 255 in place...
    theirs = original.copy()
    base_component.image("img", theirs, 0, 0)
    assert not np.array_equal(theirs, original)
    # ...the Writer copies it, and later changes by the caller do not reach the file either.
    ours = original.copy()
    with Writer(logdir, run="r") as w:
        w.add_image("img", ours, 0, walltime=WALL)
        np.testing.assert_array_equal(ours, original)
        ours[:] = 0.0
    (record,) = _vdl(os.path.join(logdir, "r")).get_data("image", "img")
    np.testing.assert_array_equal(_png_pixels(record.image.encoded_image_string), _levels((4, 4, 3), 6))


def test_add_image_takes_framework_tensors(logdir: str, framework: str) -> None:
    fw = _import(framework)
    levels = _levels((3, 4, 5), 7)
    array = (levels / 255.0).astype(np.float32)
    tensor = fw.tensor(array) if framework == "torch" else fw.to_tensor(array)
    with Writer(logdir, run="r") as w:
        w.add_image("img", tensor, 0, dataformats="CHW", walltime=WALL)
    run = os.path.join(logdir, "r")
    (record,) = _vdl(run).get_data("image", "img")
    np.testing.assert_array_equal(_png_pixels(record.image.encoded_image_string), levels.transpose(1, 2, 0))
    (event,) = _tb(run).Images("img")
    np.testing.assert_array_equal(_png_pixels(event.encoded_image_string), levels.transpose(1, 2, 0))
    np.testing.assert_array_equal(tensor.numpy(), array)


def test_add_image_takes_bfloat16_tensors(logdir: str, framework: str) -> None:
    # torch: .numpy() raises on bfloat16; paddle: .numpy() gives the raw uint16 bits (all 255).
    fw = _import(framework)
    levels = np.array([[0, 64, 128, 192, 255]])
    array = (levels / 255.0).astype(np.float32)
    if framework == "torch":
        tensor = fw.tensor(array).to(fw.bfloat16)
        widened = tensor.float().numpy()
    else:
        tensor = fw.to_tensor(array).astype("bfloat16")
        widened = tensor.astype("float32").numpy()
    expected = np.clip(np.rint(widened.astype(np.float64) * 255), 0, 255).astype(np.uint8)[:, :, None]
    with Writer(logdir, run="r") as w:
        w.add_image("img", tensor, 0, dataformats="HW", walltime=WALL)
    (record,) = _vdl(os.path.join(logdir, "r")).get_data("image", "img")
    np.testing.assert_array_equal(_png_pixels(record.image.encoded_image_string), expected)


# -- 4. histograms --------------------------------------------------------------------------


def _reference(values: np.ndarray, bins: int) -> dict[str, Any]:
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    finite = values[np.isfinite(values)]
    counts, edges = np.histogram(finite, bins=bins)
    return {
        "counts": counts,
        "edges": edges,
        "num": finite.size,
        "sum": float(finite.sum()),
        "sum_squares": float(np.dot(finite, finite)),
        "nonfinite": values.size - finite.size,
    }


def _assert_histogram_read_back(run: str, tag: str, step: int, ref: dict[str, Any]) -> None:
    (event,) = _tb(run).Histograms(tag)
    h = event.histogram_value
    assert (event.step, event.wall_time) == (step, WALL)
    assert (h.min, h.max, h.num) == (ref["edges"][0], ref["edges"][-1], ref["num"])
    assert h.sum == pytest.approx(ref["sum"], rel=1e-12)
    assert h.sum_squares == pytest.approx(ref["sum_squares"], rel=1e-12)
    assert list(h.bucket_limit) == ref["edges"][1:].tolist()
    assert list(h.bucket) == ref["counts"].tolist()

    (record,) = _vdl(run).get_data("histogram", tag)
    assert (record.id, record.timestamp) == (step, _ms(WALL))
    assert list(record.histogram.hist) == ref["counts"].tolist()
    assert list(record.histogram.bin_edges) == ref["edges"].tolist()

    (line,) = [o for o in read_metrics(run) if o.get("kind") == "histogram" and o["tag"] == tag]
    assert line["counts"] == ref["counts"].tolist()
    assert line["edges"] == ref["edges"].tolist()
    assert (line["num"], line["nonfinite"]) == (ref["num"], ref["nonfinite"])
    assert line["sum"] == pytest.approx(ref["sum"], rel=1e-12)
    assert line["sum_squares"] == pytest.approx(ref["sum_squares"], rel=1e-12)


def test_add_histogram_of_numpy_values_matches_numpy_in_every_format(logdir: str) -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(997) * 3 + 1, [np.nan, np.inf, -np.inf]])
    rng.shuffle(values)
    caller = values.copy()
    with Writer(logdir, run="r") as w:
        w.add_histogram("w", caller, 5, bins=20, walltime=WALL)
        caller[:] = 0.0  # the caller reuses its buffer before the writer thread counts it
    ref = _reference(values, 20)
    assert (ref["num"], ref["nonfinite"]) == (997, 3)
    _assert_histogram_read_back(os.path.join(logdir, "r"), "w", 5, ref)


def test_add_histogram_of_a_constant_spans_value_plus_minus_half(logdir: str) -> None:
    with Writer(logdir, run="r") as w:
        w.add_histogram("c", np.full(10, 2.0), 0, bins=4, walltime=WALL)
    ref = _reference(np.full(10, 2.0), 4)
    assert ref["edges"].tolist() == [1.5, 1.75, 2.0, 2.25, 2.5]
    _assert_histogram_read_back(os.path.join(logdir, "r"), "c", 0, ref)


def _away_from_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Drops values within 1e-3 of a bucket width of an inner edge (min and max stay, so edges do)."""
    lo, hi = values.min(), values.max()
    inner = np.linspace(float(lo), float(hi), bins + 1)[1:-1]
    width = (float(hi) - float(lo)) / bins
    distance = np.abs(values.astype(np.float64)[:, None] - inner[None, :]).min(axis=1)
    return values[(distance > 1e-3 * width) | (values == lo) | (values == hi)]


def _packed(framework: str, values: np.ndarray, bins: int) -> histogram.Summary:
    fw = _import(framework)
    tensor = fw.from_numpy(values) if framework == "torch" else fw.to_tensor(values)
    packed = framework_of(tensor).device_histogram(tensor, bins)
    return histogram._from_packed(np.asarray(packed.numpy()), bins)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_on_device_histogram_kernels_match_numpy(framework: str, dtype: str) -> None:
    rng = np.random.default_rng(1)
    bins = 16
    finite = _away_from_edges(rng.standard_normal(4000).astype(dtype), bins)
    values = np.concatenate([finite, np.array([np.nan, np.inf, -np.inf, np.nan], dtype=dtype)])
    rng.shuffle(values)
    counts, edges, num, total, squares, nonfinite = _packed(framework, values, bins)
    ref = _reference(values, bins)
    assert counts.tolist() == ref["counts"].tolist()
    np.testing.assert_allclose(edges, ref["edges"], rtol=0, atol=1e-12)
    assert (num, nonfinite) == (ref["num"], 4)
    assert total == pytest.approx(ref["sum"], rel=1e-6)
    assert squares == pytest.approx(ref["sum_squares"], rel=1e-6)


def test_on_device_histogram_kernels_handle_constants_integers_and_no_finite_value(framework: str) -> None:
    counts, edges, num, *_ = _packed(framework, np.full(5, 2.0, np.float32), 4)
    assert (counts.tolist(), edges.tolist(), num) == ([0, 0, 5, 0], [1.5, 1.75, 2.0, 2.25, 2.5], 5)
    counts, edges, num, total, _, _ = _packed(framework, np.arange(10, dtype=np.int64), 4)
    ref = _reference(np.arange(10), 4)
    assert (counts.tolist(), edges.tolist(), num, total) == (
        ref["counts"].tolist(),
        ref["edges"].tolist(),
        10,
        45,
    )
    counts, _, num, total, squares, nonfinite = _packed(framework, np.array([np.nan, np.inf], np.float32), 4)
    assert (counts.tolist(), num, total, squares, nonfinite) == ([0, 0, 0, 0], 0, 0.0, 0.0, 2)


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_add_histogram_takes_cpu_tensors_of_either_framework(logdir: str, framework: str, dtype: str) -> None:
    fw = _import(framework)
    rng = np.random.default_rng(2)
    array = rng.standard_normal(500).astype(np.float32)
    if framework == "torch":
        tensor = fw.from_numpy(array).to(getattr(fw, dtype))
        widened = tensor.float().numpy()
    else:
        tensor = fw.to_tensor(array).astype(dtype)
        widened = tensor.astype("float32").numpy()
    with Writer(logdir, run="r") as w:
        w.add_histogram("t", tensor, 1, bins=10, walltime=WALL)
    _assert_histogram_read_back(os.path.join(logdir, "r"), "t", 1, _reference(widened, 10))


# -- 5. tags and validation -----------------------------------------------------------------


def test_a_percent_in_a_tag_is_written_as_pct_everywhere_with_one_warning(logdir: str) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Writer(logdir, run="r") as w:
            for step in range(3):
                w.add_scalar("top1%", 0.5 + step, step, walltime=WALL + step)
                w.log(step, {"top5%": 0.25}, walltime=WALL + step)
            w.add_histogram("w%", np.arange(4.0), 3, bins=2, walltime=WALL)
            w.add_histogram("w%", np.arange(4.0), 4, bins=2, walltime=WALL)
    mine = [c for c in caught if "dualwatch" in str(c.message)]
    assert [c.category for c in mine] == [UserWarning] * 3  # one per tag, not one per call
    assert "'top1%'" in str(mine[0].message) and "'top1_pct'" in str(mine[0].message)
    assert "'top5_pct'" in str(mine[1].message) and "'w_pct'" in str(mine[2].message)
    assert all(c.filename == __file__ for c in mine)  # attributed to the caller's line

    run = os.path.join(logdir, "r")
    reader = _vdl(run)
    assert sorted(reader.get_tags()["scalar"]) == ["top1_pct", "top5_pct"]
    assert reader.get_tags()["histogram"] == ["w_pct"]
    assert [v.value for v in reader.get_data("scalar", "top1_pct")] == [0.5, 1.5, 2.5]
    tb = _tb(run)
    assert sorted(tb.Tags()["scalars"]) == ["top1_pct", "top5_pct"]
    assert tb.Tags()["histograms"] == ["w_pct"]
    with open(os.path.join(run, "metrics.jsonl"), encoding="utf-8") as f:
        text = f.read()
    assert "%" not in text and text.count('"top1_pct"') == 3 and text.count('"w_pct"') == 2


BAD_CALLS = {
    "int tag": lambda w: w.add_scalar(5, 1.0, 0),
    "empty tag": lambda w: w.add_scalar("", 1.0, 0),
    "None tag": lambda w: w.add_scalar(None, 1.0, 0),
    "empty tag in log": lambda w: w.log(0, {"ok": 1.0, "": 2.0}),
    "empty tag in histogram": lambda w: w.add_histogram("", np.ones(3), 0),
    "empty tag in text": lambda w: w.add_text("", "x", 0),
    "str value": lambda w: w.add_scalar("a", "1.0", 0),
    "bytes value": lambda w: w.add_scalar("a", b"1", 0),
    "str value in log": lambda w: w.log(0, {"ok": 1.0, "bad": "1.0"}),
    "str value in add_scalars": lambda w: w.add_scalars("m", {"ok": 1.0, "bad": "x"}, 0),
    "non-str text": lambda w: w.add_text("t", 5, 0),
    "float step": lambda w: w.add_scalar("a", 1.0, 1.5),
    "str step": lambda w: w.add_scalar("a", 1.0, "3"),
    "bool step": lambda w: w.add_scalar("a", 1.0, True),
    "None step with VisualDL's value=": lambda w: w.add_scalar("a", value=1.0),
    "step and global_step": lambda w: w.add_scalar("a", 1.0, global_step=1, step=2),
    "value and scalar_value": lambda w: w.add_scalar("a", 1.0, 0, value=2.0),
    "numpy float step": lambda w: w.add_scalar("a", 1.0, np.float64(2)),
    "float step in log": lambda w: w.log(2.0, {"a": 1.0}),
    "float step in histogram": lambda w: w.add_histogram("h", np.ones(3), 0.5),
    "float step in image": lambda w: w.add_image("i", np.zeros((2, 2, 3)), 0.5),
    "float step in text": lambda w: w.add_text("t", "x", 0.5),
}


@pytest.mark.parametrize("call", list(BAD_CALLS))
def test_bad_tags_values_and_steps_raise_type_error_before_anything_is_queued(logdir: str, call: str) -> None:
    w = Writer(logdir, run="r")
    with pytest.raises(TypeError):
        BAD_CALLS[call](w)
    assert w.stats()["queued"] == 0
    w.close()
    assert w.stats()["written"] == 0
    assert os.listdir(os.path.join(logdir, "r")) == []  # no record, so no file was even opened


# -- 6. run directories ---------------------------------------------------------------------


def test_default_run_names_are_unique_within_a_minute_and_hold_both_viewers_files(logdir: str) -> None:
    for _attempt in range(3):  # retried only if the clock's minute turns while the writers start
        before = time.strftime("logs_%m%d%H%M")
        writers = [Writer(logdir) for _ in range(3)]
        after = time.strftime("logs_%m%d%H%M")
        for w in writers:
            w.add_scalar("loss", 1.0, 0, walltime=WALL)
            w.close()
        if before == after:
            break
        for w in writers:
            for name in os.listdir(w.run_dir):
                os.remove(os.path.join(w.run_dir, name))
            os.rmdir(w.run_dir)
    assert re.fullmatch(r"logs_\d{8}", before)
    assert [os.path.basename(w.run_dir) for w in writers] == [before, f"{before}_2", f"{before}_3"]
    assert sorted(os.listdir(logdir)) == sorted(os.path.basename(w.run_dir) for w in writers)

    host, pid = socket.gethostname(), str(os.getpid())
    for w in writers:
        names = os.listdir(w.run_dir)
        vdl = [n for n in names if "vdlrecords" in n]
        tb = [n for n in names if "tfevents" in n]
        assert len(vdl) == 1 and len(tb) == 1 and "metrics.jsonl" in names, names
        for name in vdl + tb:
            assert host in name and pid in name.split("."), name
        assert not any("vdlrecords" in n and "tfevents" in n for n in names)
        assert all(os.path.isfile(os.path.join(w.run_dir, n)) for n in names)


def test_an_existing_run_without_resume_is_a_value_error_naming_resume(logdir: str) -> None:
    os.makedirs(os.path.join(logdir, "r"))
    with pytest.raises(ValueError, match=r"resume=True"):
        Writer(logdir, run="r")


def test_resume_without_a_run_name_is_a_value_error(logdir: str) -> None:
    for resume in (True, 10):
        with pytest.raises(ValueError, match=r"run="):
            Writer(logdir, resume=resume)
    assert not os.path.exists(logdir)


# -- 7. missing optional packages ------------------------------------------------------------

_MISSING = """
import json, sys, warnings
sys.modules[sys.argv[2]] = None
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from dualwatch import Writer
    w = Writer(sys.argv[1], run="r")
    w.add_scalar("loss", 0.5, 3, walltime=1700000000.0)
    w.close()
print(json.dumps([[c.category.__name__, str(c.message)] for c in caught if "dualwatch" in str(c.message)]))
"""


@pytest.mark.parametrize(
    ("missing", "mark", "kept"),
    [("visualdl", "vdlrecords", "tfevents"), ("tensorboard", "tfevents", "vdlrecords")],
)
def test_a_missing_package_switches_off_only_its_format_with_one_warning(
    logdir: str, missing: str, mark: str, kept: str
) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, "-c", _MISSING, logdir, missing],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    warned = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(warned) == 1, warned
    category, message = warned[0]
    assert category == "UserWarning"
    assert f"{missing} files are not written" in message
    assert f"pip install 'dualwatch[{missing}]'" in message

    run = os.path.join(logdir, "r")
    names = os.listdir(run)
    assert not any(mark in n for n in names), names
    assert sum(kept in n for n in names) == 1 and "metrics.jsonl" in names, names
    assert read_metrics(run) == [{"step": 3, "wall_time": 1700000000.0, "loss": 0.5}]
    if kept == "tfevents":
        assert [(e.step, e.value) for e in _tb(run).Scalars("loss")] == [(3, 0.5)]
    else:
        assert [(v.id, v.value) for v in _vdl(run).get_data("scalar", "loss")] == [(3, 0.5)]


# -- 8. resume -------------------------------------------------------------------------------


def _write_steps(logdir: str, steps: range, sign: float, resume: bool | int = False) -> None:
    with Writer(logdir, run="r", resume=resume) as w:
        for step in steps:
            w.add_scalar("loss", sign * step, step, walltime=WALL + step + (1000 if sign < 0 else 0))


def _assert_continuous(run: str, last: int, first_new: int) -> None:
    """Steps 0..last, each once and in order; steps >= first_new carry the resumed run's values."""
    expected = [float(s if s < first_new else -s) for s in range(last + 1)]
    walls = [WALL + s + (1000 if s >= first_new else 0) for s in range(last + 1)]

    vdl = _vdl(run).get_data("scalar", "loss")  # one vdlrecords file, read without error
    assert [v.id for v in vdl] == list(range(last + 1))
    assert [v.value for v in vdl] == expected
    assert [v.timestamp for v in vdl] == [_ms(w) for w in walls]

    tb = _tb(run).Scalars("loss")
    assert [e.step for e in tb] == list(range(last + 1))
    assert [e.value for e in tb] == expected
    assert [e.wall_time for e in tb] == walls

    assert [(s, v) for s, _, v in _jsonl_scalars(run, "loss")] == list(zip(range(last + 1), expected))


def test_resume_from_a_step_gives_one_continuous_curve_in_every_format(logdir: str) -> None:
    _write_steps(logdir, range(100), 1.0)
    _write_steps(logdir, range(50, 150), -1.0, resume=50)
    run = os.path.join(logdir, "r")
    _assert_continuous(run, 149, 50)
    assert sum("vdlrecords" in n for n in os.listdir(run)) == 1

    # TensorBoard: the old file is left as a running viewer reads it; the new file starts with the
    # purge marker at the resume step (every file starts with one: the Python loader skips the first)
    assert sum("tfevents" in n for n in os.listdir(run)) == 2
    starts = [e for e in _tb_events(run) if e.HasField("session_log")]
    assert [(e.step, e.session_log.status) for e in starts] == [(0, 1), (50, 1)]  # 1: SessionLog.START
    summary_steps = [e.step for e in _tb_events(run) if e.HasField("summary")]
    assert summary_steps == list(range(100)) + list(range(50, 150))


def test_resume_true_continues_from_the_first_step_logged_after_reopening(logdir: str) -> None:
    _write_steps(logdir, range(100), 1.0)
    _write_steps(logdir, range(60, 80), -1.0, resume=True)
    run = os.path.join(logdir, "r")
    _assert_continuous(run, 79, 60)
    starts = [e.step for e in _tb_events(run) if e.HasField("session_log")]
    assert starts == [0, 60]


def test_resume_keeps_earlier_steps_logged_late_and_drops_later_ones(logdir: str) -> None:
    # records out of step order make the kept records no prefix of the file: it is rewritten
    with Writer(logdir, run="r") as w:
        for step in range(100):
            w.add_scalar("loss", float(step), step, walltime=WALL + step)
        w.add_text("note", "early", 10, walltime=WALL + 200)
        w.add_text("note", "late", 90, walltime=WALL + 201)
        w.add_hparams({"lr": 0.1}, ["loss"])
    _write_steps(logdir, range(50, 60), -1.0, resume=50)
    run = os.path.join(logdir, "r")
    _assert_continuous(run, 59, 50)
    assert not [n for n in os.listdir(run) if n.startswith(".")]  # no temporary file is left behind

    reader = _vdl(run)
    assert [(v.id, v.text.encoded_text_string) for v in reader.get_data("text", "note")] == [(10, "early")]
    assert len(reader.get_data("hyper_parameters", "hparam")) == 1
    tb = _tb_plugins(run)  # what the server runs; the legacy loader does not purge tensors such as text
    assert [(e.step, e.tensor_proto.string_val) for e in tb.Tensors("note")] == [(10, [b"early"])]
    assert hparams_metadata.EXPERIMENT_TAG in tb.Tags()["tensors"]
    kinds = [(o["kind"], o["step"]) for o in read_metrics(run) if "kind" in o]
    assert kinds == [("text", 10), ("hparams", 0)]


@pytest.mark.parametrize("tail", ["partial record", "garbage"])
def test_resume_repairs_a_crashed_tail_in_every_format(logdir: str, tail: str) -> None:
    _write_steps(logdir, range(100), 1.0)
    run = os.path.join(logdir, "r")
    vdl_path, tb_path = _only(run, "vdlrecords"), _only(run, "tfevents")
    for path in (vdl_path, tb_path):
        with open(path, "rb") as f:
            data = f.read()
        cut = data[:10] if tail == "partial record" else b"\x07\x00\xffgarbage\x00" * 3
        with open(path, "ab") as f:
            f.write(cut)
    with open(os.path.join(run, "metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write('{"step": 100, "wall_ti')
    # the damage is real: VisualDL's reader fails on it as it is
    with pytest.raises(Exception):  # noqa: B017 - protobuf's DecodeError or an IndexError
        LogReader(file_path=vdl_path)

    _write_steps(logdir, range(100, 150), -1.0, resume=True)
    assert _only(run, "vdlrecords") == vdl_path
    _assert_continuous(run, 149, 100)
    events = _tb_events(run)  # TensorBoard's reader hits no bad record either
    assert events[0].file_version == "brain.Event:2"
    assert [e.step for e in events if e.HasField("session_log")] == [0, 100]
