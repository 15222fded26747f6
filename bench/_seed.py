"""Seed 000's statistics callback as written: the baseline of ``bench/stats.py`` and ``bench/overhead.py``."""

from __future__ import annotations

from typing import Any


def seed_style_loop(named: list[tuple[str, Any]], seed_prev: dict[str, Any]) -> dict[str, list[float]]:
    """The seed callback's way: one ``.item()`` per statistic per parameter and a ``clone()`` snapshot.

    torch and paddle tensors share every method used here.
    """
    out: dict[str, list[float]] = {}
    for name, p in named:
        w = p.detach()
        stats = [w.mean().item(), w.std().item(), w.min().item(), w.max().item()]
        prev = seed_prev.get(name)
        if prev is not None:
            stats.append((w - prev).abs().mean().item())
        seed_prev[name] = w.clone()
        g = p.grad
        if g is not None:
            stats += [g.mean().item(), g.std().item(), g.min().item(), g.max().item()]
            stats.append(g.norm().item())
        out[name] = stats
    return out
