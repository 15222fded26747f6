"""Code written for torch's ``SummaryWriter`` or VisualDL's ``LogWriter`` runs on dualwatch with one
import line changed, and writes the same values into VisualDL, TensorBoard and JSON lines.

Each script below is run twice, unchanged but for its import line: once with the peer's own
writer (proof that it is real code for that peer), once with :mod:`dualwatch.compat`. What the
peer wrote is read with the viewers' readers and compared with what dualwatch wrote, read by
VisualDL's ``LogReader``, TensorBoard's ``EventAccumulator``, a JSON parser and both viewers'
servers over HTTP. Nothing is mocked.
"""

from __future__ import annotations

import glob
import json
import os
import time
import urllib.request
import warnings
from typing import Any

import cv2
import numpy as np
import pytest
from _servers import _eventually, both_servers, tensorboard_scalars, visualdl_scalars
from conftest import _tb, _tb_plugins, read_metrics
from tensorboard.util import tensor_util
from visualdl import LogReader

from dualwatch import Writer
from dualwatch.compat import LogWriter, SummaryWriter

TORCH_SCRIPT = """
from torch.utils.tensorboard import SummaryWriter
import numpy as np
import torch
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt


def train(log_dir):
    writer = SummaryWriter(log_dir)
    for step in range(5):
        loss = 1.0 / (step + 1)
        writer.add_scalar("Loss/train", loss, step)
        writer.add_scalar(tag="Loss/val", scalar_value=loss * 2, global_step=step)
        writer.add_scalars("lr", {"group0": 0.1 * step, "group1": 0.2 * step}, step)
    writer.add_scalar("final/accuracy", torch.tensor(0.93))
    generator = torch.Generator().manual_seed(0)
    writer.add_histogram("weights", torch.randn(1000, generator=generator), 4)
    writer.add_histogram("bias", np.random.default_rng(0).standard_normal(200), 4, bins="auto")
    writer.add_image("sample", torch.rand(3, 16, 24, generator=generator), 4)
    writer.add_images("batch", torch.rand(4, 3, 8, 8, generator=generator), 4)
    figure = plt.figure(figsize=(2, 2), dpi=50)
    plt.plot([0, 1], [1, 0])
    writer.add_figure("curve", figure, 4)
    writer.add_text("notes", "first **run**", 4)
    labels = torch.rand(200, generator=generator) > 0.5
    predictions = (labels * 0.6 + torch.rand(200, generator=generator) * 0.4).clamp(0, 1)
    writer.add_pr_curve("pr", labels, predictions, 4)
    writer.add_hparams({"lr": 0.1, "optimizer": "sgd"}, {"hparam/accuracy": 0.93})
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
    writer.add_graph(model, torch.zeros(1, 3, 8, 8))
    writer.close()
"""

# The VisualDL training guide's trainer: ``self.visualdl_writer`` logs scalars per epoch and samples.
VISUALDL_SCRIPT = """
from visualdl import LogWriter
import numpy as np
import paddle


class Trainer:
    def __init__(self, log_dir, graph):
        self.model = paddle.nn.Sequential(paddle.nn.Conv2D(3, 4, 3), paddle.nn.ReLU(), paddle.nn.Flatten())
        self.visualdl_writer = LogWriter(logdir=log_dir)
        if graph:
            input_tensor = paddle.zeros([1, 3, 8, 8])
            self.visualdl_writer.add_graph(self.model, [input_tensor])

    def train(self, epochs):
        rng = np.random.default_rng(0)
        for epoch in range(epochs):
            loss = 1.0 / (epoch + 1)
            self.visualdl_writer.add_scalar("Loss/Train", loss, epoch)
            self.visualdl_writer.add_scalar(tag="Learning_Rate", value=0.01 * 0.9**epoch, step=epoch)
            self.visualdl_writer.add_scalar("Model/Gradient_Norm", 2.0 + epoch, epoch)
            image_tensor = rng.random((16, 24, 3)).astype("float32")
            self.visualdl_writer.add_image("Train/Sample", image_tensor, epoch)
        self.visualdl_writer.add_histogram("weights", rng.standard_normal(500), epochs, buckets=10)
        self.visualdl_writer.add_text("notes", "done", epochs)
        self.visualdl_writer.close()


def train(log_dir, graph=True):
    Trainer(log_dir, graph).train(3)
"""


