"""``DualwatchHook`` in a real MMEngine ``Runner``: logged values read back and recomputed with numpy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mmengine")

from mmengine.hooks import Hook  # noqa: E402
from mmengine.model import BaseModel  # noqa: E402
from mmengine.runner import Runner  # noqa: E402

import dualwatch.integrations.mmengine  # noqa: E402,F401  (registers DualwatchHook)

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, BATCH, EPOCHS, INTERVAL = 24, 4, 2, 2
ITERS = EPOCHS * SAMPLES // BATCH


class Dataset(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(SAMPLES, 4, generator=g)
        self.y = self.x @ torch.tensor([[0.5], [-1.0], [0.25], [1.0]])

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def __len__(self) -> int:
        return SAMPLES


class GatedRegressor(BaseModel):
    """Two loss terms and a gate whose mean it reports through ``dualwatch_stats``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Linear(4, 8)
        self.gate = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, inputs, labels, mode="loss"):
        features = torch.tanh(self.backbone(inputs))
        gate = torch.sigmoid(self.gate(features))
        pred = self.head(features * gate)
        self.dualwatch_stats = {"fusion": {"gate_mean": gate.mean().detach(), "gate_max": gate.max().item()}}
        return {"loss_mse": ((pred - labels) ** 2).mean(), "loss_l1": 0.1 * (pred - labels).abs().mean()}


class Recorder(Hook):
    """Captures, independently of dualwatch, each iteration's final gradients and the loss outputs."""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self.grads: dict[int, dict[str, np.ndarray]] = {}
        self.outputs: dict[int, dict[str, float]] = {}
        self.gates: dict[int, float] = {}
        self.iter = 0

    def before_train(self, runner) -> None:
        self.runner = runner
        for name, p in runner.model.named_parameters():
            p.register_post_accumulate_grad_hook(lambda p, name=name: self._grad(name, p))

    def _grad(self, name: str, p) -> None:
        self.grads.setdefault(self.iter, {})[name] = p.grad.detach().cpu().numpy().astype(np.float64).copy()

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.iter = runner.iter + 1

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.outputs[self.iter] = {k: v.item() for k, v in outputs.items()}
        self.gates[self.iter] = float(runner.model.dualwatch_stats["fusion"]["gate_mean"])


def _train(tmp_path: Path, capsys=None, **optim: object) -> tuple[Recorder, dict[str, dict[int, float]], str]:
    recorder = Recorder()
    runner = Runner(
        model=GatedRegressor(),
        work_dir=str(tmp_path / "work"),
        train_dataloader=dict(
            dataset=Dataset(),
            batch_size=BATCH,
            sampler=dict(type="DefaultSampler", shuffle=False),
            collate_fn=dict(type="default_collate"),
        ),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.05), **optim),
        train_cfg=dict(by_epoch=True, max_epochs=EPOCHS),
        default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=INTERVAL)),
        custom_hooks=[
            dict(
                type="DualwatchHook", log_interval=INTERVAL, groups={"backbone": "backbone", "gate": "gate.*"}
            ),
            recorder,
        ],
        default_scope="mmengine",
        experiment_name=tmp_path.name,
    )
    runner.train()
    printed = capsys.readouterr().out if capsys else ""
    (metrics,) = (tmp_path / "work").glob("*/dualwatch/metrics.jsonl")
    series: dict[str, dict[int, float]] = {}
    for line in metrics.read_text().splitlines():
        record = json.loads(line)
        for tag, value in record.items():
            if tag not in ("step", "wall_time"):
                series.setdefault(tag, {})[record["step"]] = value
    return recorder, series, printed


def _norm(grads: dict[str, np.ndarray], prefix: str = "") -> float:
    return float(np.sqrt(sum((g**2).sum() for name, g in grads.items() if name.startswith(prefix))))


def test_gradient_norms_and_group_shares_match_the_real_gradients(tmp_path: Path) -> None:
    recorder, series, _ = _train(tmp_path)
    logged = list(range(INTERVAL, ITERS + 1, INTERVAL))
    assert sorted(series["train/gradient/total_norm"]) == logged
    for it in logged:
        grads = recorder.grads[it]
        total, backbone, gate = _norm(grads), _norm(grads, "backbone."), _norm(grads, "gate.")
        assert series["train/gradient/total_norm"][it] == pytest.approx(total, rel=1e-5)
        assert series["train/gradient/max_grad"][it] == pytest.approx(
            max(np.abs(g).max() for g in grads.values())
        )
        assert series["train/gradient/backbone/norm"][it] == pytest.approx(backbone, rel=1e-5)
        assert series["train/gradient/gate/share"][it] == pytest.approx(gate**2 / total**2, rel=1e-5)
        shares = [series[f"train/gradient/{g}/share"][it] for g in ("backbone", "gate", "other")]
        assert sum(shares) == pytest.approx(1.0)
        assert series["Model/Gradient_Norm"][it] == series["train/gradient/total_norm"][it]


