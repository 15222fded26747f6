"""``dualwatch plot``: a run's scalar curves in one image, for containers without a browser.

A training box or CI job often has logs but no way to open VisualDL or TensorBoard; one
PNG shows how the run went. Each tag gets a small panel in a grid, x = step: the raw
values as a faint line and the EMA-smoothed line (the viewers' default smoothing, 0.6)
on top. NaN and Inf values are left out of the lines and marked with a red x at the
panel's top edge (-Inf at the bottom edge), so one bad step neither breaks the curve nor
goes unseen. Positive tags spanning more than ``LOG_DECADES`` decades (gradient norms)
get a log y axis.

A series longer than ``POINTS`` is decimated before plotting by min/max buckets: each of
``POINTS // 2`` equal runs of points keeps its lowest and its highest point, so spikes
survive and a million points draw as fast as two thousand. The smoothing is computed on
every point first.

The image is written to a temporary file beside the output and renamed over it, so
anything watching the output never reads half an image. matplotlib (``dualwatch[plot]``)
is imported only here, when a plot is drawn.
"""

from __future__ import annotations

import math
import os
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Iterable, Sequence

import numpy as np

from dualwatch._errors import DualwatchError
from dualwatch._files import atomic_write
from dualwatch._tags import GRAD_NORM_TAGS, LOSS_TAGS, LR_TAGS
from dualwatch.readers._series import SMOOTHING, RunLike, smooth

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: panels drawn when no limit is given
MAX_PANELS = 16
#: points per line after decimation
POINTS = 2000
#: positive values whose max/min exceeds 10**LOG_DECADES get a log y axis
LOG_DECADES = 3
#: characters of a tag shown above its panel (the start is cut, the end names the quantity)
TITLE_CHARS = 34
#: inches per panel
PANEL_SIZE = (4.2, 2.8)


def choose_tags(
    tags: Iterable[str], globs: Sequence[str] = (), limit: int = MAX_PANELS
) -> tuple[list[str], list[str]]:
    """``(chosen, left_out)``: the tags to plot, in panel order, and those over ``limit``.

    With ``globs``, the tags matching each glob in turn (``fnmatchcase``; ``*`` also matches
    ``/``), sorted within a glob. Without, the monitor's loss, learning-rate and gradient-norm
    tags that exist, then every other tag, sorted.
    """
    available = sorted(tags)
    if globs:
        wanted = [tag for glob in globs for tag in available if fnmatchcase(tag, glob)]
    else:
        present = set(available)
        wanted = [tag for tag in (*LOSS_TAGS, *LR_TAGS, *GRAD_NORM_TAGS) if tag in present]
        wanted += available
    ordered = list(dict.fromkeys(wanted))
    return ordered[:limit], ordered[limit:]


