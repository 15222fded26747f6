"""``Writer``: one call, every viewer — VisualDL, TensorBoard, JSON lines and the console.

The training thread only validates, timestamps and appends to a bounded queue (about a
microsecond per scalar); a background thread groups what is queued into records and hands
each batch to every sink's own thread, which encodes its format once per batch and appends
it with one write per file. Records are on disk within ``max_latency`` seconds;
``flush()``, ``close()``, interpreter exit and SIGTERM write everything still queued,
waiting at most ``CLOSE_TIMEOUT`` seconds in all for a stuck sink. A full queue (or a full
sink backlog) drops and counts instead of blocking training; a failing file is switched off
with one warning and the others go on. One Writer at a time holds a run (:mod:`dualwatch._runlock`).
"""

from __future__ import annotations

import atexit
import contextlib
import math
import numbers
import os
import signal
import threading
import time
import weakref
from collections import deque
from itertools import repeat, starmap
from typing import Any, Callable, ClassVar, Mapping, Sequence, Union

import numpy as np

from dualwatch import _curves, _embeddings, _histogram, _images
from dualwatch._distributed import global_rank
from dualwatch._formats import _codec, formats_by_name
from dualwatch._runlock import forget_in_child, lock_run, unlock_run
from dualwatch._tags import OVERVIEW_SOURCES
from dualwatch._warn import warn
from dualwatch.backends import backend_for, framework_of
from dualwatch.records import Graph, Histogram, HParams, Image, Record, Scalars, Text, grouped, wall_ms
from dualwatch.sinks import FanOut, Sink
from dualwatch.sinks._files import FileSink

DEFAULT_FORMATS = ("visualdl", "tensorboard", "jsonl")
DROPPED_TAG = "dualwatch/dropped_records"
#: the tags a record must hold for the overview to repeat one of them
_OVERVIEWED = frozenset(tag for tags in OVERVIEW_SOURCES.values() for tag in tags)
#: seconds ``close()``, interpreter exit and SIGTERM wait in all for sinks still writing; a sink
#: stuck longer is abandoned with one warning (the others have written everything by then)
CLOSE_TIMEOUT = 5.0
HParamValue = Union[bool, int, float, str]

_time = time.time
#: the int64 steps both formats store: ``-2**63 <= step < 2**63``
STEP_RANGE = (-(1 << 63), 1 << 63)
#: wall times the formats and their readers all take, in seconds: 1970 up to the end of year 9999
#: (VisualDL stores int64 ms, TensorBoard float64 s, readers make ``datetime``\s of them)
WALLTIME_RANGE = (0.0, 253402300800.0)  # also written out in _seconds
#: the longest the writer thread sleeps: a longer wait overflows ``Event.wait`` on some platforms
_LONGEST_WAIT = 3600.0
#: ``_one_of``'s default for an argument that must be given (None means "not given" everywhere)
_REQUIRED: Any = object()
_live: weakref.WeakSet[Writer] = weakref.WeakSet()


