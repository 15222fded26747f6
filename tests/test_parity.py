"""The same model in torch and paddle, with identical weights and gradients: identical tags and values."""

from __future__ import annotations

import math

import numpy as np
import paddle
import torch
from conftest import add_in_place, set_grads

import dualwatch


def _torch_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3),
        torch.nn.BatchNorm2d(8),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(8, 5),
    )


def _paddle_twin(source: torch.nn.Module) -> paddle.nn.Layer:
    """The same architecture in paddle, weights copied (Linear weights transposed: paddle's are [in, out])."""
    twin = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 8, 3),
        paddle.nn.BatchNorm2D(8),
        paddle.nn.ReLU(),
        paddle.nn.Flatten(),
        paddle.nn.Linear(8, 5),
    )
    targets = dict(twin.named_parameters())
    for name, p in source.named_parameters():
        value = p.detach().numpy()
        targets[name].set_value(value.T if name == "4.weight" else value)
    return twin


def _grads(model: torch.nn.Module) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(5)
    return {name: rng.standard_normal(tuple(p.shape)) for name, p in model.named_parameters()}


def _run(
    framework: str, model, grads: dict[str, np.ndarray], groups: dict[str, str]
) -> list[dict[str, float]]:
    loose = dualwatch.Thresholds(exploding=1e9)  # random gradients: the verdict is not under test here
    w = dualwatch.Watcher(model, every=1, groups=groups, logdir=None, console=False, thresholds=loose)
    set_grads(framework, model, grads)
    first = w.step(0)
    add_in_place(framework, model, "0.bias", np.full(8, 0.25))
    return [first, w.step(1)]


def test_torch_and_paddle_give_the_same_tags_and_values() -> None:
    source = _torch_model()
    twin = _paddle_twin(source)
    grads = _grads(source)
    twin_grads = {name: (g.T if name == "4.weight" else g) for name, g in grads.items()}
    groups = {"features": "0|1", "head": "4"}  # regexes over module paths
    torch_checks = _run("torch", source, grads, groups)
    paddle_checks = _run("paddle", twin, twin_grads, groups)
    for t, p in zip(torch_checks, paddle_checks):
        assert sorted(t) == sorted(p)
        for tag in t:
            assert math.isclose(t[tag], p[tag], rel_tol=1e-5, abs_tol=1e-7), (tag, t[tag], p[tag])
    assert torch_checks[1]["Model/Total_Parameters"] == sum(p.numel() for p in source.parameters())
    assert "model/1._mean/weight_mean" not in paddle_checks[0]  # BatchNorm running statistics are buffers
