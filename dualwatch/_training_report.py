"""The ESAM training guide's framed report, for every training loop.

Its "Enhanced Training Stats - Iter N" block shows, in this order: the loss breakdown (each
named loss, with its share of the total), the user's stat groups (``fusion``, ``projection``:
whatever numbers the model reports), gradient health from the latest check (verdict, each
group's norm and share, total norm, largest gradient) and the guide's table of normal ranges,
applied to all of these numbers. It only formats numbers a :class:`~dualwatch.Watcher` already
has, so the MMEngine hook, the Paddle and Lightning callbacks and a plain loop print the same
block; this module imports no framework.
"""

from __future__ import annotations

import math
from fnmatch import fnmatchcase
from typing import Any, Mapping, Sequence, Union

from dualwatch._health import Verdict
from dualwatch._rules import Rule
from dualwatch._stats import Report
from dualwatch._tags import DETAILED_LOSS, GRADIENT, MODEL, TOTAL_NORM

TITLE = "Enhanced Training Stats"
RULE = "=" * 80
STATUS = {Verdict.HEALTHY: "✅", Verdict.EXPLODING: "💥", Verdict.VANISHING: "🧊", Verdict.NAN: "❌"}
#: the guide's heading marks; other groups get 🎯 as its fusion group does
GROUP_MARKS = {"projection": "📍"}
#: loss names taken as the total the others are shares of (else the total is their sum)
TOTAL_LOSSES = ("loss", "total_loss")
#: a stat whose name ends so, with a value in [0, 1], is shown as a percentage (85.3%)
PERCENT_SUFFIXES = ("_rate", "_share", "_fraction")

Number = Union[int, float]
GRADIENT_NORM = f"{MODEL}/Gradient_Norm"  # the VisualDL guide's name of the total gradient norm


def number(value: Any) -> Number:
    """An int or float from a Python number or a one-element tensor or array (``.item()``).

    Integers stay integers, so counts print as counts (``total_points: 12546``).
    """
    value = value.item() if hasattr(value, "item") else value
    if isinstance(value, bool) or not isinstance(value, int):
        return float(value)
    return value


def stat_tags(group: str, values: Mapping[str, Number]) -> dict[str, float]:
    """``train/<group>/<name>`` for each of a stat group's values (the guide's TensorBoard names)."""
    return {f"train/{group}/{name}": float(value) for name, value in values.items()}


def render(
    step: int,
    losses: Mapping[str, Number],
    stats: Mapping[str, Mapping[str, Number]],
    check: Report | None,
    group_names: Sequence[str],
    rules: Sequence[Rule] = (),
) -> str:
    """The framed block at ``step``; ``check`` is the latest check (its gradients), or None."""
    lines = [RULE, f"📊 {TITLE} - Iter {step}", RULE, "🔥 Detailed Loss Breakdown:"]
    lines += _loss_lines(losses)
    for group, values in stats.items():
        lines.append(f"{GROUP_MARKS.get(group, '🎯')} {group}:")
        lines += [f"  {name:<20}: {_format(name, value)}" for name, value in values.items()]
    lines.append("🔥 Gradient Health:")
    current = check is not None and check.step == step
    if not current:
        lines.append("  (no gradient check at this iteration)")
    else:
        verdict = check.health.verdict
        lines.append(f"  status: {STATUS[verdict]} {verdict.value}")
        for group in group_names:
            norm, share = (check.scalars[f"{GRADIENT}/{group}/{key}"] for key in ("norm", "share"))
            lines.append(f"  {group}: {norm:.4f} ({share:.1%})")
        lines.append(f"  total grad norm: {check.scalars[TOTAL_NORM]:.4f}")
        lines.append(f"  max grad: {check.scalars[f'{GRADIENT}/max_grad']:.4f}")
    if rules:
        values = {f"{DETAILED_LOSS}/{name}": float(v) for name, v in losses.items()}
        for group, group_values in stats.items():
            values.update(stat_tags(group, group_values))
        if current:
            values.update(check.scalars)
            # The VisualDL guide's name of the total norm is judged only where no rule judges it
            # under its own name: the guide's table has both, and one number gives one line.
            if any(fnmatchcase(TOTAL_NORM, rule.glob) for rule in rules):
                values.pop(GRADIENT_NORM, None)
        lines.append("📏 Normal Ranges:")
        lines += _range_lines(values, rules)
    lines.append(RULE)
    return "\n".join(lines)


def _loss_lines(losses: Mapping[str, Number]) -> list[str]:
    """Each loss, and its percentage of the total where the total is known and non-zero."""
    named_total = next((name for name in TOTAL_LOSSES if name in losses), None)
    parts = {name: float(v) for name, v in losses.items() if name != named_total}
    total = float(losses[named_total]) if named_total else math.fsum(parts.values())
    shown = named_total is not None or len(parts) > 1  # a lone loss is 100% of itself
    lines = []
    for name, value in losses.items():
        line = f"  {name:<20}: {float(value):.6f}"
        if name != named_total and shown and total and math.isfinite(total):
            line += f" ({float(value) / total:.1%})"
        lines.append(line)
    return lines


def _format(name: str, value: Number) -> str:
    if isinstance(value, int):
        return str(value)
    if name.endswith(PERCENT_SUFFIXES) and 0.0 <= value <= 1.0:
        return f"{value:.1%}"
    return f"{value:.4f}"


def _range_lines(values: Mapping[str, float], rules: Sequence[Rule]) -> list[str]:
    """One line per value outside its rule's range (alert or warning), else one all-clear line."""
    lines, judged = [], 0
    for rule in rules:
        for tag in sorted(t for t in values if fnmatchcase(t, rule.glob)):
            judged += 1
            value = values[tag]
            verdict = rule.judge(value) if math.isfinite(value) else ("alert", "is not finite")
            if verdict is not None:
                level, why = verdict
                mark = "🚨" if level == "alert" else "⚠️"
                label = f" ({rule.label})" if rule.label else ""
                lines.append(f"  {mark} {tag} = {value:.4g} {why}{label}")
    if not lines:
        lines.append(f"  all {judged} checked values within range" if judged else "  no value has a rule")
    return lines
