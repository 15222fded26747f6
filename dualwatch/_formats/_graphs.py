"""A model graph in the form a viewer reads, built from its nodes when no tool of the viewer's made one.

Both viewers fold a graph by the ``/`` in node names (one box per layer), so a node keeps its
name. TensorBoard gets a ``GraphDef``: one ``NodeDef`` per node, its inputs, its output shape
(``_output_shapes``, shown on edges) and its attributes as text (``attr``), as torch writes
them. VisualDL gets the JSON of its ``analyse_model``: the operations, one variable per
operation's output, the layers above them and the edges between them at every level, built
with VisualDL's own helpers from ``visualdl.component.graph.graph_component``.
"""

from __future__ import annotations

import collections
import json
import os
import re
from typing import Any

from dualwatch.records import Graph

#: how VisualDL shows a name: without the ``[attribute]`` part of each layer
_ATTRIBUTE = re.compile(r"\[(\w|\.)*\]")


def graph_def(graph: Graph) -> bytes:
    """The serialized ``GraphDef`` of ``graph``, as TensorBoard's graph dashboard reads it."""
    from tensorboard.compat.proto import attr_value_pb2, graph_pb2, tensor_shape_pb2, versions_pb2

    out = graph_pb2.GraphDef(versions=versions_pb2.VersionDef(producer=22))  # torch's producer
    for node in graph.nodes:
        node_def = out.node.add(name=node.name, op=node.op, input=node.inputs)
        node_def.attr["attr"].s = node.attrs.encode("utf-8")
        if node.shape is not None:
            dims = [tensor_shape_pb2.TensorShapeProto.Dim(size=size) for size in node.shape]
            shapes = attr_value_pb2.AttrValue.ListValue(shape=[tensor_shape_pb2.TensorShapeProto(dim=dims)])
            node_def.attr["_output_shapes"].list.CopyFrom(shapes)
    return out.SerializeToString()


def visualdl_json(graph: Graph) -> bytes:
    """VisualDL's graph JSON of ``graph``, as its server's graph tab reads it."""
    from visualdl.component.graph import graph_component as vdl

    names = _unique_leaves([node.name for node in graph.nodes])
    ops: dict[str, dict[str, Any]] = {}
    variables: dict[str, dict[str, Any]] = {}
    for node, name in zip(graph.nodes, names.values()):
        ops[name] = {
            "name": name, "show_name": _ATTRIBUTE.sub("", name), "type": node.op,
            "attrs": {"attr": node.attrs} if node.attrs else {},
            "attr_types": {"attr": "STRING"} if node.attrs else {},
            "input_vars": {"X": [i for i in node.inputs if i in names]}, "output_vars": {"Out": [node.name]},
            "is_leaf_node": True, "children_node": [], "input_nodes": [], "output_nodes": [],
            "edge_input_nodes": [], "edge_output_nodes": [],
        }  # fmt: skip
        variables[node.name] = {
            "name": node.name, "shape": node.shape or [], "type": "DENSE_TENSOR", "dtype": "",
            "value": [], "persistable": False, "attrs": {}, "from_node": name, "to_nodes": [],
        }  # fmt: skip
    for name in names.values():
        for source in ops[name]["input_vars"]["X"]:
            variables[source]["to_nodes"].append(name)
            if names[source] != name:
                ops[names[source]]["output_nodes"].append(name)
                ops[name]["input_nodes"].append(names[source])
    inputs = {name: list(op["input_vars"]["X"]) for name, op in ops.items()}
    outputs = {name: list(op["output_vars"]["Out"]) for name, op in ops.items()}
    descendants: dict[str, set[str]] = collections.defaultdict(set)
    for name in list(ops):
        vdl.create_non_leaf_nodes(os.path.dirname(name), name, ops, descendants)
    order: list[str] = []
    vdl.post_order_traverse("/", ops, order)
    for name in order:  # a layer's inputs and outputs are those of its operations that cross its border
        op = ops[name]
        op["children_node"] = list(op["children_node"])
        if not op["children_node"]:
            continue
        inside = descendants[name]
        for child in op["children_node"]:
            op["input_nodes"].update(n for n in ops[child]["input_nodes"] if n not in inside)
            op["output_nodes"].update(n for n in ops[child]["output_nodes"] if n not in inside)
            op["input_vars"].update(v for v in inputs[child] if variables[v]["from_node"] not in inside)
            op["output_vars"].update(
                v for v in outputs[child] if any(n not in inside for n in variables[v]["to_nodes"])
            )
        inputs[name], outputs[name] = list(op["input_vars"]), list(op["output_vars"])
        op["input_nodes"], op["output_nodes"] = list(op["input_nodes"]), list(op["output_nodes"])
        op["input_vars"], op["output_vars"] = {"X": inputs[name]}, {"Y": outputs[name]}
    edges: dict[tuple[str, str], dict[str, Any]] = {}
    for var in variables:
        vdl.construct_edges(var, ops, variables, edges)
    for (source, target), edge in edges.items():
        ops[source]["edge_output_nodes"].append(target)
        ops[target]["edge_input_nodes"].append(source)
        edge["vars"] = list(edge["vars"])
        many = len(edge["vars"]) > 1
        edge["label"] = f"{len(edge['vars'])} tensors" if many else str(variables[edge["vars"][0]]["shape"])
    data = {"version": vdl._graph_version, "nodes": list(ops.values()), "vars": list(variables.values())}
    return json.dumps({**data, "edges": list(edges.values())}).encode("utf-8")


def _unique_leaves(names: list[str]) -> dict[str, str]:
    """``{node name: its path in VisualDL}``: ``/name``, or ``/name/op`` for a node whose name is
    also a layer above other nodes (VisualDL's tree needs operations to be leaves)."""
    layers = {name[:at] for name in names for at in range(len(name)) if name[at] == "/"}
    return {name: f"/{name}/op" if name in layers else f"/{name}" for name in names}
