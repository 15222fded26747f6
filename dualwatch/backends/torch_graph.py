"""A torch model's graph, traced by torch's own code for TensorBoard.

``torch.utils.tensorboard._pytorch_graph.graph`` is what ``SummaryWriter.add_graph`` runs: it
traces the model with ``torch.jit.trace`` (in eval mode, restored after) and gives TensorBoard's
``GraphDef``, which is written as it is. The nodes VisualDL is shown are read back from that
GraphDef, so both viewers show the one trace. It needs the ``tensorboard`` package.
"""

from __future__ import annotations

from typing import Any

import torch

from dualwatch.records import GraphNode

#: the GraphDef attribute that holds a node's output shapes (TensorBoard shows them on edges)
_SHAPES = "_output_shapes"


def example_of(example: Any) -> Any:
    """The forward's arguments as ``torch.jit.trace`` takes them: a tensor, a tuple of them, or ``()``."""
    if example is None:
        return ()
    if isinstance(example, torch.Tensor):
        return example
    if isinstance(example, (tuple, list)) and all(isinstance(x, torch.Tensor) for x in example):
        return tuple(example)
    raise TypeError(
        "a torch model's graph is traced on an example input: a tensor, or a tuple of tensors (one "
        f"per forward argument), got {type(example).__name__}; for example "
        "add_graph(model, torch.zeros(1, 3, 32, 32))"
    )


def trace(
    model: torch.nn.Module, example: Any, verbose: bool, strict: bool
) -> tuple[list[GraphNode], dict[str, bytes]]:
    """The nodes of ``model``'s trace, and the GraphDef TensorBoard reads (``"tensorboard"``)."""
    from torch.utils.tensorboard._pytorch_graph import graph

    graph_def, _ = graph(model, example, verbose, strict)  # the run metadata holds only the device
    nodes = []
    for node in graph_def.node:
        shapes = node.attr[_SHAPES].list.shape if _SHAPES in node.attr else []
        nodes.append(
            GraphNode(
                name=node.name,
                op=node.op,
                inputs=list(node.input),
                shape=[dim.size for dim in shapes[0].dim] if shapes else None,
                attrs=node.attr["attr"].s.decode("utf-8", "replace") if "attr" in node.attr else "",
            )
        )
    return nodes, {"tensorboard": graph_def.SerializeToString()}
