"""A paddle model's graph, made by VisualDL's own exporter (``LogWriter.add_graph``), minus its side effects.

VisualDL names every operation after the layers that run it (forward hooks that enter a
``name_scope`` called ``Class[attribute]``), saves the model with ``paddle.jit.save`` and reads
the saved program back with ``analyse_model`` into the graph JSON its server shows; that JSON is
written as it is. The same steps are taken here, with three differences: VisualDL's
``translate_graph`` leaves its hooks on the model, renames its layers and turns ``forward`` into
a static function for good, while here the hooks are removed and the names restored afterwards,
and ``jit.save`` converts ``forward`` without replacing it. Paddle 3 saves PIR programs, which
``analyse_model`` cannot read, so the program is saved in the old IR (``OldIrGuard``).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any

import paddle

from dualwatch.records import GraphNode

#: the attributes VisualDL's graph tab hides (bookkeeping of the static program)
_HIDDEN = ("use_mkldnn", "use_cudnn", "op_callstack", "op_role", "op_role_var", "op_namescope", "is_test")


def example_of(example: Any) -> list[Any]:
    """``input_spec`` as ``paddle.jit.save`` takes it: a list of ``InputSpec`` or tensors."""
    items = list(example) if isinstance(example, (list, tuple)) else [example]
    if not items or not all(isinstance(x, (paddle.static.InputSpec, paddle.Tensor)) for x in items):
        raise TypeError(
            "a paddle model's graph is traced from input_spec: a list of paddle.static.InputSpec or "
            f"tensors, one per forward argument, got {type(example).__name__}; for example add_graph(model, "
            "input_spec=[paddle.static.InputSpec([-1, 3, 32, 32], 'float32')])"
        )
    return items


def trace(
    model: paddle.nn.Layer, example: list[Any], verbose: bool
) -> tuple[list[GraphNode], dict[str, bytes]]:
    """The nodes of ``model``'s saved program, and VisualDL's graph JSON (``"visualdl"``)."""
    from visualdl.component.graph import analyse_model
    from visualdl.component.graph.utils import print_model

    program = _saved_program(model, example)
    graph = analyse_model(program)
    if verbose:
        print_model(graph)
    variables = {var["name"]: var for var in graph["vars"]}
    nodes = []
    for node in graph["nodes"]:
        if not node["is_leaf_node"]:
            continue
        outputs = [name for names in node["output_vars"].values() for name in names]
        shape = variables[outputs[0]]["shape"] if outputs else None
        nodes.append(
            GraphNode(
                name=node["name"].lstrip("/"),
                op=node["type"],
                inputs=[name.lstrip("/") for name in node["input_nodes"]],
                shape=list(shape) if shape else None,
                attrs=", ".join(f"{k}={v}" for k, v in node["attrs"].items() if k not in _HIDDEN),
            )
        )
    return nodes, {"visualdl": json.dumps(graph).encode("utf-8")}


def _saved_program(model: paddle.nn.Layer, example: list[Any]) -> bytes:
    """The ``.pdmodel`` bytes of ``model`` saved with each operation in its layers' name scopes."""
    layers = [("model", model), *model.named_sublayers()]
    names = [layer._full_name for _, layer in layers]
    scopes: list[Any] = []

    def enter(layer: paddle.nn.Layer, inputs: Any) -> None:
        scopes.append(paddle.static.name_scope(layer.full_name()))
        scopes[-1].__enter__()

    def leave(layer: paddle.nn.Layer, inputs: Any, outputs: Any) -> None:
        scopes.pop().__exit__(None, None, None)

    handles = []
    try:
        for path, layer in layers:
            layer._full_name = f"{type(layer).__name__}[{path.rsplit('.', 1)[-1]}]"
            handles += [layer.register_forward_pre_hook(enter), layer.register_forward_post_hook(leave)]
        with tempfile.TemporaryDirectory() as tmp, _old_ir():
            paddle.jit.save(model, os.path.join(tmp, "graph"), input_spec=example)
            with open(os.path.join(tmp, "graph.pdmodel"), "rb") as f:
                return f.read()
    finally:
        while scopes:  # a forward that raised left its scopes open
            scopes.pop().__exit__(None, None, None)
        for handle in handles:
            handle.remove()
        for (_, layer), name in zip(layers, names):
            layer._full_name = name


def _old_ir() -> Any:
    """Paddle 3's ``OldIrGuard``; before paddle 3 the old IR is the only one (no guard needed)."""
    guard = getattr(getattr(paddle, "pir_utils", None), "OldIrGuard", None)
    return guard() if guard is not None else contextlib.nullcontext()
