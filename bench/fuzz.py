"""Fuzzing the readers: mutated VisualDL, TensorBoard and JSON-lines files read by everything that reads logs.

What it does
    Seeds: small real files written by dualwatch's ``Writer`` (scalars, a histogram, an image,
    text, a PR curve), by VisualDL's ``LogWriter`` and by torch's ``SummaryWriter`` (both in a
    child process, so this one loads no framework), and TensorBoard events built here whose
    tensors claim shapes their bytes do not hold (a scalar tensor of shape [2], 4e9 elements).

    Mutations (a seeded generator; the same ``--seed`` gives the same files): truncation at
    every offset of the smallest seeds, bit flips, bytes set, random bytes and zero runs inserted,
    records duplicated, dropped, swapped or spliced in from another file, length fields set to
    huge values (for TensorBoard with the header checksum made to hold, so the length is
    believed), records re-encoded with extreme steps, wall times and values, and JSON lines
    that nest deeply, hold 400-digit numbers, non-finite numbers, bad types or bad UTF-8.

    Each mutated file, alone in a run directory, is read by
    ``RunReader.poll()`` (whole, then again split at a random offset over two polls), by its
    format's ``read_records`` (what ``convert`` reads with), and by ``dualwatch monitor RUN
    --once --json`` and ``dualwatch convert RUN --to <the other format>`` run in this process
    through click (the command's own code). One file in ``--cli-every`` also goes through the
    real command in a child process; the full run adds a 2 GiB zero-filled (sparse) file per
    format there.

    Counted: files, uncaught exceptions (0 required; an exit status other than the documented
    ones counts as one), operations over 5 s (0 required), peak RSS of this process and of the
    commands' children (<= 150 MB required). This process runs under an address-space limit, so
    an allocation a file's lengths ask for fails here as an exception instead of swapping.

Usage
    python bench/fuzz.py [--files N] [--seed S] [--cli-every K] [--smoke] [--json]

``--files 20000`` is the full run; ``--smoke`` fuzzes about 1,000 files (a few tens of seconds).
Exits 1 if any exception, slow operation or child over the RSS bound was seen.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterator

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

#: an operation slower than this fails the run
SLOW_S = 5.0
#: an operation still running after this is stopped (and counted as an exception and slow)
HANG_S = 60.0
#: the most resident memory a command's child may reach
CHILD_RSS_MB = 150.0
#: file names per format
NAMES = {
    "tensorboard": "events.out.tfevents.1700000000.fuzz",
    "visualdl": "vdlrecords.1700000000.fuzz.log",
    "jsonl": "metrics.jsonl",
}
#: MMEngine's file, in a directory named vis_data
MMENGINE = "scalars.json"
#: the format each one converts to
CONVERT_TO = {"tensorboard": "visualdl", "visualdl": "tensorboard", "jsonl": "tensorboard"}
#: exit statuses the commands may end with (3: no readable records, what a damaged file may leave)
EXITS = {"monitor": {0, 1, 2, 3}, "convert": {0, 2, 3}}
WALL = 1_700_000_000.0
#: runs ``python ARGS...`` and writes its peak RSS (KiB) to the file named first. A child's
#: ``ru_maxrss`` starts at its parent's when it is forked (Linux keeps the high-water mark across
#: ``exec``), so the command is started from this small process, not from the big one measuring.
LAUNCH = (
    "import os, sys\n"
    "pid = os.posix_spawn(sys.executable, [sys.executable, *sys.argv[2:]], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


# -- seeds: real files ------------------------------------------------------------------------------


def make_seeds(out: str) -> None:
    """Writes the seed runs (run by a child process: it imports torch and VisualDL)."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter
    from visualdl import LogWriter

    import dualwatch

    rng = np.random.default_rng(0)
    image = (rng.random((3, 4, 4)) * 255).astype(np.uint8)
    labels, predictions = rng.integers(0, 2, 20), rng.random(20)
    with dualwatch.Writer(out, run="dualwatch_small") as w:
        for step in range(4):
            w.log(step, {"Loss/Train": 1.0 / (step + 1), "Learning_Rate": 0.01}, walltime=WALL + step)
    with dualwatch.Writer(out, run="dualwatch_full") as w:
        for step in range(6):
            w.log(
                step,
                {
                    "Loss/Train": 1.0 / (step + 1),
                    "Learning_Rate": 0.01 * 0.9**step,
                    "train/gradient/total_norm": 0.5,
                    "train/gradient/health": 0.0,
                    "Model/Gradient_Norm": 0.4,
                },
                walltime=WALL + step,
            )
        w.add_histogram("weights", rng.normal(size=50), 2, bins=8, walltime=WALL + 2)
        w.add_image("sample", image, 3, walltime=WALL + 3)
        w.add_text("note", "hello\nworld", 4, walltime=WALL + 4)
        w.add_pr_curve("pr", labels, predictions, 5, num_thresholds=8, walltime=WALL + 5)
    os.makedirs(os.path.join(out, "visualdl_small"))
    with LogWriter(logdir=os.path.join(out, "visualdl_small")) as w:
        for step in range(4):
            w.add_scalar("loss", 1.0 / (step + 1), step)
    with LogWriter(logdir=os.path.join(out, "visualdl_full")) as w:
        for step in range(4):
            w.add_scalar("loss", 1.0 / (step + 1), step)
        w.add_histogram("weights", rng.normal(size=50), 1, buckets=8)
        w.add_image("sample", image.transpose(1, 2, 0), 2)
        w.add_text("note", "hello", 3)
        w.add_embeddings("emb", rng.random((3, 4)).tolist(), ["a", "b", "c"])
    writer = SummaryWriter(os.path.join(out, "torch_small"))
    for step in range(4):
        writer.add_scalar("loss", 1.0 / (step + 1), step, walltime=WALL + step)
    writer.close()
    writer = SummaryWriter(os.path.join(out, "torch_full"))
    for step in range(4):
        writer.add_scalar("loss", 1.0 / (step + 1), step, new_style=True)
        writer.add_scalars("acc", {"train": 0.5 + step / 10, "val": 0.4 + step / 10}, step)
    writer.add_histogram("weights", rng.normal(size=50), 1, bins=8)
    writer.add_image("sample", image, 2)
    writer.add_text("note", "hello", 3)
    writer.add_pr_curve("pr", labels, predictions, 3, num_thresholds=8)
    writer.close()