def _run(script: str, import_line: str, replacement: str, log_dir: str, **options: Any) -> None:
    assert import_line in script
    namespace: dict[str, Any] = {}
    exec(compile(script.replace(import_line, replacement), "<script>", "exec"), namespace)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        namespace["train"](log_dir, **options)


def _tb_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    tb = _tb(run_dir)
    return {tag: [(e.step, e.value) for e in tb.Scalars(tag)] for tag in tb.Tags()["scalars"]}


def _vdl(run_dir: str) -> LogReader:
    (path,) = glob.glob(os.path.join(run_dir, "vdlrecords*"))
    return LogReader(file_path=path)


def _vdl_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    reader = _vdl(run_dir)
    return {
        tag: [(v.id, v.value) for v in reader.get_data("scalar", tag)] for tag in reader.get_tags()["scalar"]
    }


def _jsonl_scalars(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        for line in f:
            record = json.loads(line)
            if "kind" not in record:
                for tag, value in record.items():
                    if tag not in ("step", "wall_time"):
                        series.setdefault(tag, []).append((record["step"], float(np.float32(value))))
    return series


def _pixels(png: bytes) -> np.ndarray:
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def torch_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """The torch script written by torch's ``SummaryWriter`` and by dualwatch's (same seeds)."""
    root = tmp_path_factory.mktemp("torch-script")
    peer, ours = str(root / "peer" / "exp1"), str(root / "ours" / "exp1")
    line = "from torch.utils.tensorboard import SummaryWriter"
    _run(TORCH_SCRIPT, line, line, peer)
    _run(TORCH_SCRIPT, line, "from dualwatch.compat import SummaryWriter", ours)
    return peer, ours


def test_a_summarywriter_script_writes_the_same_scalars_into_all_three_formats(torch_runs) -> None:
    peer, ours = torch_runs
    expected = _tb_scalars(peer)  # torch puts add_scalars' sub-tags in runs of their own
    assert set(expected) == {"Loss/train", "Loss/val", "final/accuracy"}
    assert expected["final/accuracy"] == [(0, float(np.float32(0.93)))]  # no step: torch writes step 0
    expected["lr/group0"] = [(s, float(np.float32(0.1 * s))) for s in range(5)]
    expected["lr/group1"] = [(s, float(np.float32(0.2 * s))) for s in range(5)]
    expected["hparam/accuracy"] = [(0, float(np.float32(0.93)))]  # torch's is in a nested run
    for name, read in (
        ("TensorBoard", _tb_scalars),
        ("VisualDL", _vdl_scalars),
        ("JSON lines", _jsonl_scalars),
    ):
        assert read(ours) == expected, name


def test_a_summarywriter_script_writes_the_same_images_histograms_pr_curves_and_text(torch_runs) -> None:
    peer, ours = torch_runs
    torch_tb, our_tb, our_vdl = _tb(peer), _tb(ours), _vdl(ours)
    for tag in ("sample", "batch", "curve"):  # CHW, an NCHW grid, a figure: same size, pixels within 1
        (theirs,), (mine,) = torch_tb.Images(tag), our_tb.Images(tag)
        assert (mine.height, mine.width) == (theirs.height, theirs.width), tag
        # torch truncates float pixels, dualwatch rounds them
        assert (
            np.abs(
                _pixels(mine.encoded_image_string).astype(int) - _pixels(theirs.encoded_image_string)
            ).max()
            <= 1
        )
        (vdl_image,) = our_vdl.get_data("image", tag)
        assert vdl_image.image.encoded_image_string == mine.encoded_image_string
    for tag in ("weights", "bias"):
        (theirs,), (mine,) = torch_tb.Histograms(tag), our_tb.Histograms(tag)
        theirs, mine = theirs.histogram_value, mine.histogram_value
        assert (mine.num, mine.min, mine.max) == (theirs.num, theirs.min, theirs.max), tag
        assert mine.sum == pytest.approx(theirs.sum) and mine.sum_squares == pytest.approx(theirs.sum_squares)
        # the same buckets with data; torch also writes an empty one in front
        assert [c for c in mine.bucket if c] == [c for c in theirs.bucket if c], tag
        assert mine.bucket_limit[:-1] == pytest.approx(
            [limit for limit, c in zip(theirs.bucket_limit, theirs.bucket)][-len(mine.bucket) : -1]
        ), tag
        (vdl_histogram,) = our_vdl.get_data("histogram", tag)
        assert list(vdl_histogram.histogram.hist) == list(mine.bucket)
    (theirs,), (mine,) = _tb_plugins(peer).Tensors("pr"), _tb_plugins(ours).Tensors("pr")
    their_curve, my_curve = (tensor_util.make_ndarray(e.tensor_proto) for e in (theirs, mine))
    assert my_curve.shape == their_curve.shape == (6, 127) and mine.step == theirs.step == 4
    np.testing.assert_allclose(my_curve, their_curve, rtol=1e-5)
    (vdl_curve,) = our_vdl.get_data("pr_curve", "pr")
    np.testing.assert_allclose(vdl_curve.pr_curve.precision, their_curve[4], rtol=1e-5)
    np.testing.assert_allclose(vdl_curve.pr_curve.recall, their_curve[5], rtol=1e-5)
    (line,) = [r for r in read_metrics(ours) if r.get("kind") == "pr_curve"]
    np.testing.assert_allclose(line["precision"], their_curve[4], rtol=1e-5)
    (text,) = our_tb.Tensors("notes")  # torch names it "notes/text_summary"; the text plugin shows both
    assert text.tensor_proto.string_val == [b"first **run**"]
    assert [v.text.encoded_text_string for v in our_vdl.get_data("text", "notes")] == ["first **run**"]


def test_a_summarywriter_script_keeps_hparams_in_its_own_run(torch_runs) -> None:
    _, ours = torch_runs
    assert sorted(os.listdir(ours)) == sorted(os.listdir(ours))  # no nested run directory
    assert [d for d in os.listdir(ours) if os.path.isdir(os.path.join(ours, d))] == []
    (hparams,) = _vdl(ours).get_data("hyper_parameters", "hparam")
    assert {h.name for h in hparams.hparam.hparamInfos} == {"lr", "optimizer"}
    (line,) = [r for r in read_metrics(ours) if r.get("kind") == "hparams"]
    assert line["hparams"] == {"lr": 0.1, "optimizer": "sgd"} and line["metrics"] == ["hparam/accuracy"]


def test_a_summarywriter_script_is_served_by_both_viewers(torch_runs, tmp_path) -> None:
    _, ours = torch_runs
    logdir, run = os.path.split(ours)
    with both_servers(logdir, str(tmp_path), 1, 1) as (vdl, tb):
        vdl_scalars, tb_scalars = visualdl_scalars(vdl, logdir, run), tensorboard_scalars(tb, run)
        assert {t: [p[1:] for p in s] for t, s in vdl_scalars.items()} == {
            t: [[p[1], p[2]] for p in s] for t, s in tb_scalars.items()
        }
        assert len(vdl_scalars["Loss/val"]) == 5 and tb_scalars["final/accuracy"][0][1] == 0
        vdl_run = os.path.join(logdir, run)
        assert set(vdl.vdl("image/tags")["tags"][0]) == {"sample", "batch", "curve"}
        assert set(tb.tb("/data/plugin/images/tags")[run]) == {"sample", "batch", "curve"}
        assert len(vdl.vdl("image/list", run=vdl_run, tag="sample")) == 1
        assert {"weights", "bias"} <= set(tb.tb("/data/plugin/histograms/tags")[run])
        assert len(vdl.vdl("histogram/list", run=vdl_run, tag="weights")) == 1
        assert "notes" in tb.tb("/data/plugin/text/tags")[run]

        def tensorboard_graph() -> str:
            url = f"{tb.base}/data/plugin/graphs/graph?run={run}&conceptual=false"
            with urllib.request.urlopen(url, timeout=10) as response:
                return response.read().decode("utf-8")

        assert "Conv2d" in _eventually(tensorboard_graph, 30, "TensorBoard's graph", tb)
        assert _eventually(lambda: vdl.vdl("graph_runs"), 30, "VisualDL's graph", vdl) == [vdl_run]


def test_the_visualdl_training_guide_trainer_writes_what_visualdl_writes(tmp_path) -> None:
    peer, ours = str(tmp_path / "peer" / "logs_07031940"), str(tmp_path / "ours" / "logs_07031940")
    line = "from visualdl import LogWriter"
    # VisualDL 2.5.3's own add_graph fails on Paddle 3 (it reads a .pdmodel that jit.save no longer writes)
    _run(VISUALDL_SCRIPT, line, line, peer, graph=False)
    _run(VISUALDL_SCRIPT, line, "from dualwatch.compat import LogWriter", ours)
    expected = _vdl_scalars(peer)
    assert set(expected) == {"Loss/Train", "Learning_Rate", "Model/Gradient_Norm"}
    for read in (_vdl_scalars, _tb_scalars, _jsonl_scalars):
        assert read(ours) == expected
    theirs, mine = _vdl(peer), _vdl(ours)
    their_images, my_images = theirs.get_data("image", "Train/Sample"), mine.get_data("image", "Train/Sample")
    assert [v.id for v in my_images] == [v.id for v in their_images] == [0, 1, 2]
    for a, b in zip(their_images, my_images):  # VisualDL truncates float pixels, dualwatch rounds them
        diff = _pixels(a.image.encoded_image_string).astype(int) - _pixels(b.image.encoded_image_string)
        assert np.abs(diff).max() <= 1
    (their_histogram,), (my_histogram,) = (
        theirs.get_data("histogram", "weights"),
        mine.get_data("histogram", "weights"),
    )
    assert list(my_histogram.histogram.hist) == list(their_histogram.histogram.hist)
    assert np.allclose(my_histogram.histogram.bin_edges, their_histogram.histogram.bin_edges)
    assert [v.text.encoded_text_string for v in mine.get_data("text", "notes")] == ["done"]
    assert glob.glob(os.path.join(ours, "vdlgraph*")) and _tb(ours).Graph().node


def test_lightning_tensorboard_logger_hyperparams_with_no_step_reach_every_format(tmp_path) -> None:
    """Lightning's ``TensorBoardLogger`` on dualwatch's writer, in a real ``Trainer.fit``: its
    ``log_hyperparams`` logs ``hp_metric`` with ``step=None`` and writes summaries built by torch."""
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import TensorBoardLogger

    class Model(pl.LightningModule):
        def __init__(self, lr: float = 0.05) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.layer = torch.nn.Linear(4, 1)

        def training_step(self, batch, batch_idx):
            loss = self.layer(batch[0]).pow(2).mean()
            self.log("train_loss", loss)
            return loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    logger = TensorBoardLogger(str(tmp_path), name="lightning")
    logger._experiment = SummaryWriter(log_dir=logger.log_dir)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(16, 4)), batch_size=4)
    trainer = pl.Trainer(
        max_epochs=2, logger=logger, log_every_n_steps=1, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(Model(), data)
    run = logger.log_dir
    for read in (_tb_scalars, _vdl_scalars, _jsonl_scalars):
        scalars = read(run)
        assert scalars["hp_metric"] == [(0, -1.0)]
        assert [step for step, _ in scalars["train_loss"]] == list(range(8))
    (hparams,) = _vdl(run).get_data("hyper_parameters", "hparam")
    assert {h.name for h in hparams.hparam.hparamInfos} == {"lr"}
    assert [m.name for m in hparams.hparam.metricInfos] == ["hp_metric"]


# -- the rules where the peers differ ---------------------------------------------------------------


def test_a_missing_step_is_zero_for_torch_names_and_an_error_for_visualdl_names(tmp_path) -> None:
    with Writer(tmp_path, run="r", formats=["jsonl"]) as w:
        w.add_scalar("a", 1.0)
        w.add_scalar("b", scalar_value=2.0)
        w.add_text("t", "x")
        with pytest.raises(
            TypeError, match=r"add_scalar\(\) needs step=: VisualDL's LogWriter has no default"
        ):
            w.add_scalar("c", value=3.0)
        with pytest.raises(TypeError, match=r"add_histogram\(\) needs step="):
            w.add_histogram("h", np.ones(3), buckets=3)
    assert _jsonl_scalars(str(tmp_path / "r")) == {"a": [(0, 1.0)], "b": [(0, 2.0)]}
    with SummaryWriter(str(tmp_path / "torch"), formats=["jsonl"]) as w:
        w.add_scalar("c", value=3.0)  # torch's writer never asks for a step
    with LogWriter(str(tmp_path / "visualdl"), formats=["jsonl"]) as w, pytest.raises(TypeError):
        w.add_scalar("c", 3.0)


@pytest.mark.parametrize(
    ("shape", "writer", "keywords", "height_width"),
    [
        ((3, 16, 24), Writer, {}, (16, 24)),  # only CHW fits
        ((16, 24, 3), Writer, {}, (16, 24)),  # only HWC fits
        ((16, 24), Writer, {}, (16, 24)),
        ((3, 8, 3), Writer, {}, (3, 8)),  # both fit: dualwatch and VisualDL read HWC
        ((3, 8, 3), Writer, {"global_step": 0}, (8, 3)),  # torch's names: CHW
        ((3, 8, 3), SummaryWriter, {}, (8, 3)),
        ((3, 8, 3), LogWriter, {}, (3, 8)),
    ],
)
def test_an_image_layout_is_read_from_its_shape_and_the_peer_decides_only_when_both_fit(
    tmp_path, shape, writer, keywords, height_width
) -> None:
    run = str(tmp_path / "run")
    with writer(log_dir=run) if writer is Writer else writer(run) as w:
        if keywords:
            w.add_image("img", np.zeros(shape), **keywords)
        else:
            w.add_image("img", np.zeros(shape), 0)
    (image,) = _tb(run).Images("img")
    assert (image.height, image.width) == height_width


def test_log_dir_is_the_run_directory_and_an_existing_one_gets_new_files(tmp_path) -> None:
    run = str(tmp_path / "exp1")
    for step in (0, 1):
        with Writer(log_dir=run, formats=["tensorboard"], filename_suffix=".v2") as w:
            assert w.log_dir == w.logdir == w.get_logdir() == run
            w.add_scalar("a", float(step), step)
    names = os.listdir(run)
    assert len(names) == 2 and all(n.endswith(".v2") for n in names)
    assert _tb_scalars(run)["a"] == [(0, 0.0), (1, 1.0)]


def test_purge_step_hides_the_old_steps_from_it_on(tmp_path) -> None:
    run = str(tmp_path / "exp1")
    with SummaryWriter(run) as w:
        for step in range(6):
            w.add_scalar("a", float(step), step)
    with SummaryWriter(run, purge_step=3) as w:
        w.add_scalar("a", 30.0, 3)
    expected = [(0, 0.0), (1, 1.0), (2, 2.0), (3, 30.0)]
    assert _tb_scalars(run)["a"] == expected and _vdl_scalars(run)["a"] == expected


def test_visualdl_file_name_display_name_and_write_to_disk(tmp_path) -> None:
    run = str(tmp_path / "exp1")
    for step in (0, 1):
        with LogWriter(run, file_name="vdlrecords.train.log", display_name="baseline") as w:
            w.add_scalar("a", float(step), step)
    assert w.file_name == os.path.join(run, "vdlrecords.train.log")
    reader = LogReader(file_path=w.file_name)
    assert [v.value for v in reader.get_data("scalar", "a")] == [0.0, 1.0]
    assert reader.get_data("meta_data", "meta_data_tag")[0].meta_data.display_name == "baseline"
    with LogWriter(str(tmp_path / "nothing"), write_to_disk=False) as w:
        w.add_scalar("a", 1.0, 0)
    assert os.listdir(tmp_path / "nothing") == []


def test_default_run_directories_are_the_peers(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    with SummaryWriter(comment="_lr0.1") as torch_style, LogWriter(comment="lr0.1") as visualdl_style:
        pass
    assert os.path.dirname(torch_style.log_dir) == os.path.join(str(tmp_path), "runs")
    assert torch_style.log_dir.endswith("_lr0.1") and visualdl_style.log_dir.endswith(".lr0.1")
    with Writer(str(tmp_path / "native"), comment="_lr0.1") as native:
        assert os.path.basename(native.run_dir).startswith("logs_") and native.run_dir.endswith("_lr0.1")


def test_flush_secs_is_the_latency_bound_and_max_queue_wakes_the_writer(tmp_path) -> None:
    with Writer(log_dir=str(tmp_path / "r"), formats=["jsonl"], flush_secs=3600, max_queue=5) as w:
        assert w.max_latency == 3600
        for step in range(5):
            w.add_scalar("a", 1.0, step)
        path, end = os.path.join(w.run_dir, "metrics.jsonl"), time.monotonic() + 5
        while not (os.path.exists(path) and len(read_metrics(w.run_dir)) == 5) and time.monotonic() < end:
            time.sleep(0.05)
        assert os.path.exists(path), "5 queued records were not written long before flush_secs"
        assert len(read_metrics(w.run_dir)) == 5


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: Writer("elsewhere", log_dir="x"), r"log_dir= is the run directory itself"),
        (lambda: Writer(log_dir="x", run="y"), r"log_dir= is the run directory itself"),
        (
            lambda: Writer(log_dir="x", purge_step=3, resume=True),
            r"purge_step= and resume= say the same thing",
        ),
    ],
)
def test_conflicting_constructor_arguments_raise_type_error(tmp_path, monkeypatch, call, match) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(TypeError, match=match):
        call()


