"""``RunReader``: follows one run directory, reading only what was appended since the last poll.

A run is read from one format, the first of TensorBoard (checksummed), VisualDL, JSON
lines and MMEngine's ``vis_data/scalars.json`` that has a file there; a dualwatch run
holds the same data in the first three, an MMEngine run with ``TensorboardVisBackend``
the same in TensorBoard's and its own.
Every file of that format is read, in name order (VisualDL's viewer shows only the
newest; resumed and multi-writer runs need all of them). Per file the reader keeps its
inode and the offset up to which records are done with; a poll stats each file and
reads only the bytes after that offset. A record not yet complete is read again, whole,
at a later poll. A file that shrank, was replaced (new inode) or disappeared means the
history changed under the reader: everything is read again from the start.

Memory is bounded whatever a file holds: it is read a block (4 MiB) at a time, a record bigger
than a block is read whole only up to 16 MiB, and past that (a huge image, or zeros and garbage
that never end a record) the format's decoder passes over it unread; holes of a sparse file are
not read at all. A file that cannot be read (permission denied, an I/O error) is listed in
``unreadable`` rather than silently missing.

Following dozens of runs (``dualwatch monitor`` over a sweep) needs only each run's latest
values: ``tail`` starts each file that many bytes before its end (at the first whole record
there), and ``keep`` holds at most that many recent points per tag, so the first report of 200
long runs takes seconds and memory stays flat however long they are followed.
"""

from __future__ import annotations

import errno
import os

from dualwatch._formats.base import Decoder, LogFormat, all_zeros
from dualwatch.readers._discover import _formats, log_files
from dualwatch.readers._series import Series, Table

#: bytes read at once; a first read of a big file goes in blocks of this size
BLOCK = 4 << 20
#: the most bytes held at once: a record bigger than a block is read whole up to this size; past
#: it (a huge image, or zeros and garbage that never end a record) the decoder passes over it
#: unread, so memory stays bounded whatever the file holds
MOST = 16 << 20


class _File:
    __slots__ = ("decoder", "inode", "offset")

    def __init__(self, inode: int, decoder: Decoder) -> None:
        self.inode = inode
        self.offset = 0
        self.decoder = decoder