def load_seeds(directory: str) -> dict[str, list[tuple[str, bytes]]]:
    """``{format: [(seed name, bytes), ...]}`` of every log file under ``directory``."""
    from dualwatch.readers._discover import format_of

    seeds: dict[str, list[tuple[str, bytes]]] = {name: [] for name in NAMES}
    for run in sorted(os.listdir(directory)):
        for name in sorted(os.listdir(os.path.join(directory, run))):
            fmt = format_of(name, os.path.join(directory, run))
            if fmt is not None and fmt.name in seeds:
                seeds[fmt.name].append((f"{run}/{fmt.name}", Path(directory, run, name).read_bytes()))
    seeds["tensorboard"].append(("crafted tensors", crafted_tensorboard()))
    return seeds


def tb_frame(payload: bytes) -> bytes:
    from dualwatch._formats.tensorboard import crc32c, masked

    head = struct.pack("<Q", len(payload))
    crc = crc32c()
    return head + struct.pack("<I", masked(crc(head))) + payload + struct.pack("<I", masked(crc(payload)))


def crafted_tensorboard() -> bytes:
    """Events whose tensors claim shapes their bytes do not hold, of every plugin read back."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

    def event(plugin: str, dims: list[int], step: int, wall: float = WALL, **fields: Any) -> bytes:
        shape = tensor_shape_pb2.TensorShapeProto(dim=[{"size": d} for d in dims])
        tensor = tensor_pb2.TensorProto(tensor_shape=shape, **fields)
        meta = summary_pb2.SummaryMetadata(plugin_data={"plugin_name": plugin})
        value = summary_pb2.Summary.Value(tag=f"{plugin}_{step}", metadata=meta, tensor=tensor)
        summary = summary_pb2.Summary(value=[value])
        return tb_frame(event_pb2.Event(wall_time=wall, step=step, summary=summary).SerializeToString())

    f32 = types_pb2.DT_FLOAT
    cases = [
        event("scalars", [], 0, dtype=f32, float_val=[1.0]),
        event("scalars", [2], 1, dtype=f32, tensor_content=struct.pack("<2f", 1, 2)),
        event("scalars", [2], 2, dtype=f32, float_val=[1.0, 2.0]),
        event("scalars", [4_000_000_000], 3, dtype=f32, float_val=[1.0]),
        event("scalars", [-1], 4, dtype=f32, float_val=[1.0]),
        event("scalars", [], 5, dtype=types_pb2.DT_STRING, string_val=[b"x"]),
        event("histograms", [4_000_000_000, 3], 6, dtype=f32, float_val=[1.0]),
        event("histograms", [2], 7, dtype=f32, float_val=[1.0, 2.0]),
        event("pr_curves", [6, 4_000_000_000], 8, dtype=f32, float_val=[1.0]),
        event("pr_curves", [3], 9, dtype=f32, float_val=[1.0, 2.0, 3.0]),
        event("images", [4_000_000_000], 10, dtype=types_pb2.DT_STRING, string_val=[b"x"]),
        event("images", [3], 11, dtype=f32, float_val=[1.0, 2.0, 3.0]),
        event("text", [4_000_000_000], 12, dtype=types_pb2.DT_STRING, string_val=[b"x"]),
        event("text", [1 << 62, 1 << 62], 13, dtype=types_pb2.DT_STRING, string_val=[b"x"]),
        event("text", [1], 14, dtype=f32, float_val=[1.0]),
        event("text", [1], 15, wall=math.nan, dtype=types_pb2.DT_STRING, string_val=[b"x"]),
        event("histograms", [1, 3], 16, wall=-math.inf, dtype=f32, float_val=[0.0, 1.0, 2.0]),
        event("scalars", [], 17, wall=1e300, dtype=types_pb2.DT_HALF, half_val=[0x7FFFFFFF]),
    ]
    return b"".join(cases)


# -- mutations ----------------------------------------------------------------------------------------


def frames(fmt: str, data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of the whole records at the start of ``data``."""
    from dualwatch._formats import formats_by_name

    return [(f.start, f.end) for f in formats_by_name()[fmt].scan(data)]