class Writer:
    """Writes one run, ``<logdir>/<run>/``, in every format of ``formats`` at once.

    Args:
        logdir: the directory viewers are pointed at (``visualdl --logdir runs``).
        run: the run's directory name; by default ``logs_%m%d%H%M`` (the VisualDL training guide's), with a
            ``_2``, ``_3``... suffix when that minute is taken, and ``comment`` appended.
        resume: continue the existing ``run`` instead of starting one. ``True`` continues
            from the first step written; an int from that step. Records at or after it
            are dropped from the old files (TensorBoard also gets its purge marker), so
            the curves stay continuous and no step is shown twice.
        formats: one or more of ``"visualdl"``, ``"tensorboard"``, ``"jsonl"``. A format whose
            package is missing is skipped with one warning; ``write_to_disk=False`` writes no file.
        console: a sink that prints the records logged with ``log(..., echo=True)`` at once,
            on the caller's thread.
        sinks: more sinks (``write(records)`` and ``close()``) beside the files, for example one
            that forwards to another tracker. Each sink (and each file) is fed by a thread of its
            own, so one stuck in ``write()`` never holds up the others.
        max_latency: seconds within which a logged record is on disk (finite: to write only on
            demand, pass a long one and call ``flush()`` or ``close()``).
        max_queue: records queued before the writer thread is woken to write them (the peers'
            "forced flush"; the caller never waits for it). By default only ``max_latency`` and
            a quarter of ``max_pending`` wake it.
        max_pending: records held before new ones are dropped (and counted) instead of blocking;
            also the most records waiting for any one sink.
        overview: also write the run's loss and global gradient norm as ``0_overview/loss`` and
            ``0_overview/grad_norm``, the group VisualDL and TensorBoard open first (both order
            groups by name, not by when they were written). The loss repeated is the first
            written of ``Loss/Train``, ``train/loss``, ``loss``... (``dualwatch._tags.LOSS_TAGS``;
            of several in one record, the first in that list), for the whole run. ``None`` (the
            default): from when a ``Watcher`` writes through this writer (:meth:`start_overview`),
            whose per-parameter charts would otherwise fill the viewers' first page; a writer
            without one writes only what it is given, as the peers it stands in for do.

    The arguments of torch's ``SummaryWriter`` and VisualDL's ``LogWriter`` are taken by keyword,
    with their meaning: ``log_dir`` is the run directory itself (``runs/exp1``; an existing one
    gets new files beside the old, as both peers do), ``comment`` is appended to a generated run
    name, ``purge_step`` resumes the run from that step, ``flush_secs`` is ``max_latency``,
    ``filename_suffix`` ends the VisualDL and TensorBoard file names, ``display_name`` names the
    run in VisualDL, ``file_name`` picks the VisualDL file (appended to when it exists) and
    ``write_to_disk=False`` writes no file. The two peers' constructors disagree on positions
    after the second, so :mod:`dualwatch.compat` keeps each one's positional order.

    Every call checks its arguments before anything is queued (a tag is non-empty UTF-8 text, a
    step an int64, a ``walltime`` a number of seconds from 1970 to the year 9999, an image real
    numbers with at least one pixel) and raises there, naming the argument: found later, on the
    writer thread, a bad record would cost the records written with it. A record logged after
    ``close()`` is dropped and counted in ``stats()["dropped"]``, with one warning per writer: a
    late callback must not end a finished training with a traceback.

    In a multi-process job only global rank 0 (:func:`dualwatch._distributed.global_rank`)
    creates the run and writes; on other ranks every call returns at once and
    ``run_dir`` is None.
    """

    #: which peer's rules fill a missing argument: None (dualwatch's: by the argument names the
    #: call used), "SummaryWriter" or "LogWriter" (torch's and VisualDL's); see dualwatch.compat
    peer: ClassVar[str | None] = None
    #: the ``bins`` an ``add_histogram`` call without one gets
    default_bins: ClassVar[int | str] = 64
    #: seconds per unit of the ``walltime`` the add_* methods take (VisualDL's are milliseconds)
    walltime_unit: ClassVar[float] = 1.0

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
        max_queue: int | None = None,
        max_pending: int = 1 << 18,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        flush_secs: float | None = None,
        filename_suffix: str = "",
        display_name: str = "",
        file_name: str = "",
        write_to_disk: bool = True,
        overview: bool | None = None,
    ) -> None:
        known = formats_by_name()
        names = (
            None if isinstance(formats, (str, bytes)) or not hasattr(formats, "__iter__") else list(formats)
        )
        if names is None or not all(isinstance(name, str) and name in known for name in names):
            raise ValueError(f"formats= takes a list of {sorted(known)}, got {formats!r}")
        if not names and write_to_disk:
            raise ValueError(
                f"formats= names at least one of {sorted(known)}, got {formats!r}; "
                "to write no file at all, pass write_to_disk=False"
            )
        formats = names
        for name, path in (("logdir=", logdir), ("log_dir= (LogWriter's logdir=)", log_dir)):
            if path is not None and not isinstance(path, (str, os.PathLike)):
                raise TypeError(
                    f"{name} is a directory path, a str or pathlib.Path such as 'runs', got {_shown(path)} "
                    f"({type(path).__name__})"
                )
        if run is not None:
            _check_run_name(run)
        if not isinstance(resume, (bool, int)):
            raise TypeError(f"resume= is True, False or the step to resume from, got {resume!r}")
        if flush_secs is not None:
            max_latency = flush_secs
        _check_latency(max_latency)
        sinks = _checked_sinks(sinks, console)
        for name, value in (("max_queue", max_queue), ("max_pending", max_pending)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{name}= must be a positive int, got {value!r}")
        if file_name and "vdlrecords" not in os.path.basename(file_name):
            raise ValueError(
                f"file_name= names the VisualDL file, which VisualDL finds by 'vdlrecords' in its name; "
                f"got {file_name!r}. Pass for example 'vdlrecords.train.log'"
            )
        exist_ok = False
        if log_dir is not None:
            if logdir not in (None, "runs") or run is not None:
                raise TypeError(
                    "log_dir= is the run directory itself (torch's SummaryWriter); pass it alone, "
                    f"or logdir= and run= (got logdir={logdir!r}, run={run!r}, log_dir={log_dir!r})"
                )
            logdir, run = os.path.split(os.path.abspath(os.fspath(log_dir)))
            exist_ok = True  # both peers add new files to an existing run directory
        if purge_step is not None:
            if resume is not False:
                raise TypeError("purge_step= and resume= say the same thing; pass one")
            resume = _step(purge_step)
        if not isinstance(resume, bool) and resume < 0:
            raise ValueError(
                f"resume= (purge_step=) is the step to resume from, an int >= 0, got {resume}; "
                "pass resume=True to continue the run where it ended, or resume=0 to start it over"
            )
        if not write_to_disk:
            formats = ()
        # Only global rank 0 writes: other ranks keep the same calls but create and print nothing.
        self.rank = global_rank()
        self._silent = self.rank != 0
        if self._silent:
            logdir, console, sinks = None, None, ()
        self.run_dir = _run_directory(logdir, run, resume, comment, exist_ok) if logdir is not None else None
        files: list[FileSink] = []
        if self.run_dir is not None:
            for name in formats:
                try:
                    options = {"display_name": display_name} if name == "visualdl" and display_name else {}
                    files.append(
                        FileSink(
                            known[name](**options),
                            self.run_dir,
                            resume,
                            suffix="" if name == "jsonl" else filename_suffix,
                            name=file_name if name == "visualdl" else "",
                        )
                    )
                except ImportError as err:
                    warn(
                        f"{name} files are not written: {err}. "
                        f"Install it with: pip install 'dualwatch[{name}]'",
                        UserWarning,
                    )
        # one writer per run: taken once nothing more can raise, released by close() (or the OS)
        self._run_lock = lock_run(self.run_dir) if self.run_dir is not None else None
        self.max_latency = max_latency
        self.max_queue = max_queue
        self.max_pending = max(max_pending, max_queue or 0)
        self._file_sinks = files
        self._files = FanOut([*files, *sinks], backlog=self.max_pending)
        self._console = FanOut([console] if console is not None else [])
        self._queue: deque[Any] = deque()
        # records already queued when a new one wakes the writer thread (it makes max_queue)
        self._wake_from = (max_queue if max_queue is not None else max(1, self.max_pending // 4)) - 1
        self._tags: dict[str, str] = {}
        self.overview = overview
        # overview tag -> the run's tag it repeats, once the run wrote one (None: no overview)
        self._overview: dict[str, str] | None = {} if overview else None
        self._dropped = 0
        self._closed_drops = 0  # logged after close(): counted apart from the full queue's drops
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

    # -- where the run is ---------------------------------------------------------------------

    @property
    def log_dir(self) -> str | None:
        """The run directory (torch's ``SummaryWriter.log_dir``); None on ranks that do not write."""
        return self.run_dir

    @property
    def logdir(self) -> str | None:
        """The run directory (VisualDL's ``LogWriter.logdir``)."""
        return self.run_dir

    def get_logdir(self) -> str | None:
        """The run directory (torch's ``SummaryWriter.get_logdir()``)."""
        return self.run_dir

    @property
    def file_name(self) -> str | None:
        """The VisualDL file of the run (VisualDL's ``LogWriter.file_name``); None before the
        first record is written or without VisualDL."""
        return next((sink.path for sink in self._file_sinks if sink.format.name == "visualdl"), None)

    # -- the caller's side: validate, timestamp, enqueue ------------------------------------

    def add_scalar(
        self,
        tag: str,
        scalar_value: Any = None,
        global_step: int | None = None,
        walltime: float | None = None,
        new_style: bool = False,
        double_precision: bool = False,
        *,
        value: Any = None,
        step: int | None = None,
    ) -> None:
        """Queues one scalar. Accepts Python and numpy numbers and one-element tensors.

        Takes torch's names (``scalar_value``, ``global_step``) and VisualDL's (``value``,
        ``step``). A missing step is 0, as torch writes it, but a call that names ``value=``
        is a VisualDL call and VisualDL requires one. ``new_style`` and ``double_precision``
        (torch's TensorBoard encodings) are accepted; both viewers store float32 either way.
        """
        if global_step is None or value is not None or step is not None:
            scalar_value = _one_of("add_scalar", "scalar_value", scalar_value, "value", value)
            global_step = self._step_of("add_scalar", global_step, step, value is not None)
        queue = self._queue
        if len(queue) >= self._wake_from and self._crowded():  # also where a closed writer drops
            return
        try:
            clean = self._tags[tag]
        except (KeyError, TypeError):  # a new tag, or no str at all: checked once, then cached
            clean = self._tag(tag)
        queue.append(
            (
                clean,
                scalar_value if type(scalar_value) is float else _number(scalar_value, clean),
                global_step
                if type(global_step) is int and -(1 << 63) <= global_step < 1 << 63
                else _step(global_step),
                _time() if walltime is None else _seconds(walltime, self.walltime_unit),
            )
        )

    def log(
        self, step: int, scalars: Mapping[str, Any], walltime: float | None = None, *, echo: bool = False
    ) -> None:
        """Queues ``{tag: value}`` as one record (one TensorBoard event, one JSON line).

        ``echo=True`` also prints it on the console sink, if there is one.
        """
        step = step if type(step) is int and -(1 << 63) <= step < 1 << 63 else _step(step)
        wall = _time() if walltime is None else _seconds(walltime, 1.0)
        tags = self._tags
        try:
            pairs = scalars.items()
        except AttributeError:
            raise TypeError(
                f"log(step, scalars) takes a dict of tag to value such as {{'loss': 0.5}}, got {scalars!r}"
            ) from None
        items = [
            (tags.get(t) or self._tag(t), v if type(v) is float else _number(v, t), step, wall)
            for t, v in pairs
        ]
        queue = self._queue
        if self._closed:
            self._drop_after_close(len(items))
            return
        if len(queue) + len(items) > self.max_pending:
            self._dropped += len(items)
        else:
            queue.extend(items)
            if len(queue) > self._wake_from:
                self._wake.set()
        if echo and self._console.sinks:
            values = {tag: float(value) for tag, value, _, _ in items}
            self._console.write([Scalars(step, wall_ms(wall), values)])

    def add_scalars(
        self,
        main_tag: str,
        tag_scalar_dict: Mapping[str, Any],
        global_step: int | None = None,
        walltime: float | None = None,
        *,
        step: int | None = None,
    ) -> None:
        """Flat ``main_tag/sub`` tags in this run, one record (torch makes one run per sub-tag,
        VisualDL one chart per main tag)."""
        step = self._step_of("add_scalars", global_step, step)
        wall = None if walltime is None else _seconds(walltime, self.walltime_unit)
        if not isinstance(main_tag, str) or not isinstance(tag_scalar_dict, Mapping):
            raise TypeError(
                "add_scalars(main_tag, tag_scalar_dict) takes a str and a dict of sub-tag to value, such as "
                f"add_scalars('loss', {{'train': 0.5}}), got {main_tag!r} and {tag_scalar_dict!r}"
            )
        self.log(step, {f"{main_tag}/{sub}": value for sub, value in tag_scalar_dict.items()}, wall)

    def add_histogram(
        self,
        tag: str,
        values: Any,
        global_step: int | None = None,
        bins: int | str | Sequence[float] | None = None,
        walltime: float | None = None,
        max_bins: int | None = None,
        *,
        step: int | None = None,
        buckets: int | None = None,
    ) -> None:
        """Counts ``values`` into buckets; NaN and Inf are counted apart.

        ``bins`` (VisualDL: ``buckets``) is a number of equal buckets between the finite min and
        max, torch's ``"tensorflow"`` (TensorFlow's exponential buckets, cut to the data, at
        most ``max_bins``), one of numpy's rules (``"auto"``, ``"fd"``, ``"sturges"``...), or
        the bucket edges. Framework tensors are counted on their own device when ``bins`` is a
        number; only the counts travel, copied on the writer thread, so the caller never waits
        for the device.
        """
        bins = _one_of("add_histogram", "bins", bins, "buckets", buckets, default=self.default_bins)
        _histogram.check_bins(bins, max_bins)
        step = self._step_of("add_histogram", global_step, step, buckets is not None)
        tag, ms = self._tag(tag), self._wall_ms(walltime)
        summary = _histogram.summarize(values, bins, max_bins)
        self._put(lambda: Histogram(tag, step, ms, *summary()))

    def add_image(
        self,
        tag: str,
        img: Any = None,
        step: int | None = None,
        walltime: float | None = None,
        dataformats: str | None = None,
        *,
        img_tensor: Any = None,
        image: Any = None,
        global_step: int | None = None,
    ) -> None:
        """Encodes one image to PNG once (on the writer thread) for both viewers.

        Floats are read as [0, 1] and integers as [0, 255]. ``dataformats`` is ``HWC``, ``CHW``
        or ``HW``; without it the layout is read from the shape (a first axis of 1, 3 or 4 and
        a last one that is not: CHW; the other way round: HWC). Only a shape that fits both,
        such as ``(3, 3, 3)``, falls back to a peer's default: ``CHW`` when the call names
        torch's ``img_tensor=`` or ``global_step=`` or the writer is ``SummaryWriter``, else
        ``HWC`` (VisualDL's and dualwatch's). The caller's array is copied, never changed.
        """
        torch_names = img_tensor is not None or global_step is not None
        pixels = _one_of("add_image", "img", img, "img_tensor", img_tensor, "image", image)
        step = self._step_of("add_image", global_step, step)
        tag, ms = self._tag(tag), self._wall_ms(walltime)
        layout = dataformats or _images.layout_of(pixels, self._chw_first(torch_names))
        self._put_image(tag, step, ms, _images.to_uint8_hwc(pixels, layout))

    def add_images(
        self,
        tag: str,
        img_tensor: Any,
        global_step: int | None = None,
        walltime: float | None = None,
        dataformats: str | None = None,
        *,
        step: int | None = None,
        columns: int = _images.GRID_COLUMNS,
    ) -> None:
        """A batch of images as one grid image, ``columns`` per row (8, as torch's ``add_images``).

        ``dataformats`` is ``NCHW``, ``NHWC`` or ``NHW``; without it the layout is read from
        the shape, ``NCHW`` (torch's default) when both fit.
        """
        step = self._step_of("add_images", global_step, step)
        tag, ms = self._tag(tag), self._wall_ms(walltime)
        self._put_image(tag, step, ms, _images.grid(img_tensor, dataformats, columns))

    def add_figure(
        self,
        tag: str,
        figure: Any,
        global_step: int | None = None,
        close: bool = True,
        walltime: float | None = None,
        *,
        step: int | None = None,
    ) -> None:
        """A matplotlib figure (or a list of them, drawn as a grid) as an image.

        The figure is drawn once, on the writer thread; ``close=True`` (torch's default) closes
        it in pyplot at once, which frees pyplot's reference but not the figure. Change a figure
        after logging it only if ``close=False`` and after ``flush()``.
        """
        step = self._step_of("add_figure", global_step, step)
        figures = list(figure) if isinstance(figure, (list, tuple)) else [figure]
        if not figures or not all(hasattr(f, "savefig") for f in figures):
            raise TypeError(
                f"add_figure takes a matplotlib Figure or a list of them, got {type(figure).__name__}"
            )
        tag, ms = self._tag(tag), self._wall_ms(walltime)
        if close:
            _images.close_figures(figures)
        single = not isinstance(figure, (list, tuple))

        def draw() -> np.ndarray:
            drawn = [_images.draw_figure(f) for f in figures]
            return drawn[0] if single else _images.grid(np.stack(drawn), "NHWC", _images.GRID_COLUMNS)

        self._put_image(tag, step, ms, draw)

    def add_text(
        self,
        tag: str,
        text_string: str | None = None,
        global_step: int | None = None,
        walltime: float | None = None,
        *,
        text: str | None = None,
        step: int | None = None,
    ) -> None:
        """Queues a text (markdown in both viewers). A missing step is 0 in both peers."""
        text = _one_of("add_text", "text_string", text_string, "text", text)
        if not isinstance(text, str):
            raise TypeError(f"add_text takes a str, got {type(text).__name__}")
        _check_text("the text", text)
        step = self._step_of("add_text", global_step, step, visualdl_names=False)
        ms = self._wall_ms(walltime)
        self._put(Text(self._tag(tag), step, ms, text))

    def add_hparams(
        self,
        hparam_dict: Mapping[str, HParamValue | None] | None = None,
        metric_dict: Mapping[str, Any] | Sequence[str] | None = None,
        hparam_domain_discrete: Mapping[str, Sequence[Any]] | None = None,
        run_name: str | None = None,
        global_step: int | None = None,
        *,
        hparams: Mapping[str, HParamValue | None] | None = None,
        metrics: Mapping[str, Any] | Sequence[str] | None = None,
        hparams_dict: Mapping[str, HParamValue | None] | None = None,
        metrics_list: Sequence[str] | None = None,
        step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """Hyper-parameters of this run, and the scalar tags of its metrics.

        Takes torch's form (``hparam_dict``, ``metric_dict`` of values, logged as scalars at
        the step) and VisualDL's (``hparams_dict``, ``metrics_list`` of tag names, whose values
        are the scalars logged under them). Values are bool, int, float or str; ``None`` is
        skipped. Unlike torch's, the hyper-parameters stay in this run instead of a nested
        one, so ``run_name`` is not used; ``hparam_domain_discrete`` is checked and not written.
        """
        given = _one_of(
            "add_hparams", "hparam_dict", hparam_dict, "hparams", hparams, "hparams_dict", hparams_dict
        )
        if not isinstance(given, Mapping):
            raise TypeError(f"add_hparams takes a dict of hyper-parameters, got {type(given).__name__}")
        listed = _one_of(
            "add_hparams",
            "metric_dict",
            metric_dict,
            "metrics",
            metrics,
            "metrics_list",
            metrics_list,
            default=(),
        )
        if hparam_domain_discrete is not None and not isinstance(hparam_domain_discrete, Mapping):
            raise TypeError(
                "hparam_domain_discrete= is a dict of hyper-parameter name to its possible values"
            )
        step = self._step_of("add_hparams", global_step, step, visualdl_names=False)
        clean: dict[str, HParamValue] = {}
        for name, value in given.items():
            if value is None:
                continue
            if not isinstance(value, (bool, int, float, str)):
                raise TypeError(
                    f"hparam {name!r} is a {type(value).__name__}; pass a bool, int, float or str "
                    f"(for example str(value))"
                )
            _check_text("a hparam name", str(name))
            if isinstance(value, str):
                _check_text(f"the value of hparam {name!r}", value)
            elif isinstance(value, int) and not -(2**1023) < value < 2**1023:  # both store a float64
                raise ValueError(
                    f"hparam {name!r} is too large for the float both viewers store, got {_shown(value)}; "
                    "pass str(value)"
                )
            clean[str(name)] = value
        tags = [self._tag(t) for t in (listed if not isinstance(listed, str) else [listed])]
        ms = self._wall_ms(walltime)
        self._put(HParams(step, ms, clean, tags))
        if isinstance(listed, Mapping):
            self.log(step, listed, ms / 1000)

    # -- the peers' arguments --------------------------------------------------------------------

    def _step_of(self, method: str, global_step: Any, step: Any, visualdl_names: bool = False) -> int:
        """The step of a call from ``global_step=`` (torch) or ``step=``; a missing one is 0 as
        torch writes it, or a TypeError as VisualDL raises when the call is VisualDL's."""
        if global_step is not None and step is not None:
            raise TypeError(f"{method}() got global_step={global_step!r} and step={step!r}; pass one")
        given = global_step if step is None else step
        if given is None:
            if self.peer == "LogWriter" or (self.peer is None and visualdl_names):
                raise TypeError(
                    f"{method}() needs step=: VisualDL's LogWriter has no default step "
                    "(torch's SummaryWriter writes a missing step as 0)"
                )
            return 0
        return given if type(given) is int and -(1 << 63) <= given < 1 << 63 else _step(given)

    def _wall_ms(self, walltime: float | None) -> int:
        """A call's ``walltime`` (now if None), in ``walltime_unit``, as a record's milliseconds."""
        return wall_ms(_time() if walltime is None else _seconds(walltime, self.walltime_unit))

    def _chw_first(self, torch_names: bool) -> bool:
        """Whether an image shape that fits CHW and HWC is read as CHW (torch's default)."""
        return self.peer == "SummaryWriter" or (self.peer is None and torch_names)

    def add_graph(
        self,
        model: Any,
        input_to_model: Any = None,
        verbose: bool = False,
        use_strict_trace: bool = True,
        *,
        input_spec: Any = None,
    ) -> None:
        """The model's graph, for TensorBoard's graph dashboard and VisualDL's graph tab.

        Takes torch ``SummaryWriter.add_graph``'s arguments and VisualDL ``LogWriter.add_graph``'s
        ``input_spec``; the second positional argument is either: a tensor or a tuple of tensors
        for a torch model, a list of ``InputSpec`` or tensors for a paddle one. The model is
        traced here, as it is now (the trace runs its forward once); the viewers' files are
        written on the writer thread. A model that cannot be traced is not logged: one warning
        says why, and training goes on. See README "Model graphs" for what each viewer shows.
        """
        if input_spec is not None and input_to_model is not None:
            raise TypeError("add_graph takes the example input once: input_to_model or input_spec=, not both")
        backend = backend_for(model)  # a TypeError naming the models dualwatch knows
        framework, model = backend.framework, backend.model
        example = framework.graph_example(input_to_model if input_spec is None else input_spec)
        if self._silent:
            return
        try:
            nodes, native = framework.graph(model, example, verbose, use_strict_trace)
        except Exception as err:
            warn(
                f"the graph of {type(model).__name__} is not logged: {framework.name} could not trace it "
                f"({type(err).__name__}: {err}). Training goes on; to log it, make its forward traceable "
                "for this example input (for torch, try use_strict_trace=False)"
            )
            return
        self._put(Graph(self._last_step, wall_ms(_time()), framework.name, nodes, native))

    # -- curves and embeddings: torch's SummaryWriter and VisualDL's LogWriter signatures ---------

    def add_pr_curve(
        self,
        tag: str,
        labels: Any,
        predictions: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
        *,
        step: int | None = None,
    ) -> None:
        """A precision-recall curve of binary ``labels`` (0/1 or bool) and ``predictions`` in [0, 1].

        torch's and VisualDL's signatures both work: the fourth argument is the step (``step=`` as
        a keyword, VisualDL's name, or ``global_step=``, torch's); none means step 0, as torch
        writes it (a ``LogWriter`` asks for one, as VisualDL does). The counts are computed once,
        on the writer thread, as TensorBoard's ``pr_curves`` summary computes them
        (:mod:`dualwatch._curves`). ``num_thresholds`` is not capped at 127 as torch and VisualDL
        cap it (an old protobuf limit that no longer holds). ``weights`` scales each label's count
        (a number or an array of the labels' shape).
        """
        tag, at = self._tag(tag), self._step_of("add_pr_curve", global_step, step)
        ms = self._wall_ms(walltime)
        given = _curves.inputs(labels, predictions, num_thresholds, weights)
        self._put(lambda: _curves.pr_curve(tag, at, ms, given))

    def add_roc_curve(
        self,
        tag: str,
        labels: Any,
        predictions: Any,
        step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """A ROC curve (VisualDL's ``add_roc_curve``), counted as :meth:`add_pr_curve` counts.

        Written to VisualDL and JSON lines only: TensorBoard has no ROC plugin, and a PR curve
        under the same tag would show something else. Its rates are the textbook ones
        (VisualDL's own ``compute_roc_curve`` divides true positives by ``tn + fp``).
        """
        tag, at = self._tag(tag), self._step_of("add_roc_curve", None, step)
        ms = self._wall_ms(walltime)
        given = _curves.inputs(labels, predictions, num_thresholds, weights)
        self._put(lambda: _curves.roc_curve(tag, at, ms, given))

    def add_embedding(
        self,
        mat: Any,
        metadata: Any = None,
        label_img: Any = None,
        global_step: int | None = None,
        tag: str = "default",
        metadata_header: Sequence[Any] | None = None,
    ) -> None:
        """torch's ``add_embedding``: the rows of ``mat`` as points in both viewers' projectors.

        ``metadata`` is one label per point, or with ``metadata_header`` one row of columns per
        point. ``label_img`` ([points, channels, height, width]) becomes TensorBoard's sprite;
        VisualDL shows no images. TensorBoard reads embeddings from files beside the event file
        (``projector_config.pbtxt``, ``<step>/<tag>/tensors.tsv``...), as torch writes them;
        VisualDL from its record. VisualDL shows the first embedding logged under a tag.
        """
        given = _embeddings.inputs(mat, metadata, metadata_header, label_img, columns_first=False)
        self._embedding(tag, global_step, None, given)

    def add_embeddings(
        self,
        tag: str,
        mat: Any = None,
        metadata: Any = None,
        metadata_header: Sequence[Any] | None = None,
        walltime: float | None = None,
        labels: Any = None,
        hot_vectors: Any = None,
        labels_meta: Sequence[Any] | None = None,
        *,
        step: int = 0,
    ) -> None:
        """VisualDL's ``add_embeddings``, written for both viewers as :meth:`add_embedding` writes.

        As in VisualDL, a two-dimensional ``metadata`` is a list of columns (each one label per
        point), headed ``label_0``, ``label_1``... unless ``metadata_header`` names them;
        ``labels``, ``hot_vectors`` and ``labels_meta`` are VisualDL's old names of
        ``metadata``, ``mat`` and ``metadata_header``. ``walltime`` is in seconds, as everywhere
        in :class:`Writer` (milliseconds in :class:`dualwatch.compat.LogWriter`, as in VisualDL).
        """
        given = _embeddings.inputs(
            hot_vectors if mat is None else mat,
            labels if metadata is None else metadata,
            labels_meta if metadata_header is None else metadata_header,
            label_img=None,
            columns_first=True,
        )
        self._embedding(tag, step, walltime, given)

    def _embedding(
        self, tag: str, step: int | None, walltime: float | None, given: _embeddings.EmbeddingInputs
    ) -> None:
        tag, at = self._tag(tag), _step(0 if step is None else step)
        ms = self._wall_ms(walltime)
        self._put(lambda: _embeddings.record(tag, at, ms, given))

    # -- end of curves and embeddings ----------------------------------------------------------

    def _crowded(self) -> bool:
        """Wakes the writer thread (``max_queue`` records wait); True, and the record is counted as
        dropped, when ``max_pending`` records wait or the writer is closed (``close()`` makes
        ``add_scalar`` call this each time, so the open writer's fast path checks nothing more)."""
        if self._closed:
            self._drop_after_close(1)
            return True
        self._wake.set()
        if len(self._queue) < self.max_pending:
            return False
        self._dropped += 1
        return True

    def _put_image(self, tag: str, step: int, ms: int, pixels: np.ndarray | Callable[[], np.ndarray]) -> None:
        """Queues ``[H, W, C]`` uint8 pixels (or what draws them, on the writer thread) as one PNG."""

        def image() -> Image:
            array = pixels() if callable(pixels) else pixels
            return Image(tag, step, ms, _images.encode_png(array), *array.shape)

        self._put(image)

    def _put(self, item: Record | Callable[[], Record]) -> None:
        if self._silent:
            return
        if self._closed:
            self._drop_after_close(1)
        elif len(self._queue) >= self.max_pending:
            self._dropped += 1
        else:
            self._queue.append(item)

    def _drop_after_close(self, count: int) -> None:
        """Counts ``count`` records logged after ``close()`` as dropped; the first drop warns.

        Never raises: a late log call (a callback after the loop, a second ``close()`` path) must not
        end a finished training with a traceback."""
        self._closed_drops += count
        if self._closed_drops == count:
            warn(
                f"this Writer is closed; {count} record(s) logged after close() are dropped: log before "
                "close() or open the run again with resume=True (stats()['dropped'] counts them)"
            )

    def _tag(self, tag: str) -> str:
        """Checks a tag once; ``%`` (VisualDL's server keys ``/`` as ``%``) becomes ``_pct``.

        A tag that is not UTF-8 text (a lone surrogate, from a bad decode) would make VisualDL's and
        TensorBoard's encoders fail on the writer thread, taking the record's other values with it."""
        if not isinstance(tag, str) or not tag:
            raise TypeError(f"a tag is a non-empty str such as 'Loss/Train', got {_shown(tag)}")
        clean = self._tags.get(tag)
        if clean is None:
            _check_text("a tag", tag)
            clean = tag.replace("%", "_pct")
            if clean != tag:
                warn(f"tag {tag!r} is written as {clean!r}: VisualDL cannot store '%' in tags", UserWarning)
            self._tags[tag] = clean
        return clean

    # -- the writer's side -------------------------------------------------------------------

    def _run(self) -> None:
        """The writer thread: hands what is queued to the sinks' threads; it never waits for a sink."""
        period = min(self.max_latency / 2, _LONGEST_WAIT)
        while not self._closed:
            self._wake.wait(period)
            self._wake.clear()
            with contextlib.suppress(Exception), self._lock:  # a warning turned error must not stop it
                self._hand_out()

    def flush(self) -> None:
        """Writes everything queued so far: returns when every sink has written it, or when one has
        been stuck in ``write()`` for ``CLOSE_TIMEOUT`` seconds (the others have written it then)."""
        self._flush(time.monotonic() + CLOSE_TIMEOUT)

    def _flush(self, deadline: float) -> None:
        if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return  # the writer thread is still preparing a batch (encoding images): it hands it out
        try:
            self._hand_out()
        finally:
            self._lock.release()
        with contextlib.suppress(Exception):
            self._files.wait(max(0.0, deadline - time.monotonic()))

    def _hand_out(self) -> None:
        try:
            self._drain()
        except Exception as err:  # a bug here must not kill the thread or reach training
            warn(f"writing failed ({type(err).__name__}: {err}); training goes on")

    def _drain(self) -> None:
        """Groups what is queued into records and gives the batch to every sink's thread."""
        # taken item by item (in C): a call appending meanwhile is kept for the next drain
        queue = self._queue
        items = list(starmap(queue.popleft, repeat((), len(queue))))
        records = self._records(items)
        if self._overview is not None:
            self._repeat_in_overview(records)
        if self._dropped != self._reported_drops:
            if not self._reported_drops:
                warn(
                    f"the log queue is full (max_pending={self.max_pending}); records are being dropped "
                    f"and counted in {DROPPED_TAG!r}. Log less often or raise max_pending."
                )
            self._reported_drops = self._dropped
            records.append(Scalars(self._last_step, wall_ms(_time()), {DROPPED_TAG: float(self._dropped)}))
        if records:
            self._files.write(records)
            self._written += len(items)
        else:
            self._files.report()

    def _records(self, items: list[Any]) -> list[Record]:
        """Scalars of one step and millisecond become one record; deferred work runs here."""
        try:
            if _codec.codec is None:
                raise TypeError
            queued, bad, last_step = _codec.codec.group(items, Scalars)
        except _codec.DECLINED:
            try:
                queued, bad, last_step = _group(items)
            except Exception:  # one scalar that cannot be grouped must not take its batch with it
                queued, bad, last_step = _group_each(items)
        for tag, step, err in bad:
            warn(f"scalar {tag!r} at step {step} is not written ({type(err).__name__}: {err}); it is skipped")
        if last_step is not None:
            self._last_step = last_step
        records: list[Record] = []
        for item in queued:
            if callable(item):
                try:
                    item = item()
                except Exception as err:
                    warn(
                        f"a queued record could not be prepared ({type(err).__name__}: {err}); it is skipped"
                    )
                    continue
            records.append(item)
        return records

    def start_overview(self) -> None:
        """Repeats the loss and the global gradient norm in ``0_overview`` from now on, unless
        ``overview=False`` was given; a ``Watcher`` calls it on the writer it writes through."""
        if self.overview is not False and self._overview is None:
            self._overview = {}

    def _repeat_in_overview(self, records: list[Record]) -> None:
        """Adds the overview's tags to the records holding what they repeat (same step and time)."""
        claimed = self._overview
        for record in records:
            if type(record) is not Scalars or _OVERVIEWED.isdisjoint(record.values):
                continue
            values = record.values
            for target, sources in OVERVIEW_SOURCES.items():
                tag = claimed.get(target) or next((t for t in sources if t in values), None)
                if tag in values:
                    claimed[target] = tag
                    values.setdefault(target, values[tag])

    def stats(self) -> dict[str, Any]:
        """``queued``, ``written`` (handed to the sinks) and ``dropped`` record counts, the records
        each sink missed because its backlog was full (``backlog_dropped``) and the sinks that failed."""
        return {
            "queued": len(self._queue),
            "written": self._written,
            "dropped": self._dropped + self._closed_drops,
            "backlog_dropped": dict(self._files.dropped),
            "failed": self._files.failed + self._console.failed,
        }

    def close(self) -> None:
        """Writes what is queued, closes the files and the run's lock and stops the threads; safe to
        call twice. Waits at most ``CLOSE_TIMEOUT`` seconds: a sink stuck longer is abandoned with
        one warning naming it."""
        self._close(time.monotonic() + CLOSE_TIMEOUT)

    def _close(self, deadline: float) -> None:
        if self._closed:
            return
        self._closed = True
        self._wake_from = -1  # add_scalar now always calls _crowded(), which drops after close
        _live.discard(self)
        self._wake.set()
        try:
            if self._thread is not threading.current_thread():
                self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
            if not self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
                warn(
                    f"the writer thread did not finish a batch within {CLOSE_TIMEOUT:g} s; "
                    f"closing without writing the {len(self._queue)} record(s) still queued"
                )
                return
            try:
                self._hand_out()
                abandoned = self._files.close(max(0.0, deadline - time.monotonic()))
                self._console.close()
            finally:
                self._lock.release()
            if abandoned:
                names = ", ".join(f"{sink!r} ({held} record(s))" for sink, held in abandoned)
                warn(
                    f"{names} still stuck in write() after close() waited CLOSE_TIMEOUT={CLOSE_TIMEOUT:g} s: "
                    "abandoned with what it had not written. Every other sink has written everything"
                )
        finally:
            unlock_run(self._run_lock)
            self._run_lock = None

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _group(queued: list[Any]) -> tuple[list[Any], list[tuple[str, int, Exception]], int | None]:
    """The queue's ``(tag, value, step, wall)`` scalars grouped into records (:func:`grouped`), the
    other items kept in their places; a device tensor's value is read here. Returns those, the
    scalars whose value is not one number, and the last scalar's step. The C codec's ``group``
    does the same in one pass."""
    out: list[Any] = []
    bad: list[tuple[str, int, Exception]] = []
    points: list[tuple[str, float, int, float]] = []
    for item in queued:
        if type(item) is not tuple:
            out += grouped(points)
            out.append(item)
            points = []
        elif type(item[1]) is float:
            points.append(item)
        else:
            tag, value, step, wall = item
            try:
                points.append((tag, float(value), step, wall))
            except Exception as err:
                bad.append((tag, step, err))
    out += grouped(points)
    last = next((item.step for item in reversed(out) if type(item) is Scalars), None)
    return out, bad, last


def _group_each(queued: list[Any]) -> tuple[list[Any], list[tuple[str, int, Exception]], int | None]:
    """:func:`_group` of a batch it failed on: each scalar is tried alone, and one that cannot be
    grouped (a wall time no format stores) is reported in the second list, costing only itself."""
    kept: list[Any] = []
    failed: list[tuple[str, int, Exception]] = []
    for item in queued:
        try:
            _group([item])
            kept.append(item)
        except Exception as err:  # only a (tag, value, step, wall) scalar can fail
            failed.append((item[0], item[2], err))
    out, bad, last = _group(kept)
    return out, failed + bad, last


def _one_of(method: str, *names_and_values: Any, default: Any = _REQUIRED) -> Any:
    """The one argument given among the peers' names for it (``"scalar_value", v1, "value", v2``)."""
    given = [(n, v) for n, v in zip(names_and_values[::2], names_and_values[1::2]) if v is not None]
    if len(given) > 1:
        raise TypeError(f"{method}() got {' and '.join(n + '=' for n, _ in given)}; pass one of them")
    if given:
        return given[0][1]
    if default is _REQUIRED:
        raise TypeError(f"{method}() needs {names_and_values[0]}= (or {', '.join(names_and_values[2::2])}=)")
    return default


def _number(value: Any, tag: str = "") -> float | Any:
    """A float, or a detached copy of an accelerator tensor (read on the writer thread)."""
    if value is None:
        raise TypeError("a scalar needs a value: scalar_value= (torch's name) or value= (VisualDL's)")
    if isinstance(value, (str, bytes)):
        raise TypeError(
            f"the value of scalar {tag!r} is a number or a one-element tensor, got {_shown(value)}"
        )
    try:
        framework = framework_of(value)
        if framework is not None:  # never hold the graph, never wait for a device here
            return framework.scalar(value)
        return float(value.item() if hasattr(value, "item") else value)
    except OverflowError as err:
        raise ValueError(
            f"the value of scalar {tag!r} is too large for a float (over 1.8e308), got {_shown(value)}; "
            "log it scaled, or its logarithm (math.log10 takes big ints)"
        ) from err
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"the value of scalar {tag!r} is a number or a one-element tensor, got {_shown(value)}"
        ) from err


def _step(step: Any) -> int:
    """A step checked: an int both formats can store (int64); a float or str step is refused
    rather than rounded, so no two records share a step by accident."""
    if isinstance(step, bool) or not hasattr(step, "__index__"):
        raise TypeError(
            f"a step is an int (the training step or iteration), got {_shown(step)} "
            f"({type(step).__name__}); pass int(step)"
        )
    step = int(step)
    if not STEP_RANGE[0] <= step < STEP_RANGE[1]:
        raise ValueError(
            f"a step is stored as a 64-bit int by VisualDL and TensorBoard (-2**63 <= step < 2**63), "
            f"got {_shown(step)}; log a smaller step, such as the iteration count"
        )
    return step


def _seconds(walltime: Any, unit: float) -> float:
    """A caller's ``walltime`` (in ``unit`` seconds) as seconds since the epoch, checked here:
    a NaN or a year past 9999 cannot be stored, and found on the writer thread it would cost
    the records queued beside it."""
    if type(walltime) is float and 0.0 <= walltime * unit < 253402300800.0:
        return walltime * unit
    try:
        if isinstance(walltime, (bool, str, bytes)):
            raise TypeError
        seconds = float(walltime) * unit
    except (TypeError, ValueError, OverflowError):
        raise TypeError(
            f"walltime= is a number of {_unit_name(unit)} since 1970 as time.time() gives, got "
            f"{_shown(walltime)} ({type(walltime).__name__}); leave it out to use the current time"
        ) from None
    if not WALLTIME_RANGE[0] <= seconds < WALLTIME_RANGE[1]:  # NaN fails too
        low, high = (limit / unit for limit in WALLTIME_RANGE)
        raise ValueError(
            f"walltime= is {_unit_name(unit)} since 1970, from {low:.0f} to {high:.0f} (the year 9999), "
            f"which every format can store; got {_shown(walltime)}. Leave it out to use the current time"
        )
    return seconds


def _unit_name(unit: float) -> str:
    return "seconds" if unit == 1.0 else "milliseconds (VisualDL's unit)"


def _shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length (a 400-digit int, a long list)."""
    try:
        shown = repr(value)
    except ValueError:  # an int past Python's 4300-digit str limit
        return f"an int of {value.bit_length()} bits"
    return shown if len(shown) <= 80 else f"{shown[:60]}...({len(shown)} characters)"


def _check_text(what: str, text: str) -> None:
    """Raises for a str that is not UTF-8 text (a lone surrogate): every format stores UTF-8, and
    the encoder would fail on the writer thread with the whole record."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(
            f"{what} is not UTF-8 text ({_shown(text)}): {_shown(err.object[err.start : err.end])} at "
            f"position {err.start} is a lone surrogate (often from bytes decoded with "
            "errors='surrogateescape'); pass text.encode('utf-8', 'replace').decode('utf-8')"
        ) from None


def _check_run_name(run: Any) -> None:
    """``run=`` is one directory name: no separator, no NUL (which the OS cannot take)."""
    separators = [sep for sep in (os.sep, os.altsep, "\0") if sep]
    if not isinstance(run, str):
        raise TypeError(f"run= is the run's directory name, a str such as 'baseline', got {_shown(run)}")
    if not run or run in (".", "..") or any(sep in run for sep in separators):
        raise ValueError(
            f"run= is one directory name inside logdir, without {' or '.join(map(repr, separators))}, "
            f"got {_shown(run)}; put the parent directories in logdir="
        )
    _check_text("run=", run)


def _check_latency(max_latency: Any) -> None:
    if isinstance(max_latency, bool) or not isinstance(max_latency, numbers.Real):
        raise TypeError(f"max_latency= (flush_secs=) is a number of seconds, got {_shown(max_latency)}")
    if not (math.isfinite(max_latency) and max_latency > 0):
        raise ValueError(
            f"max_latency= (flush_secs=) must be > 0 seconds, got {max_latency!r}: it is the longest a "
            "record waits before it is written, a finite number; to write only when you choose, pass a "
            "long one (3600) and call flush() or close()"
        )


def _checked_sinks(sinks: Any, console: Any) -> list[Sink]:
    """``sinks`` as a list, each with ``write(records)`` and ``close()``: a sink without them would
    only fail on the writer thread, after training started."""
    if isinstance(sinks, (str, bytes)) or not hasattr(sinks, "__iter__"):
        raise TypeError(f"sinks= is a list of sinks, got {_shown(sinks)}; pass sinks=[my_sink]")
    sinks = list(sinks)
    named = [("sinks=", sink) for sink in sinks] + [("console=", console)] * (console is not None)
    for name, sink in named:
        if not (callable(getattr(sink, "write", None)) and callable(getattr(sink, "close", None))):
            raise TypeError(
                f"{name} takes sinks with a write(records) and a close() method (see dualwatch.sinks.Sink), "
                f"got {_shown(sink)}"
            )
    return sinks


def _run_directory(
    logdir: str | os.PathLike[str],
    run: str | None,
    resume: bool | int,
    comment: str = "",
    exist_ok: bool = False,
) -> str | None:
    """``<logdir>/<run>``; a new run gets ``logs_%m%d%H%M`` + ``comment`` (the VisualDL guide's
    name), unique per minute. ``exist_ok``: an existing ``run`` gets new files beside the old.

    Wrong use raises before training (:class:`RunInUseError` when another open Writer holds the
    run); a directory that cannot be made warns and returns None.
    """
    logdir = os.fspath(logdir)
    if not isinstance(comment, str) or os.sep in comment:
        raise ValueError(f"comment= is a suffix of the run's directory name, got {comment!r}")
    if resume is not False and run is None:
        raise ValueError("resume= needs run=<the run's directory name>, for example run='logs_11221030'")
    if run is not None:
        _check_run_name(run)  # again: log_dir= gives its own last part (``/`` gives none)
    if run is not None and resume is False and not exist_ok and os.path.exists(os.path.join(logdir, run)):
        with contextlib.suppress(OSError):  # a run another writer holds: say who (RunInUseError)
            unlock_run(lock_run(os.path.join(logdir, run)))
        raise ValueError(
            f"run {run!r} already exists in {logdir!r}: pass resume=True to continue it, or another run name"
        )
    try:
        if run is not None:
            os.makedirs(os.path.join(logdir, run), exist_ok=True)
            return os.path.join(logdir, run)
        base = os.path.join(logdir, time.strftime("logs_%m%d%H%M"))
        path, n = base + comment, 1
        os.makedirs(logdir, exist_ok=True)
        while True:
            try:
                os.mkdir(path)
                return path
            except FileExistsError:
                n += 1
                path = f"{base}_{n}{comment}"
    except OSError as err:
        warn(
            f"cannot create a run directory in {logdir!r} ({err}); "
            "nothing is written to files, training goes on"
        )
        return None


_exit_handlers_installed = False


def _install_exit_handlers() -> None:
    """``atexit`` closes every open writer (the threads are daemons, cut off at exit); SIGTERM
    writes what they hold, then terminates as SIGTERM would have. Both wait at most
    ``CLOSE_TIMEOUT`` seconds in all, however many writers and stuck sinks there are.

    After SIGTERM the handler that was there before runs (a trainer's own, which may go on
    training: the writers are flushed, not closed); without one the writers are closed and the
    process ends by SIGTERM, or with status 143 (128 + SIGTERM, what ``docker stop`` expects)
    when it is PID 1, where the kernel ignores SIGTERM's default action.
    """
    global _exit_handlers_installed
    if _exit_handlers_installed:
        return
    _exit_handlers_installed = True
    atexit.register(_close_all)
    if hasattr(os, "register_at_fork"):  # a forked child (a DataLoader worker) must not write our run

        def forget() -> None:
            _live.clear()
            forget_in_child()

        os.register_at_fork(after_in_child=forget)
    if threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: Any) -> None:
        if callable(previous):
            _flush_all()
            previous(signum, frame)
        elif previous == signal.SIG_DFL:
            _close_all()
            if os.getpid() == 1:
                os._exit(128 + signum)
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        else:  # SIG_IGN: the process goes on
            _flush_all()

    signal.signal(signal.SIGTERM, on_sigterm)


def _flush_all() -> None:
    deadline = time.monotonic() + CLOSE_TIMEOUT
    for writer in list(_live):
        writer._flush(deadline)


def _close_all() -> None:
    deadline = time.monotonic() + CLOSE_TIMEOUT
    for writer in list(_live):
        writer._close(deadline)
