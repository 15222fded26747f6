"""Pipeline parallelism: each rank holds one stage, and every rank's statistics are the whole model's.

The jobs are in ``tests/_pipeline_child.py``: the same model and batches trained in one process,
and in two pipeline stages on two ranks (gloo), in torch (``PipelineStage`` + ``ScheduleGPipe``
under torchrun) and in Paddle (fleet ``PipelineLayer`` under ``paddle.distributed.launch``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _jobs import run_job
from _servers import _free_port
from conftest import read_metrics

CHILD = str(Path(__file__).with_name("_pipeline_child.py"))


def _job(launcher: list[str], mode: str, out: Path, timeout: float = 120) -> str:
    """Runs ``_pipeline_child.py mode out`` under ``launcher``; a hung job is killed with its ranks."""
    done = run_job(
        [*launcher, CHILD, mode, str(out)],
        timeout,
        stderr=subprocess.STDOUT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    output = done.stdout
    assert done.returncode == 0, output[-3000:]
    assert "check at step" not in output, output[-3000:]  # no check failed
    return output


def _assert_the_job_saw_and_wrote_the_single_process_statistics(
    out: Path, single: Path, ranks: int = 2
) -> None:
    seen = [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in range(ranks)]
    assert all(s == seen[0] for s in seen)  # every rank computed the same (so the same verdict)
    expected = json.loads(Path(f"{single}.0.json").read_text())
    assert len(seen[0]) == len(expected) == 3
    for step, scalars in enumerate(expected):
        assert "train/gradient/head/share" in scalars and "model/2.weight/grad_norm" in scalars
        assert set(scalars) == set(seen[0][step])
        for tag, value in scalars.items():
            assert seen[0][step][tag] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, tag)
    (run_dir,) = list(Path(f"{out}.runs").iterdir())
    assert sorted(p.name.split(".")[0] for p in run_dir.iterdir()) == ["events", "metrics", "vdlrecords"]
    written: dict[int, dict[str, float]] = {}
    for row in read_metrics(run_dir):
        written.setdefault(row["step"], {}).update(row)
    for step, scalars in enumerate(seen[0]):
        assert {tag: written[step][tag] for tag in scalars} == pytest.approx(scalars, rel=1e-6)


@pytest.mark.parametrize("stages", [2, 3])
def test_a_torch_gpipe_job_gives_the_single_process_statistics(tmp_path: Path, stages: int) -> None:
    """Two stages; three, the middle one without parameters."""
    _job([sys.executable], "torch-single", tmp_path / "single", timeout=60)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(stages)]
    _job([*torchrun, "--master-port", str(_free_port())], "torch-pipe", tmp_path / "pipe")
    _assert_the_job_saw_and_wrote_the_single_process_statistics(
        tmp_path / "pipe", tmp_path / "single", stages
    )
    for rank in range(stages):  # the check that failed on the last rank: every rank warned, none hung
        scalars, warned = json.loads((tmp_path / f"pipe.{rank}.failed").read_text())
        cause = "MemoryError: injected" if rank == stages - 1 else f"pipeline stage(s) [{stages - 1}]"
        assert scalars == {} and any("check at step 3 failed" in m and cause in m for m in warned), warned
    refusals = {(tmp_path / f"pipe.{rank}.refused").read_text() for rank in range(stages)}
    (refusal,) = refusals  # every rank refuses, with the same words
    assert "name 2 parameter(s) alike (0.bias, 0.weight)" in refusal and "pipeline()" in refusal


def test_a_paddle_pipeline_layer_of_two_stages_gives_the_single_process_statistics(tmp_path: Path) -> None:
    _job([sys.executable], "paddle-single", tmp_path / "single", timeout=60)
    launch = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2"]
    _job([*launch, "--log_dir", str(tmp_path / "logs")], "paddle-pipe", tmp_path / "pipe")
    for log in (tmp_path / "logs").glob("workerlog.*"):  # the ranks' own output
        assert "check at step" not in log.read_text(), log.read_text()[-3000:]
    _assert_the_job_saw_and_wrote_the_single_process_statistics(tmp_path / "pipe", tmp_path / "single")


def test_a_paddle_weight_tied_across_stages_counts_once_with_the_whole_models_gradient(
    tmp_path: Path,
) -> None:
    """A ``SharedLayerDesc`` weight lives on both stages; Paddle sums its gradient over them: one row."""
    _job([sys.executable], "paddle-tied-single", tmp_path / "single", timeout=60)
    launch = [sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2"]
    _job([*launch, "--log_dir", str(tmp_path / "logs")], "paddle-tied-pipe", tmp_path / "pipe")
    _assert_the_job_saw_and_wrote_the_single_process_statistics(tmp_path / "pipe", tmp_path / "single")
    seen = json.loads((tmp_path / "pipe.0.json").read_text())
    assert "model/shared_layers.tied.weight/grad_norm" in seen[0]


@pytest.fixture
def one_rank_job():
    """A gloo process group of this process alone, torn down after the test."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1)
    yield
    dist.destroy_process_group()


def test_a_stage_its_module_and_its_schedule_are_each_watched_as_the_model(one_rank_job: None) -> None:
    """One stage on one rank is the whole model: the three ways to name it give one process's statistics."""
    import torch
    from _pipeline_child import batches, torch_model
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    from dualwatch import Watcher

    x, y = (torch.from_numpy(a) for a in batches()[0])
    reference = torch_model()
    torch.nn.functional.mse_loss(reference(x), y).backward()
    with Watcher(reference, every=1, logdir=None, console=False) as w:
        expected = w.check(0)
    model = torch_model()
    stage = PipelineStage(model, 0, 1, torch.device("cpu"))
    schedule = ScheduleGPipe(stage, 2, loss_fn=torch.nn.functional.mse_loss)
    schedule.step(x, target=y)
    for watched in (stage, model, schedule):
        with Watcher(watched, every=1, logdir=None, console=False) as w:
            assert w._stages is not None  # each is recognised as a stage
            assert w.check(0) == pytest.approx(expected, rel=1e-5, abs=1e-7)


def test_several_stages_on_one_rank_are_refused_before_training(one_rank_job: None) -> None:
    import torch
    from _pipeline_child import torch_model
    from torch.distributed.pipelining import PipelineStage, ScheduleInterleaved1F1B

    from dualwatch import Watcher

    model = torch_model()
    stages = [
        PipelineStage(model[:2], 0, 2, torch.device("cpu")),
        PipelineStage(model[2:], 1, 2, torch.device("cpu")),
    ]
    schedule = ScheduleInterleaved1F1B(stages, 2, loss_fn=torch.nn.functional.mse_loss)
    with pytest.raises(ValueError, match=r"ScheduleInterleaved1F1B runs 2 pipeline stage\(s\) on each rank"):
        Watcher(schedule, logdir=None)
    with pytest.raises(ValueError, match=r"has 2 stages, and its 1 rank\(s\) watch stages \[0\]"):
        Watcher(stages[0], logdir=None)
