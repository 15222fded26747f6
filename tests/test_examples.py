"""The examples a user copies from run as they are (each in seconds); the integration examples
are run by their own tests (test_integration_*.py, test_edge.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import read_metrics

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_the_plain_loop_example_writes_seed_004_tags_and_checks(tmp_path: Path, backend: str) -> None:
    _run(str(EXAMPLES / "plain_loop.py"), "--backend", backend, "--logdir", str(tmp_path))
    (run_dir,) = list((tmp_path / backend).iterdir())
    rows = read_metrics(run_dir)
    tags = set().union(*rows)
    assert {"Loss/Train", "Learning_Rate", "Time/Epoch_Duration", "train/gradient/total_norm"} <= tags
    assert sorted({r["step"] for r in rows if "train/gradient/total_norm" in r}) == [0, 5, 10]


@pytest.mark.parametrize("framework", ["torch", "paddle"])
def test_the_seed_002_capture_example_saves_each_pattern(tmp_path: Path, framework: str) -> None:
    _run(str(EXAMPLES / "capture_layers.py"), "--framework", framework, "--out", str(tmp_path))
    manifests = sorted(p.parent.name for p in tmp_path.glob("*/manifest.json"))
    assert manifests == ["callbacks", "direct", "wrapper"]
