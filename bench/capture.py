"""Benchmark: the forward-pass cost of a dualwatch ``Monitor`` (the layer-output Monitor's capture).

What it measures
    The forward pass (grad mode on, as in training; no backward) of a 2-block MLP-mixer-like
    model, 32 x 64 tokens of width 256, on the CPU, in five variants interleaved in one run:

    * bare: the monitored model's forward alone, between batches, when its Monitor holds no hook
      (the script prints the hook count: 0), so the same weights at the same addresses as the
      monitored rows;
    * bare again: the same, timed as a second variant: the A/A row, how far two medians of the
      very same work land apart in this run (the noise);
    * bare, another model: a model never monitored, same weights, other memory;
    * not recording: ``set_batch_idx`` of a batch that is not recorded, then the forward: what
      a Monitor costs on such a batch;
    * recording: ``set_batch_idx`` of a recorded batch (which registers the hooks), then the
      forward (each hooked output is detached and copied; the copies are dropped outside the
      timed region).

    Untimed before every call, the monitor is set to a batch it does not record (no hooks).

Why
    Targets (from the project's issues): not recording 1.00x the bare forward (no hook at all,
    or a difference within the A/A noise) and recording <= 1.3x, in torch and paddle. Medians of
    61 interleaved repeats by default; beside each ratio of medians the script prints the
    middle half (quartiles) of the per-round ratios, and the not-recording ratio again in process
    CPU time (which waits for a core on a loaded machine do not inflate). Nothing asserts on time.
    Each framework runs in its own process (``import paddle`` sets ``OMP_NUM_THREADS=1``).

Usage
    python bench/capture.py [--framework torch|paddle|both] [--repeats N] [--smoke]

``--smoke`` uses a tiny model and 2 repeats, so CI runs it in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from bench._timing import Timings, env_line, interleaved, table, thread_env, verdict  # noqa: E402

IDLE_TARGET = 1.00  # not recording / bare: equal, within the A/A noise
RECORD_TARGET = 1.3


def _model(fw: Any, width: int, blocks: int) -> Any:
    nn = fw.nn
    layers = []
    for _ in range(blocks):
        layers += [nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.LayerNorm(width)]
    return nn.Sequential(*layers)


def run(framework: str, repeats: int, smoke: bool) -> None:
    from dualwatch import Monitor

    threads_before = thread_env()
    batch, tokens, width = (2, 8, 16) if smoke else (32, 64, 256)
    data = np.random.default_rng(0).standard_normal((batch, tokens, width)).astype(np.float32)
    if framework == "torch":
        import torch as fw

        fw.manual_seed(0)
        x = fw.from_numpy(data)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")
            import paddle as fw

        fw.seed(0)
        x = fw.to_tensor(data)
    bare, monitored = _model(fw, width, 2), _model(fw, width, 2)
    if framework == "paddle":
        monitored.set_state_dict(bare.state_dict())
    else:
        monitored.load_state_dict(bare.state_dict())
    monitor = Monitor(monitored, ["2", "6"], [0], tempfile.mkdtemp(prefix="dualwatch-bench-"), [0])
    monitor.set_epoch(0)

    def not_recording() -> None:
        monitor.set_batch_idx(1)
        monitored(x)

    def recording() -> None:
        monitor.set_batch_idx(0)
        monitored(x)

    print(env_line({framework: fw.__version__}, threads_before))
    print(
        f"{framework}: forward of [{batch}, {tokens}, {width}] through 2 blocks, 2 layers hooked, "
        f"{repeats} interleaved repeats"
    )

    def between_batches() -> None:
        monitor.clear_current_epoch_data()
        monitor.set_batch_idx(1)  # not recorded: no hook registered

    timings = interleaved(
        {
            "bare": lambda: monitored(x),
            "bare again": lambda: monitored(x),
            "bare, another model": lambda: bare(x),
            "not recording": not_recording,
            "recording": recording,
        },
        repeats,
        before=between_batches,
        warmup=3,
    )
    between_batches()
    print(f"  hooks on the monitored model while not recording: {_hooks(framework, monitored)}")
    monitor.set_batch_idx(0)
    print(f"  hooks on the monitored model while recording:     {_hooks(framework, monitored)}")
    print(table(list(timings.values())))
    base = timings["bare"]
    aa = timings["bare again"].median / base.median
    other = timings["bare, another model"]
    idle = timings["not recording"]
    idle_ratio = idle.median / base.median
    within = abs(idle_ratio - 1) <= abs(aa - 1) + 0.01
    print(f"  {'bare again / bare':<20} {aa:8.3f}x   {_spread(timings['bare again'], base)} (A/A)")
    print(f"  {'another model / bare':<20} {other.median / base.median:8.3f}x   {_spread(other, base)}")
    print(
        f"  {'not recording / bare':<20} {idle_ratio:8.3f}x   {_spread(idle, base)}"
        f"  (target {IDLE_TARGET:.2f}x, within A/A + 1%)  {'MET' if within else 'NOT MET'}"
    )
    cpu = _cpu_seconds(
        {"bare": lambda: monitored(x), "not recording": not_recording}, repeats, between_batches
    )
    print(
        f"  {'not recording / bare':<20} {cpu['not recording'] / cpu['bare']:8.3f}x   (process CPU time, "
        f"medians {cpu['not recording'] * 1e3:.2f} vs {cpu['bare'] * 1e3:.2f} ms)"
    )
    print(verdict("recording / bare", timings["recording"].median / base.median, RECORD_TARGET, at_most=True))
    monitor.remove_hooks()


def _cpu_seconds(
    variants: dict[str, Callable[[], Any]], repeats: int, before: Callable[[], None]
) -> dict[str, float]:
    """Median process CPU time of each variant, interleaved, ``before`` untimed ahead of each call."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        names = list(variants)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            before()
            start = time.process_time()
            variants[name]()
            samples[name].append(time.process_time() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _hooks(framework: str, model: Any) -> int:
    """Forward hooks registered on any layer of ``model``."""
    if framework == "paddle":
        return sum(len(m._forward_post_hooks) for m in model.sublayers(include_self=True))
    return sum(len(m._forward_hooks) for m in model.modules())


def _spread(timings: Timings, base: Timings) -> str:
    """The quartiles of the per-round ratios of ``timings`` to ``base`` (same round, interleaved)."""
    ratios = [a / b for a, b in zip(timings.samples, base.samples)]
    if len(ratios) < 4:
        return "(too few rounds for quartiles)"
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    return f"(per-round ratios, middle half {q1:.3f}-{q3:.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=["torch", "paddle", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=61)
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 repeats: checks the script runs")
    args = parser.parse_args()
    repeats = 2 if args.smoke else args.repeats
    if args.framework != "both":
        run(args.framework, repeats, args.smoke)
        return
    for framework in ("torch", "paddle"):  # separate processes: import paddle changes thread settings
        command = [sys.executable, __file__, "--framework", framework, "--repeats", str(repeats)]
        subprocess.run(command + (["--smoke"] if args.smoke else []), check=True)


if __name__ == "__main__":
    main()
