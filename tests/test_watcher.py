"""The Watcher in a plain loop: skipping, tags, files, console block, and never breaking training."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import build_model, set_grads

import dualwatch

SEED_NAMES = {
    "edge_processor.backbone.0.weight": np.ones((4, 3)),
    "edge_processor.to_four.weight": np.ones(4),
    "clip.proj": np.ones(2),
}


def _watched(framework: str, **kw: object) -> tuple[object, dualwatch.Watcher]:
    model = build_model(framework, SEED_NAMES)
    set_grads(framework, model, {name: np.full(a.shape, 0.1) for name, a in SEED_NAMES.items()})
    kw = {"logdir": None, "console": False, **kw}
    return model, dualwatch.Watcher(model, **kw)


def test_import_loads_neither_framework() -> None:
    code = "import sys, dualwatch; print('torch' in sys.modules, 'paddle' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_steps_between_checks_return_nothing(framework: str) -> None:
    _, w = _watched(framework, every=5)
    results = [w.step(s) for s in range(11)]
    assert [bool(r) for r in results] == [s % 5 == 0 for s in range(11)]


def test_module_selection_gives_the_seed_tags(framework: str) -> None:
    _, w = _watched(framework, module="edge_processor")
    out = w.step(0)
    assert "edge_processor/backbone.0.weight/grad_norm" in out
    assert "edge_processor/to_four.weight/weight_std" in out
    assert not any(tag.startswith("edge_processor/clip") or "/clip.proj/" in tag for tag in out)
    # model-level totals still cover the whole model
    assert out["Model/Total_Parameters"] == 12 + 4 + 2


def test_include_takes_globs_and_regexes(framework: str) -> None:
    _, w = _watched(framework, module="edge_processor", include="re:to_.*")
    assert {t.split("/")[1] for t in w.step(0) if t.startswith("edge_processor/")} == {"to_four.weight"}
    _, w = _watched(framework, include=["clip.*"])
    assert {t.split("/")[1] for t in w.step(0) if t.startswith("model/")} == {"clip.proj"}


def test_log_switches_drop_weight_or_gradient_statistics(framework: str) -> None:
    _, w = _watched(framework, log_weights=False)
    out = w.step(0)
    assert not any("/weight_" in t for t in out) and any("/grad_norm" in t for t in out)
    _, w = _watched(framework, log_gradients=False)
    out = w.step(0)
    assert not any("/grad_" in t for t in out) and any("/weight_mean" in t for t in out)
    assert out["train/gradient/total_norm"] > 0  # model-level health still watched


def test_checks_are_appended_to_metrics_jsonl(framework: str, tmp_path) -> None:
    _, w = _watched(framework, logdir=tmp_path, run="exp1")
    w.step(0)
    w.step(10)
    w.close()
    lines = (tmp_path / "exp1" / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records] == [0, 10]
    assert records[1]["model/clip.proj/grad_norm"] == pytest.approx(np.sqrt(2) * 0.1, rel=1e-6)


def test_default_run_names_follow_the_seed_and_never_collide(framework: str, tmp_path) -> None:
    watchers = [_watched(framework, logdir=tmp_path)[1] for _ in range(3)]
    for w in watchers:
        w.close()
    runs = [w.run_dir for w in watchers]
    assert len(set(runs)) == 3
    assert all(r.split("/")[-1].startswith("logs_") for r in runs)


def test_console_logs_the_seed_block_on_the_dualwatch_logger(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    _, w = _watched(framework, module="edge_processor", console=True)
    w.step(100)
    text = "\n".join(r.getMessage() for r in caplog.records if r.name == "dualwatch")
    assert "=" * 80 + "\nEdge Processor Monitor - Step 100\n" + "=" * 80 in text
    assert "  edge_processor/backbone.0.weight/grad_norm: 3.464102e-01" in text
    assert "train/gradient/health: healthy" in text


def test_nan_weights_are_reported_in_the_jsonl_as_strict_json(framework: str, tmp_path) -> None:
    model = build_model(framework, {"w": np.array([1.0, np.nan])})
    w = dualwatch.Watcher(model, every=1, logdir=tmp_path, run="r", console=False)
    with pytest.warns(RuntimeWarning):
        w.step(0)
    w.close()
    record = json.loads((tmp_path / "r" / "metrics.jsonl").read_text(), parse_constant=pytest.fail)
    assert record["model/w/weight_mean"] == "NaN"


def test_a_failing_check_warns_and_returns_nothing(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    _, w = _watched(framework)

    def broken(*args, **kwargs):
        raise RuntimeError("device lost")

    monkeypatch.setattr(w.backend, "weight", broken)  # any backend call failing mid-check
    with pytest.warns(RuntimeWarning, match="check at step 0 failed .*device lost.*training goes on"):
        assert w.step(0) == {}


def test_watcher_is_a_context_manager_that_closes_its_files(framework: str, tmp_path) -> None:
    with _watched(framework, logdir=tmp_path, run="r")[1] as w:
        w.step(0)
    assert w.writer.stats() == {
        "queued": 0,
        "written": w.writer.stats()["written"],
        "dropped": 0,
        "backlog_dropped": {},
        "failed": [],
    }
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 1


def test_seed_004_and_seed_003_tags_are_logged(framework: str, tmp_path) -> None:
    _, w = _watched(framework, logdir=tmp_path, run="r")
    w.log_training(3, loss=0.5, val_loss=0.7, lr=1e-3)
    w.log_losses(3, {"semantic_loss": 0.25, "instance_loss": 0.25})
    assert w.end_epoch(0) > 0
    w.close()
    lines = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    tags = {tag for line in lines for tag in line} - {"step", "wall_time"}
    assert tags == {
        "Loss/Train",
        "Loss/Validation",
        "Learning_Rate",
        "train/detailed_loss/semantic_loss",
        "train/detailed_loss/instance_loss",
        "Time/Epoch_Duration",
        "0_overview/loss",  # Loss/Train again, where both viewers open
    }


def test_warnings_point_at_the_training_loop_not_at_dualwatch(framework: str) -> None:
    model = build_model(framework, {"w": np.ones(4)})
    set_grads(framework, model, {"w": np.full(4, 50.0)})
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    with pytest.warns(RuntimeWarning, match="exploding") as caught:
        w.step(0)
    assert caught[0].filename == __file__


def test_channels_last_weights_get_a_correct_weight_change() -> None:
    """A large non-contiguous weight is read through a copy; its snapshot must still follow it."""
    import torch

    conv = torch.nn.Conv2d(64, 128, 3).to(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous() and conv.weight.numel() > 65536
    w = dualwatch.Watcher(conv, every=1, logdir=None, console=False)
    w.step(0)
    for step in (1, 2):
        with torch.no_grad():
            conv.weight.add_(0.5)
        assert w.step(step)["model/weight/weight_change"] == pytest.approx(0.5, rel=1e-6)
