"""Drop-in names for logging code written for torch's ``SummaryWriter`` or VisualDL's ``LogWriter``.

Change one import line and the same calls write VisualDL, TensorBoard and JSON lines at once::

    from dualwatch.compat import SummaryWriter   # was: from torch.utils.tensorboard import SummaryWriter
    from dualwatch.compat import LogWriter       # was: from visualdl import LogWriter

Both are :class:`dualwatch.Writer` with the peer's positional order and defaults where the two
peers disagree: the directory given is the run directory itself, the default one is the peer's
(``runs/<date>_<host><comment>`` and ``runs/<date>.<comment>``), a call without a step does what
the peer does (``SummaryWriter``: step 0; ``LogWriter``: ``TypeError``), ``add_histogram`` takes
torch's ``bins="tensorflow"`` or VisualDL's ``buckets=10``, and an image whose shape fits both
layouts is read as CHW (torch) or HWC (VisualDL). ``flush_secs`` and ``max_queue`` are honoured
when given; left out, records reach disk within dualwatch's 2 seconds rather than the peers'
120. The README's compatibility table lists every method of both peers.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any, Callable, Mapping, Sequence

from dualwatch._warn import warn
from dualwatch._writer import Writer

__all__ = ["LogWriter", "SummaryWriter"]


def _not_written(name: str, what: str) -> Callable[..., None]:
    """A peer's method dualwatch does not write: calling it warns once per writer and logs nothing,
    so a script that uses it still runs."""

    def method(self: Writer, *args: Any, **kwargs: Any) -> None:
        warned = self.__dict__.setdefault("_warned_not_written", set())
        if name not in warned:
            warned.add(name)
            warn(f"{type(self).__name__}.{name} is not written by dualwatch ({what}); the rest of the run is")

    method.__name__ = method.__qualname__ = name
    method.__doc__ = f"Not written by dualwatch ({what}): one warning, then nothing."
    return method


class SummaryWriter(Writer):
    """``torch.utils.tensorboard.SummaryWriter``'s constructor and methods, writing every format.

    ``add_summary`` (and ``_get_file_writer()``, which returns the writer itself) take the
    summaries torch's ``torch.utils.tensorboard.summary`` builds, as Lightning's
    ``TensorBoardLogger.log_hyperparams`` writes them: scalars and hyper-parameters are
    understood, other kinds are skipped with one warning.
    """

    peer = "SummaryWriter"
    default_bins = "tensorflow"

    def __init__(
        self,
        log_dir: str | os.PathLike[str] | None = None,
        comment: str = "",
        purge_step: int | None = None,
        max_queue: int | None = None,
        flush_secs: float | None = None,
        filename_suffix: str = "",
        **options: Any,
    ) -> None:
        if not log_dir:
            stamp = time.strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", f"{stamp}_{socket.gethostname()}{comment}")
        super().__init__(
            None,
            log_dir=log_dir,
            purge_step=purge_step,
            max_queue=max_queue,
            flush_secs=flush_secs,
            filename_suffix=filename_suffix,
            **options,
        )
        self._hparam_metrics: list[str] = []
        self._skipped_kinds: set[str] = set()

    def _get_file_writer(self) -> SummaryWriter:
        return self

    def add_summary(
        self, summary: Any, global_step: int | None = None, walltime: float | None = None
    ) -> None:
        """Writes what a ``tensorboard`` ``Summary`` holds that every format can carry."""
        from tensorboard.plugins.hparams import plugin_data_pb2

        step = self._step_of("add_summary", global_step, None)
        for value in summary.value:
            plugin = value.metadata.plugin_data.plugin_name
            if value.WhichOneof("value") == "simple_value":
                self.add_scalar(value.tag, value.simple_value, step, walltime)
            elif plugin == "hparams":
                data = plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content)
                kind = data.WhichOneof("data")
                if kind == "experiment":  # names the metrics; the session start that follows has the values
                    self._hparam_metrics = [info.name.tag for info in data.experiment.metric_infos]
                elif kind == "session_start_info":
                    hparams = {k: _plain(v) for k, v in data.session_start_info.hparams.items()}
                    self.add_hparams(hparams, self._hparam_metrics, global_step=step, walltime=walltime)
            elif plugin not in self._skipped_kinds:
                self._skipped_kinds.add(plugin)
                warn(
                    f"add_summary: a {plugin or value.WhichOneof('value')!r} summary ({value.tag!r}) is not "
                    "written; scalars and hyper-parameters are. Use the add_* method for it instead."
                )

    def add_histogram_raw(
        self,
        tag: str,
        min: float,
        max: float,
        num: int,
        sum: float,
        sum_squares: float,
        bucket_limits: Sequence[float],
        bucket_counts: Sequence[float],
        global_step: int | None = None,
        walltime: float | None = None,
    ) -> None:
        """A histogram already counted: bucket ``i`` ends at ``bucket_limits[i]``; the first starts at
        ``min``."""
        import numpy as np

        from dualwatch.records import Histogram

        limits, counts = np.asarray(bucket_limits, np.float64), np.asarray(bucket_counts, np.float64)
        if limits.ndim != 1 or limits.shape != counts.shape or limits.size == 0:
            raise ValueError(
                f"bucket_limits and bucket_counts are two lists of the same length, got {limits.shape} and "
                f"{counts.shape}"
            )
        step = self._step_of("add_histogram_raw", global_step, None)
        edges = np.clip(np.concatenate([[min], limits]), min, max)
        ms = self._wall_ms(walltime)
        self._put(
            Histogram(self._tag(tag), step, ms, counts, edges, int(num), float(sum), float(sum_squares))
        )

    def add_pr_curve_raw(
        self,
        tag: str,
        true_positive_counts: Any,
        false_positive_counts: Any,
        true_negative_counts: Any,
        false_negative_counts: Any,
        precision: Any,
        recall: Any,
        global_step: int | None = None,
        num_thresholds: int = 127,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        """A PR curve already counted, one value per threshold in each list (``num_thresholds`` and
        ``weights`` are torch's and not used: the lists say it all)."""
        import numpy as np

        from dualwatch.records import PRCurve

        columns = [
            np.asarray(c, np.float64).reshape(-1)
            for c in (true_positive_counts, false_positive_counts, true_negative_counts,
                      false_negative_counts, precision, recall)
        ]  # fmt: skip
        if len({c.size for c in columns}) != 1 or columns[0].size < 2:
            raise ValueError(
                f"the six lists of add_pr_curve_raw have one value per threshold each (at least 2), got "
                f"lengths {[c.size for c in columns]}"
            )
        step = self._step_of("add_pr_curve_raw", global_step, None)
        self._put(PRCurve(self._tag(tag), step, self._wall_ms(walltime), *columns))

    add_audio = _not_written("add_audio", "audio")
    add_video = _not_written("add_video", "video (TensorBoard only)")
    add_mesh = _not_written("add_mesh", "3-D meshes (TensorBoard only)")
    add_tensor = _not_written("add_tensor", "raw tensors; log them with add_scalar or add_histogram")
    add_image_with_boxes = _not_written("add_image_with_boxes", "boxes; draw them into the image")
    add_onnx_graph = _not_written("add_onnx_graph", "ONNX graphs; use add_graph(model, example)")
    add_custom_scalars = _not_written("add_custom_scalars", "custom-scalar layouts (TensorBoard only)")
    add_custom_scalars_multilinechart = _not_written("add_custom_scalars_multilinechart", "layouts")
    add_custom_scalars_marginchart = _not_written("add_custom_scalars_marginchart", "layouts")


class LogWriter(Writer):
    """VisualDL 2.5's ``LogWriter`` constructor and methods, writing every format. As in VisualDL,
    ``walltime`` arguments are in milliseconds."""

    peer = "LogWriter"
    default_bins = 10
    walltime_unit = 0.001

    def __init__(
        self,
        logdir: str | os.PathLike[str] | None = None,
        comment: str = "",
        max_queue: int | None = None,
        flush_secs: float | None = None,
        filename_suffix: str = "",
        write_to_disk: bool = True,
        display_name: str = "",
        file_name: str = "",
        **options: Any,
    ) -> None:
        if not logdir:
            stamp = time.strftime("%b%d_%H-%M-%S")
            logdir = os.path.join("runs", stamp + (f".{comment}" if comment else ""))
        super().__init__(
            None,
            log_dir=logdir,
            max_queue=max_queue,
            flush_secs=flush_secs,
            filename_suffix=filename_suffix,
            write_to_disk=write_to_disk,
            display_name=display_name,
            file_name=file_name,
            **options,
        )

    def add_histogram(  # type: ignore[override]
        self, tag: str, values: Any, step: int, walltime: float | None = None, buckets: int = 10
    ) -> None:
        super().add_histogram(tag, values, step=step, walltime=walltime, buckets=buckets)

    def add_figure(self, tag: str, figure: Any, step: int, walltime: float | None = None) -> None:  # type: ignore[override]
        super().add_figure(tag, figure, step=step, walltime=walltime)

    def add_hparams(  # type: ignore[override]
        self,
        hparams_dict: Mapping[str, Any],
        metrics_list: Sequence[str] = (),
        walltime: float | None = None,
    ) -> None:
        super().add_hparams(hparams_dict=hparams_dict, metrics_list=metrics_list, walltime=walltime)

    def add_pr_curve(  # type: ignore[override]
        self,
        tag: str,
        labels: Any,
        predictions: Any,
        step: int,
        num_thresholds: int = 10,
        weights: Any = None,
        walltime: float | None = None,
    ) -> None:
        super().add_pr_curve(tag, labels, predictions, None, num_thresholds, weights, walltime, step=step)

    def add_image_matrix(
        self,
        tag: str,
        imgs: Any,
        step: int,
        rows: int = -1,
        scale: float = 1.0,
        walltime: float | None = None,
        dataformats: str = "HWC",
    ) -> None:
        """Images, each in ``dataformats`` (VisualDL's: ``HWC``, ``CHW`` or ``HW``), as one grid of
        ``rows`` rows (-1: as square as it gets); ``scale`` is not applied."""
        count = len(imgs)
        columns = math.ceil(count / rows) if rows > 0 else math.ceil(math.sqrt(count))
        super().add_images(
            tag, imgs, step=step, walltime=walltime, dataformats="N" + dataformats, columns=max(columns, 1)
        )

    add_audio = _not_written("add_audio", "audio")

    def add_meta(
        self, tag: str = "meta_data_tag", display_name: str = "", step: int = 0, walltime: Any = None
    ) -> None:
        """VisualDL writes its run metadata itself; pass ``display_name=`` to ``LogWriter`` instead."""
        if display_name:
            warn("LogWriter.add_meta is not written: pass display_name= to LogWriter(...) to name the run")


def _plain(value: Any) -> bool | float | str:
    """A ``google.protobuf.Value`` of an hparams summary as the bool, number or str it holds."""
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind in ("bool_value", "number_value", "string_value") else str(value)
