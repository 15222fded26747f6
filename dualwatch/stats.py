"""The stats engine: every metric defined once, whatever framework fed the table.

Backends hand over one ``[P, len(Col)]`` float64 table per check (sums, sums of
squares, centred sums of squares, extremes, non-finite counts, snapshot
differences). Everything users see is derived here with numpy on the host, so
names and semantics cannot drift between PyTorch and Paddle.

Conventions: ``*_std`` is the population standard deviation (ddof=0, as numpy),
so a 1-element tensor has std 0; a NaN anywhere in a tensor makes its mean, std,
min, max and norm NaN (as numpy), and ``*_nonfinite`` says how many values are
NaN/Inf; ``weight_change`` is the mean absolute change since the previous check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dualwatch.backends.base import Col, ParamInfo
from dualwatch.health import Health, Thresholds, judge

GRADIENT = "train/gradient"
MODEL = "Model"


@dataclass(frozen=True)
class Report:
    """The outcome of one check: flat scalar tags and the health verdict."""

    step: int
    scalars: dict[str, float]
    health: Health


class StatsEngine:
    """Turns reduction tables into tagged scalars and a health verdict.

    ``prefix`` heads per-parameter tags (``<prefix>/<name>/<stat>``);
    ``local_names`` are the names shown in those tags (relative to the watched
    submodule), ``selected`` marks the parameters that get per-parameter tags,
    and ``groups`` gives each parameter's group (or None).
    """

    def __init__(
        self,
        params: Sequence[ParamInfo],
        *,
        selected: Sequence[bool],
        local_names: Sequence[str],
        groups: Sequence[str | None],
        group_names: Sequence[str],
        prefix: str,
        log_weights: bool = True,
        log_gradients: bool = True,
        thresholds: Thresholds | None = None,
    ) -> None:
        self.params = list(params)
        self.selected = np.asarray(selected, dtype=bool)
        self.local_names = list(local_names)
        self.prefix = prefix
        self.log_weights = log_weights
        self.log_gradients = log_gradients
        self.thresholds = thresholds or Thresholds()
        self.trainable = np.array([p.trainable for p in self.params], dtype=bool)
        self.group_names = list(group_names)
        self.group_of = list(groups)

    def report(self, table: np.ndarray, step: int) -> Report:
        """Every scalar of one check, plus the verdict."""
        scalars: dict[str, float] = {}
        n = table[:, Col.NUMEL]
        has_grad = table[:, Col.HAS_GRAD] == 1.0
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            for row in np.flatnonzero(self.selected):
                base = f"{self.prefix}/{self.local_names[row]}/"
                if self.log_weights:
                    scalars.update(_tensor_stats(base + "weight_", table[row], Col.W_SUM, n[row]))
                    if not math.isnan(table[row, Col.W_ABSDIFF]):
                        scalars[base + "weight_change"] = table[row, Col.W_ABSDIFF] / n[row]
                if self.log_gradients and has_grad[row]:
                    scalars.update(_tensor_stats(base + "grad_", table[row], Col.G_SUM, n[row]))
                    scalars[base + "grad_norm"] = math.sqrt(table[row, Col.G_SUMSQ])
            grad_sq = np.where(has_grad, table[:, Col.G_SUMSQ], 0.0)
            total_sq = float(grad_sq.sum())
            global_norm = math.sqrt(total_sq)
            extremes = np.abs(table[has_grad][:, [Col.G_MIN, Col.G_MAX]])
            max_grad = float(extremes.max()) if extremes.size else 0.0
            grad_nonfinite = float(table[has_grad, Col.G_NONFINITE].sum())
            weight_nonfinite = float(table[:, Col.W_NONFINITE].sum())
            scalars[f"{GRADIENT}/total_norm"] = global_norm
            scalars[f"{GRADIENT}/max_grad"] = max_grad
            scalars[f"{GRADIENT}/nonfinite"] = grad_nonfinite
            for group in self.group_names:
                rows = [i for i, g in enumerate(self.group_of) if g == group]
                group_sq = float(grad_sq[rows].sum())
                scalars[f"{GRADIENT}/{group}/norm"] = math.sqrt(group_sq)
                scalars[f"{GRADIENT}/{group}/share"] = group_sq / total_sq if total_sq > 0 else 0.0
            scalars[f"{MODEL}/Gradient_Norm"] = global_norm
            scalars[f"{MODEL}/Parameter_Norm"] = math.sqrt(float(table[:, Col.W_SUMSQ].sum()))
            scalars[f"{MODEL}/Total_Parameters"] = float(n.sum())
            scalars[f"{MODEL}/Trainable_Parameters"] = float(n[self.trainable].sum())
            scalars[f"{MODEL}/Nonfinite_Weights"] = weight_nonfinite
        health = self._judge(table, global_norm, has_grad)
        scalars[f"{GRADIENT}/health"] = float(health.verdict.code)
        return Report(step=step, scalars={tag: float(v) for tag, v in scalars.items()}, health=health)

    def _judge(self, table: np.ndarray, global_norm: float, has_grad: np.ndarray) -> Health:
        names = [p.name for p in self.params]
        bad = (table[:, Col.W_NONFINITE] > 0) | (has_grad & (table[:, Col.G_NONFINITE] > 0))
        first_bad = names[int(np.argmax(bad))] if bad.any() else None
        zero = has_grad & (table[:, Col.G_MIN] == 0.0) & (table[:, Col.G_MAX] == 0.0)
        unchanged = has_grad & ~zero & (table[:, Col.W_ABSDIFF] == 0.0)
        no_grad = ~has_grad & self.trainable
        pick = self.selected
        return judge(
            global_norm,
            self.thresholds,
            first_nonfinite=first_bad,
            zero_grad=[names[i] for i in np.flatnonzero(zero & pick)],
            not_updating=[names[i] for i in np.flatnonzero(unchanged & pick)],
            no_grad=[names[i] for i in np.flatnonzero(no_grad & pick)],
            any_grad=bool(has_grad.any()),
        )


def _tensor_stats(base: str, row: np.ndarray, first: Col, n: float) -> dict[str, float]:
    """mean/std/min/max of one tensor from its row of the table."""
    total, _, m2, lo, hi, _ = row[first : first + 6]
    return {
        base + "mean": total / n,
        base + "std": math.sqrt(max(m2, 0.0) / n) if not math.isnan(m2) else math.nan,
        base + "min": lo,
        base + "max": hi,
    }