def test_a_visualdl_file_name_without_vdlrecords_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match=r"Pass for example 'vdlrecords.train.log'"):
        LogWriter(str(tmp_path / "r"), file_name="train.log")


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda w: w.add_scalar("a", 1.0, 0, value=2.0),
            TypeError,
            r"got scalar_value= and value=; pass one",
        ),
        (lambda w: w.add_scalar("a", 1.0, global_step=1, step=2), TypeError, r"got global_step=1 and step=2"),
        (lambda w: w.add_scalar("a"), TypeError, r"needs scalar_value= \(or value=\)"),
        (
            lambda w: w.add_histogram("h", np.ones(3), 0, bins="magic"),
            ValueError,
            r"one of \('tensorflow', 'auto'",
        ),
        (lambda w: w.add_histogram("h", np.ones(3), 0, bins=[1, 0]), ValueError, r"an increasing sequence"),
        (
            lambda w: w.add_images("b", np.zeros((8, 8)), 0),
            ValueError,
            r"a batch in NCHW layout has 4 dimensions",
        ),
        (
            lambda w: w.add_figure("f", np.zeros((8, 8)), 0),
            TypeError,
            r"a matplotlib Figure or a list of them",
        ),
        (lambda w: w.add_hparams(["lr"]), TypeError, r"add_hparams takes a dict of hyper-parameters"),
    ],
)
def test_unsupported_argument_forms_raise_naming_the_supported_ones(tmp_path, call, error, match) -> None:
    with Writer(tmp_path, run="r") as w:
        with pytest.raises(error, match=match):
            call(w)
        assert w.stats()["queued"] == 0


