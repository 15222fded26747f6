"""``Writer``: one call, every viewer — VisualDL, TensorBoard, JSON lines and the console.

The training thread only validates, timestamps and appends to a bounded queue (about a
microsecond per scalar); a background thread groups what is queued into records, encodes
each format once per batch and appends it with one write per file. Records are on disk
within ``max_latency`` seconds; ``flush()``, ``close()``, interpreter exit and SIGTERM
write everything still queued. A full queue drops and counts instead of blocking
training; a failing file is switched off with one warning and the others go on.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import threading
import time
import weakref
from collections import deque
from typing import Any, Callable, Mapping, Sequence, Union

from dualwatch import _histogram, _images
from dualwatch._distributed import global_rank
from dualwatch._formats import formats_by_name
from dualwatch._warn import warn
from dualwatch.backends import framework_of
from dualwatch.records import Histogram, HParams, Image, Record, Scalars, Text, grouped, wall_ms
from dualwatch.sinks import FanOut, Sink
from dualwatch.sinks._files import FileSink

DEFAULT_FORMATS = ("visualdl", "tensorboard", "jsonl")
DROPPED_TAG = "dualwatch/dropped_records"
CLOSE_TIMEOUT = 10.0  # seconds close() waits for a sink stuck in a write
HParamValue = Union[bool, int, float, str]

_time = time.time
_live: weakref.WeakSet[Writer] = weakref.WeakSet()


class Writer:
    """Writes one run, ``<logdir>/<run>/``, in every format of ``formats`` at once.

    Args:
        logdir: the directory viewers are pointed at (``visualdl --logdir runs``).
        run: the run's directory name; by default ``logs_%m%d%H%M`` (the VisualDL training guide's), with a
            ``_2``, ``_3``... suffix when that minute is taken.
        resume: continue the existing ``run`` instead of starting one. ``True`` continues
            from the first step written; an int from that step. Records at or after it
            are dropped from the old files (TensorBoard also gets its purge marker), so
            the curves stay continuous and no step is shown twice.
        formats: any of ``"visualdl"``, ``"tensorboard"``, ``"jsonl"``. A format whose
            package is missing is skipped with one warning.
        console: a sink that prints the records logged with ``log(..., echo=True)`` at once,
            on the caller's thread.
        sinks: more sinks (``write(records)`` and ``close()``) fed by the writer thread beside
            the files, for example one that forwards to another tracker.
        max_latency: seconds within which a logged record is on disk.
        max_queue: records held before new ones are dropped (and counted).

    In a multi-process job only global rank 0 (:func:`dualwatch._distributed.global_rank`)
    creates the run and writes; on other ranks every call returns at once and
    ``run_dir`` is None.
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str] | None = "runs",
        run: str | None = None,
        *,
        resume: bool | int = False,
        formats: Sequence[str] = DEFAULT_FORMATS,
        console: Sink | None = None,
        sinks: Sequence[Sink] = (),
        max_latency: float = 2.0,
        max_queue: int = 1 << 18,
    ) -> None:
        known = formats_by_name()
        unknown = [name for name in formats if name not in known]
        if isinstance(formats, str) or unknown:
            raise ValueError(f"formats= takes a list of {sorted(known)}, got {formats!r}")
        if not isinstance(resume, (bool, int)):
            raise TypeError(f"resume= is True, False or the step to resume from, got {resume!r}")
        if not max_latency > 0 or not (isinstance(max_queue, int) and max_queue > 0):
            raise ValueError("max_latency= must be > 0 seconds and max_queue= a positive int")
        # Only global rank 0 writes: other ranks keep the same calls but create and print nothing.
        self.rank = global_rank()
        self._silent = self.rank != 0
        if self._silent:
            logdir, console, sinks = None, None, ()
        self.run_dir = _run_directory(logdir, run, resume) if logdir is not None else None
        files: list[Sink] = []
        if self.run_dir is not None:
            for name in formats:
                try:
                    files.append(FileSink(known[name](), self.run_dir, resume))
                except ImportError as err:
                    warn(
                        f"{name} files are not written: {err}. "
                        f"Install it with: pip install 'dualwatch[{name}]'",
                        UserWarning,
                    )
        self.max_latency = max_latency
        self.max_queue = max_queue
        self._files = FanOut([*files, *sinks])
        self._console = FanOut([console] if console is not None else [])
        self._queue: deque[Any] = deque()
        self._wake_at = max(1, max_queue // 4)
        self._tags: dict[str, str] = {}
        self._dropped = 0
        self._reported_drops = 0
        self._written = 0
        self._last_step = 0
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="dualwatch-writer", daemon=True)
        self._thread.start()
        _live.add(self)
        _install_exit_handlers()

    # -- the caller's side: validate, timestamp, enqueue ------------------------------------

    def add_scalar(self, tag: str, value: Any, step: int, walltime: float | None = None) -> None:
        """Queues one scalar. Accepts Python and numpy numbers and one-element tensors."""
        queue = self._queue
        if len(queue) >= self.max_queue:
            self._dropped += 1
            return
        queue.append(
            (
                self._tags.get(tag) or self._tag(tag),
                value if type(value) is float else _number(value),
                step if type(step) is int else _step(step),
                _time() if walltime is None else float(walltime),
            )
        )
        if len(queue) > self._wake_at:
            self._wake.set()

    def log(
        self, step: int, scalars: Mapping[str, Any], walltime: float | None = None, *, echo: bool = False
    ) -> None:
        """Queues ``{tag: value}`` as one record (one TensorBoard event, one JSON line).

        ``echo=True`` also prints it on the console sink, if there is one.
        """
        step = step if type(step) is int else _step(step)
        wall = _time() if walltime is None else float(walltime)
        tags = self._tags
        items = [
            (tags.get(t) or self._tag(t), v if type(v) is float else _number(v), step, wall)
            for t, v in scalars.items()
        ]
        queue = self._queue
        if len(queue) + len(items) > self.max_queue:
            self._dropped += len(items)
        else:
            queue.extend(items)
            if len(queue) > self._wake_at:
                self._wake.set()
        if echo and self._console.sinks:
            values = {tag: float(value) for tag, value, _, _ in items}
            self._console.write([Scalars(step, wall_ms(wall), values)])

    def add_scalars(
        self, main_tag: str, tag_scalar_dict: Mapping[str, Any], step: int, walltime: float | None = None
    ) -> None:
        """Flat ``main_tag/sub`` tags in this run (torch's version makes one run per sub-tag)."""
        self.log(step, {f"{main_tag}/{sub}": value for sub, value in tag_scalar_dict.items()}, walltime)

    def add_histogram(
        self, tag: str, values: Any, step: int, bins: int = 64, walltime: float | None = None
    ) -> None:
        """Counts ``values`` into ``bins`` equal buckets between their finite min and max.

        Framework tensors are counted on their own device; only the counts travel, and
        they are copied on the writer thread, so the caller never waits for the device.
        """
        if isinstance(bins, bool) or not isinstance(bins, int) or bins < 1:
            raise ValueError(f"bins= must be a positive int, got {bins!r}")
        tag, step, ms = self._tag(tag), _step(step), wall_ms(_time() if walltime is None else walltime)
        summary = _histogram.summarize(values, bins)
        self._put(lambda: Histogram(tag, step, ms, *summary()))

    def add_image(
        self, tag: str, image: Any, step: int, dataformats: str = "HWC", walltime: float | None = None
    ) -> None:
        """Encodes ``image`` to PNG once (on the writer thread) for both viewers.

        Floats are read as [0, 1] and integers as [0, 255]; ``dataformats`` is ``HWC``,
        ``CHW`` or ``HW``. The caller's array is copied, never changed.
        """
        tag, step, ms = self._tag(tag), _step(step), wall_ms(_time() if walltime is None else walltime)
        pixels = _images.to_uint8_hwc(image, dataformats)
        height, width, channels = pixels.shape
        self._put(lambda: Image(tag, step, ms, _images.encode_png(pixels), height, width, channels))

    def add_text(self, tag: str, text: str, step: int, walltime: float | None = None) -> None:
        if not isinstance(text, str):
            raise TypeError(f"add_text takes a str, got {type(text).__name__}")
        ms = wall_ms(_time() if walltime is None else walltime)
        self._put(Text(self._tag(tag), _step(step), ms, text))

    def add_hparams(
        self,
        hparams: Mapping[str, HParamValue | None],
        metrics: Mapping[str, Any] | Sequence[str] = (),
        step: int = 0,
    ) -> None:
        """Hyper-parameters of this run (no nested run), and the scalar tags of its metrics.

        Values are bool, int, float or str; ``None`` is skipped. Metrics given as
        ``{tag: value}`` are also logged as scalars at ``step``.
        """
        clean: dict[str, HParamValue] = {}
        for name, value in hparams.items():
            if value is None:
                continue
            if not isinstance(value, (bool, int, float, str)):
                raise TypeError(
                    f"hparam {name!r} is a {type(value).__name__}; pass a bool, int, float or str "
                    f"(for example str(value))"
                )
            clean[str(name)] = value
        tags = [self._tag(t) for t in (metrics if not isinstance(metrics, str) else [metrics])]
        self._put(HParams(_step(step), wall_ms(_time()), clean, tags))
        if isinstance(metrics, Mapping):
            self.log(step, metrics)

    def _put(self, item: Record | Callable[[], Record]) -> None:
        if self._silent:
            return
        if len(self._queue) >= self.max_queue:
            self._dropped += 1
        else:
            self._queue.append(item)

    def _tag(self, tag: str) -> str:
        """Checks a tag once; ``%`` (VisualDL's server keys ``/`` as ``%``) becomes ``_pct``."""
        clean = self._tags.get(tag)
        if clean is None:
            if not isinstance(tag, str) or not tag:
                raise TypeError(f"a tag is a non-empty str such as 'Loss/Train', got {tag!r}")
            clean = tag.replace("%", "_pct")
            if clean != tag:
                warn(f"tag {tag!r} is written as {clean!r}: VisualDL cannot store '%' in tags", UserWarning)
            self._tags[tag] = clean
        return clean

    # -- the writer's side -------------------------------------------------------------------

    def _run(self) -> None:
        period = self.max_latency / 2
        while not self._closed:
            self._wake.wait(period)
            self._wake.clear()
            with contextlib.suppress(Exception):  # a warning turned into an error must not stop writing
                self.flush()

    def flush(self) -> None:
        """Writes everything queued so far, on the calling thread."""
        with self._lock:
            try:
                self._drain()
            except Exception as err:  # a bug here must not kill the thread or reach training
                warn(f"writing failed ({type(err).__name__}: {err}); training goes on")

    def _drain(self) -> None:
        queue = self._queue
        items = [queue.popleft() for _ in range(len(queue))]
        records = self._records(items)
        if self._dropped != self._reported_drops:
            if not self._reported_drops:
                warn(
                    f"the log queue is full (max_queue={self.max_queue}); records are being dropped "
                    f"and counted in {DROPPED_TAG!r}. Log less often or raise max_queue."
                )
            self._reported_drops = self._dropped
            records.append(Scalars(self._last_step, wall_ms(_time()), {DROPPED_TAG: float(self._dropped)}))
        if records:
            self._files.write(records)
            self._written += len(items)

    def _records(self, items: list[Any]) -> list[Record]:
        """Scalars of one step and millisecond become one record; deferred work runs here."""
        records: list[Record] = []
        points: list[tuple[str, float, int, float]] = []  # the scalars since the last other record
        for item in items:
            if type(item) is tuple:
                if type(item[1]) is not float:  # a device tensor, read here instead of on the training thread
                    tag, value, step, wall = item
                    try:
                        item = (tag, float(value), step, wall)
                    except Exception as err:
                        warn(f"scalar {tag!r} at step {step} is not one number ({err}); it is skipped")
                        continue
                points.append(item)
                continue
            records += grouped(points)
            points = []
            if callable(item):
                try:
                    item = item()
                except Exception as err:
                    warn(
                        f"a queued record could not be prepared ({type(err).__name__}: {err}); it is skipped"
                    )
                    continue
            records.append(item)
        if points:
            records += grouped(points)
            self._last_step = points[-1][2]
        return records

    def stats(self) -> dict[str, Any]:
        """``queued``, ``written`` and ``dropped`` record counts and the sinks that failed."""
        return {
            "queued": len(self._queue),
            "written": self._written,
            "dropped": self._dropped,
            "failed": self._files.failed + self._console.failed,
        }

    def close(self) -> None:
        """Writes what is queued, closes the files and stops the thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        self._wake.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=CLOSE_TIMEOUT)
        if not self._lock.acquire(timeout=CLOSE_TIMEOUT):
            warn(f"a sink has been stuck for {CLOSE_TIMEOUT:g} s; closing without writing what is queued")
            return
        try:
            self.flush()
            self._files.close()
            self._console.close()
        finally:
            self._lock.release()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _number(value: Any) -> float | Any:
    """A float, or a detached copy of an accelerator tensor (read on the writer thread)."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"a scalar value is a number or a one-element tensor, got {value!r}")
    try:
        framework = framework_of(value)
        if framework is not None:  # never hold the graph, never wait for a device here
            return framework.scalar(value)
        return float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"a scalar value is a number or a one-element tensor, got {value!r}") from err


