"""Alerts a user can trust: "not updating" fires for a skipped parameter or a zero learning rate,
never for a gradient that is rounding noise; a parameter without a gradient is information.

The demo's StableSR-style model (conv -> BatchNorm blocks) is trained for a few real steps in
each framework and the run is judged by ``dualwatch monitor --once`` itself. With plain SGD the
conv bias before each BatchNorm has a gradient that is zero in exact arithmetic and ~1e-7 in
float32, too small to move the bias: the case that used to raise a false "not updating".
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import _import

import dualwatch
from dualwatch._cli import main
from dualwatch._demo import BATCH, edge_model, synthetic_images
from dualwatch._health import ADVICE, NEGLIGIBLE_GRAD
from dualwatch._tags import NEGLIGIBLE_GRAD_COUNT, NOT_UPDATING_COUNT, ZERO_GRAD_COUNT

STEPS = 4
SIZE = 16
LR = 2e-3
SKIPPED = "edge_processor.to_four.weight"


def _model(framework: str, unused: bool) -> Any:
    fw = _import(framework)
    fw.manual_seed(0) if framework == "torch" else fw.seed(0)
    if framework == "torch":
        model = edge_model(fw.nn, fw.nn.Conv2d, fw.nn.BatchNorm2d, fw.nn.Module)
        if unused:
            model.edge_processor.unused = fw.nn.Conv2d(4, 4, 1)
    else:
        model = edge_model(fw.nn, fw.nn.Conv2D, fw.nn.BatchNorm2D, fw.nn.Layer)
        if unused:
            model.edge_processor.unused = fw.nn.Conv2D(4, 4, 1)
    return model


def _optimizer(framework: str, name: str, params: list[Any], lr: float) -> Any:
    fw = _import(framework)
    if framework == "torch":
        return {"sgd": fw.optim.SGD, "adam": fw.optim.Adam, "adamw": fw.optim.AdamW}[name](params, lr=lr)
    kind = {"sgd": fw.optimizer.SGD, "adam": fw.optimizer.Adam, "adamw": fw.optimizer.AdamW}[name]
    return kind(learning_rate=lr, parameters=params)


def train(
    framework: str,
    logdir: Path,
    optimizer: str = "sgd",
    *,
    lr: float = LR,
    skip: str | None = None,
    unused: bool = False,
) -> tuple[dualwatch.Watcher, list[warnings.WarningMessage]]:
    """A few steps of the demo's model, checked at every step; the Watcher and its warnings."""
    fw = _import(framework)
    model = _model(framework, unused)
    params = [p for name, p in model.named_parameters() if name != skip]
    opt = _optimizer(framework, optimizer, params, lr)
    clear = opt.zero_grad if framework == "torch" else opt.clear_grad
    to_tensor = fw.from_numpy if framework == "torch" else fw.to_tensor
    images = synthetic_images(np.random.default_rng(0), STEPS * BATCH, SIZE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dualwatch.Watcher(
            model, every=1, module="edge_processor", logdir=logdir, console=False, formats=("jsonl",)
        ) as w:
            for step in range(STEPS):
                x = to_tensor(images[step * BATCH : (step + 1) * BATCH])
                out = model.edge_processor(x)
                loss = ((out[:, :3] - x) ** 2).mean() + ((out[:, 3:] - x[:, :1]) ** 2).mean()
                loss.backward()
                w.step(step)
                opt.step()
                clear()
    return w, [c for c in caught if "dualwatch" in str(c.message)]


def monitor_once(run_dir: str) -> tuple[int, dict[str, Any]]:
    """``dualwatch monitor --once --json RUN``: its exit code and its report."""
    result = CliRunner().invoke(main, ["monitor", "--once", "--json", run_dir])
    return result.exit_code, json.loads(result.output.strip().splitlines()[-1])


@pytest.mark.parametrize("optimizer", ["sgd", "adam", "adamw"])
def test_the_demo_model_trains_without_alerts_under_sgd_adam_and_adamw(
    framework: str, optimizer: str, tmp_path: Path
) -> None:
    w, _ = train(framework, tmp_path, optimizer)
    assert w.health.not_updating == ()
    assert w.last.scalars[NOT_UPDATING_COUNT] == 0.0
    code, report = monitor_once(w.run_dir)
    assert code == 0, report["alerts"]
    assert report["alerts"] == []


def test_a_bias_before_batchnorm_under_sgd_is_negligible_information_not_an_alarm(tmp_path: Path) -> None:
    """torch initialises conv biases away from zero, so the rounding-noise gradient cannot move
    them: weight_change is exactly 0 (the old false alarm) and the finding is information."""
    w, _ = train("torch", tmp_path, "sgd")
    bias = "edge_processor.backbone.0.bias"
    assert w.last.scalars["edge_processor/backbone.0.bias/weight_change"] == 0.0
    assert bias in w.health.negligible_grad and bias not in w.health.not_updating
    grad_rms = w.last.scalars["edge_processor/backbone.0.bias/grad_norm"] / np.sqrt(32)
    assert 0 < grad_rms <= NEGLIGIBLE_GRAD * float(np.sqrt(np.mean(_initial_bias() ** 2)))
    assert w.last.scalars[NEGLIGIBLE_GRAD_COUNT] == len(w.health.negligible_grad)
    code, report = monitor_once(w.run_dir)
    assert code == 0
    info = [n for n in report["warnings"] if n["kind"] == "negligible_grad"]
    assert len(info) == 1 and "edge_processor/backbone.0.bias" in info[0]["tags"]
    assert info[0]["hint"] == ADVICE["negligible_grad"] and "bias=False" in info[0]["hint"]


def _initial_bias() -> np.ndarray:
    """The first conv's bias as torch initialises it (SGD has moved it by less than 1e-9 since)."""
    return _model("torch", False).edge_processor.backbone[0].bias.detach().numpy()


def test_a_parameter_the_optimizer_skips_is_not_updating(framework: str, tmp_path: Path) -> None:
    w, _ = train(framework, tmp_path, "sgd", skip=SKIPPED)
    assert w.health.not_updating == (SKIPPED,)
    assert any("learning rate" in a and SKIPPED in a for a in w.health.advice)
    code, report = monitor_once(w.run_dir)
    assert code == 1
    (alert,) = [a for a in report["alerts"] if a["kind"] == "not_updating"]  # gradients may explode too
    assert "not updating" in alert["message"]
    assert alert["tags"] == ["edge_processor/to_four.weight"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_zero_learning_rate_leaves_every_weight_not_updating(
    framework: str, optimizer: str, tmp_path: Path
) -> None:
    w, _ = train(framework, tmp_path, optimizer, lr=0.0)
    assert SKIPPED in w.health.not_updating and "edge_processor.backbone.0.weight" in w.health.not_updating
    code, report = monitor_once(w.run_dir)
    assert code == 1
    (alert,) = [a for a in report["alerts"] if a["kind"] == "not_updating"]
    assert "edge_processor/to_four.weight" in alert["tags"]
    assert len(alert["tags"]) == w.last.scalars[NOT_UPDATING_COUNT] == len(w.health.not_updating)


def test_a_parameter_unused_in_forward_is_information_with_one_warning(
    framework: str, tmp_path: Path
) -> None:
    w, caught = train(framework, tmp_path, "sgd", unused=True)
    unused = ("edge_processor.unused.weight", "edge_processor.unused.bias")
    assert w.health.zero_grad == unused and w.health.not_updating == ()
    assert w.last.scalars[ZERO_GRAD_COUNT] == 2.0
    about = [c for c in caught if "used in the forward pass" in str(c.message)]
    assert len(about) == 1  # once, at the first check, naming both
    assert all(name in str(about[0].message) for name in unused)
    code, report = monitor_once(w.run_dir)
    assert code == 0, report["alerts"]
    (info,) = [n for n in report["warnings"] if n["kind"] == "zero_grad"]
    assert info["tags"] == ["edge_processor/unused.bias", "edge_processor/unused.weight"]
    assert "used in the forward pass" in info["hint"]
