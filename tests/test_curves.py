"""PR curves, ROC curves and embeddings: what ``Writer`` writes is TensorBoard's own computation, reads
back from every format, converts, and is served by both real viewers.

References: TensorBoard's ``pr_curve.summary.pb`` (numpy; it imports ``tensorflow.compat.v1`` only
for protobuf classes, which TensorBoard ships too) and torch's ``compute_curve`` (a copy of it, what
``SummaryWriter.add_pr_curve`` writes); torch's ``SummaryWriter.add_embedding`` for the projector's
files. Servers (``_servers.py``), endpoints read from the installed packages:

* TensorBoard ``pr_curves_plugin.py``: ``/data/plugin/pr_curves/tags`` and
  ``/data/plugin/pr_curves/pr_curves?run=&tag=`` -> ``{run: [{step, precision, recall,
  true_positives, ...}]}``, the tail where ``tp + fp == 0`` trimmed.
* TensorBoard ``projector_plugin.py``: ``/data/plugin/projector/runs``, ``/info?run=``,
  ``/tensor?run=&name=`` (float32 bytes), ``/metadata?run=&name=`` (TSV), ``/sprite_image?run=&name=``.
* VisualDL ``server/api.py``: ``/app/api/pr-curve/list?run=&tag=`` and ``roc-curve/list`` ->
  ``[[wall_ms, step, precision|tpr, recall|fpr, TP, FP, TN, FN, thresholds]]``;
  ``embedding/list`` -> ``[{name, shape, path}]``, ``embedding/tensor?name=`` (float32 bytes) and
  ``embedding/metadata?name=`` (TSV).
"""

from __future__ import annotations

import glob
import io
import os
import sys
import time
import types
import urllib.parse
import urllib.request
from typing import Any, Iterator

import numpy as np
import pytest
from _servers import Server, _eventually, _vdl_run, both_servers
from conftest import _import, read_metrics
from PIL import Image as PILImage
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.backend.event_processing import plugin_event_accumulator as pea
from tensorboard.util import tensor_util
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import compute_curve
from visualdl import LogReader

from dualwatch import Writer
from dualwatch._convert import convert_run
from dualwatch._formats.tensorboard import TensorBoardFormat
from dualwatch._formats.visualdl import VisualDLFormat
from dualwatch.records import PRCurve

WALL = 1_700_000_000.0
RTOL = 1e-5


@pytest.fixture
def logdir(tmp_path: Any) -> str:
    return str(tmp_path / "runs")


