"""The Lightning logger and callback in real ``Trainer.fit`` runs on CPU, read back from what they wrote.

Values are checked against numpy on gradients captured at the same hook by a second callback,
recomputed from scratch on a copy of the model, or against what the LightningModule itself logged
and Lightning's own loggers wrote; tags against the StableSR edge monitor's. Files are read with
the viewers' own readers (VisualDL's ``LogReader``, TensorBoard's ``EventAccumulator``), the
JSON lines as strict JSON, and one run through a real ``visualdl`` server over HTTP.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import glob
import logging
import os
import re
import subprocess
import sys
import textwrap
import time
from argparse import Namespace
from pathlib import Path
from typing import Any, Iterator

import lightning.pytorch as pl
import numpy as np
import pytest
import pytorch_lightning
import torch
import yaml
from _servers import BIN, Server, _eventually, _free_port, _stop, f32, visualdl_scalars
from conftest import _tb_plugins, read_metrics
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins import MixedPrecision
from omegaconf import OmegaConf
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.util import tensor_util
from visualdl import LogReader

from dualwatch.integrations import pytorch_lightning as dw_pytorch_lightning
from dualwatch.integrations.lightning import DualwatchLogger, EdgeMonitorCallback
from dualwatch.readers import RunReader

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
from lightning_edge_monitor import EdgeMapProcessor, TinyEdgeModel, data, instantiate_from_config  # noqa: E402

TARGET = "dualwatch.integrations.lightning.EdgeMonitorCallback"
SEED_STATS = [
    "weight_mean",
    "weight_std",
    "weight_max",
    "weight_min",
    "weight_change",
    "grad_mean",
    "grad_std",
    "grad_max",
    "grad_min",
    "grad_norm",
]
EDGE_PARAMS = [name for name, _ in TinyEdgeModel().edge_processor.named_parameters()]
SEED_TAGS = {f"edge_processor/{p}/{stat}" for p in EDGE_PARAMS for stat in SEED_STATS}
QUIET = dict(enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False)


class Capture(pl.Callback):
    """Copies every gradient and weight where the monitor reads them, keyed by ``global_step``."""

    def __init__(self) -> None:
        self.grads: dict[int, dict[str, np.ndarray]] = {}
        self.weights: dict[int, dict[str, np.ndarray]] = {}
        self.steps_started = 0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        self.steps_started += 1

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *_: Any) -> None:
        params = dict(pl_module.named_parameters())
        self.grads[trainer.global_step] = {n: p.grad.double().numpy().copy() for n, p in params.items()}
        self.weights[trainer.global_step] = {n: p.detach().double().numpy().copy() for n, p in params.items()}


def _fit(
    tmp_path: Path, callbacks: list[pl.Callback], loader: Any = None, **trainer_kwargs: Any
) -> pl.Trainer:
    """Trains ``TinyEdgeModel`` beside a TensorBoard logger (``tb``) and a CSV logger (``csv``)."""
    pl.seed_everything(0, verbose=False)
    trainer_kwargs.setdefault(
        "logger",
        [TensorBoardLogger(tmp_path, name="tb", version=""), CSVLogger(tmp_path, name="csv", version="")],
    )
    model = trainer_kwargs.pop("model", None) or TinyEdgeModel()
    ckpt_path = trainer_kwargs.pop("ckpt_path", None)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        log_every_n_steps=1,
        **{**QUIET, **trainer_kwargs},
    )
    trainer.fit(model, loader or data(), ckpt_path=ckpt_path)
    return trainer


def _tensorboard(run_dir: Path) -> dict[str, dict[int, float]]:
    reader = RunReader(str(run_dir))
    reader.poll()
    return {tag: dict(zip(s.steps, s.values)) for tag, s in reader.series.items()}


def _csv(path: Path) -> dict[str, dict[int, float]]:
    series: dict[str, dict[int, float]] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            step = int(row.pop("step"))
            for tag, value in row.items():
                if value != "":
                    series.setdefault(tag, {})[step] = float(value)
    return series


def _norm(arrays: Any) -> float:
    return float(np.sqrt(sum(np.sum(a * a) for a in arrays)))


def _vdl(run_dir: Path) -> dict[str, list[tuple[int, int, float]]]:
    """``{tag: [(step, wall_ms, value)]}`` from VisualDL's own ``LogReader`` (the run's one file)."""
    (path,) = glob.glob(os.path.join(run_dir, "vdlrecords*"))
    reader = LogReader(file_path=path)
    return {
        tag: [(v.id, v.timestamp, v.value) for v in reader.get_data("scalar", tag)]
        for tag in reader.get_tags().get("scalar", [])
    }


def _tb(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{tag: [(step, wall_time, value)]}`` as TensorBoard's server loads the run (purges applied)."""
    acc = _tb_plugins(str(run_dir))
    return {
        tag: [(e.step, e.wall_time, _scalar(e)) for e in acc.Tensors(tag)]
        for tag in acc.Tags()["tensors"]
        if acc.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }


def _scalar(event: Any) -> float:
    return float(tensor_util.make_ndarray(event.tensor_proto))


def _jsonl(run_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """``{tag: [(step, wall_time, value)]}`` from the run's ``metrics.jsonl``."""
    series: dict[str, list[tuple[int, float, float]]] = {}
    for line in read_metrics(run_dir):
        if "kind" not in line:
            for tag, value in line.items():
                if tag not in ("step", "wall_time"):
                    series.setdefault(tag, []).append((line["step"], line["wall_time"], value))
    return series


def _three(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float, float]]]]:
    """The run as each format holds it."""
    return {"visualdl": _vdl(run_dir), "tensorboard": _tb(run_dir), "jsonl": _jsonl(run_dir)}


