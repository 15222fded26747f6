"""Benchmark: DDP step throughput with and without dualwatch, 2 processes on the CPU (gloo).

What it measures
    Two ranks train seed 000's ``EdgeMapProcessor`` (the demo's model) with DDP on synthetic
    32x32 images, 8 per rank per step, one torch thread per rank. Each rank holds two DDP
    copies of the model with the same initial weights: a bare one and one watched by
    ``dualwatch.Watcher`` at its defaults (``every=10``; rank 0 writes VisualDL, TensorBoard
    and JSON lines, the other rank only computes). A sample is the wall time of ``--steps``
    steps between two barriers; the copies take turns, round-robin, and rank 0 reports the
    medians and the overhead (ratio of medians minus one).

Why
    The project's target: at most 3% overhead at the default frequency in a 2-process DDP job.
    Nothing is asserted; the script prints MET / NOT MET and exits 0.

Usage
    python bench/distributed.py [--repeats N] [--steps S] [--smoke]

``--smoke`` trains 4 steps, 2 repeats, so CI runs it in seconds.
"""

from __future__ import annotations

import argparse
import functools
import socket
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from bench._timing import env_line, interleaved, overhead_report, quiet, thread_env  # noqa: E402

WORLD, BATCH, SIZE = 2, 8, 32


def worker(rank: int, port: int, steps: int, repeats: int, logdir: str) -> None:
    import torch
    import torch.distributed as dist

    from dualwatch import Watcher
    from dualwatch._demo import edge_model, synthetic_batch

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    rng = np.random.default_rng(rank)
    data = [tuple(map(torch.from_numpy, synthetic_batch(rng, BATCH, SIZE))) for _ in range(steps)]

    nn = torch.nn

    class EdgeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.edge_processor = edge_model(nn, nn.Conv2d, nn.BatchNorm2d, nn.Module).edge_processor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.edge_processor(x)

    def ddp() -> nn.parallel.DistributedDataParallel:
        torch.manual_seed(0)
        return nn.parallel.DistributedDataParallel(EdgeNet())

    bare, watched = ddp(), ddp()
    with quiet():
        watcher = Watcher(watched, module="edge_processor", logdir=logdir)
    runs = {"bare DDP": (bare, None), "DDP + dualwatch Watcher": (watched, watcher)}
    optimizers = {name: torch.optim.Adam(model.parameters(), lr=1e-3) for name, (model, _) in runs.items()}
    step = {name: 0 for name in runs}

    def train(name: str) -> float:
        model, w = runs[name]
        optimizer = optimizers[name]
        dist.barrier()
        started = time.perf_counter()
        for x, y in data:
            torch.nn.functional.mse_loss(model(x), y).backward()
            if w is not None:
                w.step(step[name])
            step[name] += 1
            optimizer.step()
            optimizer.zero_grad()
        dist.barrier()
        return time.perf_counter() - started

    with quiet():  # the same rotation on every rank: each variant is timed between two barriers
        timings = interleaved(
            {name: functools.partial(train, name) for name in runs}, repeats, self_timed=True
        )
        watcher.close()
    dist.destroy_process_group()
    if rank == 0:
        overhead_report("DDP, every=10", timings, steps)


def main() -> None:
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed samples per variant")
    parser.add_argument("--steps", type=int, default=30, help="training steps per sample")
    parser.add_argument("--smoke", action="store_true", help="4 steps, 2 repeats (for CI)")
    args = parser.parse_args()
    steps, repeats = (4, 2) if args.smoke else (args.steps, args.repeats)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import torch

    print(env_line({"torch": torch.__version__}, thread_env()))
    print(f"DDP, {WORLD} processes (gloo, 1 thread each), {BATCH} x 3 x {SIZE} x {SIZE} per rank per step")
    with tempfile.TemporaryDirectory() as logdir:
        mp.spawn(worker, args=(port, steps, repeats, logdir), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