def _data(n: int = 500, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels and float32 predictions, some of them exactly on bucket boundaries (k / 126)."""
    rng = np.random.default_rng(seed)
    predictions = rng.random(n).astype(np.float32)
    predictions[:40] = (np.arange(40) * 3 / 126).astype(np.float32)
    predictions[40:42] = (0.0, 1.0)
    labels = (rng.random(n) < 0.3 + 0.5 * predictions).astype(np.int64)
    return labels, predictions


def _rows(curve: PRCurve) -> np.ndarray:
    return np.stack([curve.tp, curve.fp, curve.tn, curve.fn, curve.precision, curve.recall])


def _tb_curve(run_dir: str, tag: str) -> list[tuple[int, np.ndarray]]:
    accumulator = pea.EventAccumulator(run_dir, size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
    accumulator.Reload()
    assert accumulator.SummaryMetadata(tag).plugin_data.plugin_name == "pr_curves"
    return [(e.step, tensor_util.make_ndarray(e.tensor_proto)) for e in accumulator.Tensors(tag)]


def _vdl_reader(run_dir: str) -> LogReader:
    (path,) = glob.glob(os.path.join(run_dir, "*vdlrecords*"))
    return LogReader(file_path=path)


def _written_curve(logdir: str, run: str, tag: str = "pr") -> np.ndarray:
    (entry,) = _tb_curve(os.path.join(logdir, run), tag)
    return entry[1]


@pytest.fixture
def tensorboard_pb(monkeypatch: pytest.MonkeyPatch) -> Any:
    """TensorBoard's ``pr_curve.summary.pb`` -> its [6, num_thresholds] array.

    ``pb`` computes in numpy and imports ``tensorflow.compat.v1`` only for ``Summary``,
    ``SummaryMetadata``, ``make_tensor_proto`` and ``float32``; TensorFlow is not installed, so it
    is handed TensorBoard's own copies of them for the duration of the test.
    """
    import tensorboard.compat
    from tensorboard.compat.proto import summary_pb2
    from tensorboard.compat.tensorflow_stub import dtypes
    from tensorboard.plugins.pr_curve import summary

    assert (
        tensorboard.compat.tf.io
    )  # TensorBoard's lazy ``tf`` resolves to its stub before the stand-in exists
    tf = types.ModuleType("tensorflow.compat.v1")
    tf.Summary, tf.SummaryMetadata = summary_pb2.Summary, summary_pb2.SummaryMetadata
    tf.make_tensor_proto, tf.float32 = tensor_util.make_tensor_proto, dtypes.float32
    package, compat = types.ModuleType("tensorflow"), types.ModuleType("tensorflow.compat")
    package.compat, compat.v1 = compat, tf
    for module in (package, compat, tf):
        monkeypatch.setitem(sys.modules, module.__name__, module)

    def reference(labels: Any, predictions: Any, num_thresholds: int, weights: Any = None) -> np.ndarray:
        (value,) = summary.pb("pr", labels, predictions, num_thresholds, weights).value
        return tensor_util.make_ndarray(value.tensor)

    return reference


# -- 1. the curve is TensorBoard's ------------------------------------------------------------------


@pytest.mark.parametrize("num_thresholds", [2, 11, 127, 201])
def test_pr_curve_equals_tensorboards_own_summary_and_torchs_compute_curve(
    logdir: str, tensorboard_pb: Any, num_thresholds: int
) -> None:
    labels, predictions = _data()
    weights = np.random.default_rng(1).random(labels.shape)
    with Writer(logdir, run="r") as w:
        w.add_pr_curve("pr", labels, predictions, 0, num_thresholds=num_thresholds)
        w.add_pr_curve("weighted", labels, predictions, 0, num_thresholds=num_thresholds, weights=weights)
    run = os.path.join(logdir, "r")
    for tag, given in (("pr", None), ("weighted", weights)):
        (entry,) = _tb_curve(run, tag)
        expected = tensorboard_pb(labels.astype(bool), predictions, num_thresholds, given)
        assert entry[1].shape == (6, num_thresholds)
        np.testing.assert_allclose(entry[1], expected, rtol=RTOL, atol=1e-7)
        torch_rows = compute_curve(labels, predictions, num_thresholds=num_thresholds, weights=given)
        np.testing.assert_allclose(entry[1], torch_rows, rtol=RTOL, atol=1e-7)


def test_pr_curve_reads_back_from_every_format_with_the_same_values(logdir: str) -> None:
    labels, predictions = _data()
    expected = compute_curve(labels, predictions, num_thresholds=127)
    with Writer(logdir, run="r") as w:
        w.add_pr_curve("pr", labels, predictions, 7, walltime=WALL)
    run = os.path.join(logdir, "r")
    (tb,) = _tb_curve(run, "pr")
    assert tb[0] == 7
    np.testing.assert_allclose(tb[1], expected, rtol=RTOL)
    (vdl,) = _vdl_reader(run).get_data("pr_curve", "pr")
    assert (vdl.id, vdl.timestamp) == (7, int(WALL * 1000))
    curve = vdl.pr_curve
    np.testing.assert_allclose([curve.precision, curve.recall], expected[4:], rtol=1e-12)
    assert [list(curve.TP), list(curve.FP), list(curve.TN), list(curve.FN)] == expected[:4].astype(
        int
    ).tolist()
    (line,) = read_metrics(run)
    assert (line["kind"], line["tag"], line["step"], line["wall_time"]) == ("pr_curve", "pr", 7, WALL)
    got = [line[k] for k in ("tp", "fp", "tn", "fn", "precision", "recall")]
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_pr_and_roc_curves_and_embeddings_come_back_as_records_from_both_viewers_files(logdir: str) -> None:
    labels, predictions = _data()
    mat = np.random.default_rng(2).random((6, 3)).astype(np.float32)
    with Writer(logdir, run="r") as w:
        w.add_pr_curve("pr", labels, predictions, 4, walltime=WALL)
        w.add_roc_curve("roc", labels, predictions, 4, walltime=WALL)
        w.add_embeddings("emb", mat=mat, metadata=list("abcdef"), walltime=WALL)
    run = os.path.join(logdir, "r")
    (path,) = glob.glob(os.path.join(run, "*vdlrecords*"))
    with open(path, "rb") as f:
        vdl = [r for r in VisualDLFormat.read_records(f.read()) if not isinstance(r, int)]
    assert [type(r).__name__ for r in vdl] == ["PRCurve", "ROCCurve", "Embedding"]
    (path,) = glob.glob(os.path.join(run, "*tfevents*"))
    with open(path, "rb") as f:
        tb = [r for r in TensorBoardFormat.read_records(f.read()) if not isinstance(r, int)]
    assert [type(r).__name__ for r in tb] == ["PRCurve"]  # no ROC plugin; embeddings are not events
    np.testing.assert_allclose(_rows(tb[0]), _rows(vdl[0]), rtol=RTOL)
    np.testing.assert_array_equal(vdl[2].mat, mat)
    assert vdl[2].metadata == [[c] for c in "abcdef"]


# -- 2. the call: both peers' signatures, tensors, bad input ---------------------------------------


def test_add_pr_curve_takes_torch_and_visualdl_step_forms(logdir: str) -> None:
    labels, predictions = _data(50)
    with Writer(logdir, run="r") as w:
        w.add_pr_curve("positional", labels, predictions, 3)
        w.add_pr_curve("torch", labels, predictions, global_step=4, num_thresholds=10)
        w.add_pr_curve("visualdl", labels, predictions, step=5, num_thresholds=10)
        w.add_pr_curve("no_step", labels, predictions)
        with pytest.raises(TypeError, match=r"got global_step=1 and step=2; pass one"):
            w.add_pr_curve("both", labels, predictions, 1, step=2)
    run = os.path.join(logdir, "r")
    steps = {
        tag: [s for s, _ in _tb_curve(run, tag)] for tag in ("positional", "torch", "visualdl", "no_step")
    }
    assert steps == {"positional": [3], "torch": [4], "visualdl": [5], "no_step": [0]}
    assert _tb_curve(run, "visualdl")[0][1].shape == (6, 10)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_add_pr_curve_takes_framework_tensors_that_need_grad(logdir: str, framework: str, dtype: str) -> None:
    fw = _import(framework)
    labels, predictions = _data(200)
    if framework == "torch":
        tensor = fw.tensor(predictions).to(getattr(fw, dtype)).requires_grad_(True)
        label_tensor = fw.tensor(labels.astype(bool))
        host = tensor.detach().float().numpy()
    else:
        tensor = fw.to_tensor(predictions, stop_gradient=False).astype(dtype)
        label_tensor = fw.to_tensor(labels.astype(bool))
        host = tensor.astype("float32").numpy()
    with Writer(logdir, run="r") as w:
        w.add_pr_curve("pr", label_tensor, tensor, 1)
    np.testing.assert_allclose(_written_curve(logdir, "r"), compute_curve(labels, host, 127), rtol=RTOL)


def test_arrays_changed_after_the_call_do_not_change_the_curve(logdir: str) -> None:
    labels, predictions = _data(100)
    expected = compute_curve(labels, predictions, 127)
    with Writer(logdir, run="r", max_latency=60) as w:
        w.add_pr_curve("pr", labels, predictions, 0)
        predictions[:] = 0.5  # the writer thread computes later; it must see the values as they were
        labels[:] = 1
    np.testing.assert_allclose(_written_curve(logdir, "r"), expected, rtol=RTOL)


BAD_CURVES = {
    # name: (labels, predictions, keywords, error, what the message names)
    "shapes_differ": ([0, 1, 1], [0.1, 0.2], {}, ValueError, "same shape"),
    "labels_not_binary": ([0, 2, 1], [0.1, 0.2, 0.3], {}, ValueError, "labels == positive_class"),
    "predictions_above_one": ([0, 1], [0.1, 3.0], {}, ValueError, "sigmoid"),
    "predictions_nan": ([0, 1], [0.1, float("nan")], {}, ValueError, r"\[0, 1\]"),
    "one_threshold": (
        [0, 1],
        [0.1, 0.2],
        {"num_thresholds": 1},
        ValueError,
        "num_thresholds= is an int >= 2",
    ),
    "float_thresholds": ([0, 1], [0.1, 0.2], {"num_thresholds": 10.0}, ValueError, "num_thresholds="),
    "weights_shape": ([0, 1], [0.1, 0.2], {"weights": [1.0, 2.0, 3.0]}, ValueError, "weights="),
    "string_labels": (["a", "b"], [0.1, 0.2], {}, TypeError, "labels must be numbers or bools"),
}


@pytest.mark.parametrize("case", list(BAD_CURVES))
def test_bad_curve_input_raises_on_the_callers_thread_naming_the_fix(logdir: str, case: str) -> None:
    labels, predictions, keywords, error, message = BAD_CURVES[case]
    with Writer(logdir, run="r") as w:
        for method in (w.add_pr_curve, w.add_roc_curve):
            with pytest.raises(error, match=message):
                method("c", labels, predictions, 0, **keywords)
        assert w.stats()["queued"] == 0


def test_roc_curve_goes_to_visualdl_and_jsonl_with_textbook_rates_and_not_to_tensorboard(logdir: str) -> None:
    labels, predictions = _data()
    tp, fp, tn, fn = compute_curve(labels, predictions, num_thresholds=127)[:4]
    with Writer(logdir, run="r") as w:
        w.add_roc_curve("roc", labels, predictions, 2)
    run = os.path.join(logdir, "r")
    (record,) = _vdl_reader(run).get_data("roc_curve", "roc")
    np.testing.assert_allclose(record.roc_curve.tpr, tp / (tp + fn), rtol=1e-12)
    np.testing.assert_allclose(record.roc_curve.fpr, fp / (fp + tn), rtol=1e-12)
    (line,) = read_metrics(run)
    assert line["kind"] == "roc_curve"
    np.testing.assert_allclose(line["tpr"], tp / (tp + fn), rtol=1e-12)
    accumulator = pea.EventAccumulator(run)
    accumulator.Reload()
    assert accumulator.Tags()["tensors"] == []


# -- 3. embeddings ------------------------------------------------------------------------------------


def _read_tsv(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n").split("\t") for line in f]


def test_add_embedding_writes_the_projector_files_torchs_summary_writer_writes(logdir: str) -> None:
    import torch

    rng = np.random.default_rng(3)
    mat = rng.standard_normal((9, 4)).astype(np.float32)
    rows = [[f"p{i}", str(i % 3)] for i in range(9)]
    images = rng.random((9, 3, 5, 5)).astype(np.float32)
    torch_dir = os.path.join(logdir, "torch")
    with SummaryWriter(torch_dir) as writer:
        writer.add_embedding(torch.tensor(mat), rows, torch.tensor(images), 2, "emb/x", ["name", "group"])
    with Writer(logdir, run="dw") as w:
        w.add_embedding(torch.tensor(mat), rows, torch.tensor(images), 2, "emb/x", ["name", "group"])
    dw_dir = os.path.join(logdir, "dw")
    for name in ("tensors.tsv", "metadata.tsv"):
        ours, theirs = (_read_tsv(os.path.join(d, "00002", "emb%2fx", name)) for d in (dw_dir, torch_dir))
        if name == "tensors.tsv":
            np.testing.assert_array_equal(
                np.array(ours, dtype=np.float32), np.array(theirs, dtype=np.float32)
            )
        else:
            assert ours == theirs == [["name", "group"], *rows]
    with PILImage.open(os.path.join(dw_dir, "00002", "emb%2fx", "sprite.png")) as sprite:
        pixels = np.asarray(sprite)
    assert pixels.shape == (15, 15, 3)
    np.testing.assert_array_equal(pixels[5:10, 0:5], np.rint(images[3].transpose(1, 2, 0) * 255))


def test_embeddings_of_visualdls_signature_read_back_as_columns_in_both_viewers(logdir: str) -> None:
    mat = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    columns = [["a", "b", "c", "d"], ["1", "2", "3", "4"]]
    with Writer(logdir, run="r") as w:
        w.add_embeddings("emb", mat=mat, metadata=columns, metadata_header=["letter", "digit"], walltime=WALL)
        w.add_embeddings("old_names", hot_vectors=mat.tolist(), labels=["w", "x", "y", "z"])
    run = os.path.join(logdir, "r")
    reader = _vdl_reader(run)
    (record,) = reader.get_data("embeddings", "emb")
    assert (record.id, record.timestamp, list(record.embeddings.label_meta)) == (
        0,
        int(WALL * 1000),
        ["letter", "digit"],
    )
    assert [list(e.label) for e in record.embeddings.embeddings] == [list(r) for r in zip(*columns)]
    np.testing.assert_array_equal([e.vectors for e in record.embeddings.embeddings], mat)
    (old,) = reader.get_data("embeddings", "old_names")
    assert [list(e.label) for e in old.embeddings.embeddings] == [["w"], ["x"], ["y"], ["z"]]
    assert _read_tsv(os.path.join(run, "00000", "emb", "metadata.tsv")) == [
        ["letter", "digit"],
        *map(list, zip(*columns)),
    ]
    assert _read_tsv(os.path.join(run, "00000", "old_names", "metadata.tsv")) == [["w"], ["x"], ["y"], ["z"]]
    assert not [line for line in read_metrics(run)]  # embeddings are not copied into the text file


def test_an_embedding_logged_again_at_its_step_replaces_the_projector_entry(logdir: str) -> None:
    from google.protobuf import text_format
    from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

    with Writer(logdir, run="r") as w:
        w.add_embedding(np.zeros((2, 2)), tag="a")
        w.flush()
        w.add_embedding(np.ones((3, 2)), tag="a")
        w.add_embedding(np.ones((3, 2)), tag="a", global_step=1)
    with Writer(logdir, run="r", resume=True) as w:
        w.add_embedding(np.ones((2, 5)), tag="b")
    run = os.path.join(logdir, "r")
    with open(os.path.join(run, "projector_config.pbtxt")) as f:
        config = text_format.Parse(f.read(), ProjectorConfig())
    shapes = {e.tensor_name: list(e.tensor_shape) for e in config.embeddings}
    assert shapes == {"a:00000": [3, 2], "a:00001": [3, 2], "b:00000": [2, 5]}


BAD_EMBEDDINGS = {
    "mat_1d": ({"mat": np.zeros(4)}, ValueError, r"\[points, dimensions\]"),
    "labels_count": ({"mat": np.zeros((3, 2)), "metadata": ["a", "b"]}, ValueError, "one per point"),
    "header_width": (
        {"mat": np.zeros((2, 2)), "metadata": [["a", "b"], ["c", "d"]], "metadata_header": ["x"]},
        ValueError,
        "name each once",
    ),
    "label_img_shape": ({"mat": np.zeros((2, 2)), "label_img": np.zeros((2, 5, 5))}, ValueError, "label_img"),
}


@pytest.mark.parametrize("case", list(BAD_EMBEDDINGS))
def test_bad_embedding_input_raises_on_the_callers_thread(logdir: str, case: str) -> None:
    keywords, error, message = BAD_EMBEDDINGS[case]
    with Writer(logdir, run="r") as w:
        with pytest.raises(error, match=message):
            w.add_embedding(**keywords)
        with pytest.raises(TypeError, match="mat= is required"):
            w.add_embeddings("e")
        assert w.stats()["queued"] == 0


def test_add_embedding_takes_paddle_tensors(logdir: str) -> None:
    paddle = _import("paddle")
    mat = np.random.default_rng(4).random((5, 3)).astype(np.float32)
    with Writer(logdir, run="r") as w:
        w.add_embedding(
            paddle.to_tensor(mat, stop_gradient=False), metadata=paddle.to_tensor([1, 2, 3, 4, 5])
        )
    (record,) = _vdl_reader(os.path.join(logdir, "r")).get_data("embeddings", "default")
    np.testing.assert_array_equal([e.vectors for e in record.embeddings.embeddings], mat)
    assert [list(e.label) for e in record.embeddings.embeddings] == [["1"], ["2"], ["3"], ["4"], ["5"]]


# -- 4. convert ---------------------------------------------------------------------------------------


def test_convert_carries_pr_curves_both_ways_and_visualdl_embeddings_to_the_projector(logdir: str) -> None:
    labels, predictions = _data()
    mat = np.random.default_rng(5).random((4, 3)).astype(np.float32)
    with Writer(logdir, run="r", formats=["visualdl"]) as w:
        w.add_pr_curve("pr", labels, predictions, 3, walltime=WALL)
        w.add_roc_curve("roc", labels, predictions, 3, walltime=WALL)
        w.add_embedding(mat, metadata=list("abcd"), tag="emb")
    run = os.path.join(logdir, "r")
    as_tb = convert_run(run, "tensorboard")
    (vdl,) = _vdl_reader(run).get_data("pr_curve", "pr")
    (step, rows) = _tb_curve(as_tb, "pr")[0]
    assert step == 3
    np.testing.assert_allclose(rows[4:], [vdl.pr_curve.precision, vdl.pr_curve.recall], rtol=RTOL)
    tensors = _read_tsv(os.path.join(as_tb, "00000", "emb", "tensors.tsv"))
    np.testing.assert_array_equal(np.array(tensors, dtype=np.float32), mat)
    back = convert_run(as_tb, "visualdl")
    (again,) = _vdl_reader(back).get_data("pr_curve", "pr")
    np.testing.assert_allclose(again.pr_curve.precision, vdl.pr_curve.precision, rtol=RTOL)
    assert list(again.pr_curve.TP) == list(vdl.pr_curve.TP)


# -- 5. the real servers --------------------------------------------------------------------------------

VDL_CACHE = 0.5  # seconds VisualDL's server caches an answer
SERVED_MAT = np.random.default_rng(6).standard_normal((7, 5)).astype(np.float32)
SERVED_ROWS = [[f"point {i}", "odd" if i % 2 else "even"] for i in range(7)]


def _raw(server: Server, path: str, **query: str) -> bytes:
    with urllib.request.urlopen(f"{server.base}{path}?{urllib.parse.urlencode(query)}", timeout=10) as r:
        return r.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Server, Server]]:
    root = tmp_path_factory.mktemp("curves")
    logdir = str(root / "logs")
    labels, predictions = _data()
    images = np.random.default_rng(7).random((7, 3, 4, 4))
    with Writer(logdir, run="run") as w:
        w.add_pr_curve("pr", labels, predictions, 5, walltime=WALL)
        w.add_roc_curve("roc", labels, predictions, 5, walltime=WALL)
        w.add_embedding(SERVED_MAT, SERVED_ROWS, images, 0, "emb", ["name", "parity"])
    with both_servers(logdir, str(root), vdl_cache=VDL_CACHE, tb_reload=1) as (vdl, tb):
        yield logdir, vdl, tb


def _expected_curve() -> np.ndarray:
    return compute_curve(*_data(), num_thresholds=127)


def test_tensorboard_serves_the_pr_curve(served: tuple[str, Server, Server]) -> None:
    _, _, tb = served
    expected = _expected_curve()

    def check() -> dict[str, Any]:
        assert tb.tb("/data/plugin/pr_curves/tags")["run"]["pr"]
        return tb.tb("/data/plugin/pr_curves/pr_curves", run="run", tag="pr")

    (entry,) = _eventually(check, 30, "TensorBoard serving the PR curve", tb)["run"]
    end = len(entry["precision"])  # TensorBoard trims the tail where tp + fp == 0
    assert entry["step"] == 5 and end >= 100
    np.testing.assert_allclose([entry["precision"], entry["recall"]], expected[4:, :end], rtol=RTOL)
    assert entry["true_positives"] == expected[0, :end].astype(int).tolist()


def test_visualdl_serves_the_pr_and_roc_curves(served: tuple[str, Server, Server]) -> None:
    logdir, vdl, _ = served
    tp, fp, tn, fn, precision, recall = _expected_curve()

    def check(kind: str) -> list[Any]:
        return vdl.vdl(f"{kind}/list", run=_vdl_run(vdl, logdir, "run"), tag=kind.split("-")[0])

    (pr,) = _eventually(lambda: check("pr-curve"), 30, "VisualDL serving the PR curve", vdl)
    assert pr[:2] == [int(WALL * 1000), 5]
    np.testing.assert_allclose(pr[2:4], [precision, recall], rtol=1e-12)
    assert pr[4:8] == [
        tp.astype(int).tolist(),
        fp.astype(int).tolist(),
        tn.astype(int).tolist(),
        fn.astype(int).tolist(),
    ]
    (roc,) = _eventually(lambda: check("roc-curve"), 30, "VisualDL serving the ROC curve", vdl)
    np.testing.assert_allclose(roc[2:4], [tp / (tp + fn), fp / (fp + tn)], rtol=1e-12)


def test_tensorboards_projector_serves_the_embedding_labels_and_sprite(
    served: tuple[str, Server, Server],
) -> None:
    _, _, tb = served
    runs = _eventually(lambda: _nonempty(tb.tb("/data/plugin/projector/runs")), 30, "projector runs", tb)
    assert runs == ["run"]
    info = tb.tb("/data/plugin/projector/info", run="run")
    (embedding,) = info["embeddings"]
    assert embedding["tensorName"] == "emb:00000" and embedding["tensorShape"] == [7, 5]
    tensor = _raw(tb, "/data/plugin/projector/tensor", run="run", name="emb:00000")
    np.testing.assert_array_equal(np.frombuffer(tensor, np.float32).reshape(7, 5), SERVED_MAT)
    metadata = _raw(tb, "/data/plugin/projector/metadata", run="run", name="emb:00000").decode()
    assert [line.split("\t") for line in metadata.splitlines()] == [["name", "parity"], *SERVED_ROWS]
    sprite = _raw(tb, "/data/plugin/projector/sprite_image", run="run", name="emb:00000")
    with PILImage.open(io.BytesIO(sprite)) as image:
        assert image.size == (12, 12)


def test_visualdl_serves_the_embedding_matrix_and_labels(served: tuple[str, Server, Server]) -> None:
    _, vdl, _ = served
    (entry,) = _eventually(lambda: _nonempty(vdl.vdl("embedding/list")), 30, "VisualDL embedding list", vdl)
    assert entry["shape"] == [7, 5]
    metadata = _raw(vdl, "/app/api/embedding/metadata", name=entry["name"]).decode()
    assert [line.split("\t") for line in metadata.splitlines()] == [["name", "parity"], *SERVED_ROWS]
    # VisualDL caches answers by os.path.join(kind, name): with an absolute logdir the name wins,
    # so the tensor's key is the metadata's until that answer expires (VDL_CACHE seconds).
    time.sleep(2 * VDL_CACHE)
    tensor = _raw(vdl, "/app/api/embedding/tensor", name=entry["name"])
    np.testing.assert_array_equal(np.frombuffer(tensor, np.float32).reshape(7, 5), SERVED_MAT)


def _nonempty(value: Any) -> Any:
    assert value, "nothing served yet"
    return value
