"""The ``dualwatch`` command starts fast and runs the main job in both frameworks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from visualdl import LogReader

from dualwatch import __version__
from dualwatch.cli import main


def test_help_and_version_import_no_framework() -> None:
    code = (
        "import sys; from dualwatch.cli import main\n"
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
    for framework in ("torch", "paddle"):
        (metrics,) = (tmp_path / framework).glob("logs_*/metrics.jsonl")
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        checks = [r for r in records if "Model/Gradient_Norm" in r]
        assert [r["step"] for r in checks] == [0, 2]
        assert [r["step"] for r in records if "Loss/Train" in r] == [0, 1, 2]
        record = checks[-1]
        assert record["edge_processor/to_four.weight/weight_change"] > 0
        assert 0.99 < record["train/gradient/backbone/share"] + record["train/gradient/to_four/share"] < 1.01
        run = metrics.parent
        (vdl_file,) = run.glob("vdlrecords*")
        vdl = LogReader(file_path=str(vdl_file))
        assert [v.id for v in vdl.get_data("scalar", "Loss/Train")] == [0, 1, 2]
        events = EventAccumulator(str(run))
        events.Reload()
        assert [e.step for e in events.Scalars("Model/Gradient_Norm")] == [0, 2]


def test_a_bad_option_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["demo", "--backend", "jax"])
    assert result.exit_code == 2 and "Invalid value for '--backend'" in result.output
