"""Benchmark: one dualwatch check against the seed-style loop and the memory floor.

What it measures
    The cost of one steady-state ``Watcher.step`` check (every=1, the second
    check onwards so ``weight_change`` is computed against a snapshot) on a
    model of ~25M parameters in 96 tensors, on the CPU, in PyTorch and in
    PaddlePaddle. Two references are timed in the same process, interleaved
    round-robin with the check so machine noise hits all three alike:

    * seed-style loop: what a first-draft callback does, one ``.item()`` per
      statistic per parameter (weight mean/std/min/max, mean |w - prev|, a
      ``clone()`` snapshot, gradient mean/std/min/max/norm);
    * memory floor: the least work that can produce the statistics at all,
      one framework-op read of the weights, the gradients and the previous
      snapshot plus one copy of the weights into a preallocated snapshot.

Why
    A check reads every weight and gradient, so its cost is bounded below by
    memory traffic; the floor measures that bound on this machine. Targets
    (from the project's issue): dualwatch <= 1.5x the floor and >= 3x faster
    than the seed-style loop. Only ratios measured in the same run are
    compared; nothing here asserts on time, the script prints whether each
    target is met and exits 0.

Fairness notes
    Between timed calls the weights are multiplied by 1.0001 in place
    (untimed) so weight changes are real. Gradients come from one real
    forward/backward pass. Each variant is warmed up once, untimed. For the
    paddle floor's copy, ``Tensor.copy_``, ``paddle.assign(x, output=y)`` and
    ``set_value`` measured within ~10% of one another; ``copy_`` is used.
    Every variant ends with its statistics on the host.

Usage
    python bench/stats.py [--framework torch|paddle|both] [--repeats N] [--smoke] [--threads N] [--no-kernel]

``--smoke`` uses a tiny model of the same shape (96 tensors of ~1k elements)
and 2 repeats, so CI can run it in seconds to keep the script from rotting.
``--threads`` sets torch's intra-op threads: on a machine shared with other
work, multi-threaded torch kernels stall whenever one of their threads is
descheduled, which can inflate single timings a hundredfold; the load average
printed with the results tells whether that happened. (Importing paddle sets
``OMP_NUM_THREADS=1`` when it is unset; the env line shows it.)
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any, Callable, Union

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench._seed import seed_style_loop  # noqa: E402
from bench._timing import Timings, env_line, interleaved, load_average, table, thread_env, verdict  # noqa: E402

FULL_WIDTH = 720  # 48 x Linear(720, 720): 96 tensors, 24,917,760 parameters
SMOKE_WIDTH = 32  # 48 x Linear(32, 32): 96 tensors of 1,024 and 32 elements
DEPTH = 48
BATCH = 8
PERTURB = 1.0001
FLOOR_TARGET = 1.5  # dualwatch / floor must be at most this
SEED_TARGET = 3.0  # seed / dualwatch must be at least this


class TorchCase:
    """The model, its gradients and the two reference variants in PyTorch."""

    framework = "torch"

    def __init__(self, width: int) -> None:
        import torch

        self.torch = torch
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = []
        for _ in range(DEPTH):
            layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
        self.model = torch.nn.Sequential(*layers)
        loss = self.model(torch.randn(BATCH, width)).square().mean()
        loss.backward()
        self.named = list(self.model.named_parameters())
        self.seed_prev: dict[str, torch.Tensor] = {}
        self.floor_prev = [torch.zeros_like(p) for _, p in self.named]

    def numel(self) -> int:
        return sum(p.numel() for _, p in self.named)

    def perturb(self) -> None:
        with self.torch.no_grad():
            for _, p in self.named:
                p.mul_(PERTURB)

    def seed(self) -> dict[str, list[float]]:
        with self.torch.no_grad():
            return seed_style_loop(self.named, self.seed_prev)

    def floor(self) -> list[float]:
        torch = self.torch
        sums = []
        with torch.no_grad():
            for (_, p), prev in zip(self.named, self.floor_prev):
                w = p.detach()
                sums += [w.sum(), p.grad.sum(), prev.sum()]
                prev.copy_(w)
            return torch.stack(sums).tolist()


class PaddleCase:
    """The model, its gradients and the two reference variants in PaddlePaddle."""

    framework = "paddle"

    def __init__(self, width: int) -> None:
        import paddle

        self.paddle = paddle
        paddle.set_device("cpu")
        paddle.seed(0)
        layers: list[paddle.nn.Layer] = []
        for _ in range(DEPTH):
            layers += [paddle.nn.Linear(width, width), paddle.nn.Tanh()]
        self.model = paddle.nn.Sequential(*layers)
        loss = self.model(paddle.randn([BATCH, width])).square().mean()
        loss.backward()
        self.named = list(self.model.named_parameters())
        self.seed_prev: dict[str, paddle.Tensor] = {}
        self.floor_prev = [paddle.zeros_like(p) for _, p in self.named]
        self.factor = paddle.to_tensor(PERTURB, dtype=self.named[0][1].dtype)

    def numel(self) -> int:
        return sum(int(p.numel()) for _, p in self.named)

    def perturb(self) -> None:
        with self.paddle.no_grad():
            for _, p in self.named:
                p.multiply_(self.factor)

    def seed(self) -> dict[str, list[float]]:
        with self.paddle.no_grad():
            return seed_style_loop(self.named, self.seed_prev)

    def floor(self) -> list[float]:
        paddle = self.paddle
        sums = []
        with paddle.no_grad():
            for (_, p), prev in zip(self.named, self.floor_prev):
                w = p.detach()
                sums += [paddle.sum(w), paddle.sum(p.grad), paddle.sum(prev)]
                prev.copy_(w, True)
            return paddle.stack(sums).tolist()


Case = Union[TorchCase, PaddleCase]
CASES: dict[str, Callable[[int], Case]] = {"torch": TorchCase, "paddle": PaddleCase}


def dualwatch_check(case: Case) -> Callable[[], dict[str, Any]]:
    """A zero-argument callable running one check; the first (snapshot-less) check is done here."""
    import dualwatch

    watcher = dualwatch.Watcher(case.model, every=1, logdir=None, console=False)
    steps = itertools.count()
    watcher.step(next(steps))
    case.perturb()
    metrics = watcher.step(next(steps))
    if not metrics:
        raise RuntimeError("the dualwatch check returned no metrics (did it warn that it failed?)")
    change = [k for k in metrics if "weight_change" in k]
    print(f"  dualwatch check returns {len(metrics)} metrics; weight_change keys: {len(change)}")
    if not change:
        print("  WARNING: no weight_change metric after the second check; the timed checks skip snapshots")
    return lambda: watcher.step(next(steps))


def run_framework(framework: str, width: int, repeats: int) -> dict[str, Timings]:
    """Build the model and time the three variants; print and return the timings."""
    case = CASES[framework](width)
    n = case.numel()
    print(
        f"\n== {framework}: {len(case.named)} tensors, {n:,} parameters "
        f"({n * 4 / 1e6:.1f} MB per float32 copy), {repeats} repeats =="
    )
    variants = {
        "dualwatch check": dualwatch_check(case),
        "seed-style loop": case.seed,
        "memory floor": case.floor,
    }
    results = interleaved(variants, repeats, before=case.perturb)
    dual, seed, floor = (results[k] for k in variants)
    print(table([dual, seed, floor]))
    print(verdict("dualwatch / floor", dual.median / floor.median, FLOOR_TARGET, at_most=True))
    print(verdict("seed / dualwatch", seed.median / dual.median, SEED_TARGET, at_most=False))
    print(f"  ({load_average()} after the {framework} runs)")
    return results


def framework_version(framework: str) -> str:
    """The framework's version and, for torch, its CPU thread pools (paddle has no such query)."""
    if framework == "torch":
        import torch

        pools = f"threads={torch.get_num_threads()}, interop={torch.get_num_interop_threads()}"
        return f"{torch.__version__} ({pools})"
    import paddle

    return str(paddle.__version__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["torch", "paddle", "both"], default="both")
    parser.add_argument("--repeats", type=int, help="timed runs per variant (default 7; smoke 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 repeats: checks the script runs")
    parser.add_argument(
        "--threads",
        type=int,
        help="torch intra-op threads (default: torch's own); 1 steadies torch timings on a shared machine",
    )
    parser.add_argument(
        "--no-kernel",
        action="store_true",
        help="time dualwatch as installed without a C compiler (framework ops instead of the fused kernel)",
    )
    args = parser.parse_args(argv)
    if args.no_kernel:
        from dualwatch import _host as host

        host._hoststats = None
    repeats = args.repeats if args.repeats is not None else (2 if args.smoke else 7)
    if repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be at least 1")
    frameworks = ["torch", "paddle"] if args.framework == "both" else [args.framework]
    width = SMOKE_WIDTH if args.smoke else FULL_WIDTH

    threads_before = thread_env()
    if args.threads is not None and "torch" in frameworks:
        import torch

        torch.set_num_threads(args.threads)
    versions = {name: framework_version(name) for name in frameworks}
    threads_after = thread_env()
    threads = threads_after
    if threads_after != threads_before:
        threads = f"{threads_before} before imports, {threads_after} after"
    print(env_line(versions, threads))
    from dualwatch._host import fused_kernel_built

    print(f"fused host kernel: {'on' if fused_kernel_built() else 'off (framework ops)'}")
    print("medians of interleaved repeats; ratios compare variants of the same run")
    if args.smoke:
        print("SMOKE MODE: tiny model; the ratios below are not meaningful")
    for name in frameworks:
        run_framework(name, width, repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
