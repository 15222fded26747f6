"""The health verdict of one check, with the advice the tools it replaces give.

The verdict comes from the global gradient norm (thresholds from the ESAM training guide:
> 10.0 exploding, < 1e-6 vanishing); any NaN/Inf gradient makes it ``nan`` and
names the first parameter (in model order) that holds one. Two per-parameter
cases from the StableSR edge monitor's troubleshooting section are told apart too:

- *no gradient* (information, not an alarm): a gradient that is exactly zero or absent while
  others have one (the parameter is not used in the forward pass, or the loss does not depend
  on it); one warning when first seen;
- *held still by a negligible gradient* (information): the weight did not move at all since the
  previous check, and its gradient is negligible beside it (below): rounding noise too small to
  move it, which is what a conv bias right before a BatchNorm gets under plain SGD;
- *not updating* (an alarm): the weight did not move at all since the previous check although
  its gradient is not negligible: the optimizer does not step it (missing from its parameter
  groups, learning rate 0, frozen by hand).

The rule, shared by the ``Watcher`` and ``dualwatch monitor``: a gradient is *negligible* when its
root mean square is at most :data:`NEGLIGIBLE_GRAD` (``sqrt(eps)`` of float32, 3.45e-4) times
the root mean square of its weight. Why that bound: a plain SGD step ``lr * g`` leaves an element
unchanged when it is below half a float32 unit of the weight (``eps / 2 * |w|``), so a weight
whose relative gradient is ``r`` stands still at every learning rate below ``eps / (2 r)``: for
``r`` at the bound that is every rate below 1.7e-4, and the smaller ``r`` the larger the rates
(1e-2 at ``r`` = 6e-6). Float precision alone explains such a weight standing still; above the
bound it takes a plain-SGD rate below 1.7e-4, or no step at all. Gradients that are zero in
exact arithmetic come out at 1e-9..1e-5 of their weight in float32 (the conv bias before a
BatchNorm), while the bugs the alarm is for (a parameter the optimizer skips, learning rate 0)
leave gradients of 1e-3..1 of the weights. Adam-like optimizers normalise the step and move even
a negligible gradient's weight, so there the weight moves and neither finding is reported.
Beside a weight that is all zeros any non-zero gradient is above the bound (any step moves it).
The bound is lr-free because the Watcher sees no optimizer; it is float32's for every dtype, as
the monitor reading the logs knows no dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Mapping, Sequence

import numpy as np

#: the relative gradient (rms of the gradient / rms of the weight) at or below which a gradient
#: is rounding noise, not a signal: ``sqrt`` of float32's machine epsilon (see the module docstring)
NEGLIGIBLE_GRAD = float(np.sqrt(np.finfo(np.float32).eps))


def negligible(grad_rms: Any, weight_rms: Any) -> Any:
    """Whether a gradient is negligible beside its weight (arrays or floats, elementwise).

    An exactly zero gradient is negligible; beside an all-zero weight any other one is not."""
    return np.asarray(grad_rms) <= NEGLIGIBLE_GRAD * np.asarray(weight_rms)


class Verdict(str, Enum):
    HEALTHY = "healthy"
    EXPLODING = "exploding"
    VANISHING = "vanishing"
    NAN = "nan"

    @property
    def code(self) -> int:
        """A number for scalar logs: 0 healthy, 1 exploding, 2 vanishing, 3 nan."""
        return list(Verdict).index(self)


@dataclass(frozen=True)
class Thresholds:
    """Global-gradient-norm bounds of the verdict (the ESAM training guide's table)."""

    exploding: float = 10.0
    vanishing: float = 1e-6

    def __post_init__(self) -> None:
        for key in ("exploding", "vanishing"):
            value = getattr(self, key)
            if isinstance(value, (bool, np.bool_)) or not isinstance(
                value, (int, float, np.integer, np.floating)
            ):
                raise TypeError(
                    f"thresholds: {key} must be a number (a global gradient norm), got "
                    f"{type(value).__name__} {value!r}: e.g. Thresholds(exploding=10.0, vanishing=1e-6)"
                )
            if not math.isfinite(value):
                raise ValueError(
                    f"thresholds: {key} must be finite, got {value!r}: a NaN or infinite bound never "
                    "fires; pass a large number (exploding=1e9) to turn the check practically off"
                )
            object.__setattr__(self, key, float(value))
        if not 0 <= self.vanishing < self.exploding:
            raise ValueError(
                f"thresholds need 0 <= vanishing < exploding, got vanishing={self.vanishing}, "
                f"exploding={self.exploding}"
            )


def thresholds_from(value: Thresholds | Mapping[str, Any] | None) -> Thresholds:
    """``Thresholds`` from itself, a ``{"exploding": .., "vanishing": ..}`` mapping or None (defaults).

    A mapping is what a config file gives; an unknown key in it would otherwise leave the
    bound it meant at its default, so it raises with the valid keys and the closest one.
    """
    if value is None:
        return Thresholds()
    if isinstance(value, Thresholds):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(
            f"thresholds= takes dualwatch.Thresholds or a dict with keys 'exploding' and/or "
            f"'vanishing', got {type(value).__name__}: e.g. thresholds={{'exploding': 5.0}}"
        )
    valid = ("exploding", "vanishing")
    unknown = [key for key in value if key not in valid]
    if unknown:
        import difflib

        hints = {str(key): difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5) for key in unknown}
        meant = "; ".join(f"{k!r}: did you mean {h[0]!r}?" for k, h in hints.items() if h)
        raise ValueError(
            f"thresholds has unknown keys {[str(k) for k in unknown]}; the valid keys are "
            f"{list(valid)}" + (f" ({meant})" if meant else "")
        )
    return Thresholds(**value)


