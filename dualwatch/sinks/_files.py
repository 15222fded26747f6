"""A sink that appends one format's records to one file of the run directory.

Each batch is encoded first and appended with one ``write`` of whole records, so a
reader polling the file (VisualDL's server has no tolerance for half records) sees
either the whole batch or none of it. A write that fails half-way (disk full, a file-size
limit) keeps every whole record that fit and cuts back only the partial one before the error is
raised. Files a format keeps beside its log (TensorBoard's projector reads embeddings from them)
are replaced whole, by rename, and only inside the run directory. A symlink planted where a log
file is looked for is never followed: the file is refused (the sink is switched off with a warning).

Re-opening a run with ``resume`` repairs a tail left by a crash. TensorBoard, which reads
every file of a run and honours a purge marker, continues in a new file that starts with
one, leaving the old file as a running viewer is reading it. VisualDL (it shows only the
newest file) and JSON lines keep one file, cut back to before the resume step. Either
way no step is shown twice.
"""

from __future__ import annotations

import os
from typing import Sequence

from dualwatch._files import atomic_write_bytes
from dualwatch._formats.base import Format, Frame
from dualwatch._warn import warn
from dualwatch.records import Graph, Record

#: a resume step after every record: nothing written before is dropped
_KEEP_ALL = 1 << 62
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)


class FileSink:
    """Writes ``format`` into ``run_dir``; the file is opened at the first batch.

    ``resume``: False starts a new file; True continues the newest file of this format
    from the first step written; an int continues it from that step. ``suffix`` ends a new
    file's name; ``name`` is the file's whole name instead (appended to when it exists, as
    VisualDL's ``file_name=`` is).
    """

    def __init__(
        self, format: Format, run_dir: str, resume: bool | int = False, suffix: str = "", name: str = ""
    ) -> None:
        self.format = format
        self.run_dir = run_dir
        self.resume = resume
        self.suffix = suffix
        self.name = name
        self.path: str | None = None
        self._fd: int | None = None
        self._size = 0
        #: model graphs logged before anything else in a run resumed with ``resume=True``
        self._held: list[Record] = []

    def __repr__(self) -> str:
        return f"{self.format.label} file {self.path or self.run_dir}"

    def write(self, records: Sequence[Record]) -> None:
        if self._fd is None and self.resume is True and all(isinstance(r, Graph) for r in records):
            self._held += records  # a graph has no step to resume from: wait for the first record that does
            return
        records, self._held = [*self._held, *records], []
        try:
            data = self.format.encode(records)
        except Exception:  # one bad record must not cost the batch: find it, skip it, say so
            data = b"".join(self._encode_each(records))
        if self._fd is None:
            data = self._open(records) + data
        self._append(data)
        self._write_side_files(records)

    def _write_side_files(self, records: Sequence[Record]) -> None:
        """The files the format keeps beside its log (TensorBoard's projector files), each replaced
        whole. One that cannot be written costs only itself: the log goes on."""
        try:
            for name, data in self.format.side_files(records, self._read_beside):
                path = self._beside(name)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                atomic_write_bytes(self._beside(name), data)  # again: makedirs may meet a planted link
        except Exception as err:
            warn(f"{self!r}: the files beside it were not written ({type(err).__name__}: {err})")

    def _read_beside(self, name: str) -> bytes | None:
        path = self._beside(name)
        return _read(path) if os.path.exists(path) else None

    def _beside(self, name: str) -> str:
        """``name`` in the run directory; refused when it resolves outside it (``..``, a planted symlink)."""
        path = os.path.join(self.run_dir, *name.split("/"))
        root = os.path.realpath(self.run_dir)
        if os.path.commonpath([root, os.path.realpath(path)]) != root:
            raise ValueError(f"{path!r} resolves outside the run directory {self.run_dir!r}: not written")
        return path

    def _encode_each(self, records: Sequence[Record]):
        for record in records:
            try:
                yield self.format.encode([record])
            except Exception as err:
                warn(f"{self!r}: skipped {type(record).__name__} {getattr(record, 'tag', '')!r} ({err})")

    def _open(self, records: Sequence[Record]) -> bytes:
        """Opens (or re-opens and repairs) the file; returns what must precede the first batch."""
        wall_ms = records[0].wall_ms
        steps = [r.step for r in records if not isinstance(r, Graph)]
        step = min(steps, default=0) if isinstance(self.resume, bool) else self.resume
        if self.name:
            existing = os.path.join(self.run_dir, self.name)
            if not os.path.exists(existing):
                existing = None
        else:
            existing = self._newest() if self.resume is not False else None
        if existing is not None and self.format.resumes_in_new_file and not self.name:
            self._cut_crash_tail(existing)
            existing = None
        if existing is None:
            name = self.name or self.format.new_file_name(wall_ms) + self.suffix
            self.path = os.path.join(self.run_dir, name)
            prefix = self.format.header(wall_ms, step)
        else:
            self.path = existing
            if self.resume is False:  # a named file that exists is appended to
                self._cut_crash_tail(existing)
            else:
                self._keep_before(step)
            prefix = b""
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
        self._size = os.fstat(self._fd).st_size
        return prefix

    def _newest(self) -> str | None:
        """The file a viewer shows for this run (VisualDL: the name that sorts last)."""
        names = sorted(n for n in os.listdir(self.run_dir) if self.format.is_log(n))
        return os.path.join(self.run_dir, names[-1]) if names else None

    def _keep_before(self, step: int) -> None:
        """Cuts a partial tail and every record at ``step`` or later out of the file."""
        assert self.path is not None
        data = _read(self.path)
        frames = self.format.scan(data)
        keep = [frame for frame in frames if frame.step is None or frame.step < step]
        if keep == frames[: len(keep)]:  # only a tail goes: cut in place
            self._cut(self.path, keep[-1:])
            return
        atomic_write_bytes(self.path, b"".join(data[frame.start : frame.end] for frame in keep))

    def _cut_crash_tail(self, path: str) -> None:
        """Cuts what follows the last whole record of ``path`` (half a record left by a crash)."""
        self._cut(path, self.format.scan(_read(path))[-1:])

    @staticmethod
    def _cut(path: str, last: list[Frame]) -> None:
        """Truncates ``path`` after the frame ``last[0]`` (to nothing when ``last`` is empty)."""
        end = last[0].end if last else 0
        fd = os.open(path, os.O_WRONLY | _NOFOLLOW)
        try:
            if os.fstat(fd).st_size != end:
                os.ftruncate(fd, end)
        finally:
            os.close(fd)

    def _append(self, data: bytes) -> None:
        assert self._fd is not None
        if os.fstat(self._fd).st_nlink == 0:
            raise FileNotFoundError(f"{self.path} was deleted (was the run directory removed?)")
        view, done = memoryview(data), 0
        try:
            while done < len(data):
                done += os.write(self._fd, view[done:])
        except OSError:
            if done:  # keep the whole records that fit; only the one cut short goes
                whole = self.format.scan(data[:done])
                self._size += whole[-1].end if whole else 0
                os.ftruncate(self._fd, self._size)
            raise
        self._size += len(data)

    def close(self) -> None:
        if self._held:  # only graphs were logged in this resumed run: they are added, nothing is dropped
            self.resume = _KEEP_ALL
            self.write([])
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _read(path: str) -> bytes:
    """The file's bytes; a symlink is refused (``OSError``), never followed."""
    with open(os.open(path, os.O_RDONLY | _NOFOLLOW), "rb") as f:
        return f.read()
