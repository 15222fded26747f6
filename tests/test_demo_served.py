"""The main job's runs, as the real ``visualdl`` and ``tensorboard`` servers serve them over HTTP.

``dualwatch demo`` is run once, as a user runs it (the installed command, output to a pipe),
with few steps; then both servers are started once on its logdir (``_servers.py``) and every
scalar of ``metrics.jsonl`` must be served by each, with the same step, wall time and value.
The two frameworks' runs start from the same weights and their loss curves coincide; every
format lists the summary tags before the per-parameter ones.
"""

from __future__ import annotations

import glob
import json
import os
import subprocess
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pytest
import torch
from _servers import (
    BIN,
    Server,
    _eventually,
    _vdl_run,
    as_tensorboard,
    as_visualdl,
    both_servers,
    tensorboard_scalars,
    visualdl_scalars,
)
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

from dualwatch._demo import edge_model, initial_weights

STEPS, EVERY = 12, 5  # two epochs (the demo's epoch is 10 steps), checks at steps 0, 5 and 10
FRAMEWORKS = ("torch", "paddle")

Points = dict[str, list[tuple[int, float, float]]]


@dataclass
class Demo:
    logdir: str
    output: str
    runs: dict[str, str]  # framework -> run name under logdir (TensorBoard's run name)
    vdl: Server
    tb: Server


def _metrics(run_dir: str) -> Points:
    """``{tag: [(step, wall, value)]}`` from a run's ``metrics.jsonl``, in the order logged."""
    points: Points = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            step, wall = record.pop("step"), record.pop("wall_time")
            for tag, value in record.items():
                points.setdefault(tag, []).append((step, wall, value))
    return points


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    root = tmp_path_factory.mktemp("demo")
    logdir = str(root / "runs")
    argv = [os.path.join(BIN, "dualwatch"), "demo", "--steps", str(STEPS), "--every", str(EVERY)]
    done = subprocess.run([*argv, "--logdir", logdir], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    runs = {}
    for framework in FRAMEWORKS:
        (metrics,) = glob.glob(os.path.join(logdir, framework, "logs_*", "metrics.jsonl"))
        runs[framework] = os.path.relpath(os.path.dirname(metrics), logdir)
    with both_servers(logdir, str(root), vdl_cache=0.5, tb_reload=1) as (vdl, tb):
        yield Demo(logdir, done.stdout, runs, vdl, tb)


def test_demo_prints_the_monitor_reports_and_the_viewer_commands(demo: Demo) -> None:
    for run in demo.runs.values():
        assert f"$ dualwatch monitor --once {os.path.join(demo.logdir, run)}\n" in demo.output
    assert demo.output.count("status   OK\n") == len(FRAMEWORKS)
    assert demo.output.endswith(f"TensorBoard on 6006:\n  dualwatch serve {demo.logdir}\n")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_visualdl_serves_every_scalar_of_the_run(demo: Demo, framework: str) -> None:
    expected = _metrics(os.path.join(demo.logdir, demo.runs[framework]))
    assert {"Loss/Train", "Learning_Rate", "Time/Epoch_Duration", "train/loss_edge"} <= set(expected)

    def check() -> None:
        assert visualdl_scalars(demo.vdl, demo.logdir, demo.runs[framework]) == as_visualdl(expected)

    _eventually(check, 30, f"VisualDL serving the {framework} run", demo.vdl)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_tensorboard_serves_every_scalar_of_the_run(demo: Demo, framework: str) -> None:
    run = demo.runs[framework]
    expected = _metrics(os.path.join(demo.logdir, run))

    def check() -> None:
        assert tensorboard_scalars(demo.tb, run) == as_tensorboard(expected)

    _eventually(check, 30, f"TensorBoard serving the {framework} run", demo.tb)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_both_viewers_serve_the_edge_maps_of_each_epoch(demo: Demo, framework: str) -> None:
    run = demo.runs[framework]

    def check() -> None:
        name = _vdl_run(demo.vdl, demo.logdir, run)
        vdl_steps = [p["step"] for p in demo.vdl.vdl("image/list", run=name, tag="train/edge_maps")]
        tb_steps = [
            p["step"] for p in demo.tb.tb("/data/plugin/images/images", run=run, tag="train/edge_maps")
        ]
        assert vdl_steps == tb_steps == [9, STEPS - 1]

    _eventually(check, 30, f"both viewers serving the {framework} edge maps", demo.vdl, demo.tb)


# -- same start, same curves; summary tags first ---------------------------------------------------


def _per_parameter(tag: str) -> bool:
    return tag.startswith("edge_processor/")


def test_both_frameworks_start_from_the_same_weights(demo: Demo) -> None:
    """Step 0's check sees the weights before any update: equal in both runs, and numpy's draw."""
    torch_run, paddle_run = (_metrics(os.path.join(demo.logdir, demo.runs[f])) for f in FRAMEWORKS)
    model = edge_model(torch.nn, torch.nn.Conv2d, torch.nn.BatchNorm2d, torch.nn.Module)
    shapes = [(name, tuple(p.shape)) for name, p in model.named_parameters()]
    weights = initial_weights(shapes, 0)
    assert len(weights) == 14  # four convolutions and three BatchNorms, a weight and a bias each
    for name, array in weights.items():
        local = name[len("edge_processor.") :]
        for stat, expected in (("weight_mean", array.mean(dtype=np.float64)), ("weight_max", array.max())):
            tag = f"edge_processor/{local}/{stat}"
            (t_step, _, t_value), (p_step, _, p_value) = torch_run[tag][0], paddle_run[tag][0]
            assert t_step == p_step == 0
            assert t_value == pytest.approx(expected, rel=1e-5, abs=1e-7), tag
            assert p_value == pytest.approx(expected, rel=1e-5, abs=1e-7), tag


def test_torch_and_paddle_losses_coincide_at_every_step_and_the_demo_prints_the_largest_gap(
    demo: Demo,
) -> None:
    torch_loss, paddle_loss = (
        np.array([v for _, _, v in _metrics(os.path.join(demo.logdir, demo.runs[f]))["Loss/Train"]])
        for f in FRAMEWORKS
    )
    assert len(torch_loss) == len(paddle_loss) == STEPS
    rel = np.abs(torch_loss - paddle_loss) / np.maximum(np.abs(torch_loss), np.abs(paddle_loss))
    assert rel.max() < 1e-2, rel
    printed = (
        f"the torch and paddle losses differ by at most {rel.max():.2e} (relative, at step {rel.argmax()})"
    )
    assert printed in demo.output


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_every_format_lists_the_summary_tags_before_the_per_parameter_ones(
    demo: Demo, framework: str
) -> None:
    """Tag lists in first-appearance order (metrics.jsonl, VisualDL's server, TensorBoard's event file)."""
    run_dir = os.path.join(demo.logdir, demo.runs[framework])
    summary = {"Loss/Train", "Learning_Rate", "Model/Gradient_Norm", "train/gradient/total_norm"}
    jsonl = list(_metrics(run_dir))
    (events,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    tensorboard: list[str] = []
    for event in EventFileLoader(events).Load():
        for value in event.summary.value:
            if value.tag not in tensorboard:
                tensorboard.append(value.tag)
    name = _vdl_run(demo.vdl, demo.logdir, demo.runs[framework])
    tags = demo.vdl.vdl("scalar/tags")
    visualdl = tags["tags"][tags["runs"].index(name)]
    for order in (jsonl, tensorboard, visualdl):
        first = min(i for i, tag in enumerate(order) if _per_parameter(tag))
        assert summary <= set(order[:first]), order[: first + 1]
