"""The format-neutral records a :class:`~dualwatch.writer.Writer` hands to its sinks.

Every record carries one step and one wall time in integer milliseconds (VisualDL's
resolution), so VisualDL, TensorBoard and JSON lines agree exactly on when it was written.
Payloads are computed once (histogram counts, PNG bytes) and shared by every sink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

import numpy as np


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


Record = Union[Scalars, Histogram, Image, Text, HParams]
