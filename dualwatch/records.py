"""The format-neutral records a :class:`dualwatch.Writer` hands to its sinks.

Every record carries one step and one wall time in integer milliseconds (VisualDL's
resolution), so VisualDL, TensorBoard and JSON lines agree exactly on when it was written.
Payloads are computed once (histogram counts, PNG bytes, curve counts) and shared by every sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable, Union

import numpy as np


def wall_ms(seconds: float) -> int:
    """A wall time in seconds as the integer milliseconds every record carries (rounded)."""
    return int(float(seconds) * 1000 + 0.5)


@dataclass
class Scalars:
    """Scalars written at one step and millisecond: one TensorBoard event, one JSON line,
    one VisualDL record per tag (VisualDL reads only the first value of a record)."""

    step: int
    wall_ms: int
    values: dict[str, float] = field(default_factory=dict)


@dataclass
class Histogram:
    """Counts over ``len(counts)`` equal-width buckets between ``edges[0]`` and ``edges[-1]``,
    plus the moments TensorBoard shows; non-finite values are counted apart, not bucketed."""

    tag: str
    step: int
    wall_ms: int
    counts: np.ndarray
    edges: np.ndarray
    num: int
    sum: float
    sum_squares: float
    nonfinite: int = 0


@dataclass
class Image:
    """One PNG, encoded once for both viewers."""

    tag: str
    step: int
    wall_ms: int
    png: bytes
    height: int
    width: int
    channels: int


@dataclass
class Text:
    tag: str
    step: int
    wall_ms: int
    text: str


@dataclass
class HParams:
    """Hyper-parameters of the run and the scalar tags that hold its metrics."""

    step: int
    wall_ms: int
    hparams: dict[str, Union[bool, int, float, str]]
    metrics: list[str]


# -- model graphs -----------------------------------------------------------------------------------


@dataclass
class GraphNode:
    """One operation of a traced model, in the form both viewers fold into a box per layer.

    ``name`` is unique and ``/``-separated: the layers that hold the operation, outermost first,
    then the operation itself (``Net/Linear[fc]/linear_0``). ``inputs`` name the nodes it reads.
    """

    name: str
    op: str
    inputs: list[str] = field(default_factory=list)
    #: the output's shape (-1 where only the run decides), None when the tracer gives none
    shape: list[int] | None = None
    #: what the framework says about the operation (constants, strides), as text
    attrs: str = ""


@dataclass
class Graph:
    """A model's graph, traced once. ``native`` holds, by format name, what a viewer's own tools
    made (torch's GraphDef for ``"tensorboard"``, VisualDL's graph JSON for ``"visualdl"``), which
    is written as it is; a format without one builds its own from ``nodes``."""

    step: int
    wall_ms: int
    framework: str
    nodes: list[GraphNode]
    native: dict[str, bytes] = field(default_factory=dict)


# -- end of model graphs ----------------------------------------------------------------------------
# -- curves and embeddings (add_pr_curve, add_roc_curve, add_embedding) -------------------------


@dataclass
class PRCurve:
    """A precision-recall curve at ``len(tp)`` thresholds evenly spaced over [0, 1], computed once
    (:mod:`dualwatch._curves`) as TensorBoard's ``pr_curves`` summary computes it.

    Counts are floats because weights make them fractional; VisualDL stores them rounded.
    """

    tag: str
    step: int
    wall_ms: int
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    precision: np.ndarray
    recall: np.ndarray


@dataclass
class ROCCurve:
    """A ROC curve from the same threshold counts as :class:`PRCurve`: ``tpr = tp / (tp + fn)`` and
    ``fpr = fp / (fp + tn)``. Only VisualDL shows ROC curves; TensorBoard has no plugin for them."""

    tag: str
    step: int
    wall_ms: int
    tp: np.ndarray
    fp: np.ndarray
    tn: np.ndarray
    fn: np.ndarray
    tpr: np.ndarray
    fpr: np.ndarray


@dataclass
class Embedding:
    """Points for the viewers' projectors: the rows of ``mat`` ([N, D] float32), each labelled by one
    row of ``metadata`` (one str per column; None: no labels). ``header`` names the columns when
    there are several. ``sprite`` is a PNG of one image per point in a square grid, each
    ``sprite_size`` (width, height) pixels; only TensorBoard's projector shows it."""

    tag: str
    step: int
    wall_ms: int
    mat: np.ndarray
    metadata: list[list[str]] | None = None
    header: list[str] | None = None
    sprite: bytes | None = None
    sprite_size: tuple[int, int] | None = None


# -- end of curves and embeddings -----------------------------------------------------------------


Record = Union[Scalars, Histogram, Image, Text, HParams, Graph, PRCurve, ROCCurve, Embedding]


def grouped(points: Iterable[tuple[str, float, int, float]]) -> list[Scalars]:
    """Consecutive ``(tag, value, step, wall seconds)`` points of one step and millisecond as one record.

    A tag seen again within a step starts a new record, so no value is overwritten. Wall times
    become milliseconds by :func:`wall_ms`'s rule, written out here: it runs once per scalar.
    """
    records: list[Scalars] = []
    step = ms = values = None
    for tag, value, point_step, wall in points:
        point_ms = int(wall * 1000 + 0.5)
        if point_step != step or point_ms != ms or tag in values:
            record = Scalars(point_step, point_ms, {})
            records.append(record)
            step, ms, values = point_step, point_ms, record.values
        values[tag] = value
    return records


def binned(tag: str, step: int, wall_ms: int, counts: Any, edges: Any) -> Histogram:
    """A histogram known only by its buckets (as VisualDL stores one): the moments are taken at
    the bucket midpoints."""
    counts, edges = np.asarray(counts, dtype=np.float64), np.asarray(edges, dtype=np.float64)
    mids = (edges[:-1] + edges[1:]) / 2
    num, total, squares = round(float(counts.sum())), float(counts @ mids), float(counts @ mids**2)
    return Histogram(tag, step, wall_ms, counts, edges, num, total, squares)
