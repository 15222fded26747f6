"""Benchmark: Canny edge maps of a training batch, seed-style against dualwatch (and kornia).

What it measures
    Edge maps of 16 RGB 512x512 float32 images in [-1, 1] (synthetic scenes: a colour
    ramp, filled shapes, mild noise; the share of edge pixels is printed), on the
    CPU, from a framework tensor to a framework tensor, in PyTorch and PaddlePaddle:

    * floor: bare ``cv2.GaussianBlur`` + ``cv2.Canny`` on ready uint8 grey images (the same
      images' grey, made before timing), on 1 thread and split over a 2-thread pool: the least
      any edge map can cost, with no conversion in and no tensor out;
    * seed-style: the StableSR edge monitor callback's ``generate_from_tensor`` (fixed
      100/200), one image at a time: ``.cpu().numpy()``, float math to uint8 (no clamp),
      ``cvtColor``, blur, ``Canny``, a 3-channel float map back to a tensor, ``stack``, and the
      loss's ``(e + 1) / 2`` to [0, 1];
    * dualwatch: :class:`dualwatch.EdgeMapGenerator` (zero-copy view; per image, one C pass to
      uint8 grey, OpenCV's blur + Canny into per-thread arrays, one C pass to the float map;
      OpenCV and numpy calls instead where the C loops are not built) on 1 and on 2 threads;
    * kornia (torch only, when installed): ``kornia.filters.canny`` with hysteresis. It is
      slower by orders of magnitude, so it is timed on ``--kornia-images`` images (default 1)
      and reported per image.

Why
    Targets (from the project's issues): dualwatch on 1 thread >= 0.7x the 1-thread floor;
    dualwatch on 2 threads >= 1.5x its own 1-thread rate; >= 1000 images/s on this CPU and
    >= 20x the seed-style path. Variants are interleaved round-robin; medians are reported.
    Nothing asserts on time: the script prints whether each target is met and exits 0. The
    1-thread ratio is printed twice: from wall-clock medians, and from the thread's CPU time
    (interleaved again), which waits for a core on a loaded machine do not distort; the target
    is judged on the CPU-time ratio (on a 2-core machine shared with other work, the wall-clock
    ratio read 0.80-0.89x while the CPU-time ratio read 0.52-0.61x). The 2-thread speedup can only
    be read from wall clocks, which need a second free core (compare the floor's own 2-thread row);
    beside it, the process CPU time of the 2-thread call over the 1-thread call says what splitting
    the batch costs (1.00x: nothing), whatever the load.

Fairness notes
    Every variant starts from the same tensor and ends with a tensor of edge maps in the
    same framework. Canny thresholds 100/200, Gaussian blur 5x5 sigma 1.4 everywhere
    (kornia: 100/255 and 200/255 of its own magnitude units are not equivalent; its
    thresholds are set to 0.39/0.78, the research note's cv2-equivalent figures).
    Each framework runs in its own process (``import paddle`` sets ``OMP_NUM_THREADS=1``).
    OpenCV's own threads are off (``cv2.setNumThreads(1)``) for the whole run, so "N threads"
    means N threads of work for every row; the dualwatch pool turns them off while it runs anyway
    (OpenCV's threads and a pool's fight for the same cores).

Usage
    python bench/edge.py [--framework torch|paddle|both] [--repeats N] [--smoke]

``--smoke`` uses 2 images of 64x64 and 2 repeats, so CI runs it in seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from bench._timing import env_line, interleaved, table, thread_env, verdict  # noqa: E402

RATE_TARGET = 1000.0  # dualwatch images/s
SEED_TARGET = 20.0  # dualwatch / seed-style throughput
FLOOR_TARGET = 0.7  # dualwatch on 1 thread / bare blur + Canny on 1 thread
THREADS_TARGET = 1.5  # dualwatch on 2 threads / dualwatch on 1 thread


def scenes(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``[n, 3, size, size]`` float32 RGB in [-1, 1]: a ramp, a dozen filled shapes, noise."""
    rng = np.random.default_rng(seed)
    batch = np.empty((n, 3, size, size), np.float32)
    ramp = np.linspace(0.2, 0.6, size, dtype=np.float32)
    for i in range(n):
        img = np.empty((size, size, 3), np.float32)
        img[:] = ramp[None, :, None] * rng.uniform(0.5, 1.0, 3).astype(np.float32)
        for _ in range(12):
            centre = tuple(int(v) for v in rng.integers(0, size, 2))
            colour = tuple(float(v) for v in rng.uniform(0, 1, 3))
            if rng.random() < 0.5:
                cv2.circle(img, centre, int(rng.integers(size // 32, size // 6)), colour, -1)
            else:
                corner = tuple(c + int(rng.integers(size // 16, size // 4)) for c in centre)
                cv2.rectangle(img, centre, corner, colour, -1)
        img = cv2.GaussianBlur(img, (3, 3), 0.8) + rng.normal(0, 0.01, img.shape).astype(np.float32)
        batch[i] = img.transpose(2, 0, 1) * 2 - 1
    return batch


def seed_style(x: Any, to_tensor: Callable[[np.ndarray], Any], stack: Callable[[list[Any]], Any]) -> Any:
    """Seed 001's ``generate_from_tensor`` (fixed 100/200 version), then its loss's ``(e + 1) / 2``.

    Per image: host copy, float math on the HWC view, uint8 cast (no clamp), ``cvtColor``, blur,
    ``Canny``, a 3-channel float map in [-1, 1] turned into a tensor; then ``stack``.
    """
    maps = []
    for i in range(x.shape[0]):
        img = (x[i].cpu().numpy() + 1.0) / 2.0
        img = np.transpose(img, (1, 2, 0)).astype(np.float32) * 255.0
        grey = cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2GRAY)
        edges = cv2.Canny(cv2.GaussianBlur(grey, (5, 5), 1.4), threshold1=100, threshold2=200)
        edges = cv2.cvtColor(edges, cv2.COLOR_GRAY2RGB).astype(np.float32) / 255.0
        maps.append(to_tensor(np.transpose(edges, (2, 0, 1))) * 2.0 - 1.0)
    return (stack(maps) + 1.0) / 2.0


def run(framework: str, repeats: int, smoke: bool, kornia_images: int) -> None:
    from dualwatch import EdgeMapGenerator

    threads_before = thread_env()
    n, size = (2, 64) if smoke else (16, 512)
    batch = scenes(n, size)
    if framework == "torch":
        import torch

        fw = torch
        x = torch.from_numpy(batch)
        to_tensor, stack = torch.from_numpy, torch.stack
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")
            import paddle

        fw = paddle
        x = paddle.to_tensor(batch)
        to_tensor, stack = paddle.to_tensor, paddle.stack
    one, two = EdgeMapGenerator(threads=1), EdgeMapGenerator(threads=2)
    greys = list(one.grey_uint8(x))  # the floor's ready uint8 grey images
    pool = ThreadPoolExecutor(2)

    def bare(grey: np.ndarray) -> np.ndarray:
        return cv2.Canny(cv2.GaussianBlur(grey, (5, 5), 1.4), 100, 200)

    cv2.setNumThreads(1)
    print(env_line({framework: fw.__version__, "opencv": cv2.__version__}, threads_before))
    print(f"{framework}: {n} x 3 x {size} x {size} float32 per batch, {repeats} interleaved repeats")
    print(f"  edge pixels: {float(one(x).mean()):.2%}; OpenCV's own threads: {cv2.getNumThreads()}")
    print(f"  dualwatch's grey and map passes: {_host_passes()}")
    names = {
        "floor1": "floor: blur+Canny, 1 thread",
        "floor2": "floor: blur+Canny, 2 threads",
        "one": "dualwatch, 1 thread",
        "two": "dualwatch, 2 threads",
        "seed": "seed-style",
    }
    timings = interleaved(
        {
            names["floor1"]: lambda: [bare(g) for g in greys],
            names["floor2"]: lambda: list(pool.map(bare, greys)),
            names["one"]: lambda: one(x),
            names["two"]: lambda: two(x),
            names["seed"]: lambda: seed_style(x, to_tensor, stack),
        },
        repeats,
    )
    pool.shutdown()
    rows = list(timings.values())
    print(table(rows))
    rates = {key: n / timings[name].median for key, name in names.items()}
    kornia_rate = _kornia(x[:kornia_images], max(2, repeats // 4)) if framework == "torch" else None
    for key, name in names.items():
        print(f"  {name:<32} {rates[key]:10.1f} images/s (median)")
    if kornia_rate is not None:
        print(
            f"  {'kornia canny':<24} {kornia_rate:10.3f} images/s (median, {kornia_images} image(s) a call)"
        )
    cpu = _cpu_seconds({"floor": lambda: [bare(g) for g in greys], "one": lambda: one(x)}, repeats)
    both = _cpu_seconds({"one": lambda: one(x), "two": lambda: two(x)}, repeats, clock=time.process_time)
    print(
        f"  {'1 thread / floor':<20} {rates['one'] / rates['floor1']:8.2f}x   (wall clock: on a loaded "
        "machine, waits for a core distort it)"
    )
    print(verdict("1 thread / floor, CPU", cpu["floor"] / cpu["one"], FLOOR_TARGET, at_most=False))
    print(
        f"  {'':<20} thread CPU time, medians: {cpu['floor'] / n * 1e3:.3f} (floor) vs "
        f"{cpu['one'] / n * 1e3:.3f} (dualwatch) ms an image"
    )
    print(verdict("2 threads / 1 thread", rates["two"] / rates["one"], THREADS_TARGET, at_most=False))
    print(
        f"  {'2 threads, CPU cost':<20} {both['two'] / both['one']:8.2f}x   (process CPU time, 2 threads / "
        "1 thread: what splitting costs, which no load distorts)"
    )
    split = rates["two"] / rates["floor2"]
    print(f"  {'2 threads / floor 2':<20} {split:8.2f}x   (the floor split the same way)")
    best = max(rates["one"], rates["two"])
    print(verdict("dualwatch / seed", best / rates["seed"], SEED_TARGET, at_most=False))
    met = "MET" if best >= RATE_TARGET else "NOT MET"
    print(f"  {'dualwatch images/s':<20} {best:8.0f}    (target >= {RATE_TARGET:g})  {met}")


def _host_passes() -> str:
    """Which host passes dualwatch uses around blur + Canny here (after a first call)."""
    from dualwatch import _edge

    if _edge._one_pass_agrees():
        return "one C loop each (dualwatch._edgehost)"
    if _edge._edgehost is not None:
        return "OpenCV calls for the grey (the C loop rounds differently on this CPU), a C loop for the map"
    return "OpenCV and numpy calls (dualwatch._edgehost not built)"


def _cpu_seconds(
    variants: dict[str, Callable[[], Any]], repeats: int, clock: Callable[[], float] = time.thread_time
) -> dict[str, float]:
    """Median CPU time of each variant, interleaved: on a machine shared with other work, wall-clock
    medians include waiting for a core; CPU time does not. ``clock``: this thread's CPU time (for
    1-thread variants), or ``time.process_time`` (every thread's, for pooled ones)."""
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(repeats):
        names = list(variants)
        for name in names[r % len(names) :] + names[: r % len(names)]:
            start = clock()
            variants[name]()
            samples[name].append(clock() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def _kornia(x: Any, repeats: int) -> float | None:
    """kornia's canny (hysteresis on) in images/s, or None when kornia is not installed."""
    try:
        import kornia
        import torch
    except ImportError:
        print("  kornia: not installed (pip install kornia), skipped")
        return None

    def canny() -> Any:
        with torch.no_grad():
            return kornia.filters.canny((x + 1) / 2, 0.39, 0.78, (5, 5), (1.4, 1.4))[1]

    timing = interleaved({"kornia canny": canny}, repeats, warmup=0)["kornia canny"]
    return x.shape[0] / timing.median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=["torch", "paddle", "both"], default="both")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--kornia-images", type=int, default=1)
    parser.add_argument("--smoke", action="store_true", help="tiny batch, 2 repeats: checks the script runs")
    args = parser.parse_args()
    repeats = 2 if args.smoke else args.repeats
    if args.framework != "both":
        run(args.framework, repeats, args.smoke, args.kornia_images)
        return
    for framework in ("torch", "paddle"):  # separate processes: import paddle changes thread settings
        command = [sys.executable, __file__, "--framework", framework, "--repeats", str(repeats)]
        command += ["--kornia-images", str(args.kornia_images)] + (["--smoke"] if args.smoke else [])
        subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