def test_string_bins_follow_torch_and_numpy(tmp_path) -> None:
    values = np.random.default_rng(1).standard_normal(500)
    with Writer(tmp_path, run="r", formats=["tensorboard"]) as w:
        w.add_histogram("auto", values, 0, bins="auto")
        w.add_histogram("edges", values, 0, bins=[-1.0, 0.0, 1.0])
        w.add_histogram("tf", values, 0, bins="tensorflow", max_bins=20)
    tb = _tb(str(tmp_path / "r"))
    auto = tb.Histograms("auto")[0].histogram_value
    counts, edges = np.histogram(values, bins="auto")
    assert list(auto.bucket) == counts.tolist() and auto.bucket_limit == pytest.approx(edges[1:].tolist())
    assert (
        list(tb.Histograms("edges")[0].histogram_value.bucket) == np.histogram(values, [-1, 0, 1])[0].tolist()
    )
    tf = tb.Histograms("tf")[0].histogram_value
    assert len(tf.bucket) <= 20 and sum(tf.bucket) == 500


def test_logwriter_walltimes_are_milliseconds_as_in_visualdl(tmp_path) -> None:
    run = str(tmp_path / "r")
    with LogWriter(run) as w:
        w.add_scalar("a", 1.0, 0, walltime=1_700_000_000_123)
        w.add_text("t", "x", 0, walltime=1_700_000_000_456)
    (scalar,) = _vdl(run).get_data("scalar", "a")
    (text,) = _vdl(run).get_data("text", "t")
    assert (scalar.timestamp, text.timestamp) == (1_700_000_000_123, 1_700_000_000_456)
    assert _tb(run).Scalars("a")[0].wall_time == 1_700_000_000.123


