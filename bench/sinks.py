"""Benchmark: scalars per second into VisualDL + TensorBoard + JSONL, against each library alone.

What it measures
    ``N`` ``add_scalar`` calls (10 tags, 10 scalars per step, as a training loop logs
    them) written by, in the same process and interleaved round-robin:

    * ``visualdl.LogWriter`` alone (library defaults), into one VisualDL file;
    * ``visualdl.LogWriter`` tuned: a queue of ``TUNED_QUEUE`` records, so the caller never
      waits for the writing thread (VisualDL 2.5.3 hands ``max_queue`` and ``flush_secs`` to
      its queue swapped, so the queue size goes in ``flush_secs=``);
    * ``torch.utils.tensorboard.SummaryWriter`` alone (library defaults), one event file;
    * ``SummaryWriter(max_queue=TUNED_QUEUE)``, tuned the same way;
    * ``dualwatch.Writer``, into a VisualDL file, a TensorBoard file and ``metrics.jsonl``
      together.

    End to end is from the first call until ``close()`` returned (every record on disk).
    Caller cost is the time of the calls alone divided by ``N``: what the training loop
    pays per scalar, the background thread's share of the GIL included.

Why
    The targets: >= 300k scalars/s end to end into all three formats, and <= 1.5 us caller
    cost per scalar, with ``Writer`` taking both peers' argument forms; and >= 5x the tuned
    peers (at their defaults the library writers sustain 7k-27k/s on this class of machine,
    ../shared/research/writers.md, 4.1; tuned, about 40k-70k/s).
    Scalars are encoded by the C codec (``dualwatch/_scalarcodec.c``) when it was built;
    ``--no-codec`` times the protobuf/json path it replaces. Nothing is asserted; the script
    prints medians, ratios and whether each target is met, and exits 0.

Usage
    python bench/sinks.py [--scalars N] [--repeats R] [--no-codec] [--smoke]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench._timing import Timings, env_line, interleaved, table  # noqa: E402

TAGS = [f"train/metric_{i}" for i in range(10)]
TUNED_QUEUE = 100_000  # records the tuned peers queue before the caller waits
TUNED_TARGET = 5.0  # dualwatch into three formats, over each tuned peer into one


def _calls_then_close(writer, n: int) -> float:
    """Seconds spent in ``n`` ``add_scalar`` calls; ``close()`` (the drain) follows, untimed here."""
    add_scalar = writer.add_scalar
    start = time.perf_counter()
    for i in range(n):
        add_scalar(TAGS[i % 10], i * 0.5, i // 10)
    calls = time.perf_counter() - start
    writer.close()
    return calls


def visualdl_alone(directory: str, n: int) -> float:
    from visualdl import LogWriter

    return _calls_then_close(LogWriter(logdir=directory), n)


def visualdl_tuned(directory: str, n: int) -> float:
    """VisualDL 2.5.3's ``RecordFileWriter`` passes ``(max_queue_size, flush_secs)`` to a thread class
    that takes ``(flush_secs, max_queue_size)``: ``flush_secs=`` sets the queue size and
    ``max_queue=`` the flush period (120 s, the documented default period)."""
    from visualdl import LogWriter

    return _calls_then_close(LogWriter(logdir=directory, max_queue=120, flush_secs=TUNED_QUEUE), n)


def torch_alone(directory: str, n: int) -> float:
    from torch.utils.tensorboard import SummaryWriter

    return _calls_then_close(SummaryWriter(log_dir=directory), n)


def torch_tuned(directory: str, n: int) -> float:
    from torch.utils.tensorboard import SummaryWriter

    return _calls_then_close(SummaryWriter(log_dir=directory, max_queue=TUNED_QUEUE), n)


def dualwatch_all_three(directory: str, n: int) -> float:
    from dualwatch import Writer

    writer = Writer(directory, run="bench")
    calls = _calls_then_close(writer, n)
    if writer.stats()["dropped"]:
        raise RuntimeError("records were dropped: the run does not count")
    return calls


OURS = "dualwatch VDL+TB+JSONL"
VARIANTS: dict[str, Callable[[str, int], float]] = {
    "visualdl LogWriter alone": visualdl_alone,
    "visualdl LogWriter tuned": visualdl_tuned,
    "torch SummaryWriter alone": torch_alone,
    "torch SummaryWriter tuned": torch_tuned,
    OURS: dualwatch_all_three,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scalars", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-codec", action="store_true", help="encode scalars with protobuf and json")
    parser.add_argument("--smoke", action="store_true", help="2,000 scalars, 1 repeat (for CI)")
    args = parser.parse_args()
    if args.no_codec:
        from dualwatch._formats import _codec

        _codec.codec = None
    n, repeats = (2_000, 1) if args.smoke else (args.scalars, args.repeats)

    import torch
    import visualdl

    import dualwatch

    root = tempfile.mkdtemp(prefix="dualwatch-bench-sinks-")
    calls: dict[str, list[float]] = {name: [] for name in VARIANTS}
    counter = iter(range(10**9))

    def run(name: str) -> Callable[[], None]:
        def once() -> None:
            calls[name].append(VARIANTS[name](f"{root}/{next(counter)}", n))

        return once

    try:
        totals = interleaved({name: run(name) for name in VARIANTS}, repeats, warmup=1)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(
        env_line(
            {"torch": torch.__version__, "visualdl": visualdl.__version__, "dualwatch": dualwatch.__version__}
        )
    )
    from dualwatch._formats import _codec

    print(
        f"{n:,} add_scalar calls, 10 tags, median of {repeats} interleaved runs "
        f"(end to end: close() included); scalars encoded by {'C' if _codec.codec else 'protobuf and json'}"
    )
    print(table(list(totals.values())))
    print()
    rate = {name: n / t.median for name, t in totals.items()}
    caller = {name: Timings(name, samples[1:]).median / n * 1e6 for name, samples in calls.items()}
    for name in VARIANTS:
        print(
            f"  {name:<26} {rate[name]:>10,.0f} scalars/s end to end"
            f"   {caller[name]:6.2f} us/scalar in the caller"
        )
    ours = rate[OURS]
    print()
    for peer in VARIANTS:
        if peer != OURS:
            ratio = ours / rate[peer]
            met = "MET" if ratio >= TUNED_TARGET else "NOT MET"
            target = f"  (target >= {TUNED_TARGET:g}x: {met})" if "tuned" in peer else ""
            print(f"  dualwatch (3 formats) vs {peer + ':':<27} {ratio:5.1f}x{target}")
    print(f"  end to end >= 300,000 scalars/s: {'MET' if ours >= 300_000 else 'NOT MET'} ({ours:,.0f})")
    cost = caller[OURS]
    print(f"  caller cost <= 1.5 us/scalar:    {'MET' if cost <= 1.5 else 'NOT MET'} ({cost:.2f} us)")


if __name__ == "__main__":
    main()
