"""Log formats, one module each: how a file is named, framed, encoded and decoded.

Encoding lives here, apart from files and threads (as torch's ``summary.py`` is apart from
its ``writer.py``): each format turns a batch of records into one ``bytes`` that a sink
appends with a single write. The same module frames and decodes what is on disk: ``scan``
finds the whole records of a file (to repair a crashed run and compact a resumed one), a
``Decoder`` feeds the incremental readers (with a fast path that parses many scalar records
in one call), and ``read_records`` gives a whole file back as records (for ``convert``).

Nothing here imports a viewer's package at import time: a format's write side loads its
protobuf messages when it is made, its read side when a decoder is made, and the monitor
never loads VisualDL's package at all.
"""

from __future__ import annotations

from functools import cache

from dualwatch._formats.base import Format, LogFormat


def formats_by_name() -> dict[str, type[Format]]:
    """The formats dualwatch writes, by ``formats=`` name."""
    from dualwatch._formats.jsonl import JsonlFormat
    from dualwatch._formats.tensorboard import TensorBoardFormat
    from dualwatch._formats.visualdl import VisualDLFormat

    return {f.name: f for f in (VisualDLFormat, TensorBoardFormat, JsonlFormat)}


@cache
def read_order() -> tuple[type[LogFormat], ...]:
    """Every format a run can be read from, in the order one is chosen: TensorBoard first (its
    records carry checksums), VisualDL, JSON lines, then MMEngine's ``vis_data/scalars.json``."""
    from dualwatch._formats.jsonl import JsonlFormat
    from dualwatch._formats.mmengine import MMEngineFormat
    from dualwatch._formats.tensorboard import TensorBoardFormat
    from dualwatch._formats.visualdl import VisualDLFormat

    return (TensorBoardFormat, VisualDLFormat, JsonlFormat, MMEngineFormat)