def test_gradients_are_read_before_clipping(tmp_path: Path) -> None:
    recorder, series, _ = _train(tmp_path, clip_grad=dict(max_norm=0.01))
    for it in range(INTERVAL, ITERS + 1, INTERVAL):
        assert series["train/gradient/total_norm"][it] == pytest.approx(_norm(recorder.grads[it]), rel=1e-5)
        assert series["train/gradient/total_norm"][it] > 0.1  # the clipped norm would be 0.01


def test_accumulated_gradients_are_read_once_per_optimizer_step(tmp_path: Path) -> None:
    recorder, series, _ = _train(tmp_path, accumulative_counts=2)
    for it in range(INTERVAL, ITERS + 1, INTERVAL):  # every second iteration steps the optimizer
        accumulated = _norm(recorder.grads[it])
        assert series["train/gradient/total_norm"][it] == pytest.approx(accumulated, rel=1e-5)
        assert accumulated != pytest.approx(_norm(recorder.grads[it - 1]), rel=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="MMEngine's AmpOptimWrapper needs CUDA")
def test_amp_gradients_are_read_unscaled(tmp_path: Path) -> None:
    recorder, series, _ = _train(tmp_path, type="AmpOptimWrapper", loss_scale=1024.0)
    for it in range(INTERVAL, ITERS + 1, INTERVAL):
        unscaled = _norm(recorder.grads[it]) / 1024.0
        assert series["train/gradient/total_norm"][it] == pytest.approx(unscaled, rel=1e-3)


def test_loss_breakdown_and_user_stat_groups_are_written_per_interval(tmp_path: Path) -> None:
    recorder, series, _ = _train(tmp_path)
    logged = list(range(INTERVAL, ITERS + 1, INTERVAL))
    for name in ("loss", "loss_mse", "loss_l1"):
        tag = f"train/detailed_loss/{name}"
        assert sorted(series[tag]) == logged
        for it in logged:
            assert series[tag][it] == pytest.approx(recorder.outputs[it][name], rel=1e-6)
    for it in logged:
        assert series["train/fusion/gate_mean"][it] == pytest.approx(recorder.gates[it], rel=1e-6)
    assert sorted(series["train/fusion/gate_max"]) == logged


def test_the_report_is_printed_in_the_seed_003_framed_layout(tmp_path: Path, capsys) -> None:
    recorder, series, printed = _train(tmp_path, capsys)
    block = printed[printed.index("📊 Dualwatch Training Stats - Iter 4") :].split("\n")
    block = block[: block.index("=" * 80, 2) + 1]
    assert block[1] == "=" * 80 and block[2] == "🔥 Detailed Loss Breakdown:"
    assert f"  loss_mse            : {recorder.outputs[4]['loss_mse']:.6f}" in block
    assert "🎯 fusion:" in block and f"  gate_mean           : {recorder.gates[4]:.4f}" in block
    assert "  status: ✅ healthy" in block
    share = series["train/gradient/backbone/share"][4]
    assert f"  backbone: {series['train/gradient/backbone/norm'][4]:.4f} ({share:.1%})" in block
    assert f"  total grad norm: {_norm(recorder.grads[4]):.4f}" in block
    assert printed.count("📊 Dualwatch Training Stats") == ITERS // INTERVAL


def test_the_optimizer_wrapper_is_restored_after_training(tmp_path: Path) -> None:
    recorder, _, _ = _train(tmp_path)
    wrapper = recorder.runner.optim_wrapper
    assert len(recorder.grads) == ITERS and "step" not in vars(wrapper)


def test_the_mmengine_example_trains_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mmengine_esam.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "🔥 Gradient Health:" in done.stdout and "🎯 fusion:" in done.stdout
    (metrics,) = tmp_path.glob("*/dualwatch/metrics.jsonl")
    tags = set().union(*(json.loads(line) for line in metrics.read_text().splitlines()))
    assert {
        "train/detailed_loss/semantic_loss",
        "train/gradient/bifusion/share",
        "train/fusion/2d_weight_mean",
    } <= tags
    assert "train/projection/valid_projection_rate" in tags


def test_a_config_file_registers_the_hook_through_custom_imports(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    config.write_text('custom_imports = dict(imports=["dualwatch.integrations.mmengine"])\n')
    code = (
        "import sys; from mmengine.config import Config; from mmengine.registry import HOOKS; "
        "before = 'DualwatchHook' in HOOKS.module_dict; Config.fromfile(sys.argv[1]); "
        "print(before, HOOKS.get('DualwatchHook').__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.split() == ["False", "dualwatch.integrations.mmengine"], done.stderr
