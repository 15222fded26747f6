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

The tag budget: ``stats`` picks which of :data:`~dualwatch._tags.PARAMETER_STATS` are logged
(all ten by default, as the StableSR edge monitor callback logs them), and ``aggregate=d`` logs
them per module at depth ``d`` instead of per parameter (``<prefix>/<module>/<stat>``). A
module's row is combined exactly from its parameters' rows (:func:`module_rows`), so its
``grad_norm`` is the norm of all its gradients as one vector, its ``weight_mean`` the mean of all
its weights, and so on. The health findings still name single parameters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dualwatch._health import Health, Thresholds, judge, negligible
from dualwatch._table import Col, ParamInfo, combine_shards, sample_std
from dualwatch._tags import (
    GRADIENT,
    HEALTH,
    MODEL,
    NEGLIGIBLE_GRAD_COUNT,
    NOT_UPDATING_COUNT,
    PARAMETER_STATS,
    TOTAL_NORM,
    ZERO_GRAD_COUNT,
)


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
    and ``groups`` gives each parameter's group (or None). ``stats`` are the statistics
    logged per tag row; ``aggregate=d`` makes a tag row per module at depth ``d`` (names from
    :func:`module_of`) instead of per parameter.
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
        stats: Sequence[str] = PARAMETER_STATS,
        aggregate: int | None = None,
    ) -> None:
        self.params = list(params)
        self.selected = np.asarray(selected, dtype=bool)
        self.log_weights = log_weights
        self.log_gradients = log_gradients
        self.thresholds = thresholds or Thresholds()
        self.trainable = np.array([p.trainable for p in self.params], dtype=bool)
        self.group_rows = {g: [i for i, name in enumerate(groups) if name == g] for g in group_names}
        self.rows = np.flatnonzero(self.selected)
        self.stat_mask = np.array([stat in stats for stat in PARAMETER_STATS], dtype=bool)
        self.modules: list[np.ndarray] | None = None
        row_names = [local_names[i] for i in self.rows]
        if aggregate is not None:
            by_module: dict[str, list[int]] = {}
            for i in self.rows:
                by_module.setdefault(module_of(local_names[i], aggregate), []).append(int(i))
            row_names = list(by_module)
            self.modules = [np.array(rows) for rows in by_module.values()]
        self.tags = np.array(
            [[f"{prefix}/{name}/{stat}" for stat in PARAMETER_STATS] for name in row_names],
            dtype=object,
        ).reshape(len(row_names), len(PARAMETER_STATS))
        self.seen = False  # whether a check ran before (weight_change needs one)

    def report(self, table: np.ndarray, step: int) -> Report:
        """Every scalar of one check, plus the verdict. The model-level tags come first, so readers
        listing tags as they first appear (``metrics.jsonl``, the viewers' tag lists, tbparse) show
        the few summary curves ahead of the many per-parameter ones."""
        has_grad = table[:, Col.HAS_GRAD] == 1.0
        scalars: dict[str, float] = {}
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            per_parameter = self._per_parameter(table)
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
        scalars[ZERO_GRAD_COUNT] = float(len(health.zero_grad))
        scalars[NEGLIGIBLE_GRAD_COUNT] = float(len(health.negligible_grad))
        scalars[NOT_UPDATING_COUNT] = float(len(health.not_updating))
        return Report(step=step, scalars={**scalars, **per_parameter}, health=health)

    def _per_parameter(self, table: np.ndarray) -> dict[str, float]:
        """``<prefix>/<name>/<stat>`` of the selected rows (or of their modules), a column at a
        time, in parameter order; only the chosen ``stats``."""
        t = table[self.rows] if self.modules is None else module_rows(table, self.modules)
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
        keep[:, 5:] = (self.log_gradients & (t[:, Col.HAS_GRAD] == 1.0))[:, None]
        keep &= self.stat_mask
        self.seen = True
        return dict(zip(self.tags[keep].tolist(), values[keep].tolist()))

    def _judge(self, table: np.ndarray, global_norm: float, has_grad: np.ndarray) -> Health:
        """Per parameter: no gradient (information), a weight held still by a negligible gradient
        (information) or by a non-negligible one (not updating: an alarm); the rule is
        :func:`~dualwatch._health.negligible`'s, as in the monitor."""
        names = [p.name for p in self.params]
        bad = (table[:, Col.W_NONFINITE] > 0) | (has_grad & (table[:, Col.G_NONFINITE] > 0))
        first_bad = names[int(np.argmax(bad))] if bad.any() else None
        n = table[:, Col.NUMEL]
        no_grad = ~has_grad & self.trainable & (n > 0)  # an empty one has nothing to get
        with np.errstate(invalid="ignore", divide="ignore"):
            small = has_grad & negligible(
                np.sqrt(table[:, Col.G_SUMSQ] / n), np.sqrt(table[:, Col.W_SUMSQ] / n)
            )
        zero = has_grad & (table[:, Col.G_MIN] == 0.0) & (table[:, Col.G_MAX] == 0.0)
        # absent while others have one: not used in the forward pass (torch leaves such a grad None)
        zero |= no_grad & has_grad.any()
        still = has_grad & (table[:, Col.W_ABSDIFF] == 0.0)  # not one element moved since the last check
        pick = self.selected
        return judge(
            global_norm,
            self.thresholds,
            first_nonfinite=first_bad,
            zero_grad=[names[i] for i in np.flatnonzero(zero & pick)],
            negligible_grad=[names[i] for i in np.flatnonzero(still & small & ~zero & pick)],
            not_updating=[names[i] for i in np.flatnonzero(still & ~small & pick)],
            no_grad=[names[i] for i in np.flatnonzero(no_grad & pick)],
            any_grad=bool(has_grad.any()),
        )


def module_of(name: str, depth: int) -> str:
    """The module at ``depth`` that parameter ``name`` belongs to: ``backbone.0.weight`` is in
    ``backbone`` at depth 1 and ``backbone.0`` at depth 2 (and deeper); a parameter held by the
    watched module itself (``scale``) has no module below it and keeps its own name."""
    path = name.split(".")[:-1]
    return ".".join(path[:depth]) if path else name


def module_rows(table: np.ndarray, modules: Sequence[np.ndarray]) -> np.ndarray:
    """One table row per module (``modules[k]`` are its parameters' rows), combined exactly.

    The parameters of a module are the shards of one long vector, so the shard combine applies:
    sums and counts add, extremes take the extreme, M2 combines by Chan's formula. In a module
    where some parameter has a gradient, one without counts as zeros, as PyTorch defines a
    ``None`` gradient and as Paddle's ``clear_grad`` leaves it: both frameworks then log the
    same module statistics for a parameter unused in the forward pass.
    """
    width = max(len(rows) for rows in modules)
    stacked = np.zeros((width, len(modules), table.shape[1]))  # padding rows have NUMEL 0: nothing
    for k, rows in enumerate(modules):
        stacked[: len(rows), k] = table[rows]
    graded = stacked[:, :, Col.HAS_GRAD].max(axis=0) == 1.0  # modules where some parameter has one
    zeros = (stacked[:, :, Col.HAS_GRAD] == 0.0) & (stacked[:, :, Col.NUMEL] > 0) & graded
    stacked[zeros, Col.HAS_GRAD :] = 0.0
    stacked[zeros, Col.HAS_GRAD] = 1.0
    return combine_shards(stacked)