ADVICE = {
    Verdict.EXPLODING: "Gradients are exploding: lower the learning rate, check the data normalisation, "
    "add gradient clipping (e.g. max_norm=1.0).",
    Verdict.VANISHING: "Gradients are vanishing: check that the loss depends on these parameters, "
    "that inputs reach them, and that the learning-rate schedule has not decayed to zero.",
    Verdict.NAN: "NaN/Inf found: enable stricter gradient clipping (e.g. max_norm=0.5), "
    "lower the learning rate, check the loss for log(0) or division by zero and the inputs for NaN.",
    "zero_grad": "No gradient (exactly zero, or none while other parameters have one): check that "
    "the parameter is used in the forward pass, that the inputs (e.g. the edge map) are produced "
    "and passed to this layer, that the loss contains a term that depends on it, "
    "and that requires_grad is True.",
    "negligible_grad": "Weight held still by a gradient negligible beside it (rounding noise): "
    "check that the parameter is used in the forward pass and that the loss depends on it; a conv "
    "or linear bias right before a BatchNorm has no effect (the norm removes it): build that "
    "layer with bias=False.",
    "not_updating": "Weights did not change although their gradients are not negligible: check "
    "the optimizer's parameter groups and configuration, the learning rate, and whether the layer is frozen.",
    "no_grad": "No gradient: the parameter is frozen, or w.step() ran before loss.backward() "
    "or after the gradients were cleared.",
}


@dataclass(frozen=True)
class Health:
    """What a check concluded about training health."""

    verdict: Verdict
    global_norm: float
    first_nonfinite: str | None = None
    zero_grad: tuple[str, ...] = ()
    negligible_grad: tuple[str, ...] = ()
    not_updating: tuple[str, ...] = ()
    no_grad: tuple[str, ...] = ()
    advice: tuple[str, ...] = field(default=())

    @property
    def healthy(self) -> bool:
        return self.verdict is Verdict.HEALTHY


def norm_verdict(global_norm: float, thresholds: Thresholds = Thresholds()) -> Verdict:
    """The verdict of a global gradient norm alone: the rule of a check, and of the monitor
    reading another tool's logs (which have a gradient norm but no health tag)."""
    if not math.isfinite(global_norm):
        return Verdict.NAN
    if global_norm > thresholds.exploding:
        return Verdict.EXPLODING
    if global_norm < thresholds.vanishing:
        return Verdict.VANISHING
    return Verdict.HEALTHY


def judge(
    global_norm: float,
    thresholds: Thresholds,
    *,
    first_nonfinite: str | None,
    zero_grad: list[str],
    negligible_grad: list[str],
    not_updating: list[str],
    no_grad: list[str],
    any_grad: bool,
) -> Health:
    """Turn the numbers of one check into a verdict and advice."""
    verdict = Verdict.NAN if first_nonfinite is not None else norm_verdict(global_norm, thresholds)
    if verdict is Verdict.HEALTHY and not any_grad:
        verdict = Verdict.VANISHING
    advice = [] if verdict is Verdict.HEALTHY else [ADVICE[verdict]]
    if not any_grad:
        advice.append(ADVICE["no_grad"])
    findings = {"zero_grad": zero_grad, "negligible_grad": negligible_grad, "not_updating": not_updating}
    for key, names in findings.items():
        if names:
            advice.append(f"{ADVICE[key]} ({listing(names)})")
    return Health(
        verdict=verdict,
        global_norm=global_norm,
        first_nonfinite=first_nonfinite,
        zero_grad=tuple(zero_grad),
        negligible_grad=tuple(negligible_grad),
        not_updating=tuple(not_updating),
        no_grad=tuple(no_grad),
        advice=tuple(advice),
    )


def listing(names: Sequence[str], most: int = 5) -> str:
    """``a, b, c, d, e and 3 more``: names for one line of text."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
