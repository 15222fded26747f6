"""The C encoder of plain scalar records (``dualwatch/_scalarcodec.c``) when it was built, else None.

Formats encode runs of :class:`~dualwatch.records.Scalars` with it and fall back to protobuf and
json (the same bytes) when it is missing or declines a run (a value or step it does not take).
Looked up at call time as ``_codec.codec``, so tests can compare both paths.
"""

from __future__ import annotations

from typing import Callable, Sequence

from dualwatch.records import Record, Scalars

try:
    from dualwatch import _scalarcodec as codec
except ImportError:  # built without a C compiler
    codec = None

#: what the codec raises for a run it leaves to the Python encoders
DECLINED = (TypeError, ValueError, OverflowError)

#: the codec's function for a format: ``(records, start, Scalars) -> (bytes, end of the run)``
Fast = Callable[[list, int, type], "tuple[bytes, int]"]


def encode(records: Sequence[Record], fast: Fast | None, slow: Callable[[Sequence[Record]], bytes]) -> bytes:
    """``records`` in order: each run of plain scalar records by ``fast`` when there is one and it
    takes the run, everything else by ``slow``."""
    if fast is None:
        return slow(records)
    records = list(records)
    out: list[bytes] = []
    at, end = 0, len(records)
    while at < end:
        try:
            data, stop = fast(records, at, Scalars)
            out.append(data)
        except DECLINED:
            stop = at
        if stop == at:  # a run of other records, or scalars the codec declined
            plain = type(records[at]) is Scalars
            stop = at + 1
            while stop < end and (type(records[stop]) is Scalars) == plain:
                stop += 1
            out.append(slow(records[at:stop]))
        at = stop
    return b"".join(out)
