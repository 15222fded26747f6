"""Which parameters get per-parameter statistics, and which group each belongs to.

Everything here works on names only, so it is the same for every framework and
every mistake is reported before training starts, with the fix in the message.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from typing import Iterable, Mapping, Sequence, Union

Pattern = Union[str, "re.Pattern[str]"]


def close_matches(word: str, choices: Iterable[str], n: int = 5) -> list[str]:
    """Names from ``choices`` that look like ``word``: for "did you mean" messages."""
    choices = list(choices)
    found = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    found += [c for c in choices if word and word in c and c not in found]
    return found[:n]


def find_module(module: str, module_names: Sequence[str]) -> list[str]:
    """Full paths of the submodules ``module`` names: itself, else every one whose path ends in it.

    ``"edge_processor"`` finds ``"model.edge_processor"`` (the StableSR layout, where the
    processor sits inside the diffusion model), so the user types the name they know.
    """
    if module in module_names:
        return [module]
    return [m for m in module_names if m.endswith("." + module)]


def module_prefix(module: str | None, module_names: Sequence[str]) -> str:
    """The parameter-name prefix (``"model.edge_processor."``) of submodule ``module``."""
    if module is None or module == "":
        return ""
    if not isinstance(module, str):
        raise TypeError(
            f"module= takes a submodule name such as 'edge_processor', got {type(module).__name__}"
        )
    found = find_module(module, module_names)
    if len(found) == 1:
        return found[0] + "."
    if found:
        raise ValueError(
            f"module={module!r} names {len(found)} submodules: {', '.join(found[:10])}. "
            "Pass the full path of the one to watch."
        )
    named = [m for m in module_names if m]
    last = module.rsplit(".", 1)[-1]  # nested modules are compared by their own name too
    nested = [m for m in named if difflib.get_close_matches(last, [m.rsplit(".", 1)[-1]], cutoff=0.6)]
    hints = list(dict.fromkeys(close_matches(module, named) + nested))[:8]
    hint = (
        f" Close matches: {', '.join(hints)}."
        if hints
        else " The model's top-level submodules: "
        + (", ".join(sorted({m.split(".")[0] for m in named})[:20]) or "(none)")
        + "."
    )
    raise ValueError(f"module={module!r} matches no submodule of the model.{hint}")


def compile_include(include: Pattern | Sequence[Pattern] | None) -> list[re.Pattern[str]]:
    """Turn globs (``"backbone.*"``), ``"re:<regex>"`` strings and compiled regexes into regexes."""
    if include is None:
        return []
    try:
        items = [include] if isinstance(include, (str, re.Pattern)) else list(include)
    except TypeError:
        items = [include]  # one item of a type no list holds: refused below with the forms taken
    compiled = []
    for item in items:
        if isinstance(item, re.Pattern):
            compiled.append(item)
        elif isinstance(item, str) and item.startswith("re:"):
            compiled.append(_compile(item[3:], f"include={item!r}"))
        elif isinstance(item, str):
            compiled.append(re.compile(fnmatch.translate(item)))
        else:
            raise TypeError(
                "include= takes glob strings, 're:<regex>' strings or compiled regexes, "
                f"got {type(item).__name__}"
            )
    return compiled


def select(names: Sequence[str], prefix: str, include: Sequence[re.Pattern[str]]) -> list[bool]:
    """Per name: is it inside the chosen submodule and matched by ``include`` (all when empty)?"""
    chosen = []
    for name in names:
        inside = name.startswith(prefix)
        local = name[len(prefix) :]
        chosen.append(inside and (not include or any(p.fullmatch(local) for p in include)))
    return chosen


def compile_groups(groups: Mapping[str, Pattern] | None) -> dict[str, re.Pattern[str]]:
    """Groups map a name to a regex (``"clip.*"``) or a module prefix (``"backbone"``)."""
    if groups is None:
        return {}
    if not isinstance(groups, Mapping):
        raise TypeError(
            "groups= takes a mapping of group name to regex or module prefix, "
            "e.g. {'backbone': 'backbone.*', 'head': 'head'}"
        )
    compiled = {}
    for group, pattern in groups.items():
        if not isinstance(group, str) or not group or "/" in group:
            raise ValueError(f"group name {group!r} must be a non-empty string without '/'")
        if isinstance(pattern, re.Pattern):
            compiled[group] = pattern
        elif isinstance(pattern, str):
            _compile(pattern, f"group {group!r}")
            # What matches a module path also matches every parameter below it.
            compiled[group] = re.compile(f"(?:{pattern})(?:\\..*)?")
        else:
            raise TypeError(
                f"group {group!r}: expected a regex or module prefix string, got {type(pattern).__name__}"
            )
    return compiled


def assign_groups(
    names: Sequence[str], prefix: str, groups: Mapping[str, re.Pattern[str]]
) -> list[str | None]:
    """The first group (in the order given) whose pattern matches each parameter's full name,
    or its name relative to the watched submodule (``prefix``)."""

    def matches(pattern: re.Pattern[str], name: str) -> bool:
        return bool(
            pattern.fullmatch(name) or (name.startswith(prefix) and pattern.fullmatch(name[len(prefix) :]))
        )

    return [next((g for g, p in groups.items() if matches(p, name)), None) for name in names]


def _compile(regex: str, where: str) -> re.Pattern[str]:
    try:
        return re.compile(regex)
    except re.error as err:
        raise ValueError(
            f"{where}: {regex!r} is not a valid regular expression ({err}); fix or escape it"
        ) from None


def check_stats(stats: str | Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    """The per-parameter statistics chosen with ``stats=``, in the order given, checked by name.

    A misspelt name would silently drop a curve the user counts on, so it raises with the
    valid names (and the closest one) before training starts.
    """
    items = [stats] if isinstance(stats, str) else stats
    try:
        chosen = tuple(items)
    except TypeError:
        raise TypeError(
            f"stats= takes names of per-parameter statistics, got {type(stats).__name__}: "
            f"e.g. stats=('grad_norm', 'weight_change'); the names are {', '.join(valid)}"
        ) from None
    for name in chosen:
        if not isinstance(name, str) or name not in valid:
            near = close_matches(name, valid, n=1) if isinstance(name, str) else []
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(
                f"stats= has unknown statistic {name!r}{hint}; the valid names are {', '.join(valid)}"
            )
    return chosen


def check_aggregate(aggregate: int | None) -> int | None:
    """``aggregate=`` as a module depth (>= 1), or None for one tag row per parameter."""
    if aggregate is None:
        return None
    if isinstance(aggregate, bool) or not isinstance(aggregate, int):
        raise TypeError(
            f"aggregate= takes a module depth (an int >= 1) or None, got {type(aggregate).__name__} "
            f"{aggregate!r}: e.g. aggregate=1 logs one set of statistics per top-level submodule"
        )
    if aggregate < 1:
        raise ValueError(
            f"aggregate= must be >= 1 (1: per top-level submodule, 2: one level below...), got "
            f"{aggregate}; pass None for per-parameter statistics"
        )
    return aggregate
