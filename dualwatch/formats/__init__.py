"""Log formats: how records become bytes, and how a file's whole records are found again.

Encoding lives here, apart from files and threads (as torch's ``summary.py`` is apart
from its ``writer.py``): each format turns a batch of records into one ``bytes`` that a
sink appends with a single write, and ``scan`` finds where the last whole record ends
so a crashed run can be repaired and a resumed one compacted.
"""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from itertools import count
from typing import NamedTuple, Sequence

from dualwatch.records import Record

_sequence = count()


class Frame(NamedTuple):
    """One whole record in a file: its byte range and its step (None for step-less records)."""

    start: int
    end: int
    step: int | None


class Format(ABC):
    """One on-disk format. ``name`` is what users pass in ``formats=``."""

    name: str
    #: how users know the format in messages
    label: str
    #: the marker a viewer looks for in file names (VisualDL: ``vdlrecords``, TensorBoard: ``tfevents``)
    mark: str
    #: ``str.format`` pattern of new files' names (fields: sec, host, pid, seq)
    file_pattern: str

    def new_file_name(self, wall_ms: int) -> str:
        """A name no other writer can take: seconds, host, pid and a per-process sequence number."""
        host = socket.gethostname().replace(os.sep, "_") or "host"
        return self.file_pattern.format(sec=wall_ms // 1000, host=host, pid=os.getpid(), seq=next(_sequence))

    def is_log(self, name: str) -> bool:
        return self.mark in name

    #: True when the viewer reads every file of a run and drops stale steps when told to
    #: (TensorBoard): a resumed run then starts a new file and leaves the old ones alone, which
    #: a viewer reading them right now needs. False (VisualDL shows only the newest file; JSON
    #: lines has no marker): a resumed run keeps one file, cut back to before the resume step.
    resumes_in_new_file = False

    def header(self, wall_ms: int, step: int) -> bytes:
        """What a new file, whose first record is at ``step``, starts with."""
        return b""

    @abstractmethod
    def encode(self, records: Sequence[Record]) -> bytes:
        """Every record of the batch, framed, in order."""

    @abstractmethod
    def scan(self, data: bytes) -> list[Frame]:
        """The whole, valid records at the start of ``data``; scanning stops at the first bad one."""


def formats_by_name() -> dict[str, type[Format]]:
    from dualwatch.formats.jsonl import JsonlFormat
    from dualwatch.formats.tensorboard import TensorBoardFormat
    from dualwatch.formats.visualdl import VisualDLFormat

    return {f.name: f for f in (VisualDLFormat, TensorBoardFormat, JsonlFormat)}
