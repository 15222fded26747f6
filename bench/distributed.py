"""Benchmark: DDP and DeepSpeed ZeRO-2 step throughput with and without dualwatch, 2 CPU processes (gloo).

What it measures
    Two ranks train seed 000's ``EdgeMapProcessor`` (the demo's model) on synthetic 32x32
    images, 8 per rank per step, one torch thread per rank, first with DDP, then as a DeepSpeed
    ZeRO-2 engine (``DS_ACCELERATOR=cpu``; skipped when DeepSpeed is not installed). Each rank
    holds two copies of the model with the same initial weights: a bare one and one watched by
    ``dualwatch.Watcher`` at its defaults (``every=10``; rank 0 writes VisualDL, TensorBoard
    and JSON lines, the other rank only computes). Under DDP the loop calls ``w.step``; the
    ZeRO-2 engine is given to the Watcher, which checks inside ``engine.step()`` on its own
    (each check gathers every rank's rows of its gradient partitions in one all_gather).
    A sample is the wall time of ``--steps`` steps between two barriers; the copies take
    turns, round-robin, and rank 0 reports the medians and the overhead (ratio of medians
    minus one).

Why
    The project's target: at most 3% overhead at the default frequency in a 2-process job.
    Nothing is asserted; the script prints MET / NOT MET and exits 0.

Usage
    python bench/distributed.py [--repeats N] [--steps S] [--smoke]

``--smoke`` trains 4 steps, 2 repeats, so CI runs it in seconds (a fresh environment first
compiles DeepSpeed's CPU communication op, about 30 s).
"""

from __future__ import annotations

import argparse
import functools
import importlib.metadata
import importlib.util
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from bench._timing import (  # noqa: E402
    Spent,
    env_line,
    interleaved,
    overhead_report,
    quiet,
    share_report,
    thread_env,
)

WORLD, BATCH, SIZE = 2, 8, 32


def _edge_net(torch):
    """The demo's edge processor, seeded: each call gives the same initial weights."""
    from dualwatch._demo import edge_model

    nn = torch.nn

    class EdgeNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.edge_processor = edge_model(nn, nn.Conv2d, nn.BatchNorm2d, nn.Module).edge_processor

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.edge_processor(x)

    torch.manual_seed(0)
    return EdgeNet()


def _data(torch, rank: int, steps: int) -> list:
    from dualwatch._demo import synthetic_batch

    rng = np.random.default_rng(rank)
    return [tuple(map(torch.from_numpy, synthetic_batch(rng, BATCH, SIZE))) for _ in range(steps)]


def worker(rank: int, port: int, steps: int, repeats: int, logdir: str) -> None:
    import torch
    import torch.distributed as dist

    from dualwatch import Watcher

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    data = _data(torch, rank, steps)
    nn = torch.nn

    def ddp() -> nn.parallel.DistributedDataParallel:
        return nn.parallel.DistributedDataParallel(_edge_net(torch))

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


def zero_worker(rank: int, port: int, steps: int, repeats: int, logdir: str) -> None:
    """The same comparison with two DeepSpeed ZeRO-2 engines; the Watcher hooks one's ``step``."""
    import logging
    import os

    os.environ.update(
        DS_ACCELERATOR="cpu",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    import deepspeed
    import torch
    import torch.distributed as dist

    from dualwatch import Watcher

    torch.set_num_threads(1)
    deepspeed.utils.logger.setLevel(logging.WARNING)
    with quiet():
        deepspeed.init_distributed(dist_backend="gloo")
    data = _data(torch, rank, steps)
    config = {
        "train_batch_size": BATCH * WORLD,
        "train_micro_batch_size_per_gpu": BATCH,
        "zero_optimization": {"stage": 2},
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 10**9,
    }

    def engine():
        model = _edge_net(torch)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        with quiet():
            return deepspeed.initialize(model=model, optimizer=optimizer, config=config)[0]

    bare, watched = engine(), engine()
    with quiet():
        watcher = Watcher(watched, module="edge_processor", logdir=logdir)
    spent, shares = Spent(), []
    spent.wrap(watcher, "check")  # what the hook inside engine.step() runs
    cpu: dict[Any, list[float]] = {bare: [], watched: []}  # this process's CPU seconds per sample

    def train(model) -> float:
        dist.barrier()
        spent.seconds = 0.0
        started, cpu_started = time.perf_counter(), time.process_time()
        for x, y in data:
            model.backward(torch.nn.functional.mse_loss(model(x), y))
            model.step()  # the watched engine's check runs in here, every 10 steps
        cpu[model].append(time.process_time() - cpu_started)
        dist.barrier()
        elapsed = time.perf_counter() - started
        if model is watched:
            shares.append(spent.seconds / elapsed)
        return elapsed

    runs = {"bare ZeRO-2": bare, "ZeRO-2 + dualwatch Watcher": watched}
    with quiet():
        timings = interleaved(
            {name: functools.partial(train, model) for name, model in runs.items()}, repeats, self_timed=True
        )
        watcher.close()
    dist.barrier()
    dist.destroy_process_group()
    if rank == 0:
        overhead_report("ZeRO-2, every=10", timings, steps)
        share_report({"ZeRO-2 + dualwatch Watcher": shares[1:]})  # the warm-up's first check left out
        ratio = statistics.median(cpu[watched][1:]) / statistics.median(cpu[bare][1:]) - 1
        print(
            f"  ZeRO-2, every=10: rank 0's CPU time per sample (medians), watched vs bare {100 * ratio:+.1f}%"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9, help="timed samples per variant")
    parser.add_argument("--steps", type=int, default=30, help="training steps per sample")
    parser.add_argument("--smoke", action="store_true", help="4 steps, 2 repeats (for CI)")
    args = parser.parse_args()
    steps, repeats = (4, 2) if args.smoke else (args.steps, args.repeats)
    port = _free_port()
    import torch

    print(env_line({"torch": torch.__version__}, thread_env()))
    print(f"DDP, {WORLD} processes (gloo, 1 thread each), {BATCH} x 3 x {SIZE} x {SIZE} per rank per step")
    with tempfile.TemporaryDirectory() as logdir:
        mp.spawn(worker, args=(port, steps, repeats, logdir), nprocs=WORLD, join=True)
    if importlib.util.find_spec("deepspeed") is None:
        print("DeepSpeed ZeRO-2: skipped, deepspeed is not installed (pip install deepspeed)")
        return
    version = importlib.metadata.version("deepspeed")
    print(f"DeepSpeed {version} ZeRO-2, {WORLD} processes (DS_ACCELERATOR=cpu, gloo, one thread each)")
    with tempfile.TemporaryDirectory() as logdir:
        mp.spawn(zero_worker, args=(_free_port(), steps, repeats, logdir), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
