"""What dualwatch builds from ``torch.nn``: the edge loss as a ``Module``, and the demo's training kit.

These must subclass torch's own classes, so they live beside the torch backend; what they do is
framework-free and written once (:mod:`dualwatch._edge`, :mod:`dualwatch._demo`).
"""

from __future__ import annotations

import numpy as np
import torch

from dualwatch._demo import Kit, edge_model
from dualwatch._edge import EdgeLossBase


class TorchEdgeLoss(EdgeLossBase, torch.nn.Module):
    __doc__ = EdgeLossBase.__doc__


def demo_kit(seed: int, lr: float) -> Kit:
    """The demo's model, optimizer and tensor calls, in torch."""
    torch.manual_seed(seed)
    nn = torch.nn
    model = edge_model(nn, nn.Conv2d, nn.BatchNorm2d, nn.Module)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def set_lr(value: float) -> None:
        for group in optimizer.param_groups:
            group["lr"] = value

    @torch.no_grad()
    def load_weights(weights: dict[str, np.ndarray]) -> None:
        for name, param in model.named_parameters():
            param.copy_(torch.from_numpy(weights[name]))

    return Kit(
        model,
        optimizer,
        set_lr,
        optimizer.zero_grad,
        torch.from_numpy,
        nn.functional.mse_loss,
        TorchEdgeLoss,
        load_weights,
    )
