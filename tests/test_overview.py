"""The overview group: the loss and the global gradient norm repeated under ``0_overview/``, the
group both viewers open first (they order groups by name; the real-browser test shows them).

Read back by VisualDL's ``LogReader``, TensorBoard's ``EventAccumulator`` and ``metrics.jsonl``.
"""

from __future__ import annotations

import glob
import os

import numpy as np
import pytest
from conftest import _tb, build_model, read_metrics, set_grads
from visualdl import LogReader

from dualwatch import Watcher, Writer

WALL = 1_700_000_000.0


def _jsonl(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    series: dict[str, list[tuple[int, float]]] = {}
    for line in read_metrics(run_dir):
        for tag, value in line.items():
            if tag not in ("step", "wall_time"):
                series.setdefault(tag, []).append((line["step"], value))
    return series


def _visualdl(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    reader = LogReader(file_path=glob.glob(os.path.join(run_dir, "*vdlrecords*"))[0])
    return {
        tag: [(r.id, r.value) for r in reader.get_data("scalar", tag)] for tag in reader.get_tags()["scalar"]
    }


def _tensorboard(run_dir: str) -> dict[str, list[tuple[int, float]]]:
    accumulator = _tb(run_dir)
    return {
        tag: [(e.step, e.value) for e in accumulator.Scalars(tag)] for tag in accumulator.Tags()["scalars"]
    }


@pytest.mark.parametrize("read", [_jsonl, _visualdl, _tensorboard], ids=["jsonl", "visualdl", "tensorboard"])
def test_overview_repeats_the_first_loss_tag_written_and_the_global_gradient_norm(tmp_path, read) -> None:
    with Writer(tmp_path, "run", overview=True) as writer:
        for step in range(3):
            writer.add_scalar("train/loss", 1.0 / (step + 1), step, walltime=WALL + step)
            writer.add_scalar(
                "Loss/Train", 9.0, step, walltime=WALL + step + 0.5
            )  # preferred, written second
            writer.log(
                step, {"train/gradient/total_norm": 2.0 + step, "Model/Gradient_Norm": 7.0}, WALL + step
            )
            writer.add_scalar("weight", 0.5, step, walltime=WALL + step)
    series = read(writer.run_dir)
    assert series["0_overview/loss"] == series["train/loss"]  # the run's first: kept for the whole run
    assert series["0_overview/grad_norm"] == series["train/gradient/total_norm"]
    assert sorted(t for t in series if t.startswith("0_overview")) == [
        "0_overview/grad_norm",
        "0_overview/loss",
    ]


def test_a_loss_written_only_from_some_step_on_is_repeated_from_that_step(tmp_path) -> None:
    with Writer(tmp_path, "run", formats=["jsonl"], overview=True) as writer:
        writer.add_scalar("accuracy", 0.1, 0, walltime=WALL)
        writer.add_scalar("loss", 3.0, 5, walltime=WALL + 1)
    series = _jsonl(writer.run_dir)
    assert series["0_overview/loss"] == [(5, 3.0)]
    assert "0_overview/grad_norm" not in series


def test_a_tag_the_user_writes_in_the_overview_is_kept(tmp_path) -> None:
    with Writer(tmp_path, "run", formats=["jsonl"], overview=True) as writer:
        writer.log(0, {"loss": 3.0, "0_overview/loss": 4.0}, WALL)
    assert _jsonl(writer.run_dir)["0_overview/loss"] == [(0, 4.0)]


@pytest.mark.parametrize("overview", [None, False])
def test_a_writer_no_watcher_writes_to_or_with_overview_false_writes_only_what_was_logged(
    tmp_path, overview
) -> None:
    with Writer(tmp_path, "run", formats=["jsonl"], overview=overview) as writer:
        if overview is False:
            writer.start_overview()  # what a Watcher calls: overview=False still wins
        writer.log(0, {"Loss/Train": 3.0, "train/gradient/total_norm": 1.0}, WALL)
    assert set(_jsonl(writer.run_dir)) == {"Loss/Train", "train/gradient/total_norm"}


def test_a_watched_run_repeats_the_loss_and_the_global_norm_it_wrote(tmp_path, framework) -> None:
    model = build_model(framework, {"fc.weight": np.arange(6.0).reshape(2, 3)})
    set_grads(framework, model, {"fc.weight": np.full((2, 3), 0.5)})
    with Writer(tmp_path, "run", formats=["jsonl"]) as writer:
        watcher = Watcher(model, writer=writer)
        writer.add_scalar("Loss/Train", 1.5, 0, walltime=WALL)
        watcher.step(0)
    series = _jsonl(writer.run_dir)
    assert series["0_overview/loss"] == series["Loss/Train"] == [(0, 1.5)]
    assert series["0_overview/grad_norm"] == series["train/gradient/total_norm"]
    assert series["0_overview/grad_norm"][0][1] == pytest.approx(0.5 * 6**0.5, rel=1e-6)