def test_a_peer_method_dualwatch_does_not_write_warns_once_and_the_script_goes_on(tmp_path) -> None:
    with SummaryWriter(str(tmp_path / "r"), formats=["jsonl"]) as w, pytest.warns(RuntimeWarning) as caught:
        for step in range(3):
            w.add_video("clip", np.zeros((1, 2, 3, 8, 8)), step)
            w.add_scalar("a", 1.0, step)
    assert [str(c.message) for c in caught if "add_video" in str(c.message)] == [
        "dualwatch: SummaryWriter.add_video is not written by dualwatch (video (TensorBoard only)); "
        "the rest of the run is"
    ]
    assert len(read_metrics(w.run_dir)) == 3


def test_precounted_histograms_and_pr_curves_are_written_as_given(tmp_path) -> None:
    run = str(tmp_path / "r")
    with SummaryWriter(run) as w:
        w.add_histogram_raw("h", 0.0, 3.0, 6, 9.0, 19.0, [1.0, 2.0, 3.0], [1, 2, 3], 2)
        w.add_pr_curve_raw("pr", [3, 2], [1, 0], [0, 1], [0, 1], [0.75, 1.0], [1.0, 0.66], 2)
    (histogram,) = _tb(run).Histograms("h")
    assert list(histogram.histogram_value.bucket) == [1, 2, 3] and histogram.step == 2
    assert list(histogram.histogram_value.bucket_limit) == [1.0, 2.0, 3.0]
    (vdl_curve,) = _vdl(run).get_data("pr_curve", "pr")
    assert list(vdl_curve.pr_curve.TP) == [3, 2] and vdl_curve.pr_curve.precision == pytest.approx(
        [0.75, 1.0]
    )


def test_visualdl_image_matrix_is_one_grid(tmp_path) -> None:
    run = str(tmp_path / "r")
    with LogWriter(run) as w:
        w.add_image_matrix("m", np.zeros((6, 4, 5, 3)), 0, rows=2)
        w.add_image_matrix("chw", np.zeros((6, 3, 4, 5)), 0, rows=2, dataformats="CHW")
    for tag in ("m", "chw"):
        (image,) = _tb(run).Images(tag)
        assert (image.height, image.width) == (8, 15), tag