class RunReader:
    """The scalar series of the run in ``run_dir``, brought up to date by :meth:`poll`.

    Nothing is opened until the first poll. Damaged records never raise: they are
    skipped and counted in ``corrupt``; files that cannot be read are in ``unreadable``.
    """

    def __init__(self, run_dir: str, *, tail: int | None = None, keep: int | None = None) -> None:
        self.run_dir = run_dir
        #: bytes before its end that a file is first read from (None: from its start)
        self.tail = tail
        #: the most points held per tag, the latest (None: all)
        self.keep = keep
        #: whether the last poll read anything (points, damage) or started over: a monitor of many
        #: runs rebuilds only those reports
        self.changed = False
        #: the format this run is read from: "tensorboard", "visualdl", "jsonl", "mmengine",
        #: or None (no log yet)
        self.format: str | None = None
        self._format: type[LogFormat] | None = None
        self._table = Table()
        self._files: dict[str, _File] = {}
        #: ``{path: reason}`` of the log files the last poll could not read (permission denied,
        #: an I/O error): a monitor says so rather than report a run with records missing
        self.unreadable: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RunReader({self.run_dir!r}, format={self.format!r}, {len(self.series)} tags)"

    @property
    def series(self) -> dict[str, Series]:
        """``{tag: Series}`` of every scalar tag read so far."""
        return self._table.series

    @property
    def corrupt(self) -> int:
        """Damaged records skipped so far, over all files."""
        return self._table.corrupt

    @property
    def records(self) -> int:
        """Scalar points read so far (a step written again counts again)."""
        return self._table.points

    def poll(self) -> int:
        """Reads what was appended since the last poll; returns the number of new scalar points."""
        old = (self._table, self._table.points, self._table.corrupt)
        found = log_files(self.run_dir)
        fmt = next((f for f in _formats() if f.name in found), None)
        files = found[fmt.name] if fmt is not None else {}
        if fmt is not self._format or self._changed(files):
            self._restart(fmt)
        before = self._table.points
        self.unreadable = {}
        for name in sorted(files):
            self._read(name, files[name])
        if self.keep is not None:
            self._table.trim(self.keep)
        self.changed = old != (self._table, self._table.points, self._table.corrupt)
        return self._table.points - before

    def _changed(self, files: dict[str, os.stat_result]) -> bool:
        """Whether a file seen before shrank, was replaced or is gone."""
        for name, known in self._files.items():
            stat = files.get(name)
            if stat is None or stat.st_ino != known.inode or stat.st_size < known.offset:
                return True
        return False

    def _restart(self, fmt: type[LogFormat] | None) -> None:
        self._format = fmt
        self.format = fmt.name if fmt is not None else None
        self._table = Table()
        self._files = {}

    def _read(self, name: str, stat: os.stat_result) -> None:
        file = self._files.get(name)
        if file is None:
            if self._format is None:
                return
            file = self._files[name] = _File(stat.st_ino, self._format.Decoder(self._table))
        if stat.st_size <= file.offset:
            return
        path = os.path.join(self.run_dir, name)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:  # gone since the listing: the next poll starts over
            return
        except OSError as err:
            self.unreadable[path] = err.strerror or str(err)
            return
        try:
            if os.fstat(fd).st_ino != file.inode:
                return  # replaced since the listing: the next poll starts over
            if file.offset == 0 and self.tail is not None and stat.st_size > self.tail:
                file.offset = _record_start(
                    fd, self._format, file.decoder, stat.st_size - self.tail, stat.st_size
                )
            end, decode = stat.st_size, file.decoder.decode
            if hasattr(file.decoder, "mtime"):  # MMEngine's lines carry no wall time: dated by it
                file.decoder.mtime = stat.st_mtime
            while file.offset < end:
                want = end - file.offset
                data = os.pread(fd, min(want, BLOCK), file.offset)
                done = decode(data)
                if done == 0 and want > len(data):  # waits on more than a block holds
                    zeros = all_zeros(data)
                    if not zeros:  # one record bigger than a block: read it whole
                        data = os.pread(fd, min(want, MOST), file.offset)
                        done = decode(data)
                    if done == 0 and want > len(data):  # zeros, or more than the reader holds
                        done = file.decoder.skip(data, want)
                        if zeros and done:  # a hole of a sparse file is zeros: not read at all
                            done = max(done, _data_from(fd, file.offset + done, end) - file.offset)
                file.offset += done
                if done == 0 or len(data) >= want:
                    break
        except OSError as err:  # an I/O error mid-file: said, like a file that cannot be opened
            self.unreadable[path] = err.strerror or str(err)
        finally:
            os.close(fd)


def _record_start(fd: int, fmt: type[LogFormat], decoder: Decoder, start: int, end: int) -> int:
    """The offset of the first whole record at or after ``start`` (``start``: none found).

    A line-based format starts after the first newline; a binary one where its decoder would
    resume after damage (TensorBoard: the first header whose checksum holds), without counting
    the cut as damage.
    """
    data = os.pread(fd, end - start, start)
    if fmt.name in ("jsonl", "mmengine"):
        newline = data.find(b"\n")
        return start + newline + 1 if newline >= 0 else start
    decoder._lost = True  # type: ignore[attr-defined]  # a stretch already counted: not counted again
    return start + decoder._damaged(data, -1)  # type: ignore[attr-defined]


def _data_from(fd: int, offset: int, end: int) -> int:
    """The first offset from ``offset`` that is not in a hole of the file (``end`` if none is)."""
    try:
        return min(os.lseek(fd, offset, os.SEEK_DATA), end)
    except OSError as err:  # ENXIO: only a hole from there on; else no SEEK_DATA here
        return end if err.errno == errno.ENXIO else offset
