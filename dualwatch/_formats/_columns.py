"""Protobuf message classes the readers parse with, and how they are loaded cheaply.

Parsing one record at a time costs about 2 us a scalar in Python: the parse itself is
fast (upb, in C), the time goes into a wrapper object per message and an attribute call
per field. Protobuf merges a singular message field that occurs more than once and
appends repeated ones, so the payloads of many records, concatenated, parsed as a
"columns" message whose per-record message is declared *singular* and whose fields are
declared *repeated*, come back as one list per field: all tags, all steps, all values
of a chunk from a single C call. The column schemas below mirror the real ones field
number for field number; every field a scalar record does not use is ``repeated bytes``
so its presence can be seen and the chunk handed to the exact parser instead.

The exact messages are VisualDL's and TensorBoard's own. VisualDL's ``record_pb2`` is
loaded from its file: ``import visualdl.proto.record_pb2`` would first run
``visualdl/__init__`` (its writer, reader, numpy and more, about 0.4 s).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from functools import cache
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_SCALAR_TYPES = {"int64": _F.TYPE_INT64, "string": _F.TYPE_STRING, "float": _F.TYPE_FLOAT}
_SCALAR_TYPES["double"] = _F.TYPE_DOUBLE

#: VisualDL ``Record.Value``: id, tag, timestamp, value; 5-14 are the other ``one_value`` members
_VDL_VALUE = {1: ("id", "int64"), 2: ("tag", "string"), 3: ("timestamp", "int64"), 4: ("value", "float")}
#: TensorBoard ``Event``: wall_time, step; 5 is the summary, the rest are other payloads
_TB_EVENT = {1: ("wall_time", "double"), 2: ("step", "int64")}
#: TensorBoard ``Summary.Value``: tag, simple_value; 3-9 are other kinds, node_name and metadata
_TB_VALUE = {1: ("tag", "string"), 2: ("simple_value", "float")}


def _message(
    file: descriptor_pb2.FileDescriptorProto,
    name: str,
    columns: dict[int, tuple[str, str]],
    others: range,
    merged: tuple[int, str, str] | None = None,
) -> None:
    message = file.message_type.add(name=name)
    for number, (field, kind) in columns.items():
        message.field.add(name=field, number=number, type=_SCALAR_TYPES[kind], label=_F.LABEL_REPEATED)
    for number in others:
        if number not in columns and (merged is None or number != merged[0]):
            message.field.add(
                name=f"other{number}", number=number, type=_F.TYPE_BYTES, label=_F.LABEL_REPEATED
            )
    if merged is not None:
        number, field, type_name = merged
        message.field.add(
            name=field, number=number, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL, type_name=type_name
        )


@cache
def columns() -> tuple[Any, Any]:
    """``(VisualDLColumns, TensorBoardColumns)`` message classes, in a private pool."""
    file = descriptor_pb2.FileDescriptorProto(
        name="dualwatch_reader_columns.proto", package="dualwatch_columns", syntax="proto3"
    )
    _message(file, "VdlValues", _VDL_VALUE, range(5, 15))
    _message(file, "VdlRecords", {}, range(0), merged=(1, "values", ".dualwatch_columns.VdlValues"))
    _message(file, "TbValues", _TB_VALUE, range(3, 10))
    _message(file, "TbSummaries", {}, range(0), merged=(1, "value", ".dualwatch_columns.TbValues"))
    _message(
        file, "TbEvents", _TB_EVENT, range(3, 11), merged=(5, "summary", ".dualwatch_columns.TbSummaries")
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return tuple(
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"dualwatch_columns.{name}"))
        for name in ("VdlRecords", "TbEvents")
    )


@cache
def visualdl_record() -> Any:
    """VisualDL's ``Record`` class, without importing the ``visualdl`` package."""
    name = "visualdl.proto.record_pb2"
    module = sys.modules.get(name)
    if module is None:
        package = importlib.util.find_spec("visualdl")
        if package is None or not package.submodule_search_locations:
            raise ImportError("reading VisualDL files needs visualdl: pip install 'dualwatch[visualdl]'")
        path = os.path.join(package.submodule_search_locations[0], "proto", "record_pb2.py")
        spec = importlib.util.spec_from_file_location("_dualwatch_visualdl_record_pb2", path)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load VisualDL's record_pb2 from {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.Record


@cache
def tensorboard_event() -> Any:
    """TensorBoard's ``Event`` class (``tensorboard.compat.proto``, no server, no TensorFlow)."""
    from tensorboard.compat.proto.event_pb2 import Event

    return Event