def reframe(fmt: str, payload: bytes) -> bytes:
    return tb_frame(payload) if fmt == "tensorboard" else struct.pack("<Q", len(payload)) + payload


def bit_flips(fmt: str, data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        at = rng.randrange(len(out))
        out[at] ^= 1 << rng.randrange(8)
    return bytes(out)


def bytes_set(fmt: str, data: bytes, rng: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        at = rng.randrange(len(out))
        out[at] = rng.choice([0, 0xFF, 0x0A, 0x7F, 0x80, rng.randrange(256)])
    return bytes(out)


def truncated(fmt: str, data: bytes, rng: random.Random) -> bytes:
    return data[: rng.randrange(len(data))]


def inserted(fmt: str, data: bytes, rng: random.Random) -> bytes:
    at = rng.randrange(len(data) + 1)
    junk = rng.choice([bytes(rng.randrange(1, 5000)), rng.randbytes(rng.randrange(1, 64))])
    return data[:at] + junk + data[at:]


def records_shuffled(fmt: str, data: bytes, rng: random.Random) -> bytes:
    """A record duplicated, dropped, or two swapped."""
    spans = frames(fmt, data) if fmt != "jsonl" else _lines(data)
    if len(spans) < 2:
        return bit_flips(fmt, data, rng)
    parts = [data[a:b] for a, b in spans] + [data[spans[-1][1] :]]
    i, j = rng.randrange(len(spans)), rng.randrange(len(spans))
    how = rng.randrange(3)
    if how == 0:
        parts.insert(j, parts[i])
    elif how == 1:
        del parts[i]
    else:
        parts[i], parts[j] = parts[j], parts[i]
    return b"".join(parts)


def spliced(fmt: str, data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """A record of another seed of the same format (or a slice of it) put in at a record boundary."""
    other = rng.choice(others)
    spans = frames(fmt, other) if fmt != "jsonl" else _lines(other)
    piece = other[slice(*rng.choice(spans))] if spans else other[: rng.randrange(1, len(other) + 1)]
    mine = frames(fmt, data) if fmt != "jsonl" else _lines(data)
    at = rng.choice([0, *[b for _, b in mine]])
    return data[:at] + piece * rng.randint(1, 3) + data[at:]


HUGE = [0, 1, 2**31 - 1, 2**31, 2**32, 2**40, 2**63 - 1, 2**64 - 1]


def huge_length(fmt: str, data: bytes, rng: random.Random) -> bytes:
    """A record's length field set to a huge (or off-by-one) value; TensorBoard's header checksum
    made to hold half the time, so that the reader believes it."""
    if fmt == "jsonl":
        return jsonl_special(fmt, data, rng)
    spans = frames(fmt, data)
    if not spans:
        return bit_flips(fmt, data, rng)
    start, _ = rng.choice(spans)
    length = struct.unpack_from("<Q", data, start)[0]
    new = rng.choice([*HUGE, length + 1, max(0, length - 1), len(data) - start])
    head = struct.pack("<Q", new)
    if fmt == "tensorboard":
        from dualwatch._formats.tensorboard import crc32c, masked

        crc = data[start + 8 : start + 12]
        head += struct.pack("<I", masked(crc32c()(head))) if rng.random() < 0.5 else crc
    return data[:start] + head + data[start + len(head) :]


def reencoded(fmt: str, data: bytes, rng: random.Random) -> bytes:
    """A record parsed, given an extreme step, wall time, value or tag, and framed again (checksums hold)."""
    if fmt == "jsonl":
        return jsonl_special(fmt, data, rng)
    spans = frames(fmt, data)
    if not spans:
        return bit_flips(fmt, data, rng)
    start, end = rng.choice(spans)
    extreme = rng.choice([math.nan, math.inf, -math.inf, 1e300, -1e300, 0.0, -1.0, 2.0**63])
    big = rng.choice([2**63 - 1, -(2**63), -1, 0, 2**62])
    if fmt == "tensorboard":
        from tensorboard.compat.proto.event_pb2 import Event

        message = Event.FromString(data[start + 12 : end - 4])
        target = message
        setattr_choice(rng, [("step", big), ("wall_time", extreme)], target)
        for value in message.summary.value:
            if value.WhichOneof("value") == "simple_value" and rng.random() < 0.5:
                value.simple_value = extreme
            if rng.random() < 0.2:
                value.tag = rng.choice(["", "a" * 5000, "x/" * 300, "\u00e9\u4e2d"])
        payload = message.SerializeToString()
    else:
        from dualwatch._formats._columns import visualdl_record

        message = visualdl_record().FromString(data[start + 8 : end])
        for value in message.values:
            setattr_choice(rng, [("id", big), ("timestamp", big)], value)
            if value.WhichOneof("one_value") == "value" and rng.random() < 0.5:
                value.value = extreme
            if rng.random() < 0.2:
                value.tag = rng.choice(["", "a" * 5000, "x/" * 300])
            if value.WhichOneof("one_value") == "histogram" and rng.random() < 0.5:
                del value.histogram.bin_edges[rng.randrange(len(value.histogram.bin_edges) or 1) :]
            if value.WhichOneof("one_value") == "pr_curve" and rng.random() < 0.5:
                del value.pr_curve.TP[: rng.randint(1, 3)]
            if value.WhichOneof("one_value") == "embeddings" and rng.random() < 0.5:
                del value.embeddings.embeddings[0].vectors[:1]
        payload = message.SerializeToString()
    return data[:start] + reframe(fmt, payload) + data[end:]


def setattr_choice(rng: random.Random, choices: list[tuple[str, Any]], message: Any) -> None:
    name, value = rng.choice(choices)
    setattr(message, name, value)


JSON_LINES = [
    b"[" * 100_000,
    b'{"step": 1, "wall_time": 1.0, "a": ' + b"9" * 400 + b"}",
    b'{"step": ' + b"9" * 400 + b', "a": 1}',
    b'{"step": 1, "wall_time": 1e999, "a": 1e999}',
    b'{"step": 1, "wall_time": NaN, "a": NaN, "b": -Infinity}',
    b'{"step": 1, "wall_time": "now", "a": "Infinity"}',
    b'{"step": 1.5, "a": 1}',
    b'{"step": true, "a": 1}',
    b'{"step": -9223372036854775809, "a": 1}',
    b'{"step": 99999999999999999999999, "wall_time": 1e308, "a": 1}',
    b'{"step": 1, "wall_time": -1e308, "a": 1}',
    b'{"step": 1, "a": {"b": [1, 2, {"c": 3}]}}',
    b'{"step": 1, "\\ud800": 1, "a\\u0000b": 2}',
    b'{"step": 1, "kind": "histogram", "tag": "h", "counts": [1], "edges": []}',
    b"\xff\xfe\x00garbage",
    b"[1, 2, 3]",
    b'"just a string"',
    b"null",
    b'{"step": 1, "a": 1, "a": 2}',
    b'{"step": 2, "wall_time": 1.0, "loss": 0.5',
    b'{"step": 5, "time": ' + b"9" * 400 + b', "loss": 1}',
    b'{"step": 6, "time": -1e308, "loss": 1}',
    b'{"step": 7, "time": 1e308, "loss": 1}',
    b'{"step": 8, "time": NaN, "loss": 1}',
]


def jsonl_special(fmt: str, data: bytes, rng: random.Random) -> bytes:
    """Lines that are hard to read: deep nesting, huge numbers, bad types, bad UTF-8."""
    lines = data.split(b"\n")
    at = rng.randrange(len(lines) + 1)
    return b"\n".join(lines[:at] + rng.sample(JSON_LINES, rng.randint(1, 3)) + lines[at:])


def _lines(data: bytes) -> list[tuple[int, int]]:
    spans, at = [], 0
    while (end := data.find(b"\n", at)) >= 0:
        spans.append((at, end + 1))
        at = end + 1
    return spans


MUTATIONS: dict[str, Callable[..., bytes]] = {
    "bit flips": bit_flips,
    "bytes set": bytes_set,
    "truncated": truncated,
    "bytes inserted": inserted,
    "records shuffled": records_shuffled,
    "records spliced": spliced,
    "huge length": huge_length,
    "re-encoded extreme": reencoded,
    "json specials": jsonl_special,
}


def cases(
    seeds: dict[str, list[tuple[str, bytes]]], files: int, rng: random.Random
) -> Iterator[tuple[str, str, bytes]]:
    """``(format, mutation, bytes)``: truncations of each format's smallest seed at every offset
    (every k-th when ``files`` is small), then random mutations of random seeds."""
    smallest = {fmt: min((data for _, data in found), key=len) for fmt, found in seeds.items()}
    total = sum(len(data) for data in smallest.values())
    every = max(1, math.ceil(total / (files * 0.4)))
    made = 0
    for fmt, data in smallest.items():
        for offset in range(0, len(data), every):
            if made >= files:
                return
            made += 1
            yield fmt, "truncated at every offset", data[:offset]
    formats = list(seeds)
    while made < files:
        fmt = rng.choice(formats)
        _, data = rng.choice(seeds[fmt])
        name = rng.choice([m for m in MUTATIONS if fmt == "jsonl" or m != "json specials"])
        mutate = MUTATIONS[name]
        others = [d for _, d in seeds[fmt]]
        out = mutate(fmt, data, rng, others) if name == "records spliced" else mutate(fmt, data, rng)
        if out and rng.random() < 0.3:  # sometimes a second mutation
            out = bit_flips(fmt, out, rng)
        made += 1
        yield fmt, name, out


# -- reading ------------------------------------------------------------------------------------------


class Hang(Exception):
    """An operation ran past HANG_S."""


def _alarm(signum: int, frame: Any) -> None:
    raise Hang(f"still running after {HANG_S:g} s")


class Tally:
    def __init__(self) -> None:
        self.files = 0
        self.ops = Counter[str]()
        self.exceptions: list[str] = []
        #: the first of each kind of exception (type and line), with its traceback
        self.kinds: dict[str, str] = {}
        self.slow: list[str] = []
        self.slowest = (0.0, "")
        self.by_mutation = Counter[str]()
        self.exits = Counter[str]()
        self.child_rss_mb = 0.0
        self.child_over: list[str] = []

    def run(self, what: str, case: str, op: Callable[[], Any]) -> Any:
        self.ops[what] += 1
        signal.setitimer(signal.ITIMER_REAL, HANG_S)
        start = time.perf_counter()
        try:
            return op()
        except Exception as err:  # what the fuzzer counts
            where = traceback.extract_tb(err.__traceback__)[-1]
            kind = f"{type(err).__name__} at {os.path.basename(where.filename)}:{where.lineno}"
            if kind not in self.kinds:
                self.kinds[kind] = f"{what} on {case}: {err}\n{traceback.format_exc()}"
            self.exceptions.append(kind)
            return None
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            spent = time.perf_counter() - start
            if spent > SLOW_S:
                self.slow.append(f"{what} on {case}: {spent:.1f} s")
            if spent > self.slowest[0]:
                self.slowest = (spent, f"{what} on {case}")


def read_one(tally: Tally, run: str, out: str, fmt: str, case: str, data: bytes, rng: random.Random) -> None:
    """Every reading of one mutated file, which is alone in ``run`` already."""
    from click.testing import CliRunner

    from dualwatch._cli import main
    from dualwatch._formats import formats_by_name
    from dualwatch.readers import RunReader

    def whole() -> None:
        RunReader(run).poll()

    def in_two() -> None:
        (path,) = (os.path.join(run, name) for name in os.listdir(run))
        cut = rng.randrange(len(data) + 1)
        Path(path).write_bytes(data[:cut])
        reader = RunReader(run)
        reader.poll()
        with open(path, "ab") as f:
            f.write(data[cut:])
        reader.poll()

    def records() -> None:
        for _ in formats_by_name()[fmt].read_records(data):
            pass

    def command(args: list[str], name: str) -> None:
        result = CliRunner().invoke(main, args)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        tally.exits[f"{name} {result.exit_code}"] += 1
        if result.exit_code not in EXITS[name]:
            raise RuntimeError(f"exit status {result.exit_code}: {result.output[-300:]}")

    tally.run("RunReader.poll", case, whole)
    tally.run("RunReader.poll x2", case, in_two)
    if fmt != "jsonl":
        tally.run("read_records", case, records)
    tally.run("monitor --once --json", case, lambda: command(["monitor", run, "--once", "--json"], "monitor"))
    tally.run(
        "convert", case, lambda: command(["convert", run, "--to", CONVERT_TO[fmt], "-o", out], "convert")
    )
    shutil.rmtree(out, ignore_errors=True)


def cli_child(tally: Tally, run: str, out: str, fmt: str, case: str) -> None:
    """The real commands in a child process: a documented exit status, no traceback, bounded RSS."""
    code = "from dualwatch._cli import main; main()"
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    for name, args in (
        ("monitor", [run, "--once", "--json"]),
        ("convert", [run, "--to", CONVERT_TO[fmt], "-o", out]),
    ):

        def once(name: str = name, args: list[str] = args) -> None:
            with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as peak:
                proc = subprocess.run(
                    [sys.executable, "-c", LAUNCH, peak.name, "-c", code, name, *args],
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    env=env,
                )
                err.seek(0)
                stderr = err.read().decode("utf-8", "replace")
                rss = int(peak.read()) / 1024
            tally.child_rss_mb = max(tally.child_rss_mb, rss)
            if rss > CHILD_RSS_MB:
                tally.child_over.append(f"{name} on {case}: {rss:.0f} MB")
            if proc.returncode not in EXITS[name] or "Traceback" in stderr:
                raise RuntimeError(f"dualwatch {name} exited {proc.returncode}: {stderr[-500:]}")

        tally.run(f"CLI {name} (child)", case, once)
        shutil.rmtree(out, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=20_000, help="mutated files to read")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--cli-every", type=int, default=200, help="one file in K also by the command")
    parser.add_argument("--smoke", action="store_true", help="about 1,000 files")
    parser.add_argument("--json", action="store_true", help="also print the counts as one JSON line")
    parser.add_argument("--make-seeds", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_seeds:
        make_seeds(args.make_seeds)
        return 0
    if args.smoke:
        args.files, args.cli_every = min(args.files, 1000), max(args.cli_every, 250)
    import warnings

    warnings.simplefilter("ignore")  # skipped records are said in warnings: expected here
    rng = random.Random(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dualwatch-fuzz-") as tmp:
        seeds_dir = os.path.join(tmp, "seeds")
        subprocess.run(
            [sys.executable, __file__, "--make-seeds", seeds_dir],
            check=True,
            env={**os.environ, "PYTHONPATH": str(_ROOT)},
            capture_output=True,
        )
        seeds = load_seeds(seeds_dir)
        seeded = time.perf_counter() - started
        tally = Tally()
        signal.signal(signal.SIGALRM, _alarm)
        out = os.path.join(tmp, "out")
        limited = False
        for i, (fmt, mutation, data) in enumerate(cases(seeds, args.files, rng)):
            mmengine = fmt == "jsonl" and rng.random() < 0.25  # the same lines as MMEngine's scalars.json
            run = os.path.join(tmp, "vis_data" if mmengine else "run")
            shutil.rmtree(run, ignore_errors=True)
            os.makedirs(run)
            Path(run, MMENGINE if mmengine else NAMES[fmt]).write_bytes(data)
            case = f"file {i} ({'mmengine' if mmengine else fmt}, {mutation}, {len(data)} bytes)"
            tally.files += 1
            tally.by_mutation[f"{'mmengine' if mmengine else fmt}: {mutation}"] += 1
            read_one(tally, run, out, fmt, case, data, rng)
            if i % args.cli_every == 0:
                cli_child(tally, run, out, fmt, case)
            if not limited:  # everything is loaded now: any allocation past this fails, not swaps
                _limit_address_space()
                limited = True
        if not args.smoke:
            run = os.path.join(tmp, "run")
            for fmt in NAMES:  # a 2 GiB zero-filled file: sparse, it costs no disk
                shutil.rmtree(run, ignore_errors=True)
                os.makedirs(run)
                with open(os.path.join(run, NAMES[fmt]), "wb") as f:
                    f.truncate(2 << 30)
                tally.files += 1
                tally.by_mutation[f"{fmt}: 2 GiB of zeros"] += 1
                cli_child(tally, run, out, fmt, f"a 2 GiB zero-filled {fmt} file")
    elapsed = time.perf_counter() - started
    report(tally, args, elapsed, seeded)
    return 1 if tally.exceptions or tally.slow or tally.child_over else 0


def _limit_address_space() -> None:
    """This process's address space: what it maps now plus 2 GiB."""
    with open("/proc/self/status") as f:
        size_kb = next(int(line.split()[1]) for line in f if line.startswith("VmSize:"))
    limit = size_kb * 1024 + (2 << 30)
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    if hard == resource.RLIM_INFINITY or limit <= hard:
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def report(tally: Tally, args: argparse.Namespace, elapsed: float, seeded: float) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("files", f"{tally.files:,}"),
        ("operations", f"{sum(tally.ops.values()):,}"),
        ("uncaught exceptions", f"{len(tally.exceptions)}  (0 required)"),
        (f"operations over {SLOW_S:g} s", f"{len(tally.slow)}  (0 required)"),
        ("slowest operation", f"{tally.slowest[0]:.2f} s  {tally.slowest[1]}"),
        ("peak RSS, this process", f"{rss:.0f} MB"),
        ("peak RSS, command children", f"{tally.child_rss_mb:.0f} MB  (<= {CHILD_RSS_MB:g} required)"),
        ("time", f"{elapsed:.0f} s  (seeds {seeded:.0f} s)"),
    ]
    print(f"dualwatch fuzz: seed {args.seed}, {args.files:,} files, CLI child every {args.cli_every}")
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    print("  operations: " + ", ".join(f"{k} {v:,}" for k, v in sorted(tally.ops.items())))
    print("  exit statuses: " + ", ".join(f"{k}: {v:,}" for k, v in sorted(tally.exits.items())))
    print("  files by mutation:")
    for name, count in sorted(tally.by_mutation.items()):
        print(f"    {name:<44} {count:,}")
    for kind, count in Counter(tally.exceptions).most_common():
        print(f"EXCEPTION x{count}: {kind}: first {tally.kinds[kind]}")
    for title, items in (("SLOW", tally.slow), ("RSS", tally.child_over)):
        for item in items[:10]:
            print(f"{title}: {item}")
        if len(items) > 10:
            print(f"{title}: ... {len(items) - 10} more")
    if args.json:
        counts = {
            "files": tally.files,
            "exceptions": len(tally.exceptions),
            "slow": len(tally.slow),
            "rss_mb": round(rss),
            "child_rss_mb": round(tally.child_rss_mb),
            "child_over": len(tally.child_over),
            "seconds": round(elapsed, 1),
        }
        print(json.dumps(counts))


if __name__ == "__main__":
    sys.exit(main())
