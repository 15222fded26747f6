"""The edge loss as a ``paddle.nn.Layer``; see :mod:`dualwatch.edge` for what each term does."""

from __future__ import annotations

import paddle

from dualwatch.edge import EdgeLossBase


class EdgeLoss(EdgeLossBase, paddle.nn.Layer):
    __doc__ = EdgeLossBase.__doc__
