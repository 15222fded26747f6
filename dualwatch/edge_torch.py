"""The edge loss as a ``torch.nn.Module``; see :mod:`dualwatch.edge` for what each term does."""

from __future__ import annotations

import torch

from dualwatch.edge import EdgeLossBase


class EdgeLoss(EdgeLossBase, torch.nn.Module):
    __doc__ = EdgeLossBase.__doc__
