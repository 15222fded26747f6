"""Shared timing harness for the scripts in ``bench/``.

Every bench script compares a dualwatch hot path with a naive or peer approach
*in the same run*, so the ratio it prints survives a noisy or slow machine
better than any absolute number. This module holds the parts they share:

* :func:`interleaved` times several variants round-robin (the order rotates
  every round), runs an untimed ``before`` hook ahead of each call, collects
  garbage outside the timed region and keeps the collector off inside it;
* :class:`Timings` summarises one variant's samples (median, min, max);
* :func:`table`, :func:`verdict`, :func:`env_line` and :func:`load_average`
  format the report (a load average near the CPU count means other work
  shared the machine and the absolute numbers are inflated).

Nothing here asserts on time: scripts print whether a target is met and exit 0.
"""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence


@dataclass
class Timings:
    """Wall-clock samples of one variant, in seconds."""

    name: str
    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def min(self) -> float:
        return min(self.samples)

    @property
    def max(self) -> float:
        return max(self.samples)


def interleaved(
    variants: Mapping[str, Callable[[], object]],
    repeats: int,
    *,
    before: Callable[[], None] | None = None,
    warmup: int = 1,
    self_timed: bool = False,
) -> dict[str, Timings]:
    """Time each variant ``repeats`` times, interleaving the variants.

    Every variant first runs ``warmup`` times untimed (allocations, lazy
    initialisation, first-call paths). Round ``r`` then runs the variants
    in an order rotated by ``r``, so no variant always runs first or last.
    ``before`` runs untimed ahead of every call, warm-ups included. With
    ``self_timed`` each variant returns its own measured seconds (a training
    run timed from inside, without its set-up), which are the samples.
    """
    names = list(variants)
    for _ in range(warmup):
        for name in names:
            if before is not None:
                before()
            variants[name]()
    results = {name: Timings(name) for name in names}
    gc_was_enabled = gc.isenabled()
    try:
        for r in range(repeats):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                if before is not None:
                    before()
                gc.collect()
                gc.disable()
                start = time.perf_counter()
                returned = variants[name]()
                elapsed = float(returned) if self_timed else time.perf_counter() - start  # type: ignore[arg-type]
                gc.enable()
                results[name].samples.append(elapsed)
    finally:
        if gc_was_enabled:
            gc.enable()
        else:
            gc.disable()
    return results


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Console blocks and framework chatter go to /dev/null while timing."""
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


OVERHEAD_TARGET_PERCENT = 3.0  # what watching may cost a training step, at the default frequency


def overhead_report(
    section: str, timings: Mapping[str, Timings], steps: int, target: float = OVERHEAD_TARGET_PERCENT
) -> None:
    """The table, then each variant's overhead over the first (bare) one; dualwatch's against ``target``%."""
    rows = list(timings.values())
    print(table(rows))
    bare = rows[0]
    print(
        f"  bare: {steps / bare.median:.1f} steps/s (median of {len(bare.samples)}, {steps} steps a sample)"
    )
    for t in rows[1:]:
        percent = (t.median / bare.median - 1) * 100
        met = ""
        if "dualwatch" in t.name:
            met = f"(target <= {target:g}%: {'MET' if percent <= target else 'NOT MET'})"
        print(f"  {section}: {t.name:<26} overhead {percent:+6.1f}%  {met}".rstrip())


class Spent:
    """Seconds spent inside chosen methods of objects, on the calling (training) thread.

    The difference of two wall-clock medians swings by several percent on a shared machine;
    the share of an epoch an integration spends in its own code hardly moves with the load, so
    the overhead sections print it beside the medians.
    """

    def __init__(self) -> None:
        self.seconds = 0.0

    def wrap(self, obj: object, *names: str) -> None:
        """Times ``obj.<name>(...)`` from now on (an instance attribute over each method)."""
        for name in names:
            method = getattr(obj, name)

            def timed(*args: object, _method: Callable[..., object] = method, **kwargs: object) -> object:
                started = time.perf_counter()
                try:
                    return _method(*args, **kwargs)
                finally:
                    self.seconds += time.perf_counter() - started

            setattr(obj, name, timed)


def share_report(shares: Mapping[str, Sequence[float]]) -> None:
    """One line per variant: the median share of the epoch spent in dualwatch's own code."""
    for name, values in shares.items():
        print(f"  {name}: its own code took {100 * statistics.median(values):.2f}% of the epoch (median)")


def table(timings: Sequence[Timings]) -> str:
    """A fixed-width table of median, min and max in milliseconds."""
    width = max(len("variant"), *(len(t.name) for t in timings))
    lines = [f"  {'variant':<{width}}  {'median ms':>10}  {'min ms':>10}  {'max ms':>10}"]
    for t in timings:
        lines.append(
            f"  {t.name:<{width}}  {t.median * 1e3:>10.2f}  {t.min * 1e3:>10.2f}  {t.max * 1e3:>10.2f}"
        )
    return "\n".join(lines)


def verdict(label: str, ratio: float, target: float, *, at_most: bool) -> str:
    """One line: the ratio, its target and whether the target is met."""
    met = ratio <= target if at_most else ratio >= target
    sign = "<=" if at_most else ">="
    target_text = f"(target {sign} {target:g}x)"
    return f"  {label:<20} {ratio:8.2f}x   {target_text:<18} {'MET' if met else 'NOT MET'}"


THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def thread_env() -> str:
    """The thread-count environment variables that are set, e.g. ``OMP_NUM_THREADS=1``, or ``unset``.

    Read it before importing a framework as well as after: ``import paddle``
    sets ``OMP_NUM_THREADS=1`` when it is unset.
    """
    return ", ".join(f"{var}={os.environ[var]}" for var in THREAD_VARS if var in os.environ) or "unset"


def load_average() -> str:
    """The 1-minute load average beside the CPU count, to tell a quiet run from a contended one."""
    if not hasattr(os, "getloadavg"):
        return "load n/a"
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpus"


def env_line(frameworks: Mapping[str, str], threads: str | None = None) -> str:
    """Python, platform, CPU count, the given framework versions and thread settings.

    ``threads`` describes the thread environment; by default :func:`thread_env` now.
    """
    parts = [
        f"python {sys.version.split()[0]}",
        f"{platform.system()} {platform.machine()}",
        f"cpus={os.cpu_count()}",
        *(f"{name} {version}" for name, version in frameworks.items()),
        f"thread env: {thread_env() if threads is None else threads}",
        load_average(),
    ]
    return "env: " + " | ".join(parts)