def _steps(series: list[tuple[int, Any, float]]) -> list[int]:
    return [point[0] for point in series]


def _value(series: list[tuple[int, Any, float]], step: int) -> float:
    (value,) = [point[2] for point in series if point[0] == step]
    return value


def _blocks(caplog: pytest.LogCaptureFixture, title: str = "Edge Processor Monitor") -> list[str]:
    """The steps of the console blocks logged on the ``dualwatch`` logger."""
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "dualwatch")
    return re.findall(rf"^{title} - Step (\d+)$", text, re.M)


def test_with_log_to_trainer_every_statistic_matches_numpy_in_tensorboard_csv_and_own_run(
    tmp_path: Path,
) -> None:
    capture = Capture()
    monitor = EdgeMonitorCallback(
        check_frequency=2, logdir=str(tmp_path / "dw"), run="r", console=False, log_to_trainer=True
    )
    _fit(tmp_path, [monitor, capture], max_steps=6)

    readers = {
        "tensorboard": _tensorboard(tmp_path / "tb"),
        "csv": _csv(tmp_path / "csv" / "metrics.csv"),
        "dualwatch": _tensorboard(tmp_path / "dw" / "r"),
    }
    for where, logged in readers.items():
        assert sorted(logged["train/gradient/total_norm"]) == [0, 2, 4], where
        for step in (0, 2, 4):
            grads, weights = capture.grads[step], capture.weights[step]
            total = _norm(grads.values())
            assert logged["train/gradient/total_norm"][step] == pytest.approx(total, rel=1e-5), where
            for name in EDGE_PARAMS:
                g, w = grads[f"edge_processor.{name}"], weights[f"edge_processor.{name}"]
                tag = f"edge_processor/{name}"
                assert logged[f"{tag}/grad_norm"][step] == pytest.approx(_norm([g]), rel=1e-5), where
                assert logged[f"{tag}/grad_max"][step] == pytest.approx(g.max(), rel=1e-5), where
                assert logged[f"{tag}/weight_std"][step] == pytest.approx(w.std(ddof=1), rel=1e-5), where
        # weight_change: mean |w(4) - w(2)| of the pre-step weights the two checks saw
        w2, w4 = capture.weights[2], capture.weights[4]
        change = np.abs(w4["edge_processor.to_four.weight"] - w2["edge_processor.to_four.weight"]).mean()
        assert logged["edge_processor/to_four.weight/weight_change"][4] == pytest.approx(change, rel=1e-4)


class StepInputs(pl.Callback):
    """The weights at the start of each optimizer step and the micro-batches that feed it."""

    def __init__(self, accumulate: int = 1) -> None:
        self.accumulate = accumulate
        self.steps: dict[int, tuple[dict[str, torch.Tensor], list[Any]]] = {}

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch, i) -> None:
        if i % self.accumulate == 0:
            self.steps[trainer.global_step] = (copy.deepcopy(pl_module.state_dict()), [])
        self.steps[trainer.global_step][1].append(batch)

    def fp32_model(self, step: int) -> TinyEdgeModel:
        """A fresh fp32 model with that step's weights and ``.grad`` of the mean micro-batch loss."""
        state, batches = self.steps[step]
        model = TinyEdgeModel()
        model.load_state_dict(state)
        loss = sum(torch.nn.functional.mse_loss(model(x), y) for x, y in batches) / len(batches)
        loss.backward()
        return model


@pytest.mark.filterwarnings("ignore:dualwatch. gradients are exploding")
def test_with_accumulation_checks_only_optimizer_steps_with_the_accumulated_gradient(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dualwatch")
    # targets of very different scale per micro-batch, so one alone has a clearly different gradient
    x, y = data().dataset.tensors
    scale = 10.0 * torch.arange(1, 9).repeat_interleave(8).view(-1, 1, 1, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y * scale), batch_size=8)
    inputs = StepInputs(accumulate=2)
    monitor = EdgeMonitorCallback(check_frequency=1)
    _fit(tmp_path, [inputs, monitor], loader, max_steps=3, accumulate_grad_batches=2)
    logged = _tensorboard(tmp_path / "tb" / "dualwatch")  # the run in the trainer's log dir

    # one check per optimizer step, not one per micro-batch: each step's block is logged once
    assert _blocks(caplog) == ["0", "1", "2"]
    assert sorted(logged["edge_processor/to_four.weight/grad_norm"]) == [0, 1, 2]
    for step, (_, batches) in inputs.steps.items():
        model = inputs.fp32_model(step)
        first_alone = torch.autograd.grad(
            torch.nn.functional.mse_loss(model(batches[0][0]), batches[0][1]),
            model.edge_processor.to_four.weight,
        )[0]
        got = logged["edge_processor/to_four.weight/grad_norm"][step]
        assert got == pytest.approx(model.edge_processor.to_four.weight.grad.norm().item(), rel=1e-4)
        assert got != pytest.approx(first_alone.norm().item(), rel=0.1)
        total = _norm(p.grad.double().numpy() for p in model.parameters())
        assert logged["train/gradient/total_norm"][step] == pytest.approx(total, rel=1e-4)