def plot_run(run: RunLike, out: str, tags: Sequence[str] = (), title: str = "") -> list[str]:
    """Draws ``tags`` of ``run`` (default: :func:`choose_tags`) into the image ``out``; returns them.

    The format follows the extension of ``out`` (png without one; svg, pdf... as matplotlib
    writes them). ``title`` defaults to the run directory's name. Raises :class:`~dualwatch.DualwatchError`.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise DualwatchError('plotting needs matplotlib: pip install "dualwatch[plot]"') from None
    series = run.series
    tags = list(tags) or choose_tags(series)[0]
    missing = [tag for tag in tags if tag not in series]
    if missing:
        raise DualwatchError(f"no tag {missing[0]!r} in {run.run_dir}")
    if not tags:
        raise DualwatchError(f"no scalar records in {run.run_dir}")
    ext = os.path.splitext(out)[1][1:].lower() or "png"
    cols = math.ceil(math.sqrt(len(tags)))
    rows = math.ceil(len(tags) / cols)
    fig = Figure(figsize=(PANEL_SIZE[0] * cols, PANEL_SIZE[1] * rows + 0.6), layout="constrained")
    canvas = FigureCanvasAgg(fig)
    if ext not in canvas.get_supported_filetypes():
        raise DualwatchError(f"cannot write .{ext} images (use .png, .svg or .pdf)")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for i, (ax, tag) in enumerate(zip(axes, tags)):
        s = series[tag]
        _panel(ax, tag, np.asarray(s.steps, dtype=np.float64), np.asarray(s.values, dtype=np.float64))
        if i + cols >= len(tags):  # lowest panel of its column
            ax.set_xlabel("step", fontsize=8)
    for ax in axes[len(tags) :]:
        ax.set_axis_off()
    name = title or os.path.basename(os.path.abspath(run.run_dir))
    fig.suptitle(f"{name}\nfaint: raw · solid: EMA smoothing {SMOOTHING:g} · red x: NaN/Inf", fontsize=10)
    _write(fig, out, ext)
    return tags


def decimate(x: np.ndarray, y: np.ndarray, points: int = POINTS) -> tuple[np.ndarray, np.ndarray]:
    """At most about ``points`` of ``(x, y)``: the first, the last, and each bucket's min and max."""
    n = len(y)
    if n <= points:
        return x, y
    width = -(-n // (points // 2))
    buckets = -(-n // width)
    grid = np.pad(y, (0, buckets * width - n), mode="edge").reshape(buckets, width)
    starts = np.arange(buckets) * width
    keep = np.concatenate(([0, n - 1], starts + grid.argmin(axis=1), starts + grid.argmax(axis=1)))
    keep = np.unique(np.minimum(keep, n - 1))
    return x[keep], y[keep]


def log_scale(values: np.ndarray) -> bool:
    """Whether finite ``values`` are all positive and span more than ``LOG_DECADES`` decades."""
    return len(values) > 1 and values.min() > 0 and values.max() > values.min() * 10**LOG_DECADES


def _panel(ax: Axes, tag: str, steps: np.ndarray, values: np.ndarray) -> None:
    from matplotlib.ticker import MaxNLocator

    finite = np.isfinite(values)
    x, y = steps[finite], values[finite]
    bad = np.count_nonzero(~finite)
    color = "tab:blue"
    marker = "o" if len(x) == 1 else None
    if len(x):
        ax.plot(*decimate(x, y), color=color, alpha=0.3, linewidth=0.8, marker=marker)
        ax.plot(*decimate(x, np.asarray(smooth(y.tolist()))), color=color, linewidth=1.3, marker=marker)
        if log_scale(y):
            ax.set_yscale("log")
    else:
        ax.set_yticks([])  # nothing finite: no value scale to show
    if bad:
        edge = ax.get_xaxis_transform()  # x in steps, y from 0 (bottom) to 1 (top) of the panel
        for where, mask in ((1.0, ~finite & ~np.isneginf(values)), (0.0, np.isneginf(values))):
            xs = steps[mask]
            if len(xs):
                xs = xs[:: -(-len(xs) // POINTS)]
                ax.plot(
                    xs, np.full(len(xs), where), "x", color="red", markersize=5, transform=edge, clip_on=False
                )
    short = tag if len(tag) <= TITLE_CHARS else "…" + tag[-(TITLE_CHARS - 1) :]
    ax.set_title(short, loc="left", fontsize=9, pad=9)
    last = f"{values[-1]:.4g}" if len(values) else ""
    note = f"{bad} NaN/Inf · last {last}" if bad else f"last {last}"
    ax.set_title(note, loc="right", fontsize=8, pad=9, color="red" if bad else "dimgray")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=7)
    ax.grid(True, alpha=0.25, linewidth=0.5)


def _write(fig: Figure, out: str, ext: str) -> None:
    """Saves ``fig`` whole: under a temporary name beside ``out``, then renamed over it."""
    try:
        atomic_write(out, lambda tmp: fig.savefig(tmp, format=ext, dpi=100))
    except OSError as err:
        raise DualwatchError(f"cannot write {out}: {err.strerror or err}") from None