def _step(step: Any) -> int:
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(f"step must be an int, got {step!r}")
    return int(step)


def _run_directory(logdir: str | os.PathLike[str], run: str | None, resume: bool | int) -> str | None:
    """``<logdir>/<run>``; a new run gets ``logs_%m%d%H%M`` (the VisualDL guide's), unique per minute.

    Wrong use raises before training; a directory that cannot be made warns and returns None.
    """
    logdir = os.fspath(logdir)
    if resume is not False and run is None:
        raise ValueError("resume= needs run=<the run's directory name>, for example run='logs_11221030'")
    if run is not None and (not run or os.sep in run or run in (".", "..")):
        raise ValueError(f"run= is one directory name inside logdir, got {run!r}")
    if run is not None and resume is False and os.path.exists(os.path.join(logdir, run)):
        raise ValueError(
            f"run {run!r} already exists in {logdir!r}: pass resume=True to continue it, or another run name"
        )
    try:
        if run is not None:
            os.makedirs(os.path.join(logdir, run), exist_ok=True)
            return os.path.join(logdir, run)
        base = os.path.join(logdir, time.strftime("logs_%m%d%H%M"))
        path, n = base, 1
        os.makedirs(logdir, exist_ok=True)
        while True:
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                n += 1
                path = f"{base}_{n}"
    except OSError as err:
        warn(
            f"cannot create a run directory in {logdir!r} ({err}); "
            "nothing is written to files, training goes on"
        )
        return None


_exit_handlers_installed = False


def _install_exit_handlers() -> None:
    """``atexit`` closes and SIGTERM flushes every open writer (the thread is a daemon, cut off at exit).

    SIGTERM then goes on to the handler that was there before (by default: terminate).
    """
    global _exit_handlers_installed
    if _exit_handlers_installed:
        return
    _exit_handlers_installed = True
    atexit.register(_close_all)
    if hasattr(
        os, "register_at_fork"
    ):  # a forked child (a DataLoader worker) must not write the parent's run
        os.register_at_fork(after_in_child=_live.clear)
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        for writer in list(_live):
            writer.flush()
        if callable(previous):
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)

    signal.signal(signal.SIGTERM, on_sigterm)


def _close_all() -> None:
    for writer in list(_live):
        writer.close()
