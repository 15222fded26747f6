"""The main job: a seed-000-style ``EdgeMapProcessor`` trained on synthetic images, in either framework.

The model is the seed's shape (a convolutional ``backbone`` and a ``to_four`` head inside
``edge_processor``); the data is made here (no download): random smooth images and,
as the target, their horizontal and vertical differences. ``Watcher`` watches the
``edge_processor`` submodule with the seed's groups.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from dualwatch.watcher import Watcher

CHANNELS = (3, 32, 64, 128)


def _edge_model(nn: Any, conv: Any, norm: Any, container: Any) -> Any:
    """Seed 000's ``edge_processor`` (``backbone`` convolutions, ``to_four`` head) in either framework."""
    layers: list[Any] = []
    for cin, cout in zip(CHANNELS, CHANNELS[1:]):
        layers += [conv(cin, cout, 3, padding=1), norm(cout), nn.ReLU()]
    processor = container()
    processor.backbone = nn.Sequential(*layers)
    processor.to_four = conv(CHANNELS[-1], 4, 1)
    model = container()
    model.edge_processor = processor
    return model


def synthetic_batch(
    rng: np.random.Generator, batch: int = 4, size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images and their 4-channel difference maps (right, left, down, up)."""
    noise = rng.standard_normal((batch, 3, size // 4, size // 4)).astype(np.float32)
    images = np.repeat(np.repeat(noise, 4, axis=2), 4, axis=3)
    grey = images.mean(axis=1)
    dx = np.diff(grey, axis=2, append=grey[:, :, -1:])
    dy = np.diff(grey, axis=1, append=grey[:, -1:, :])
    target = np.stack([np.maximum(dx, 0), np.maximum(-dx, 0), np.maximum(dy, 0), np.maximum(-dy, 0)], axis=1)
    return images, target.astype(np.float32)


def _forward(model: Any, x: Any) -> Any:
    return model.edge_processor.to_four(model.edge_processor.backbone(x))


def run_demo(framework: str, *, steps: int = 30, every: int = 10, logdir: str = "runs", seed: int = 0) -> str:
    """Train ``steps`` steps in ``framework``; returns the run directory."""
    rng = np.random.default_rng(seed)
    if framework == "torch":
        torch = importlib.import_module("torch")
        torch.manual_seed(seed)
        nn = torch.nn
        model = _edge_model(nn, nn.Conv2d, nn.BatchNorm2d, nn.Module)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        to_tensor, mse = torch.from_numpy, torch.nn.functional.mse_loss
        clear = optimizer.zero_grad
    else:
        paddle = importlib.import_module("paddle")
        paddle.seed(seed)
        nn = paddle.nn
        model = _edge_model(nn, nn.Conv2D, nn.BatchNorm2D, nn.Layer)
        optimizer = paddle.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())
        to_tensor, mse = paddle.to_tensor, paddle.nn.functional.mse_loss
        clear = optimizer.clear_grad
    groups = {"backbone": "backbone", "to_four": "to_four"}
    with Watcher(
        model, every=every, module="edge_processor", groups=groups, logdir=f"{logdir}/{framework}"
    ) as w:
        for step in range(steps):
            images, target = synthetic_batch(rng)
            loss = mse(_forward(model, to_tensor(images)), to_tensor(target))
            loss.backward()
            w.step(step)
            w.log_training(step, loss=loss.item(), lr=1e-3)
            optimizer.step()
            clear()
        return w.run_dir or ""
