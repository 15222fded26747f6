"""PR and ROC curves: inputs checked and copied on the caller's thread, counts computed once on the
writer's, as TensorBoard's ``pr_curves`` summary computes them.

TensorBoard's ``summary.pb`` (torch's ``compute_curve`` is a copy of it): a prediction ``p`` falls
in bucket ``floor(p * (num_thresholds - 1))``, and the weighted positives and negatives of the
buckets are summed from the top, so threshold ``i`` counts every prediction at or above
``i / (num_thresholds - 1)`` as positive. The multiplication is done in the predictions' own
float type, as there, so a prediction on a bucket boundary lands where TensorBoard puts it.
VisualDL's ``compute_curve`` is the same code but uses ``np.float`` (gone in numpy 2): it is
not called.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from dualwatch.backends import framework_of
from dualwatch.records import PRCurve, ROCCurve

#: TensorBoard's floor under a precision's or recall's denominator (no division by zero)
MINIMUM_COUNT = 1e-7


class CurveInputs(NamedTuple):
    """Private copies of a curve's inputs: later changes to the caller's arrays do not reach them."""

    labels: np.ndarray
    predictions: np.ndarray
    num_thresholds: int
    weights: np.ndarray | float


def inputs(labels: Any, predictions: Any, num_thresholds: Any, weights: Any) -> CurveInputs:
    """Checks and copies what ``add_pr_curve`` / ``add_roc_curve`` were given; wrong input raises here,
    on the caller's thread, not later on the writer's."""
    if isinstance(num_thresholds, bool) or not isinstance(num_thresholds, int) or num_thresholds < 2:
        raise ValueError(f"num_thresholds= is an int >= 2 (the points of the curve), got {num_thresholds!r}")
    labels, predictions = _host(labels, "labels"), _host(predictions, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(
            f"labels and predictions need the same shape (one prediction per label), got labels "
            f"{labels.shape} and predictions {predictions.shape}"
        )
    if labels.dtype != np.bool_:
        outside = labels[(labels != 0) & (labels != 1)]
        if outside.size:
            raise ValueError(
                f"labels are 0/1 or bool, got {outside.flat[0]!r} among them; for class ids pass "
                f"labels == positive_class"
            )
    if not np.issubdtype(predictions.dtype, np.floating):
        predictions = predictions.astype(np.float64)
    if predictions.size and not (predictions.min() >= 0 and predictions.max() <= 1):  # NaN fails too
        raise ValueError(
            f"predictions are probabilities in [0, 1], got values from {predictions.min()} to "
            f"{predictions.max()}; apply a sigmoid (or softmax) to scores first"
        )
    if weights is None:
        return CurveInputs(labels, predictions, num_thresholds, 1.0)
    weights = _host(weights, "weights")
    try:
        fits = np.broadcast_shapes(weights.shape, labels.shape) == labels.shape
    except ValueError:
        fits = False
    if not fits:
        raise ValueError(
            f"weights= is a number or an array of the labels' shape {labels.shape} (or one that "
            f"broadcasts to it), got shape {weights.shape}"
        )
    return CurveInputs(labels, predictions, num_thresholds, weights)


def _host(value: Any, name: str) -> np.ndarray:
    """A numeric numpy copy of an array, list or framework tensor (detached, in host memory)."""
    framework = framework_of(value)
    array = np.array(framework.to_numpy(value) if framework is not None else value)
    if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.number):
        raise TypeError(
            f"{name} must be numbers or bools (an array, list or tensor), got {array.dtype} values"
        )
    return array


def counts(curve: CurveInputs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives, true and false negatives at each threshold (float64)."""
    n = curve.num_thresholds
    buckets = np.floor(curve.predictions * (n - 1)).astype(np.int64).ravel()
    positive = curve.labels.astype(np.float64)
    tp = np.cumsum(np.bincount(buckets, (positive * curve.weights).ravel(), n)[::-1])[::-1]
    fp = np.cumsum(np.bincount(buckets, ((1.0 - positive) * curve.weights).ravel(), n)[::-1])[::-1]
    return tp, fp, fp[0] - fp, tp[0] - tp


def pr_curve(tag: str, step: int, wall_ms: int, curve: CurveInputs) -> PRCurve:
    tp, fp, tn, fn = counts(curve)
    precision = tp / np.maximum(MINIMUM_COUNT, tp + fp)
    recall = tp / np.maximum(MINIMUM_COUNT, tp + fn)
    return PRCurve(tag, step, wall_ms, tp, fp, tn, fn, precision, recall)


def roc_curve(tag: str, step: int, wall_ms: int, curve: CurveInputs) -> ROCCurve:
    """The textbook rates. VisualDL's own ``compute_roc_curve`` divides true positives by
    ``tn + fp``, which is not a rate; its viewer draws whatever ``tpr`` and ``fpr`` hold."""
    tp, fp, tn, fn = counts(curve)
    tpr = tp / np.maximum(MINIMUM_COUNT, tp + fn)
    fpr = fp / np.maximum(MINIMUM_COUNT, fp + tn)
    return ROCCurve(tag, step, wall_ms, tp, fp, tn, fn, tpr, fpr)
