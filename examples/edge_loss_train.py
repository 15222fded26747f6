"""Train a tiny image-restoration model with the edge loss, in PyTorch or PaddlePaddle.

The task is synthetic: recover sharp RGB scenes (rectangles on a ramp, in [-1, 1]) from
blurred, noisy copies. The total loss is ``mse + EdgeLoss``: the edge-weighted MSE pushes
the model hardest on ground-truth edges; the edge-map MSE is logged as a metric (it has no
gradient). Ground-truth edge maps are computed once, as a data loader would, not every step.

    python examples/edge_loss_train.py --backend torch --steps 30
    visualdl --logdir runs        # or: tensorboard --logdir runs

Tags written: ``train/loss``, ``train/loss_edge``, ``train/edge_weighted_mse``,
``train/edge_map_mse``, ``train/edge_maps`` (pred | gt image), plus the Watcher's
weight and gradient statistics.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dualwatch import EdgeMapGenerator, Watcher, log_edge_maps

SIZE = 64
BATCH = 8


def make_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(degraded, sharp)`` float32 ``[n, 3, SIZE, SIZE]`` in [-1, 1]."""
    rng = np.random.default_rng(seed)
    sharp = np.tile(np.linspace(-0.6, 0.2, SIZE, dtype=np.float32), (n, 3, SIZE, 1))
    for i in range(n):
        for _ in range(3):
            y, x = rng.integers(0, SIZE - 12, 2)
            h, w = rng.integers(8, 24, 2)
            sharp[i, :, y : y + h, x : x + w] = rng.uniform(-1, 1, (3, 1, 1))
    # A 3x3 box blur and noise: the degradation the model learns to undo.
    padded = np.pad(sharp, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    blurred = sum(padded[:, :, dy : dy + SIZE, dx : dx + SIZE] for dy in range(3) for dx in range(3)) / 9
    degraded = blurred + rng.normal(0, 0.03, sharp.shape).astype(np.float32)
    return degraded.astype(np.float32), sharp


def torch_setup(weight: float, sobel_weight: float, watcher_of: Any) -> tuple[Any, ...]:
    import torch

    from dualwatch import TorchEdgeLoss as EdgeLoss

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(16, 3, 3, padding=1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    watcher = watcher_of(model)
    edge_loss = EdgeLoss(weight=weight, sobel_weight=sobel_weight, watcher=watcher)

    def step(x: Any, y: Any, edge_y: Any, i: int) -> tuple[float, Any]:
        pred = x + model(x)  # residual: the model predicts the correction
        extra, _ = edge_loss(pred, y, edge_gt=edge_y, step=i)
        loss = torch.nn.functional.mse_loss(pred, y) + extra
        optimizer.zero_grad()
        loss.backward()
        watcher.step(i)
        optimizer.step()
        return loss.item(), pred.detach()

    return torch.from_numpy, step, watcher, edge_loss


def paddle_setup(weight: float, sobel_weight: float, watcher_of: Any) -> tuple[Any, ...]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        import paddle

    from dualwatch import PaddleEdgeLoss as EdgeLoss

    paddle.seed(0)
    model = paddle.nn.Sequential(
        paddle.nn.Conv2D(3, 16, 3, padding=1), paddle.nn.ReLU(), paddle.nn.Conv2D(16, 3, 3, padding=1)
    )
    optimizer = paddle.optimizer.Adam(learning_rate=3e-3, parameters=model.parameters())
    watcher = watcher_of(model)
    edge_loss = EdgeLoss(weight=weight, sobel_weight=sobel_weight, watcher=watcher)

    def step(x: Any, y: Any, edge_y: Any, i: int) -> tuple[float, Any]:
        pred = x + model(x)
        extra, _ = edge_loss(pred, y, edge_gt=edge_y, step=i)
        loss = paddle.nn.functional.mse_loss(pred, y) + extra
        optimizer.clear_grad()
        loss.backward()
        watcher.step(i)
        optimizer.step()
        return float(loss), pred.detach()

    return paddle.to_tensor, step, watcher, edge_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["torch", "paddle"], default="torch")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--edge-weight", type=float, default=0.1)
    parser.add_argument("--sobel-weight", type=float, default=0.0, help="differentiable Sobel term (0: off)")
    parser.add_argument("--logdir", default="runs")
    args = parser.parse_args()

    def watcher_of(model: Any) -> Watcher:
        return Watcher(model, every=10, logdir=args.logdir, run=f"edge_{args.backend}", console=False)

    setup = torch_setup if args.backend == "torch" else paddle_setup
    to_tensor, step, watcher, edge_loss = setup(args.edge_weight, args.sobel_weight, watcher_of)
    degraded, sharp = make_data(BATCH * 4)
    edges = EdgeMapGenerator()
    edge_maps = [edges(to_tensor(sharp[b : b + BATCH])) for b in range(0, len(sharp), BATCH)]  # once
    with watcher:
        for i in range(args.steps):
            b = (i % 4) * BATCH
            x, y = to_tensor(degraded[b : b + BATCH]), to_tensor(sharp[b : b + BATCH])
            loss, pred = step(x, y, edge_maps[i % 4], i)
            watcher.writer.add_scalar("train/loss", loss, i)
            if i % 10 == 0 or i == args.steps - 1:
                log_edge_maps(watcher, edges(pred), edge_maps[i % 4], i)
                print(f"step {i:3d}  loss {loss:.4f}")
    print(f"run written to {watcher.run_dir} ({edge_loss.__class__.__module__}.EdgeLoss)")


if __name__ == "__main__":
    main()
