"""What dualwatch builds from ``paddle.nn``: the edge loss as a ``Layer``, and the demo's training kit.

These must subclass paddle's own classes, so they live beside the paddle backend; what they do is
framework-free and written once (:mod:`dualwatch._edge`, :mod:`dualwatch._demo`).
"""

from __future__ import annotations

import numpy as np
import paddle

from dualwatch._demo import Kit, edge_model
from dualwatch._edge import EdgeLossBase


class PaddleEdgeLoss(EdgeLossBase, paddle.nn.Layer):
    __doc__ = EdgeLossBase.__doc__


def demo_kit(seed: int, lr: float) -> Kit:
    """The demo's model, optimizer and tensor calls, in paddle."""
    paddle.seed(seed)
    nn = paddle.nn
    model = edge_model(nn, nn.Conv2D, nn.BatchNorm2D, nn.Layer)
    optimizer = paddle.optimizer.Adam(learning_rate=lr, parameters=model.parameters())

    def load_weights(weights: dict[str, np.ndarray]) -> None:
        for name, param in model.named_parameters():
            param.set_value(weights[name])

    return Kit(
        model,
        optimizer,
        optimizer.set_lr,
        optimizer.clear_grad,
        paddle.to_tensor,
        nn.functional.mse_loss,
        PaddleEdgeLoss,
        load_weights,
    )
