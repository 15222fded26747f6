"""The Lightning callback in real ``Trainer.fit`` runs on CPU, read back from what the loggers wrote.

Values are checked against numpy on gradients captured at the same hook by a second callback,
or recomputed from scratch on a copy of the model; tags against seed 000's example.
"""

from __future__ import annotations

import copy
import csv
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins import MixedPrecision
from omegaconf import OmegaConf

from dualwatch.integrations.lightning import EdgeMonitorCallback
from dualwatch.readers import RunReader

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
sys.path.insert(0, str(EXAMPLES))
from lightning_edge_monitor import TinyEdgeModel, data, instantiate_from_config  # noqa: E402

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
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        logger=[
            TensorBoardLogger(tmp_path, name="tb", version=""),
            CSVLogger(tmp_path, name="csv", version=""),
        ],
        log_every_n_steps=1,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(TinyEdgeModel(), loader or data())
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


def test_logged_grad_norms_and_weight_stats_match_numpy_in_tensorboard_csv_and_own_run(
    tmp_path: Path,
) -> None:
    capture = Capture()
    monitor = EdgeMonitorCallback(check_frequency=2, logdir=str(tmp_path / "dw"), run="r", console=False)
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
                assert logged[f"{tag}/weight_std"][step] == pytest.approx(w.std(), rel=1e-5), where
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
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # targets of very different scale per micro-batch, so one alone has a clearly different gradient
    x, y = data().dataset.tensors
    scale = 10.0 * torch.arange(1, 9).repeat_interleave(8).view(-1, 1, 1, 1)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y * scale), batch_size=8)
    inputs = StepInputs(accumulate=2)
    monitor = EdgeMonitorCallback(check_frequency=1)
    _fit(tmp_path, [inputs, monitor], loader, max_steps=3, accumulate_grad_batches=2)
    logged = _csv(tmp_path / "csv" / "metrics.csv")

    # one check per optimizer step, not one per micro-batch: each step's block is printed once
    blocks = re.findall(r"Edge Processor Monitor - Step (\d+)", capsys.readouterr().out)
    assert blocks == ["0", "1", "2"]
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
    logged = _tensorboard(tmp_path / "tb")

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
    assert (monitor.check_frequency, monitor.log_gradients, monitor.log_weights) == (10, True, True)
    assert monitor.module == "edge_processor"


def test_example_driven_by_the_seed_yaml_logs_seed_000_tags_and_console_block(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "lightning_edge_monitor.py"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    expected = {f"edge_processor/{p}/{stat}" for p in EDGE_PARAMS for stat in SEED_STATS}
    for logged in (_tensorboard(tmp_path / "tensorboard"), _csv(tmp_path / "csv" / "metrics.csv")):
        assert {tag for tag in logged if tag.startswith("edge_processor/")} == expected
        for tag in expected:  # check_frequency: 10, max_steps: 20; a change needs a previous check
            assert sorted(logged[tag]) == ([10] if tag.endswith("/weight_change") else [0, 10])
    # the tags seed 000's README shows by name
    for name in ("backbone.0.weight", "to_four.weight"):
        assert {f"edge_processor/{name}/weight_change", f"edge_processor/{name}/grad_norm"} <= expected
    block = "=" * 80 + "\nEdge Processor Monitor - Step 10\n" + "=" * 80
    assert block in out.stdout
    assert "  edge_processor/backbone.0.weight/weight_change: " in out.stdout


def test_lightning_cli_builds_the_callback_from_class_path_and_init_args(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py"])  # the CLI would also parse pytest's own arguments
    cli = LightningCLI(
        TinyEdgeModel,
        run=False,
        save_config_callback=None,
        args={
            "trainer": {
                "accelerator": "cpu",
                "max_steps": 3,
                "log_every_n_steps": 1,
                "logger": {"class_path": "CSVLogger", "init_args": {"save_dir": str(tmp_path)}},
                "enable_progress_bar": False,
                "enable_checkpointing": False,
                "callbacks": [
                    {
                        "class_path": TARGET,
                        "init_args": {"check_frequency": 2, "module": "edge_processor", "console": False},
                    }
                ],
            }
        },
    )
    monitor = next(cb for cb in cli.trainer.callbacks if isinstance(cb, EdgeMonitorCallback))
    assert (monitor.check_frequency, monitor.console) == (2, False)
    cli.trainer.fit(cli.model, data())
    logged = _csv(Path(cli.trainer.logger.log_dir) / "metrics.csv")
    assert sorted(logged["edge_processor/backbone.0.weight/grad_norm"]) == [0, 2]
    assert monitor.last["edge_processor/backbone.0.weight/grad_norm"] > 0


def test_unknown_module_fails_at_setup_before_any_step_naming_close_matches(tmp_path: Path) -> None:
    capture = Capture()
    monitor = EdgeMonitorCallback(module="edge_procesor", console=False)
    with pytest.raises(ValueError, match=r"module='edge_procesor' matches no submodule.*edge_processor"):
        _fit(tmp_path, [monitor, capture], max_steps=2)
    assert capture.steps_started == 0


DDP_SCRIPT = """
import sys
sys.path.insert(0, {examples!r})
import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from lightning_edge_monitor import TinyEdgeModel, data
from dualwatch.integrations.lightning import EdgeMonitorCallback

if __name__ == "__main__":
    out = sys.argv[1]
    trainer = pl.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=4,
        callbacks=[EdgeMonitorCallback(check_frequency=2, logdir=out, run="r")],
        logger=CSVLogger(out, name="csv", version=""),
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
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["csv", "r"]  # one dualwatch run
    own = _tensorboard(tmp_path / "out" / "r")
    assert sorted(own["edge_processor/to_four.weight/grad_norm"]) == [0, 2]
    assert sorted(_csv(tmp_path / "out" / "csv" / "metrics.csv")["train/gradient/total_norm"]) == [0, 2]
