"""The fuzz harness's CI sample: about 1,000 mutated VisualDL, TensorBoard and JSON-lines files read
by the readers, ``convert`` and ``monitor --once --json`` without one exception or slow read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FUZZ = Path(__file__).resolve().parents[1] / "bench" / "fuzz.py"


def test_a_thousand_mutated_log_files_raise_nothing_and_read_fast_in_bounded_memory() -> None:
    proc = subprocess.run(
        [sys.executable, str(FUZZ), "--smoke", "--json"], capture_output=True, text=True, timeout=300
    )
    counts = json.loads(proc.stdout.splitlines()[-1])
    assert counts["files"] >= 1000, proc.stdout
    assert counts["exceptions"] == 0 and counts["slow"] == 0, proc.stdout
    assert counts["child_over"] == 0 and counts["child_rss_mb"] <= 150, proc.stdout
    assert proc.returncode == 0, proc.stdout + proc.stderr
