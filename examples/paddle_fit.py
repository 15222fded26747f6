"""The VisualDL training guide's monitoring for ``paddle.Model.fit``, with one callback.

A tiny regression network is fitted for three epochs with validation; ``WatchCallback`` writes
``Loss/Train``, ``Loss/Validation``, ``Learning_Rate``, ``Model/Gradient_Norm``,
``Model/Parameter_Norm``, ``Model/Total_Parameters`` and ``Time/Epoch_Duration`` plus the
per-parameter weight and gradient statistics, to VisualDL, TensorBoard and metrics.jsonl.

    python examples/paddle_fit.py runs
    visualdl --logdir runs        # or: tensorboard --logdir runs
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="No ccache found")
    import paddle

from dualwatch.integrations.paddle import WatchCallback


class Regression(paddle.io.Dataset):
    """``y = x @ w`` plus noise: 64 samples of 8 features."""

    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(64, 8)).astype("float32")
        self.y = (self.x @ np.linspace(-1, 1, 8, dtype="float32")[:, None]).astype("float32")
        self.y += rng.normal(scale=0.1, size=self.y.shape).astype("float32")

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def __len__(self) -> int:
        return len(self.x)


def main(logdir: str) -> None:
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Linear(8, 16), paddle.nn.ReLU(), paddle.nn.Linear(16, 1))
    model = paddle.Model(net)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=0.01, T_max=24)
    model.prepare(
        paddle.optimizer.Adam(learning_rate=schedule, parameters=net.parameters()), paddle.nn.MSELoss()
    )
    model.fit(
        Regression(0),
        Regression(1),
        batch_size=8,
        epochs=3,
        verbose=0,
        callbacks=[WatchCallback(every=4, logdir=logdir, console=True)],
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
