"""The ``dualwatch`` command starts fast and runs the main job in both frameworks."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from conftest import read_metrics
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from visualdl import LogReader

from dualwatch import __version__
from dualwatch._cli import main


def test_help_and_version_import_no_framework() -> None:
    code = (
        "import sys; from dualwatch._cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "print('torch' in sys.modules, 'paddle' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "demo" in out and out.split()[-2:] == ["False", "False"]
    assert CliRunner().invoke(main, ["--version"]).output.strip() == f"dualwatch, version {__version__}"


def test_demo_trains_both_frameworks_and_writes_their_runs(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", "--steps", "3", "--every", "2", "--logdir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "Edge Processor Monitor - Step 2" in result.output
    assert "Edge Processor Monitor - Step 1" not in result.output  # losses are not echoed
    tags = {}
    for framework in ("torch", "paddle"):
        (metrics,) = (tmp_path / framework).glob("logs_*/metrics.jsonl")
        records = read_metrics(metrics.parent)
        tags[framework] = {tag for r in records for tag in r}
        checks = [r for r in records if "Model/Gradient_Norm" in r]
        assert [r["step"] for r in checks] == [0, 2]
        assert [r["step"] for r in records if "Loss/Train" in r] == [0, 1, 2]
        assert [r["step"] for r in records if "train/loss_edge" in r] == [0, 1, 2]
        assert [r["step"] for r in records if "Time/Epoch_Duration" in r] == [0]
        lrs = [r["Learning_Rate"] for r in records if "Learning_Rate" in r]
        assert lrs[0] > lrs[1] > lrs[2] > 0  # cosine decay
        record = checks[-1]
        assert record["edge_processor/to_four.weight/weight_change"] > 0
        assert record["edge_processor/backbone.6.weight/grad_norm"] > 0  # Conv 64->128
        assert 0.99 < record["train/gradient/backbone/share"] + record["train/gradient/to_four/share"] < 1.01
        run = metrics.parent
        (vdl_file,) = run.glob("vdlrecords*")
        vdl = LogReader(file_path=str(vdl_file))
        assert [v.id for v in vdl.get_data("scalar", "Loss/Train")] == [0, 1, 2]
        events = EventAccumulator(str(run))
        events.Reload()
        assert [e.step for e in events.Scalars("Model/Gradient_Norm")] == [0, 2]
        assert f"{framework}: epoch 1/1  step 3/3  loss " in result.output  # no bar in a pipe
        assert f"$ dualwatch monitor --once {run}\n" in result.output
    assert tags["torch"] == tags["paddle"]  # the same layer names in both frameworks
    assert result.output.count("status   OK\n") == 2
    assert result.output.endswith(f"TensorBoard on 6006:\n  dualwatch serve {tmp_path}\n")


def test_demo_blocks_scroll_above_the_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    """rich takes over stdout while the bar runs: each block arrives whole, between bar redraws."""
    from rich.console import Console
    from rich.progress import Progress

    from dualwatch import _log
    from dualwatch._demo import run_demo

    _log.to_stdout()  # as `dualwatch demo` does
    screen = io.StringIO()
    with Progress(console=Console(file=screen, force_terminal=True, width=100)) as progress:
        run_demo("torch", steps=2, every=1, logdir=str(tmp_path), progress=progress)
    # what the terminal shows: a carriage return and "erase line" wipe the bar drawn before them
    shown = re.sub(r"[^\n]*\r\x1b\[2K", "", screen.getvalue())
    lines = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", shown).splitlines()
    for step in (0, 1):
        at = lines.index(f"Edge Processor Monitor - Step {step}")
        assert lines[at - 1] == lines[at + 1] == "=" * 80
        block = lines[at + 2 : lines.index("  train/gradient/health: healthy", at)]
        assert block and all(re.fullmatch(r"  \S+: \S+", line) for line in block), block
    assert lines[-1].startswith("torch ━") and lines[-1].endswith(" 100% 0:00:00")  # the bar stays last
    assert "torch: epoch" not in shown  # the bar, not the plain lines


def test_a_bad_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["demo", "--backend", "jax"])
    assert result.exit_code == 2 and "Invalid value for '--backend'" in result.output