def test_under_fp16_amp_the_logged_gradients_are_unscaled(tmp_path: Path) -> None:
    """A GradScaler at 1024 multiplies every backward; the monitor must log gradients without it."""
    inputs = StepInputs()
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    monitor = EdgeMonitorCallback(check_frequency=1, console=False)
    _fit(tmp_path, [inputs, monitor], max_steps=2, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
    logged = _tensorboard(tmp_path / "tb" / "dualwatch")

    assert scaler.get_scale() == 1024.0  # no overflow: every step was scaled by 1024
    for step in (0, 1):
        model = inputs.fp32_model(step)
        total = _norm(p.grad.double().numpy() for p in model.parameters())
        # fp16 autocast rounds activations: a percent, not the factor 1024 a scaled gradient shows
        assert logged["train/gradient/total_norm"][step] == pytest.approx(total, rel=0.02)
        expected = model.edge_processor.backbone[0].weight.grad.norm().item()
        assert logged["edge_processor/backbone.0.weight/grad_norm"][step] == pytest.approx(expected, rel=0.02)


SEED_YAML = f"""
lightning:
  callbacks:
    edge_monitor:
      target: {TARGET}
      params:
        check_frequency: 10      # 每10步检查一次
        log_gradients: True      # 记录梯度统计
        log_weights: True        # 记录权重统计
"""


def test_seed_yaml_target_params_builds_the_callback_through_instantiate_from_config() -> None:
    config = OmegaConf.create(SEED_YAML).lightning.callbacks
    callbacks = [instantiate_from_config(config[name]) for name in config]
    assert len(callbacks) == 1 and isinstance(callbacks[0], EdgeMonitorCallback)
    monitor = callbacks[0]
    assert (monitor.every, monitor.check_frequency, monitor.log_gradients, monitor.log_weights) == (
        10,
        10,
        True,
        True,
    )
    # the module is found in the model, the files written in the trainer's run
    assert (monitor.module, monitor.logdir) == (None, None)


@contextlib.contextmanager
def _visualdl_server(logdir: Path, root: Path) -> Iterator[Server]:
    """A real ``visualdl --logdir <logdir>`` on 127.0.0.1; always stopped."""
    port = _free_port()
    argv = [os.path.join(BIN, "visualdl"), "--logdir", str(logdir), "--host", "127.0.0.1",
            "--port", str(port), "--cache-timeout", "0.5"]  # fmt: skip
    server = Server("visualdl", argv, str(root / "visualdl.log"), f"http://127.0.0.1:{port}")
    try:
        server.wait_up("/alive", time.monotonic() + 60)
        yield server
    finally:
        _stop(server.proc)


def test_seed_yaml_with_no_logdir_writes_every_format_in_the_trainer_log_dir_served_by_visualdl(
    tmp_path: Path,
) -> None:
    config = OmegaConf.create(SEED_YAML).lightning.callbacks
    (monitor,) = [instantiate_from_config(config[name]) for name in config]
    capture = Capture()
    root = tmp_path / "train"
    # the trainer's defaults: its TensorBoardLogger in <default_root_dir>/lightning_logs/version_0
    trainer = _fit(tmp_path, [monitor, capture], logger=True, default_root_dir=root, max_steps=11)

    run = Path(trainer.log_dir) / "dualwatch"
    assert run == root / "lightning_logs" / "version_0" / "dualwatch"
    assert sorted(f.split(".")[0] for f in os.listdir(run)) == ["events", "metrics", "vdlrecords"]
    for where, logged in _three(run).items():
        assert {tag for tag in logged if tag.startswith("edge_processor/")} == SEED_TAGS, where
        for tag in SEED_TAGS:  # every 10 steps from 0; a change needs a previous check
            assert _steps(logged[tag]) == ([10] if tag.endswith("/weight_change") else [0, 10]), where
        for step in (0, 10):
            for name in EDGE_PARAMS:
                g = capture.grads[step][f"edge_processor.{name}"]
                got = _value(logged[f"edge_processor/{name}/grad_norm"], step)
                assert got == pytest.approx(_norm([g]), rel=1e-5), where

    jsonl = _jsonl(run)
    with _visualdl_server(root / "lightning_logs", tmp_path) as vdl:

        def served() -> None:
            shown = visualdl_scalars(vdl, str(root / "lightning_logs"), "version_0/dualwatch")
            assert set(shown) >= SEED_TAGS
            for tag in ("edge_processor/to_four.weight/grad_norm", "Model/Gradient_Norm"):
                assert [(p[1], p[2]) for p in shown[tag]] == [(s, f32(v)) for s, _, v in jsonl[tag]]

        _eventually(served, 30, "VisualDL serving the callback's run", vdl)


class StableSRLayout(pl.LightningModule):
    """The StableSR layout: the edge processor sits inside the diffusion model, ``model.edge_processor``."""

    def __init__(self) -> None:
        super().__init__()
        self.model = torch.nn.Module()
        self.model.edge_processor = EdgeMapProcessor()
        self.model.head = torch.nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.head(self.model.edge_processor(x))

    training_step = TinyEdgeModel.training_step
    configure_optimizers = TinyEdgeModel.configure_optimizers
    lr = 1e-2


@pytest.mark.parametrize("module", [None, "edge_processor"])
def test_nested_edge_processor_is_watched_with_edge_processor_tags(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, module: str | None
) -> None:
    caplog.set_level(logging.INFO, logger="dualwatch")
    capture = Capture()
    monitor = EdgeMonitorCallback(5, module=module)
    _fit(tmp_path, [monitor, capture], model=StableSRLayout(), max_steps=6)

    logged = _jsonl(tmp_path / "tb" / "dualwatch")
    assert {tag for tag in logged if tag.startswith("edge_processor/")} == SEED_TAGS
    assert not [tag for tag in logged if tag.startswith("model")]
    for step in (0, 5):
        g = capture.grads[step]["model.edge_processor.to_four.weight"]
        got = _value(logged["edge_processor/to_four.weight/grad_norm"], step)
        assert got == pytest.approx(_norm([g]), rel=1e-5)
        # the global tags cover the whole model, head included
        assert _value(logged["train/gradient/total_norm"], step) == pytest.approx(
            _norm(capture.grads[step].values()), rel=1e-5
        )
    assert _blocks(caplog) == ["0", "5"]


def test_a_model_without_edge_processor_is_watched_whole(tmp_path: Path) -> None:
    class Plain(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            return torch.nn.functional.mse_loss(self.conv(batch[0]), batch[1])

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.SGD(self.parameters(), lr=1e-2)

    capture = Capture()
    _fit(tmp_path, [EdgeMonitorCallback(2, console=False), capture], model=Plain(), max_steps=3)
    logged = _jsonl(tmp_path / "tb" / "dualwatch")
    assert {tag.rsplit("/", 1)[0] for tag in logged if tag.startswith("model/")} == {
        "model/conv.weight",
        "model/conv.bias",
    }
    g = capture.grads[2]["conv.weight"]
    assert _value(logged["model/conv.weight/grad_norm"], 2) == pytest.approx(_norm([g]), rel=1e-5)


def test_example_prints_the_block_and_writes_the_seed_tags_in_the_trainer_run(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "lightning_edge_monitor.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "lightning_logs" / "version_0" / "dualwatch"
    for where, logged in _three(run).items():
        assert {tag for tag in logged if tag.startswith("edge_processor/")} == SEED_TAGS, where
        for tag in SEED_TAGS:  # check_frequency: 10, max_steps: 20
            assert _steps(logged[tag]) == ([10] if tag.endswith("/weight_change") else [0, 10]), where
        assert _steps(logged["Loss/Train"]) == _steps(logged["Learning_Rate"]) == [0, 10], where
    # the tags the StableSR edge monitor's README shows by name
    for name in ("backbone.0.weight", "to_four.weight"):
        assert {f"edge_processor/{name}/weight_change", f"edge_processor/{name}/grad_norm"} <= SEED_TAGS
    block = "=" * 80 + "\nEdge Processor Monitor - Step 10\n" + "=" * 80
    assert block in out.stdout
    assert "  edge_processor/backbone.0.weight/weight_change: " in out.stdout


TQDM_SCRIPT = """
import sys
sys.path.insert(0, {examples!r})
import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning_edge_monitor import TinyEdgeModel, data
from dualwatch.integrations.lightning import EdgeMonitorCallback

trainer = pl.Trainer(
    accelerator="cpu", max_steps=11, logger=False, default_root_dir=sys.argv[1],
    callbacks=[EdgeMonitorCallback(5), TQDMProgressBar(refresh_rate=1)],
    enable_checkpointing=False, enable_model_summary=False,
)
trainer.fit(TinyEdgeModel(), data())
"""


def test_the_block_is_written_above_lightnings_tqdm_progress_bar(tmp_path: Path) -> None:
    script = tmp_path / "tqdm_fit.py"
    script.write_text(TQDM_SCRIPT.format(examples=str(EXAMPLES)))
    out = subprocess.run(  # bytes: text mode would turn the bar's \r into \n
        [sys.executable, str(script), str(tmp_path / "out")], capture_output=True, timeout=180
    )
    assert out.returncode == 0, out.stderr[-3000:].decode()
    stdout = out.stdout.decode()
    assert "Epoch 0:" in stdout  # the bar is on stdout, as the blocks are
    for step in (0, 5, 10):
        # tqdm.write's path: the bar is cleared (\r, blanks, \r), the block is written on whole
        # lines, and the bar is drawn again below it
        block = rf"\r +\r={{80}}\nEdge Processor Monitor - Step {step}\n={{80}}\n(  [^\r\n]+\n)+\r"
        assert re.search(block, stdout), stdout[-3000:]
    # without a logger the run goes to <default_root_dir>/lightning_logs/logs_<time>
    (run,) = (tmp_path / "out" / "lightning_logs").iterdir()
    assert run.name.startswith("logs_")
    assert _steps(_jsonl(run)["Model/Gradient_Norm"]) == [0, 5, 10]


def _cli(monkeypatch: pytest.MonkeyPatch, logger: dict, callback: dict) -> LightningCLI:
    """A LightningCLI that builds the trainer (3 steps) with ``logger`` and the callback from ``callback``."""
    monkeypatch.setattr(sys, "argv", ["train.py"])  # the CLI would also parse pytest's own arguments
    trainer = {"accelerator": "cpu", "max_steps": 3, "log_every_n_steps": 1, "logger": logger, **QUIET}
    trainer["callbacks"] = [{"class_path": TARGET, "init_args": callback}]
    return LightningCLI(TinyEdgeModel, run=False, save_config_callback=None, args={"trainer": trainer})


def test_lightning_cli_builds_the_callback_and_sends_only_the_totals_to_the_trainer_logger(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = {"class_path": "CSVLogger", "init_args": {"save_dir": str(tmp_path)}}
    cli = _cli(monkeypatch, logger, {"check_frequency": 2, "module": "edge_processor", "console": False})
    monitor = next(cb for cb in cli.trainer.callbacks if isinstance(cb, EdgeMonitorCallback))
    assert (monitor.every, monitor.console, monitor.log_to_trainer) == (2, False, "summary")
    cli.trainer.fit(cli.model, data())
    csv_logged = _csv(Path(cli.trainer.logger.log_dir) / "metrics.csv")
    own = _jsonl(Path(cli.trainer.logger.log_dir) / "dualwatch")
    # the CSV logger gets the totals of each check; the per-parameter statistics are in dualwatch's files
    assert sorted(csv_logged["Model/Gradient_Norm"]) == _steps(own["Model/Gradient_Norm"]) == [0, 2]
    assert csv_logged["train/gradient/total_norm"][2] == pytest.approx(
        _value(own["train/gradient/total_norm"], 2), rel=1e-6
    )
    assert not [tag for tag in csv_logged if tag.startswith("edge_processor/")]
    assert _steps(own["edge_processor/backbone.0.weight/grad_norm"]) == [0, 2]
    assert monitor.last["edge_processor/backbone.0.weight/grad_norm"] > 0


def test_lightning_cli_builds_the_logger_and_the_callback_writes_into_its_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = {
        "class_path": "dualwatch.integrations.lightning.DualwatchLogger",
        "init_args": {"save_dir": str(tmp_path), "version": "cli", "formats": ["visualdl", "jsonl"]},
    }
    cli = _cli(monkeypatch, logger, {"every": 2, "console": False})
    assert isinstance(cli.trainer.logger, DualwatchLogger)
    cli.trainer.fit(cli.model, data())
    run = tmp_path / "lightning_logs" / "cli"
    assert sorted(f.split(".")[0] for f in os.listdir(run)) == ["hparams", "metrics", "vdlrecords"]
    for where, logged in (("visualdl", _vdl(run)), ("jsonl", _jsonl(run))):
        assert _steps(logged["train/loss"]) == [0, 1, 2], where
        assert _steps(logged["edge_processor/to_four.weight/grad_norm"]) == [0, 2], where


def test_log_to_trainer_false_sends_nothing_to_the_trainer_loggers(tmp_path: Path) -> None:
    _fit(tmp_path, [EdgeMonitorCallback(2, console=False, log_to_trainer=False)], max_steps=3)
    csv_logged = _csv(tmp_path / "csv" / "metrics.csv")
    assert set(csv_logged) == {"train/loss", "epoch"}
    assert _steps(_jsonl(tmp_path / "tb" / "dualwatch")["Model/Gradient_Norm"]) == [0, 2]


@pytest.mark.parametrize("module", ["edge_procesor", "model.edge_procesor"])
def test_unknown_module_fails_at_setup_before_any_step_naming_close_matches(
    tmp_path: Path, module: str
) -> None:
    capture = Capture()
    monitor = EdgeMonitorCallback(module=module, console=False)
    with pytest.raises(ValueError, match=rf"module='{module}' matches no submodule.*model\.edge_processor"):
        _fit(tmp_path, [monitor, capture], model=StableSRLayout(), max_steps=2)
    assert capture.steps_started == 0
    assert not (tmp_path / "tb" / "dualwatch").exists()  # and no run was created


def test_every_is_the_frequency_and_check_frequency_its_alias() -> None:
    assert EdgeMonitorCallback(5).every == 5  # positionally, as the StableSR callback's first argument
    assert EdgeMonitorCallback(every=5).check_frequency == 5
    assert EdgeMonitorCallback(check_frequency=5).every == 5
    assert EdgeMonitorCallback().every == 10
    with pytest.raises(ValueError, match="every=5, check_frequency=10"):
        EdgeMonitorCallback(5, check_frequency=10)
    with pytest.raises(ValueError, match="log_to_trainer= is True, False or 'summary', got 'all'"):
        EdgeMonitorCallback(log_to_trainer="all")


# -- DualwatchLogger, and the VisualDL guide's curves ------------------------------------------------


class Recorded(TinyEdgeModel):
    """Keeps what it logs by global step: the training loss, the learning rate, validation losses."""

    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__(lr)
        self.save_hyperparameters()
        self.example_input_array = torch.zeros(1, 3, 12, 12)
        self.train_losses: dict[int, float] = {}
        self.lrs: dict[int, float] = {}
        self.val_losses: dict[int, list[float]] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train_loss", loss)
        self.train_losses[self.global_step] = loss.item()
        self.lrs[self.global_step] = self.trainer.optimizers[0].param_groups[0]["lr"]
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("val_loss", loss)
        if not self.trainer.sanity_checking:
            self.val_losses.setdefault(self.global_step, []).append(loss.item())

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.9)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class EpochTimer(pl.Callback):
    """Each training epoch's seconds, from its start hook to its end hook, by its last step."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds[trainer.global_step - 1] = time.perf_counter() - self.started


@pytest.fixture(scope="module")
def logger_fit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Recorded, EpochTimer]:
    """Two epochs of 8 steps with validation, a per-step learning rate schedule, a DualwatchLogger
    beside a CSVLogger and the callback checking every 2 steps; the timer runs after the callback."""
    root = tmp_path_factory.mktemp("logger")
    model, timer = Recorded(), EpochTimer()
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        limit_val_batches=2,
        log_every_n_steps=1,
        callbacks=[EdgeMonitorCallback(2, console=False), timer],
        logger=[DualwatchLogger(root, log_graph=True), CSVLogger(root, name="csv")],
        **QUIET,
    )
    trainer.fit(model, data(), data(n=16))
    return root, model, timer


def test_dualwatch_logger_writes_self_log_values_to_visualdl_tensorboard_and_jsonl(
    logger_fit: tuple[Path, Recorded, EpochTimer],
) -> None:
    root, model, _ = logger_fit
    run = root / "lightning_logs" / "version_0"
    csv_logged = _csv(root / "csv" / "version_0" / "metrics.csv")
    for where, logged in _three(run).items():
        assert _steps(logged["train_loss"]) == list(range(16)), where
        for step, loss in model.train_losses.items():
            assert _value(logged["train_loss"], step) == pytest.approx(loss, rel=1e-6), where
        # validation where Lightning's own CSVLogger puts it, the mean of the batches' losses
        assert _steps(logged["val_loss"]) == sorted(csv_logged["val_loss"]) == [7, 15], where
        for step, losses in model.val_losses.items():
            assert _value(logged["val_loss"], step - 1) == pytest.approx(np.mean(losses), rel=1e-6), where
        # the callback wrote its checks into the logger's run, each once (the logger is not also sent them)
        assert _steps(logged["Model/Gradient_Norm"]) == list(range(0, 16, 2)), where
        assert _steps(logged["edge_processor/to_four.weight/grad_norm"]) == list(range(0, 16, 2)), where
    assert not (run / "dualwatch").exists()
    lines = read_metrics(run)
    assert [line["hparams"] for line in lines if line.get("kind") == "hparams"] == [{"lr": 0.01}]
    assert [line["nodes"] > 0 for line in lines if line.get("kind") == "graph"] == [True]
    assert yaml.safe_load((run / "hparams.yaml").read_text()) == {"lr": 0.01}
    # the CSV logger beside it gets self.log's values and each check's totals only
    assert csv_logged["train_loss"][3] == pytest.approx(model.train_losses[3], rel=1e-6)
    assert sorted(csv_logged["Model/Gradient_Norm"]) == list(range(0, 16, 2))
    assert not [tag for tag in csv_logged if tag.startswith("edge_processor/")]


def test_the_callback_writes_the_visualdl_guides_curves_from_the_trainer(
    logger_fit: tuple[Path, Recorded, EpochTimer],
) -> None:
    root, model, timer = logger_fit
    logged = _jsonl(root / "lightning_logs" / "version_0")
    checks = list(range(0, 16, 2))
    assert _steps(logged["Loss/Train"]) == _steps(logged["Learning_Rate"]) == checks
    for step in checks:
        assert _value(logged["Loss/Train"], step) == pytest.approx(model.train_losses[step], rel=1e-6)
        assert _value(logged["Learning_Rate"], step) == pytest.approx(model.lrs[step], rel=1e-9)
    assert model.lrs[14] == pytest.approx(0.01 * 0.9**14)  # the schedule did change it
    assert _steps(logged["Loss/Validation"]) == [7, 15]
    for step, losses in model.val_losses.items():
        assert _value(logged["Loss/Validation"], step - 1) == pytest.approx(np.mean(losses), rel=1e-6)
    assert _steps(logged["Time/Epoch_Duration"]) == sorted(timer.seconds) == [7, 15]
    for step, seconds in timer.seconds.items():
        assert _value(logged["Time/Epoch_Duration"], step) == pytest.approx(seconds, abs=0.02)


def test_a_validate_after_fit_continues_the_same_files(tmp_path: Path) -> None:
    """Lightning finalizes the logger at the end of ``fit``; ``validate`` then logs to the same run,
    in the same VisualDL file (VisualDL shows only a run's newest one), keeping what ``fit`` wrote."""
    model = Recorded()
    trainer = _fit(tmp_path, [], model=model, max_steps=3, logger=DualwatchLogger(tmp_path))
    trainer.validate(model, data(n=16), verbose=False)
    val_loss = np.mean(model.val_losses[3])
    for where, logged in _three(tmp_path / "lightning_logs" / "version_0").items():
        assert _steps(logged["train_loss"]) == [0, 1, 2], where
        assert _value(logged["train_loss"], 2) == pytest.approx(model.train_losses[2], rel=1e-6), where
        (point,) = logged["val_loss"]
        assert point[2] == pytest.approx(val_loss, rel=1e-5), where


# -- resume ------------------------------------------------------------------------------------------


def _continuous(logged: dict[str, list[tuple[int, float, float]]], started: float, unit: float) -> None:
    """Every tag's steps increase (none shown twice); points from step 6 on are the second run's."""
    for tag, series in logged.items():
        steps = _steps(series)
        assert steps == sorted(set(steps)), tag
        for step, wall, _ in series:
            assert (wall * unit >= started) == (step >= 6), (tag, step)


@pytest.mark.filterwarnings("ignore:.*resuming from a mid-epoch checkpoint")
@pytest.mark.filterwarnings("ignore:.*Checkpoint directory .* exists and is not empty")
def test_resume_continues_the_callbacks_run_in_the_fixed_logger_version(tmp_path: Path) -> None:
    # to step 10 with a checkpoint at step 6, then from that checkpoint to step 12: a crash and a
    # restart from the last checkpoint, in the same logger version
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1)
    _fit(tmp_path, [EdgeMonitorCallback(2, console=False), saver], max_steps=10, enable_checkpointing=True,
         logger=TensorBoardLogger(tmp_path, name="tb", version="fixed"))  # fmt: skip
    capture, started = Capture(), time.time()
    _fit(tmp_path, [EdgeMonitorCallback(2, console=False, resume=True), capture], max_steps=12,
         logger=TensorBoardLogger(tmp_path, name="tb", version="fixed"),
         ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=6.ckpt"))  # fmt: skip
    run = tmp_path / "tb" / "fixed" / "dualwatch"
    for where, logged in _three(run).items():
        _continuous(logged, started, 1e-3 if where == "visualdl" else 1.0)
        assert _steps(logged["Model/Gradient_Norm"]) == [0, 2, 4, 6, 8, 10], where
        for step in (6, 8, 10):
            norm = _norm(capture.grads[step].values())
            assert _value(logged["Model/Gradient_Norm"], step) == pytest.approx(norm, rel=1e-5), where


@pytest.mark.filterwarnings("ignore:.*resuming from a mid-epoch checkpoint")
@pytest.mark.filterwarnings("ignore:.*Checkpoint directory .* exists and is not empty")
def test_resume_continues_the_dualwatch_logger_run_with_the_callback_in_it(tmp_path: Path) -> None:
    first, second = Recorded(), Recorded()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=6, save_top_k=-1)
    _fit(tmp_path, [EdgeMonitorCallback(2, console=False), saver], model=first, max_steps=10,
         logger=DualwatchLogger(tmp_path, version="fixed"), enable_checkpointing=True)  # fmt: skip
    capture, started = Capture(), time.time()
    _fit(tmp_path, [EdgeMonitorCallback(2, console=False), capture], model=second, max_steps=12,
         logger=DualwatchLogger(tmp_path, version="fixed", resume=True),
         ckpt_path=str(tmp_path / "ckpt" / "epoch=0-step=6.ckpt"))  # fmt: skip
    run = tmp_path / "lightning_logs" / "fixed"
    for where, logged in _three(run).items():
        _continuous(logged, started, 1e-3 if where == "visualdl" else 1.0)
        assert _steps(logged["train_loss"]) == list(range(12)), where
        for step in range(12):
            loss = (first if step < 6 else second).train_losses[step]
            assert _value(logged["train_loss"], step) == pytest.approx(loss, rel=1e-6), where
        assert _steps(logged["Model/Gradient_Norm"]) == [0, 2, 4, 6, 8, 10], where
        norm = _norm(capture.grads[8].values())
        assert _value(logged["Model/Gradient_Norm"], 8) == pytest.approx(norm, rel=1e-5), where
    # the resumed run's hyper-parameters waited for its first metrics, at step 6, so the resume
    # point is step 6 and the first run's (at step 0) stay
    hparams = [(line["step"], line["hparams"]) for line in read_metrics(run) if line.get("kind") == "hparams"]
    assert hparams == [(0, {"lr": 0.01}), (6, {"lr": 0.01})]


@pytest.mark.parametrize("where", ["callback", "logger"])
def test_a_fixed_run_that_exists_without_resume_fails_before_training(tmp_path: Path, where: str) -> None:
    def attempt(capture: pl.Callback | None = None) -> None:
        callbacks = [EdgeMonitorCallback(console=False), *([capture] if capture else [])]
        if where == "logger":
            logger = DualwatchLogger(tmp_path, version="fixed")
        else:
            logger = TensorBoardLogger(tmp_path, name="tb", version="fixed")
        _fit(tmp_path, callbacks, logger=logger, max_steps=1)

    attempt()
    capture = Capture()
    message = "already holds a run: pass resume=True" if where == "logger" else "pass resume=True"
    with pytest.raises(ValueError, match=message):
        attempt(capture)
    assert capture.steps_started == 0


# -- hyper-parameters ----------------------------------------------------------------------------------

HPARAMS = {
    "dict": lambda: {"lr": 0.01, "optimizer": {"name": "adam", "betas": [0.9, 0.999]}, "layers": 3,
                     "edge": True, "note": None},
    "namespace": lambda: Namespace(lr=0.01, schedule=Namespace(gamma=0.5, every=2)),
    "omegaconf": lambda: OmegaConf.create({"model": {"width": 16, "act": "relu"}, "size": "${model.width}"}),
}  # fmt: skip


def _tb_hparams(run_dir: Path) -> dict[str, Any]:
    acc = _tb_plugins(str(run_dir))
    content = acc.PluginTagToContent(hparams_metadata.PLUGIN_NAME)
    start = hparams_metadata.parse_session_start_info_plugin_data(
        content[hparams_metadata.SESSION_START_INFO_TAG]
    )
    return {name: getattr(value, value.WhichOneof("kind")) for name, value in start.hparams.items()}


@pytest.mark.parametrize("kind", sorted(HPARAMS))
def test_hyperparameters_are_flattened_as_tensorboardlogger_flattens_them(tmp_path: Path, kind: str) -> None:
    ours = DualwatchLogger(tmp_path, name="dw")
    theirs = TensorBoardLogger(tmp_path, name="tb")
    for logger in (ours, theirs):
        logger.log_hyperparams(HPARAMS[kind]())
        logger.finalize("success")

    expected = _tb_hparams(Path(theirs.log_dir))  # its bools are numbers (torch's summary), == True
    assert len(expected) >= 3 and any("/" in name for name in expected)  # nested keys were flattened
    assert _tb_hparams(Path(ours.log_dir)) == expected
    (line,) = [line for line in read_metrics(ours.log_dir) if line.get("kind") == "hparams"]
    assert line["hparams"] == expected
    (record,) = LogReader(file_path=glob.glob(os.path.join(ours.log_dir, "vdlrecords*"))[0]).get_data(
        "hyper_parameters", "hparam"
    )
    shown = {i.name: getattr(i, i.WhichOneof("type")) for i in record.hparam.hparamInfos}
    # VisualDL has no bool hyper-parameter: it shows True as "True"
    assert shown == {k: str(v) if isinstance(v, bool) else v for k, v in line["hparams"].items()}
    assert Path(ours.log_dir, "hparams.yaml").read_text() == Path(theirs.log_dir, "hparams.yaml").read_text()


# -- the report -----------------------------------------------------------------------------------------


class TwoLosses(TinyEdgeModel):
    """A total of two named losses, and a stat group it sets in ``dualwatch_stats``."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: dict[int, tuple[float, float, float, float]] = {}

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self(x)
        edge = torch.nn.functional.mse_loss(out, y)
        reg = 0.1 * out.abs().mean()
        loss = edge + reg
        self.log_dict({"train/loss": loss, "train/edge_loss": edge, "train/reg_loss": reg})
        gate = float(torch.sigmoid(out.detach()).mean())
        self.dualwatch_stats = {"fusion": {"gate_mean": gate}}
        self.seen[self.global_step] = (loss.item(), edge.item(), reg.item(), gate)
        return loss


@pytest.mark.parametrize("report", [True, False])
def test_report_logs_the_framed_report_and_model_stats_are_logged_at_checks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, report: bool
) -> None:
    caplog.set_level(logging.INFO, logger="dualwatch")
    model = TwoLosses()
    _fit(tmp_path, [EdgeMonitorCallback(2, report=report)], model=model, max_steps=3)
    logged = _jsonl(tmp_path / "tb" / "dualwatch")
    assert _steps(logged["train/fusion/gate_mean"]) == [0, 2]
    assert _value(logged["train/fusion/gate_mean"], 2) == pytest.approx(model.seen[2][3], rel=1e-9)
    texts = [r.getMessage() for r in caplog.records if r.name == "dualwatch"]
    reports = [t for t in texts if "Enhanced Training Stats" in t]
    if not report:
        assert reports == [] and "train/detailed_loss/loss" not in logged
        return
    assert [re.search(r"Iter (\d+)", t).group(1) for t in reports] == ["0", "2"]
    for text, step in zip(reports, (0, 2)):
        loss, edge, reg, gate = model.seen[step]
        assert f"  {'loss':<20}: {loss:.6f}\n" in text
        assert f"  {'edge_loss':<20}: {edge:.6f} ({edge / loss:.1%})" in text
        assert f"  {'reg_loss':<20}: {reg:.6f} ({reg / loss:.1%})" in text
        assert f"  {'gate_mean':<20}: {gate:.4f}" in text
        assert "status: ✅ healthy" in text
    assert _value(logged["train/detailed_loss/edge_loss"], 2) == pytest.approx(model.seen[2][1], rel=1e-6)


# -- the pytorch_lightning package ------------------------------------------------------------------


class PackageEdgeModel(pytorch_lightning.LightningModule):
    """``TinyEdgeModel`` on the ``pytorch_lightning`` package."""

    def __init__(self) -> None:
        super().__init__()
        self.lr = 1e-2
        self.edge_processor = EdgeMapProcessor()
        self.head = torch.nn.Conv2d(4, 3, 1)

    forward = TinyEdgeModel.forward
    training_step = TinyEdgeModel.training_step
    configure_optimizers = TinyEdgeModel.configure_optimizers


@pytest.mark.parametrize("logger", ["DualwatchLogger", "default"])
def test_pytorch_lightning_trainer_takes_the_callback_and_the_logger(tmp_path: Path, logger: str) -> None:
    callback = dw_pytorch_lightning.EdgeMonitorCallback(2, console=False)
    assert isinstance(callback, pytorch_lightning.Callback)
    capture = Capture()  # a lightning.pytorch callback, in a list, is taken by duck typing
    trainer = pytorch_lightning.Trainer(
        accelerator="cpu",
        max_steps=5,
        log_every_n_steps=1,
        callbacks=callback,  # alone, not in a list: only a pytorch_lightning.Callback is taken so
        logger=dw_pytorch_lightning.DualwatchLogger(tmp_path) if logger == "DualwatchLogger" else True,
        default_root_dir=tmp_path,
        **QUIET,
    )
    trainer.callbacks.append(capture)
    trainer.fit(PackageEdgeModel(), data())
    run = tmp_path / "lightning_logs" / "version_0"
    if logger == "default":
        run = run / "dualwatch"
    assert isinstance(trainer.logger, pytorch_lightning.loggers.Logger)
    for where, logged in _three(run).items():
        assert _steps(logged["Model/Gradient_Norm"]) == [0, 2, 4], where
        assert _value(logged["Model/Gradient_Norm"], 4) == pytest.approx(
            _norm(capture.grads[4].values()), rel=1e-5
        )
        assert {tag for tag in logged if tag.startswith("edge_processor/")} == SEED_TAGS, where
        if logger == "DualwatchLogger":
            assert _steps(logged["train/loss"]) == list(range(5)), where


DDP_SCRIPT = """
import sys
sys.path.insert(0, {examples!r})
import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning_edge_monitor import TinyEdgeModel, data
from dualwatch.integrations.lightning import DualwatchLogger, EdgeMonitorCallback

if __name__ == "__main__":
    out = sys.argv[1]
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=4, log_every_n_steps=1,
        callbacks=[EdgeMonitorCallback(check_frequency=2, logdir=out, run="r")],
        logger=[CSVLogger(out, name="csv", version=""), DualwatchLogger(out, name="dw")],
        enable_progress_bar=False, enable_checkpointing=False, enable_model_summary=False,
    )
    trainer.fit(TinyEdgeModel(), data())
"""


def test_under_two_process_ddp_only_global_rank_zero_prints_and_writes(tmp_path: Path) -> None:
    script = tmp_path / "ddp_fit.py"
    script.write_text(textwrap.dedent(DDP_SCRIPT.format(examples=str(EXAMPLES))))
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "out")], capture_output=True, text=True, timeout=240
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "GLOBAL_RANK: 1" in out.stderr  # a second process really trained
    assert out.stdout.count("Edge Processor Monitor - Step") == 2  # steps 0 and 2, one rank
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["csv", "dw", "r"]
    own = _tensorboard(tmp_path / "out" / "r")
    assert sorted(own["edge_processor/to_four.weight/grad_norm"]) == [0, 2]
    csv_logged = _csv(tmp_path / "out" / "csv" / "metrics.csv")
    assert sorted(csv_logged["train/gradient/total_norm"]) == [0, 2]
    # the logger: one run, written by rank 0 only, each step once, the values the CSV logger got
    assert os.listdir(tmp_path / "out" / "dw") == ["version_0"]
    for where, logged in _three(tmp_path / "out" / "dw" / "version_0").items():
        assert _steps(logged["train/loss"]) == [0, 1, 2, 3], where
        assert _value(logged["train/loss"], 3) == pytest.approx(csv_logged["train/loss"][3], rel=1e-6)
