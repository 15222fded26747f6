"""Benchmark: the forward-pass cost of a dualwatch ``Monitor`` (seed 002's activation capture).

What it measures
    The forward pass (grad mode on, as in training; no backward) of a 2-block MLP-mixer-like
    model, 32 x 64 tokens of width 256, on the CPU, in three variants interleaved in one run:

    * bare: the model with no monitor;
    * not recording: an identical model with a Monitor on both blocks' output layers, on a batch
      that is not recorded (the hooks fire and read one bool);
    * recording: the same monitored model on a recorded batch (each hooked output is detached
      and copied; the copies are dropped outside the timed region).

    ``set_batch_idx`` runs inside the timed region of both monitored variants.

Why
    Targets (from the project's issue): not recording <= 1.02x and recording <= 1.3x the bare
    forward, in torch and paddle. Medians are reported; nothing asserts on time. Each framework
    runs in its own process (``import paddle`` sets ``OMP_NUM_THREADS=1``).

Usage
    python bench/capture.py [--framework torch|paddle|both] [--repeats N] [--smoke]

``--smoke`` uses a tiny model and 2 repeats, so CI runs it in seconds.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from bench._timing import env_line, interleaved, table, thread_env, verdict  # noqa: E402

IDLE_TARGET = 1.02
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
    monitor = Monitor(monitored, ["2", "6"], [0], tempfile.mkdtemp(prefix="dualwatch-bench-"), [0])
    monitor.set_epoch(0)

    def idle() -> None:
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
    timings = interleaved(
        {"bare": lambda: bare(x), "not recording": idle, "recording": recording},
        repeats,
        before=monitor.clear_current_epoch_data,
        warmup=3,
    )
    print(table(list(timings.values())))
    base = timings["bare"].median
    print(verdict("not recording / bare", timings["not recording"].median / base, IDLE_TARGET, at_most=True))
    print(verdict("recording / bare", timings["recording"].median / base, RECORD_TARGET, at_most=True))
    monitor.remove_hooks()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=["torch", "paddle", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=41)
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
