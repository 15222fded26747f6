"""Rules files: users' normal ranges per tag glob, which the monitor judges each tag's latest value by.

A rules file is JSON or YAML mapping tag globs to bounds, as in the ESAM BiFusion training
guide's table of normal ranges (``examples/rules_esam.json``)::

    {"train/gradient/total_norm": {"normal": [0.1, 2.0], "above": 10.0, "below": 1e-6,
                                   "label": "total gradient norm"}}

The latest value of every matching tag (``fnmatch``, case-sensitive; ``*`` also matches
``/``) is judged: above ``above`` or below ``below`` is an alert; outside ``normal`` is a
warning, or an alert when the rule gives neither ``above`` nor ``below``.

Rule sets installed with the package are named for what they check (:data:`BUILT_IN`):
``dualwatch monitor --rules esam`` is the ESAM guide's table, with no file to find.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Any

from dualwatch._errors import DualwatchError


@dataclass(frozen=True)
class Rule:
    """Bounds of one tag glob; see the module docstring for how they judge."""

    glob: str
    normal: tuple[float, float] | None = None
    above: float | None = None
    below: float | None = None
    label: str = ""

    def judge(self, value: float) -> tuple[str, str] | None:
        """``("alert" | "warning", why)`` for a finite value out of bounds, else None."""
        if self.above is not None and value > self.above:
            return "alert", f"above {self.above:g}"
        if self.below is not None and value < self.below:
            return "alert", f"below {self.below:g}"
        if self.normal is not None and not self.normal[0] <= value <= self.normal[1]:
            level = "warning" if self.above is not None or self.below is not None else "alert"
            return level, f"outside normal {self.normal[0]:g}..{self.normal[1]:g}"
        return None


def load_rules(path: str) -> tuple[Rule, ...]:
    """Reads a rules file; an unusable one raises :class:`~dualwatch.DualwatchError` saying why."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as err:
        raise DualwatchError(f"cannot read rules file {path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise DualwatchError(f"bad rules file {path}: not UTF-8 text") from None
    try:
        data = _yaml(text) if path.endswith((".yaml", ".yml")) else json.loads(text)
        return parse_rules(data)
    except RecursionError:
        raise DualwatchError(
            f"bad rules file {path}: nested too deeply; a rule is {{glob: {{normal, above, below, label}}}}"
        ) from None
    except ValueError as err:
        raise DualwatchError(f"bad rules file {path}: {err}") from None


def parse_rules(data: Any) -> tuple[Rule, ...]:
    """Rules from ``{glob: {"normal": [lo, hi], "above": x, "below": y, "label": "..."}}``."""
    if not isinstance(data, dict):
        raise ValueError("expected an object mapping tag globs to bounds")
    rules = []
    for glob, spec in data.items():
        if not isinstance(glob, str):  # YAML reads an unquoted 1 or true as a number or a boolean
            raise ValueError(
                f'rule key {glob!r} is not a tag glob but a {type(glob).__name__}: quote it, "{glob}"'
            )
        if not isinstance(spec, dict) or not spec.keys() <= {"normal", "above", "below", "label"}:
            raise ValueError(f"{glob!r}: expected an object with normal, above, below and/or label")
        normal = spec.get("normal")
        if normal is not None:
            if not (isinstance(normal, list) and len(normal) == 2):
                raise ValueError(f"{glob!r}: normal must be [low, high]")
            normal = (_bound(glob, "normal's low", normal[0]), _bound(glob, "normal's high", normal[1]))
            if normal[0] > normal[1]:
                raise ValueError(f"{glob!r}: normal's low {normal[0]:g} is above its high {normal[1]:g}")
        above, below = (_bound(glob, key, spec.get(key)) for key in ("above", "below"))
        if normal is None and above is None and below is None:
            raise ValueError(f"{glob!r}: give normal, above or below")
        rules.append(Rule(glob, normal, above, below, str(spec.get("label", ""))))
    return tuple(rules)


def _yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ValueError(str(err).replace("\n", " ")) from None


def _bound(glob: str, key: str, x: Any) -> float | None:
    """``x`` as a finite float (None stays None). A NaN or infinite bound is refused: no value is
    ever beyond it, so the rule could never fire; neither is an int too large for a float."""
    if x is None and not key.startswith("normal"):
        return None
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        raise ValueError(f"{glob!r}: {key} must be a number, got {_short(x)}")
    try:
        number = float(x)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ValueError(f"{glob!r}: {key} must be a finite number, got {_short(x)}")
    return number


def _short(x: Any) -> str:
    text = repr(x)
    return text if len(text) <= 40 else f"{text[:20]}...({len(text)} characters)"


#: the guide's total-gradient-norm bounds, which both names of that norm get
_NORM_BOUNDS = {"normal": [0.1, 2.0], "above": 10.0, "below": 1e-6}
#: the ESAM BiFusion training guide's table of normal ranges (also ``examples/rules_esam.json``)
ESAM_RULES = parse_rules(
    {
        "train/gradient/total_norm": {
            **_NORM_BOUNDS,
            "label": "总梯度范数 total gradient norm: >10 exploding, <1e-6 vanishing",
        },
        "Model/Gradient_Norm": {
            **_NORM_BOUNDS,
            "label": "总梯度范数 total gradient norm (the VisualDL guide's tag)",
        },
        "train/projection/valid_projection_rate": {
            "normal": [0.8, 0.95],
            "below": 0.7,
            "label": "投影有效率 valid projection rate, as a fraction: <0.7 poor projection quality",
        },
        "train/fusion/2d_weight_mean": {
            "normal": [0.5, 0.8],
            "above": 0.9,
            "label": "2D权重均值 2D fusion weight mean: >0.9 over-relies on 2D",
        },
        "train/fusion/3d_weight_mean": {
            "normal": [0.2, 0.5],
            "below": 0.1,
            "label": "3D权重均值 3D fusion weight mean: <0.1 ignores 3D",
        },
        "*clip*loss_weight*": {
            "normal": [0.05, 0.15],
            "above": 0.2,
            "label": "CLIP损失权重 CLIP loss weight: >0.2 over-constrains",
        },
    }
)

#: rule sets installed with the package, by the name ``--rules`` takes (a file named so: ``./esam``)
BUILT_IN = {"esam": ESAM_RULES}


def rules_named(spec: str) -> tuple[Rule, ...]:
    """The built-in rule set named ``spec``, else the rules file at path ``spec``."""
    if spec in BUILT_IN:
        return BUILT_IN[spec]
    try:
        return load_rules(spec)
    except DualwatchError as err:
        if os.path.exists(spec):
            raise
        raise DualwatchError(f"{err.message}; or name a built-in rule set: {', '.join(BUILT_IN)}") from None
