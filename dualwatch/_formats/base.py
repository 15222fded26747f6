"""What a log format is: the contract each module of this package fulfils (see the package docstring)."""

from __future__ import annotations

import os
import socket
from abc import ABC, abstractmethod
from itertools import count
from typing import Callable, ClassVar, Iterator, NamedTuple, Protocol, Sequence

from dualwatch.records import Record

_sequence = count()


class Frame(NamedTuple):
    """One whole record in a file: its byte range and its step (None for step-less records)."""

    start: int
    end: int
    step: int | None


class Points(Protocol):
    """Where a decoder puts what it reads: the readers' table of scalar series."""

    corrupt: int

    def extend(self, tags: list[str], steps: list[int], walls: list[float], values: list[float]) -> None: ...

    def purge(self, step: int) -> None: ...


class Decoder(Protocol):
    """Turns one file's bytes, as they grow, into scalar points."""

    def decode(self, data: bytes) -> int:
        """Reads the whole records at the start of ``data``; returns how many bytes are done with."""

    def skip(self, data: bytes, available: int) -> int:
        """How many bytes to pass over, unread, when ``decode(data)`` did none of ``data`` and ``data``
        is all a reader holds of the ``available`` bytes left in the file (0: wait for more)."""


_ZEROS = bytes(1 << 16)


def all_zeros(data: bytes, at: int = 0) -> bool:
    """Whether every byte of ``data`` from ``at`` on is zero: the tail a crash leaves, which readers
    wait on. Compared 64 KiB at a time (``memcmp``), ten times faster than counting the zeros."""
    size, step = len(data), len(_ZEROS)
    for start in range(at, size, step):
        n = min(step, size - start)
        if not data.startswith(_ZEROS if n == step else _ZEROS[:n], start):
            return False
    return True


class LogFormat:
    """What every log format says about itself, readable without loading any viewer's package."""

    #: what users pass in ``formats=`` and what a reader reports
    name: ClassVar[str]
    #: how users know the format in messages
    label: ClassVar[str]
    #: the marker in file names that makes a file a log of this format (``vdlrecords``, ``tfevents``)
    mark: ClassVar[str]
    #: the incremental reader of one file: ``Decoder(points)``
    Decoder: ClassVar[type]

    @classmethod
    def is_log(cls, name: str, directory: str | None = None) -> bool:
        """Whether a file named ``name`` (in ``directory``) is a log of this format (never a hidden one)."""
        return not name.startswith(".") and cls.mark in name


class Format(LogFormat, ABC):
    """A format dualwatch writes. Making one loads the viewer's protobuf messages it needs."""

    #: ``str.format`` pattern of new files' names (fields: sec, host, pid, seq)
    file_pattern: ClassVar[str]
    #: True when the viewer reads every file of a run and drops stale steps when told to
    #: (TensorBoard): a resumed run then starts a new file and leaves the old ones alone, which
    #: a viewer reading them right now needs. False (VisualDL shows only the newest file; JSON
    #: lines has no marker): a resumed run keeps one file, cut back to before the resume step.
    resumes_in_new_file: ClassVar[bool] = False

    def new_file_name(self, wall_ms: int) -> str:
        """A name no other writer can take (see :func:`unique_name`)."""
        return unique_name(self.file_pattern, wall_ms)

    def header(self, wall_ms: int, step: int) -> bytes:
        """What a new file, whose first record is at ``step``, starts with."""
        return b""

    @abstractmethod
    def encode(self, records: Sequence[Record]) -> bytes:
        """Every record of the batch, framed, in order."""

    def side_files(
        self, records: Sequence[Record], read: Callable[[str], bytes | None]
    ) -> list[tuple[str, bytes]]:
        """Files a batch adds or replaces beside the log, as ``(path in the run directory, bytes)`` in
        the order they are to be written; ``read(path)`` gives such a file's bytes now (None: absent).
        VisualDL keeps model graphs in files of their own, TensorBoard's projector reads embeddings
        from files; ``encode`` leaves those records out."""
        return []

    @classmethod
    @abstractmethod
    def scan(cls, data: bytes) -> list[Frame]:
        """The whole, valid records at the start of ``data``; scanning stops at the first bad one."""

    @classmethod
    def read_records(cls, data: bytes) -> Iterator[Record | int]:
        """The records of one whole file, in file order, up to the first damaged one. An int is a
        restart marker (TensorBoard's ``SessionLog.START``) at that step: records read before it,
        in this file or the run's earlier ones, at that step or later are to be dropped."""
        raise NotImplementedError(f"{cls.label} files are not read back as records")


def unique_name(pattern: str, wall_ms: int) -> str:
    """``pattern`` filled in so that no other writer can take the name: seconds, host, pid and a
    per-process sequence number."""
    host = socket.gethostname().replace(os.sep, "_") or "host"
    return pattern.format(sec=wall_ms // 1000, host=host, pid=os.getpid(), seq=next(_sequence))
