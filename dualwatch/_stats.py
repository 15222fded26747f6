"""The stats engine: every metric defined once, whatever framework fed the table.

Backends hand over one ``[P, len(Col)]`` float64 table per check (sums, sums of
squares, centred sums of squares, extremes, non-finite counts, snapshot
differences). Everything users see is derived here with numpy on the host, so
names and semantics cannot drift between PyTorch and Paddle.

Conventions: ``*_std`` is the sample standard deviation (ddof=1, as ``torch.std`` and
``paddle.std`` give by default; :func:`~dualwatch._table.sample_std`), and a 1-element tensor
has std 0; a NaN anywhere in a tensor makes its mean, std, min, max and norm NaN (as numpy),
and ``*_nonfinite`` says how many values are NaN/Inf; ``weight_change`` is the mean absolute
change since the previous check.
An empty parameter (``nn.Linear(0, 3)``'s weight) adds 0 to every norm and total and gets no
per-parameter tags: a mean, std, min or max of no values is undefined, and a NaN logged for
it would read as a broken run (the monitor alerts on any NaN tag) while nothing is wrong.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dualwatch._health import Health, Thresholds, judge
from dualwatch._table import Col, ParamInfo, sample_std
from dualwatch._tags import GRADIENT, HEALTH, MODEL, PARAMETER_STATS, TOTAL_NORM


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
        self.log_weights = log_weights
        self.log_gradients = log_gradients
        self.thresholds = thresholds or Thresholds()
        self.trainable = np.array([p.trainable for p in self.params], dtype=bool)
        self.group_rows = {g: [i for i, name in enumerate(groups) if name == g] for g in group_names}
        self.rows = np.flatnonzero(self.selected)
        self.tags = np.array(
            [[f"{prefix}/{local_names[i]}/{stat}" for stat in PARAMETER_STATS] for i in self.rows],
            dtype=object,
        ).reshape(len(self.rows), len(PARAMETER_STATS))
        self.seen = False  # whether a check ran before (weight_change needs one)

    def report(self, table: np.ndarray, step: int) -> Report:
        """Every scalar of one check, plus the verdict."""
        has_grad = table[:, Col.HAS_GRAD] == 1.0
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            scalars = self._per_parameter(table, has_grad)
            n = table[:, Col.NUMEL]
            grad_sq = np.where(has_grad, table[:, Col.G_SUMSQ], 0.0)
            total_sq = float(grad_sq.sum())
            global_norm = math.sqrt(total_sq)
            extremes = np.abs(table[has_grad][:, [Col.G_MIN, Col.G_MAX]])
            scalars[TOTAL_NORM] = global_norm
            scalars[f"{GRADIENT}/max_grad"] = float(extremes.max()) if extremes.size else 0.0
            scalars[f"{GRADIENT}/nonfinite"] = float(table[has_grad, Col.G_NONFINITE].sum())
            for group, rows in self.group_rows.items():
                group_sq = float(grad_sq[rows].sum())
                scalars[f"{GRADIENT}/{group}/norm"] = math.sqrt(group_sq)
                scalars[f"{GRADIENT}/{group}/share"] = group_sq / total_sq if total_sq > 0 else 0.0
            scalars[f"{MODEL}/Gradient_Norm"] = global_norm
            weight_sq = np.where(n > 0, table[:, Col.W_SUMSQ], 0.0)
            scalars[f"{MODEL}/Parameter_Norm"] = math.sqrt(float(weight_sq.sum()))
            scalars[f"{MODEL}/Total_Parameters"] = float(n.sum())
            scalars[f"{MODEL}/Trainable_Parameters"] = float(n[self.trainable].sum())
            scalars[f"{MODEL}/Nonfinite_Weights"] = float(table[:, Col.W_NONFINITE].sum())
        health = self._judge(table, global_norm, has_grad)
        scalars[HEALTH] = float(health.verdict.code)
        return Report(step=step, scalars=scalars, health=health)

    def _per_parameter(self, table: np.ndarray, has_grad: np.ndarray) -> dict[str, float]:
        """``<prefix>/<name>/<stat>`` of the selected rows, a column at a time, in parameter order."""
        t = table[self.rows]
        n = t[:, Col.NUMEL]
        values = np.column_stack(
            [
                t[:, Col.W_SUM] / n,
                sample_std(t[:, Col.W_M2], n),
                t[:, Col.W_MIN],
                t[:, Col.W_MAX],
                t[:, Col.W_ABSDIFF] / n,
                t[:, Col.G_SUM] / n,
                sample_std(t[:, Col.G_M2], n),
                t[:, Col.G_MIN],
                t[:, Col.G_MAX],
                np.sqrt(t[:, Col.G_SUMSQ]),
            ]
        )
        keep = np.zeros(values.shape, dtype=bool)
        keep[:, :4] = self.log_weights & (n > 0)[:, None]
        # weight_change exists from the second check on; a NaN weight makes it NaN, not absent.
        keep[:, 4] = (
            self.log_weights
            & (n > 0)
            & (~np.isnan(t[:, Col.W_ABSDIFF]) | (t[:, Col.W_NONFINITE] > 0) & self.seen)
        )
        keep[:, 5:] = (self.log_gradients & has_grad[self.rows])[:, None]
        self.seen = True
        return dict(zip(self.tags[keep].tolist(), values[keep].tolist()))

    def _judge(self, table: np.ndarray, global_norm: float, has_grad: np.ndarray) -> Health:
        names = [p.name for p in self.params]
        bad = (table[:, Col.W_NONFINITE] > 0) | (has_grad & (table[:, Col.G_NONFINITE] > 0))
        first_bad = names[int(np.argmax(bad))] if bad.any() else None
        zero = has_grad & (table[:, Col.G_MIN] == 0.0) & (table[:, Col.G_MAX] == 0.0)
        unchanged = has_grad & ~zero & (table[:, Col.W_ABSDIFF] == 0.0)
        no_grad = ~has_grad & self.trainable & (table[:, Col.NUMEL] > 0)  # an empty one has nothing to get
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
