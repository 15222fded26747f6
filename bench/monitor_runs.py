"""Benchmark: ``dualwatch monitor LOGDIR`` over a logdir of many runs (a sweep, containers on one volume).

What it measures
    ``--runs`` runs (default 200) of ``--steps`` steps (5,000) x 20 tags each are written in one
    logdir with dualwatch's own TensorBoard encoder (one event per step holding its 20 scalars,
    as dualwatch's ``Writer`` writes them; the format a dualwatch run is read from). Then, in a
    child process of its own (so its peak RSS is the monitor's alone), what one
    ``dualwatch monitor LOGDIR`` poll does: list the runs, poll one ``RunReader`` per run (started
    near each file's end, holding the latest points), build every run's report and render the
    one-line-per-run table; a run's report is rebuilt only when its reader read something. Timed:

    * the first report (from nothing to the table);
    * the idle poll (nothing appended), repeated, its median;
    * the poll after one step was appended to every run, repeated, its median;
    * the naive way, re-reading every file whole at each poll (a fresh ``RunReader`` per run),
      on ``--naive-runs`` runs and scaled to all of them (reading every run whole takes minutes).

    Peak RSS is the child's ``VmHWM``.

Why
    Issue 18's targets: first report < 3 s, each idle poll < 50 ms, peak RSS < 300 MB for
    200 runs x 5,000 steps x 20 tags. Nothing is asserted; the script prints MET / NOT MET and
    exits 0.

Usage
    python bench/monitor_runs.py [--runs N] [--steps S] [--polls P] [--naive-runs K] [--smoke]

``--smoke`` uses 5 runs of 200 steps and 3 polls, so CI runs it in seconds.
"""

from __future__ import annotations

import argparse
import json
import os
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

from bench._timing import env_line  # noqa: E402

TAGS = ["Loss/Train", "Learning_Rate", "train/gradient/total_norm", "train/gradient/health"] + [
    f"train/metric_{i}" for i in range(16)
]
WALL = 1_700_000_000.0
FIRST_REPORT_S, IDLE_POLL_MS, RSS_MB = 3.0, 50.0, 300.0


def values(run: int, step: int) -> dict[str, float]:
    return {
        "Loss/Train": 1.0 / (step + 1) + run * 1e-3,
        "Learning_Rate": 0.01,
        "train/gradient/total_norm": 0.5,
        "train/gradient/health": 0.0,
        **{tag: step * 0.5 + j for j, tag in enumerate(TAGS[4:])},
    }


def build(logdir: str, runs: int, steps: int) -> None:
    """Writes the runs: ``logdir/sweep/run_000`` ..., each one TensorBoard file, the last step now."""
    from dualwatch._formats import formats_by_name
    from dualwatch.records import Scalars

    encoder = formats_by_name()["tensorboard"]()
    start = time.time() - steps * 0.01
    for run in range(runs):
        directory = os.path.join(logdir, "sweep", f"run_{run:03d}")
        os.makedirs(directory)
        path = os.path.join(directory, f"events.out.tfevents.{int(WALL)}.bench.{run}.0.dualwatch")
        with open(path, "wb") as f:
            f.write(encoder.header(int(start * 1000), 0))
            for first in range(0, steps, 1000):
                batch = [
                    Scalars(step, start + step * 0.01, values(run, step))
                    for step in range(first, min(first + 1000, steps))
                ]
                f.write(encoder.encode(batch))


def append_step(logdir: str, step: int) -> None:
    """One more step at the end of every run (the runs go on training)."""
    from dualwatch._formats import formats_by_name
    from dualwatch.records import Scalars

    encoder = formats_by_name()["tensorboard"]()
    for root, _, files in os.walk(logdir):
        for name in files:
            run = int(os.path.basename(root).split("_")[1])
            with open(os.path.join(root, name), "ab") as f:
                f.write(encoder.encode([Scalars(step, time.time(), values(run, step))]))


def peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def child(logdir: str, polls: int, steps: int, naive_runs: int) -> None:
    """One monitor's polls over ``logdir``; prints the timings as JSON."""
    from dualwatch._following import Runs
    from dualwatch._report import Options, build_report
    from dualwatch._view import render_runs_text
    from dualwatch.readers import RunReader
    from dualwatch.readers._discover import display_name, list_runs

    options = Options(stall=86400.0)
    many = Runs(logdir, options)

    def poll() -> list:
        reports = many.poll(list_runs(logdir))
        render_runs_text(reports)
        return reports

    start = time.perf_counter()
    reports = poll()
    first = time.perf_counter() - start
    assert len(reports) == len(many.readers) and all(r.step == steps - 1 for r in reports), reports[0]
    idle = []
    for _ in range(polls):
        start = time.perf_counter()
        poll()
        idle.append(time.perf_counter() - start)
    appended = []
    for i in range(polls):
        append_step(logdir, steps + i)
        start = time.perf_counter()
        reports = poll()
        appended.append(time.perf_counter() - start)
    assert all(r.step == steps + polls - 1 for r in reports)
    rss = peak_rss_mb()  # before the naive reads, which hold a whole run at a time
    run_dirs = list_runs(logdir)[:naive_runs]
    start = time.perf_counter()
    for run_dir in run_dirs:
        reader = RunReader(run_dir)
        reader.poll()
        build_report(reader, time.time(), options, display_name(run_dir, logdir))
    naive = (time.perf_counter() - start) / len(run_dirs) * len(many.readers)
    print(
        json.dumps(
            {
                "first": first,
                "idle": statistics.median(idle),
                "idle_max": max(idle),
                "appended": statistics.median(appended),
                "naive": naive,
                "naive_runs": len(run_dirs),
                "rss_mb": rss,
                "points": sum(r.records for r in reports),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--polls", type=int, default=20, help="idle polls timed (and polls after an append)")
    parser.add_argument("--naive-runs", type=int, default=10, help="runs the naive whole read is timed on")
    parser.add_argument("--smoke", action="store_true", help="5 runs x 200 steps, 3 polls (for CI)")
    parser.add_argument(
        "--child", nargs=4, metavar=("LOGDIR", "POLLS", "STEPS", "NAIVE"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        logdir, polls, steps, naive = args.child
        child(logdir, int(polls), int(steps), int(naive))
        return
    runs, steps, polls, naive_runs = (
        (5, 200, 3, 2) if args.smoke else (args.runs, args.steps, args.polls, args.naive_runs)
    )
    import dualwatch

    print(env_line({"dualwatch": dualwatch.__version__}))
    root = tempfile.mkdtemp(prefix="dualwatch-bench-monitor-runs-")
    try:
        start = time.perf_counter()
        build(root, runs, steps)
        size = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file())
        print(
            f"{runs} runs x {steps:,} steps x {len(TAGS)} tags = {runs * steps * len(TAGS):,} scalars, "
            f"{size / 2**20:,.0f} MiB of TensorBoard files, written in {time.perf_counter() - start:.1f} s"
        )
        result = subprocess.run(
            [sys.executable, __file__, "--child", root, str(polls), str(steps), str(naive_runs)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"the monitor's child failed:\n{result.stderr}")
        m = json.loads(result.stdout.strip().splitlines()[-1])
        print(f"\none monitor following all {runs} runs (scalar points read: {m['points']:,})")
        rows = [
            ("first report", f"{m['first']:.3f} s", ""),
            (
                f"idle poll, median of {polls}",
                f"{m['idle'] * 1e3:.2f} ms",
                f"max {m['idle_max'] * 1e3:.2f} ms",
            ),
            (
                "poll after a step appended to every run",
                f"{m['appended'] * 1e3:.2f} ms",
                f"median of {polls}",
            ),
            (
                "naive poll, every file re-read whole",
                f"{m['naive']:.2f} s",
                f"timed on {m['naive_runs']} runs, scaled to {runs}",
            ),
            ("peak RSS", f"{m['rss_mb']:.0f} MB", ""),
        ]
        for label, value, note in rows:
            print(f"  {label:<42} {value:>10}  {note}".rstrip())
        print(f"  the idle poll is {m['naive'] / m['idle']:,.0f}x faster than the naive one\n")
        for label, met, value in (
            (f"first report < {FIRST_REPORT_S:g} s", m["first"] < FIRST_REPORT_S, f"{m['first']:.2f} s"),
            (f"idle poll < {IDLE_POLL_MS:g} ms", m["idle"] * 1e3 < IDLE_POLL_MS, f"{m['idle'] * 1e3:.1f} ms"),
            (f"peak RSS < {RSS_MB:g} MB", m["rss_mb"] < RSS_MB, f"{m['rss_mb']:.0f} MB"),
        ):
            print(f"  {label:<30} {'MET' if met else 'NOT MET'} ({value})")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
