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
    * memory floor: the least work that can produce the statistics at all:
      one read of the gradients and of the previous snapshot (a framework
      ``sum`` each) and one copy of the weights into that snapshot, which is
      the one read of the weights (an earlier floor summed the weights too,
      reading them twice, which flattered every ratio by 12-18%).

    On the CPU the check also runs through the accelerator path (the
    reducer's host paths off: every tensor reduced with framework ops, batched
    as on a GPU), timed against the floor in a second interleaved round (its
    float64 working buffers slowed the other variants when interleaved with
    them), and the framework ops one check dispatches are
    counted for it, for the same path one tensor at a time, and for the
    seed-style loop (torch: ``TorchDispatchMode``, view ops apart; paddle: its
    profiler, where paddle's one-tensor path on the CPU runs numpy, not paddle).

Why
    A check reads every weight and gradient, so its cost is bounded below by
    memory traffic; the floor measures that bound on this machine. Targets
    (from the project's issues): dualwatch <= 1.3x the floor and >= 3x faster
    than the seed-style loop. Only ratios measured in the same run are
    compared; nothing here asserts on time, the script prints whether each
    target is met and exits 0.

Fairness notes
    Between timed calls the weights are multiplied by 1.0001 in place
    (untimed) so weight changes are real. Gradients come from one real
    forward/backward pass. Each variant is warmed up once, untimed. For the
    paddle floor's copy, ``Tensor.copy_``, ``paddle.assign(x, output=y)`` and
    ``set_value`` measured within ~10% of one another; ``copy_`` is used.
    Every variant ends with its statistics on the host. Threads are matched:
    ``--threads N`` (default: as many as dualwatch's host kernel takes) is
    given to torch (``set_num_threads``), to paddle (``OMP_NUM_THREADS``, set
    before paddle is imported, since ``import paddle`` sets it to 1 when unset)
    and to dualwatch's host kernel alike, so the floor and the check run on the
    same number of threads.

    ``--device cuda`` runs the model on the GPU (paddle: the ``gpu`` place),
    where the check takes the accelerator path; on a GPU the weights are
    perturbed and synchronised outside the timing. It stops with an error
    where the framework sees no GPU.

Usage
    python bench/stats.py [--framework torch|paddle|both] [--device cpu|cuda] [--repeats N] [--smoke]
                          [--threads N] [--no-kernel]

``--smoke`` uses a tiny model of the same shape (96 tensors of ~1k elements)
and 2 repeats, so CI can run it in seconds to keep the script from rotting.
On a machine shared with other work, multi-threaded kernels stall whenever one
of their threads is descheduled, which can inflate single timings a hundredfold;
``--threads 1`` steadies them, and the load average printed with the results
tells whether that happened.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import sys
import tempfile
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
FLOOR_TARGET = 1.3  # dualwatch / floor (the floor reading the weights once) must be at most this
SEED_TARGET = 3.0  # seed / dualwatch must be at least this


class TorchCase:
    """The model, its gradients and the two reference variants in PyTorch."""

    framework = "torch"

    def __init__(self, width: int, device: str) -> None:
        import torch

        self.torch = torch
        self.device = device
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = []
        for _ in range(DEPTH):
            layers += [torch.nn.Linear(width, width), torch.nn.Tanh()]
        self.model = torch.nn.Sequential(*layers).to(device)
        loss = self.model(torch.randn(BATCH, width, device=device)).square().mean()
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
        if self.device != "cpu":
            self.torch.cuda.synchronize()  # the perturbation's kernels finish outside the timing

    def seed(self) -> dict[str, list[float]]:
        with self.torch.no_grad():
            return seed_style_loop(self.named, self.seed_prev)

    def floor(self) -> list[float]:
        torch = self.torch
        sums = []
        with torch.no_grad():
            for (_, p), prev in zip(self.named, self.floor_prev):
                sums += [p.grad.sum(), prev.sum()]
                prev.copy_(p.detach())  # the one read of the weights
            return torch.stack(sums).tolist()

    def count_ops(self, run: Callable[[], Any]) -> tuple[int, int]:
        """``(ops, views)``: the ATen ops ``run`` dispatches, views (no kernel) apart."""
        from torch.utils._python_dispatch import TorchDispatchMode

        class Ops(TorchDispatchMode):
            ops = views = 0

            def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
                if func.is_view:
                    self.views += 1
                else:
                    self.ops += 1
                return func(*args, **(kwargs or {}))

        with Ops() as counted, self.torch.no_grad():
            run()
        return counted.ops, counted.views


class PaddleCase:
    """The model, its gradients and the two reference variants in PaddlePaddle."""

    framework = "paddle"

    def __init__(self, width: int, device: str) -> None:
        import paddle

        self.paddle = paddle
        self.device = device
        paddle.set_device("cpu" if device == "cpu" else "gpu")
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
        if self.device != "cpu":
            self.paddle.device.synchronize()

    def seed(self) -> dict[str, list[float]]:
        with self.paddle.no_grad():
            return seed_style_loop(self.named, self.seed_prev)

    def floor(self) -> list[float]:
        paddle = self.paddle
        sums = []
        with paddle.no_grad():
            for (_, p), prev in zip(self.named, self.floor_prev):
                sums += [paddle.sum(p.grad), paddle.sum(prev)]
                prev.copy_(p.detach(), True)  # the one read of the weights
            return paddle.stack(sums).tolist()

    def count_ops(self, run: Callable[[], Any]) -> tuple[int, int]:
        """``(ops, views)``: the ops paddle's profiler sees ``run`` run, ``reshape`` (a view) apart."""
        import paddle.profiler as profiler

        prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda _: None)
        prof.start()
        run()
        prof.stop()
        with tempfile.TemporaryDirectory() as tmp:
            trace = os.path.join(tmp, "trace.json")
            prof.export(trace, format="json")
            with open(trace) as f:
                events = json.load(f)["traceEvents"]
        names = collections.Counter(
            e["name"].split(" dygraph")[0] for e in events if e.get("cat") == "Operator"
        )
        views = sum(n for name, n in names.items() if name in ("reshape", "unsqueeze", "squeeze"))
        return sum(names.values()) - views, views


Case = Union[TorchCase, PaddleCase]
CASES: dict[str, Callable[[int, str], Case]] = {"torch": TorchCase, "paddle": PaddleCase}


def watcher_of(case: Case, threads: int, host_paths: bool = True, batched: bool = True) -> Any:
    """A Watcher of the case's model; its host kernel on ``threads`` threads, and, with
    ``host_paths`` off, every tensor taking the accelerator path (reducer switches meant for this)."""
    import dualwatch

    watcher = dualwatch.Watcher(case.model, every=1, logdir=None, console=False)
    watcher._reducer._fused.workers.threads = threads
    watcher._reducer.host_paths = host_paths
    watcher._reducer.batched = batched
    return watcher


def dualwatch_check(case: Case, watcher: Any) -> Callable[[], dict[str, Any]]:
    """A zero-argument callable running one check; the first (snapshot-less) check is done here."""
    steps = itertools.count()
    watcher.step(next(steps))
    case.perturb()
    metrics = watcher.step(next(steps))
    if not metrics:
        raise RuntimeError("the dualwatch check returned no metrics (did it warn that it failed?)")
    change = [k for k in metrics if "weight_change" in k]
    print(f"  the check returns {len(metrics)} metrics; weight_change keys: {len(change)}")
    if not change:
        print("  WARNING: no weight_change metric after the second check; the timed checks skip snapshots")
    return lambda: watcher.step(next(steps))


def run_framework(framework: str, width: int, repeats: int, device: str, threads: int) -> dict[str, Timings]:
    """Build the model and time the variants; print and return the timings."""
    case = CASES[framework](width, device)
    n = case.numel()
    print(
        f"\n== {framework} on {device}: {len(case.named)} tensors, {n:,} parameters "
        f"({n * 4 / 1e6:.1f} MB per float32 copy), {repeats} repeats =="
    )
    variants = {
        "dualwatch check": dualwatch_check(case, watcher_of(case, threads)),
        "seed-style loop": case.seed,
        "memory floor": case.floor,
    }
    results = interleaved(variants, repeats, before=case.perturb)
    print(table(list(results.values())))
    dual, seed, floor = results.values()
    print(verdict("dualwatch / floor", dual.median / floor.median, FLOOR_TARGET, at_most=True))
    print(verdict("seed / dualwatch", seed.median / dual.median, SEED_TARGET, at_most=False))
    if device == "cpu":
        # Apart from the rows above: its float64 buffers, interleaved with them, slowed them all.
        accelerator = dualwatch_check(case, watcher_of(case, threads, host_paths=False))
        apart = interleaved(
            {"dualwatch accel path": accelerator, "memory floor": case.floor}, repeats, before=case.perturb
        )
        print(table(list(apart.values())))
        ratio = apart["dualwatch accel path"].median / apart["memory floor"].median
        print(f"  accel path on the CPU / floor: {ratio:.2f}x (no target: work shaped for a GPU)")
        print_op_counts(case, threads)
    print(f"  ({load_average()} after the {framework} runs)")
    return results


def print_op_counts(case: Case, threads: int) -> None:
    """Framework ops per steady-state check: the accelerator path batched and one tensor at a time,
    and the seed-style loop (each op is a kernel launch on a GPU; views launch none)."""
    rows = {}
    for name, batched in (("accel path, batched", True), ("accel path, one tensor at a time", False)):
        check = dualwatch_check(case, watcher_of(case, threads, host_paths=False, batched=batched))
        rows[name] = case.count_ops(check)
    rows["seed-style loop"] = case.count_ops(case.seed)
    print(f"  framework ops per check ({len(case.named)} tensors), views apart:")
    for name, (ops, views) in rows.items():
        note = "  (numpy on the CPU: not comparable)" if ops == 0 else ""
        print(f"    {name:<34} {ops:>7,} ops  {views:>7,} views{note}")


def framework_version(framework: str) -> str:
    """The framework's version and, for torch, its CPU thread pools (paddle has no such query)."""
    if framework == "torch":
        import torch

        pools = f"threads={torch.get_num_threads()}, interop={torch.get_num_interop_threads()}"
        return f"{torch.__version__} ({pools})"
    import paddle

    return str(paddle.__version__)


def device_error(framework: str, device: str) -> str | None:
    """Why ``framework`` cannot run on ``device``, or None when it can."""
    if device == "cpu":
        return None
    if framework == "torch":
        import torch

        if torch.cuda.is_available():
            return None
        return f"torch {torch.__version__} sees no CUDA device (torch.cuda.is_available() is False)"
    import paddle

    if paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0:
        return None
    built = paddle.device.is_compiled_with_cuda()
    return f"paddle {paddle.__version__} sees no GPU (compiled with CUDA: {built})"


def main(argv: list[str] | None = None) -> int:
    from dualwatch._host import FusedReducer, fused_kernel_built

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--framework", choices=["torch", "paddle", "both"], default="both")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="cuda: paddle's gpu place")
    parser.add_argument("--repeats", type=int, help="timed runs per variant (default 7; smoke 2)")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 2 repeats: checks the script runs")
    parser.add_argument(
        "--threads",
        type=int,
        default=FusedReducer().workers.threads,
        help="threads for torch, paddle and dualwatch's host kernel alike (default: the kernel's own, "
        "%(default)s here); 1 steadies timings on a shared machine",
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
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    frameworks = ["torch", "paddle"] if args.framework == "both" else [args.framework]
    width = SMOKE_WIDTH if args.smoke else FULL_WIDTH

    threads_before = thread_env()
    if "paddle" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # before paddle's import sets it to 1
    for name in frameworks:
        error = device_error(name, args.device)
        if error:
            parser.error(
                f"--device {args.device}: {error}; run on a machine with an NVIDIA GPU, or use --device cpu"
            )
    if "torch" in frameworks:
        import torch

        torch.set_num_threads(args.threads)
    versions = {name: framework_version(name) for name in frameworks}
    threads_after = thread_env()
    threads = threads_after
    if threads_after != threads_before:
        threads = f"{threads_before} before imports, {threads_after} after"
    print(env_line(versions, threads))
    kernel = "on" if fused_kernel_built() else "off (framework ops)"
    print(f"fused host kernel: {kernel}, {args.threads} threads")
    print("medians of interleaved repeats; ratios compare variants of the same run")
    if args.smoke:
        print("SMOKE MODE: tiny model; the ratios below are not meaningful")
    for name in frameworks:
        run_framework(name, width, repeats, args.device, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
