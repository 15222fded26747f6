"""The VisualDL training guide's monitoring and the ESAM guide's report for ``paddle.Model.fit``.

A tiny gated regression network is fitted for three epochs with validation; its ``forward``
reports the gate's statistics in ``self.dualwatch_stats``. One ``WatchCallback`` writes
``Loss/Train``, ``Loss/Validation``, ``Learning_Rate``, ``Model/Gradient_Norm``,
``Model/Parameter_Norm``, ``Model/Total_Parameters`` and ``Time/Epoch_Duration``, the
per-parameter weight and gradient statistics, the loss breakdown (``train/detailed_loss/loss``)
and the gate's group (``train/fusion/*``) to VisualDL, TensorBoard and metrics.jsonl, and logs
the framed "Enhanced Training Stats" report every 4 batches.

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


class GatedRegressor(paddle.nn.Layer):
    """Features scaled by a learned gate; the gate's mean and open fraction go in ``dualwatch_stats``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = paddle.nn.Linear(8, 16)
        self.gate = paddle.nn.Linear(16, 16)
        self.head = paddle.nn.Linear(16, 1)

    def forward(self, x):
        features = paddle.nn.functional.relu(self.backbone(x))
        gate = paddle.nn.functional.sigmoid(self.gate(features))
        self.dualwatch_stats = {
            "fusion": {"gate_mean": gate.mean(), "open_rate": (gate > 0.5).astype("float32").mean()}
        }
        return self.head(features * gate)


def main(logdir: str) -> None:
    paddle.seed(0)
    net = GatedRegressor()
    model = paddle.Model(net)
    schedule = paddle.optimizer.lr.CosineAnnealingDecay(learning_rate=0.01, T_max=24)
    model.prepare(
        paddle.optimizer.Adam(learning_rate=schedule, parameters=net.parameters()), paddle.nn.MSELoss()
    )
    watch = WatchCallback(
        every=4, logdir=logdir, groups={"backbone": "backbone", "gate": "gate", "head": "head"}
    )
    model.fit(Regression(0), Regression(1), batch_size=8, epochs=3, verbose=0, callbacks=[watch])


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "runs")
