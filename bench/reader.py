"""Benchmark: reading a 1M-scalar run with ``dualwatch.readers`` beside the viewers' own readers.

What it measures
    A run of ``N`` scalars (10 tags x N/10 steps) is framed with dualwatch's own
    encoders, straight to files in a temporary directory, as:

    * VisualDL ``vdlrecords`` (one scalar per record, as every VisualDL writer does);
    * TensorBoard, one event per step holding its 10 scalars (as dualwatch writes);
    * TensorBoard, one event per scalar (as torch's ``SummaryWriter`` writes);
    * ``metrics.jsonl``.

    For each, ``RunReader(run).poll()`` is timed warm, in this process, from a fresh
    reader (the first full read, checksums checked; one untimed read first loads the
    parsers), interleaved round-robin, then the idle poll (nothing appended: a listing and
    one ``stat`` per file). It is also timed cold, the way the library readers are: in a
    fresh process that only imports its reader and reads the run once (parsers loaded in
    the timed read), ``--processes`` times per run, round-robin, medians printed. Beside
    it, each once and in its own process: ``visualdl.LogReader(file_path=...)`` on the
    VisualDL file, TensorBoard's legacy ``EventAccumulator`` (``size_guidance`` scalars=0,
    every point kept) on the torch-style file, and ``tbparse`` if it is installed, each
    with dualwatch's cold time on the same file and the ratio. Resident memory is the peak
    RSS of such a child process (``VmHWM``), with the growth over the peak before the read
    beside it: what the read itself holds, and per point.

Why
    The targets of ../shared/research/writers.md (4.2 and 7, item 12): a first read of
    1M scalars at >= 500k records/s from VisualDL files and >= 300k records/s from
    TensorBoard files with CRC checking, an idle poll <= 5 ms, and <= 150 MB resident
    for 1M records; the library readers take 6-25 s and 260-670 MB for the same data.
    Issue 20: each tag held as columns (typed arrays), at most 60 MB of growth per 1M
    scalars where lists of Python numbers took 72-95 MB (about 80 bytes a point).
    Nothing is asserted; the script prints medians and MET / NOT MET and exits 0.

Usage
    python bench/reader.py [--records N] [--repeats R] [--processes P] [--smoke]

``--smoke`` reads 2,000 records once (one process per run), so CI runs it in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench._timing import Timings, env_line, interleaved  # noqa: E402

TAGS = [f"train/metric_{i}" for i in range(10)]
WALL_MS = 1_700_000_000_000
#: run name -> (format, file name, one event per scalar)
RUNS = {
    "visualdl": ("visualdl", "vdlrecords.1700000000.bench.1.0.log", False),
    "tensorboard (10 scalars/event)": (
        "tensorboard",
        "events.out.tfevents.1700000000.bench.1.0.dualwatch",
        False,
    ),
    "tensorboard (1 scalar/event)": (
        "tensorboard",
        "events.out.tfevents.1700000000.bench.1.1.dualwatch",
        True,
    ),
    "jsonl": ("jsonl", "metrics.jsonl", False),
}
#: minimum records/s for a first full read, by format
TARGETS = {"visualdl": 500_000, "tensorboard": 300_000}
IDLE_POLL_MS = 5.0
RSS_MB = 150.0
#: the most resident memory a read of up to a million scalars may add, and per million beyond
#: (issue 20: columnar series)
GROWTH_MB = 60.0


def build(root: str, steps: int) -> dict[str, str]:
    """Writes every run of ``RUNS`` under ``root``; returns ``{run name: run directory}``."""
    from dualwatch._formats import formats_by_name
    from dualwatch.records import Scalars

    encoders = {name: cls() for name, cls in formats_by_name().items()}
    dirs = {}
    for i, (name, (fmt, file_name, single)) in enumerate(RUNS.items()):
        encoder, directory = encoders[fmt], os.path.join(root, f"run{i}")
        os.makedirs(directory)
        with open(os.path.join(directory, file_name), "wb") as f:
            f.write(encoder.header(WALL_MS, 0))
            for first in range(0, steps, 1000):
                batch = []
                for step in range(first, min(first + 1000, steps)):
                    values = {tag: step * 0.5 + j for j, tag in enumerate(TAGS)}
                    if single:
                        batch.extend(Scalars(step, WALL_MS + step, {t: v}) for t, v in values.items())
                    else:
                        batch.append(Scalars(step, WALL_MS + step, values))
                f.write(encoder.encode(batch))
        dirs[name] = directory
    return dirs


def child(kind: str, path: str) -> None:
    """Imports one reader, reads ``path`` once and prints seconds, points and RSS as JSON."""
    if kind == "dualwatch":
        from dualwatch.readers import RunReader

        def read() -> int:
            return RunReader(path).poll()
    elif kind == "visualdl":
        from visualdl import LogReader

        def read() -> int:
            reader = LogReader(file_path=path)
            return sum(len(reader.get_data("scalar", tag)) for tag in reader.get_tags().get("scalar", []))
    elif kind == "eventaccumulator":
        from tensorboard.backend.event_processing import event_accumulator as ea

        def read() -> int:
            acc = ea.EventAccumulator(path, size_guidance={ea.SCALARS: 0})
            acc.Reload()
            return sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
    else:
        from tbparse import SummaryReader

        def read() -> int:
            return len(SummaryReader(path).scalars)

    before = peak_rss_kb()
    start = time.perf_counter()
    points = read()
    seconds = time.perf_counter() - start
    after = peak_rss_kb()
    print(json.dumps({"seconds": seconds, "points": points, "rss_kb": after, "before_kb": before}))


def peak_rss_kb() -> int:
    """This process's peak resident memory, in KiB.

    Linux's ``ru_maxrss`` survives ``exec``: a child started by a parent that holds
    200 MB reports at least 200 MB. ``VmHWM`` belongs to the process image alone.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def in_child(kind: str, path: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", kind, path], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"{kind} reader failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def idle_poll_ms(directory: str, polls: int) -> float:
    from dualwatch.readers import RunReader

    reader = RunReader(directory)
    reader.poll()
    samples = Timings("idle poll")
    for _ in range(polls):
        start = time.perf_counter()
        reader.poll()
        samples.samples.append(time.perf_counter() - start)
    return samples.median * 1e3


def cold_children(dirs: dict[str, str], processes: int) -> dict[str, dict[str, float]]:
    """Median seconds, peak RSS and growth (KiB) of ``processes`` fresh-process reads of each run,
    taken round-robin so no run always meets the same load."""
    results: dict[str, list[dict[str, float]]] = {name: [] for name in dirs}
    for _ in range(processes):
        for name, directory in dirs.items():
            results[name].append(in_child("dualwatch", directory))
    return {
        name: {
            "seconds": statistics.median(r["seconds"] for r in rs),
            "rss_kb": statistics.median(r["rss_kb"] for r in rs),
            "growth_kb": statistics.median(r["rss_kb"] - r["before_kb"] for r in rs),
        }
        for name, rs in results.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="scalars per run (10 tags)")
    parser.add_argument("--repeats", type=int, default=3, help="timed dualwatch reads per run")
    parser.add_argument(
        "--processes", type=int, default=3, help="fresh processes per run: dualwatch's cold time and memory"
    )
    parser.add_argument("--smoke", action="store_true", help="2,000 records, 1 repeat (for CI)")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    records, repeats, processes = (args.records, args.repeats, args.processes)
    if args.smoke:
        records, repeats, processes = 2_000, 1, 1
    steps = max(1, records // len(TAGS))
    n = steps * len(TAGS)

    import tensorboard
    import visualdl

    import dualwatch
    from dualwatch.readers import RunReader

    root = tempfile.mkdtemp(prefix="dualwatch-bench-reader-")
    try:
        start = time.perf_counter()
        dirs = build(root, steps)
        print(env_line({"visualdl": visualdl.__version__, "tensorboard": tensorboard.__version__,
                        "dualwatch": dualwatch.__version__}))  # fmt: skip
        built = time.perf_counter() - start
        print(f"{n:,} scalars per run (10 tags x {steps:,} steps), written in {built:.1f} s")
        reads = interleaved(
            {name: (lambda d=directory: RunReader(d).poll()) for name, directory in dirs.items()},
            repeats,
        )
        cold = cold_children(dirs, processes)
        print(
            f"\ndualwatch RunReader, first full read: warm (in-process, median of {repeats} interleaved"
            f" runs) and cold\n(a fresh process, as the library readers below; median of {processes})"
        )
        print(f"  {'run':<32} {'records/s':>11} {'warm s':>7} {'cold s':>7} {'idle poll ms':>13}", end="")
        print(f" {'peak RSS MB':>12} {'growth MB':>10} {'B/point':>8}")
        verdicts = []
        for name, directory in dirs.items():
            fmt = RUNS[name][0]
            rate = n / reads[name].median
            idle = idle_poll_ms(directory, 20 if args.smoke else 200)
            peak, growth = cold[name]["rss_kb"] / 1024, cold[name]["growth_kb"] / 1024
            warm_s, cold_s = reads[name].median, cold[name]["seconds"]
            print(f"  {name:<32} {rate:>11,.0f} {warm_s:>7.2f} {cold_s:>7.2f}", end="")
            print(f" {idle:>13.3f} {peak:>12.0f} {growth:>10.1f} {growth * 2**20 / n:>8.0f}")
            if fmt in TARGETS:
                verdicts.append(
                    (
                        f"{name}: first read >= {TARGETS[fmt]:,} records/s",
                        rate >= TARGETS[fmt],
                        f"{rate:,.0f}",
                    )
                )
            verdicts.append(
                (f"{name}: idle poll <= {IDLE_POLL_MS:g} ms", idle <= IDLE_POLL_MS, f"{idle:.3f} ms")
            )
            verdicts.append((f"{name}: peak RSS <= {RSS_MB:g} MB", peak <= RSS_MB, f"{peak:.0f} MB"))
            growth_target = GROWTH_MB * max(1.0, n / 1_000_000)  # a fixed part (parsers) does not scale down
            verdicts.append(
                (f"{name}: RSS growth <= {growth_target:g} MB", growth <= growth_target, f"{growth:.1f} MB")
            )

        print("\nlibrary readers, one read each in its own process, beside dualwatch's cold read of it")
        print(f"  {'reader':<46} {'records/s':>11} {'seconds':>8} {'dualwatch s':>12} {'ratio':>7}", end="")
        print(f" {'peak RSS MB':>12} {'growth MB':>10} {'points':>10}")
        torch_like = "tensorboard (1 scalar/event)"
        libraries = [
            ("visualdl.LogReader(file_path=...)", "visualdl", "visualdl"),
            ("tensorboard EventAccumulator (1 scalar/event)", "eventaccumulator", torch_like),
        ]
        try:
            import tbparse  # noqa: F401

            libraries.append(("tbparse SummaryReader (1 scalar/event)", "tbparse", torch_like))
        except ImportError:
            print("  tbparse not installed: skipped")
        for label, kind, run in libraries:
            path = os.path.join(dirs[run], RUNS[run][1]) if kind == "visualdl" else dirs[run]
            result = in_child(kind, path)
            ours = cold[run]["seconds"]
            print(
                f"  {label:<46} {n / result['seconds']:>11,.0f} {result['seconds']:>8.2f} {ours:>12.2f}"
                f" {result['seconds'] / ours:>6.1f}x {result['rss_kb'] / 1024:>12.0f}"
                f" {(result['rss_kb'] - result['before_kb']) / 1024:>10.1f} {result['points']:>10,}"
            )
        print("  (ratio: the library's seconds over dualwatch's cold seconds on the same file)")
        print()
        for label, met, value in verdicts:
            print(f"  {label:<62} {'MET' if met else 'NOT MET'} ({value})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
