"""Multi-process jobs: only global rank 0 creates and writes a run; the statistics are the job's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _jobs import run_job
from _servers import _free_port
from conftest import read_metrics

from dualwatch._distributed import RANK_VARIABLES, global_rank
from dualwatch._table import Col, combine_shards

STEPS = 3


def _model_and_data(torch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(8, 6, generator=g), torch.randn(8, 2, generator=g)) for _ in range(STEPS)]
    return model, data


def _worker(rank: int, world: int, wrap: str, port: int, logdir: str, out: str) -> None:
    """One rank of a DDP or FSDP2 job: each trains on its slice of every global batch of 8.

    Every rank saves what its Watcher computed, to show all ranks agree. With ``wrap`` =
    ``"ddp-lost-run"`` rank 0's run directory is deleted after the first step, so its sinks fail.
    """
    import torch
    import torch.distributed as dist

    from dualwatch import Watcher

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        model, data = _model_and_data(torch)
        if wrap.startswith("ddp"):
            model = torch.nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.fsdp import fully_shard

            for layer in (model[0], model[2]):
                fully_shard(layer)
            fully_shard(model)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        per_rank = 8 // world
        seen = []
        with Watcher(model, every=1, logdir=logdir, console=False) as w:
            for step, (x, y) in enumerate(data):
                part = slice(rank * per_rank, (rank + 1) * per_rank)
                torch.nn.functional.mse_loss(model(x[part]), y[part]).backward()
                seen.append(w.step(step))
                optimizer.step()
                optimizer.zero_grad()
                if wrap == "ddp-lost-run" and rank == 0 and step == 0:
                    w.writer.flush()
                    shutil.rmtree(w.run_dir)
            assert (w.run_dir is None) == (rank != 0)
        with open(f"{out}.{rank}.json", "w") as f:
            json.dump(seen, f)
        dist.barrier()  # no rank tears gloo down while another still talks to it (seen: SIGABRT)
    finally:
        dist.destroy_process_group()


def _single_process_scalars(tmp_path: Path) -> list[dict[str, float]]:
    import torch

    from dualwatch import Watcher

    model, data = _model_and_data(torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rows = []
    with Watcher(model, every=1, logdir=str(tmp_path / "single"), console=False) as w:
        for step, (x, y) in enumerate(data):
            torch.nn.functional.mse_loss(model(x), y).backward()
            rows.append(w.step(step))
            optimizer.step()
            optimizer.zero_grad()
    return rows


@pytest.mark.parametrize("wrap", ["ddp", "fsdp2"])
@pytest.mark.parametrize("world", [2, 4])
def test_a_sharded_or_replicated_job_writes_one_run_with_the_single_process_statistics(
    tmp_path: Path, world: int, wrap: str
) -> None:
    import torch.multiprocessing as mp

    logdir, out = tmp_path / "job", str(tmp_path / "seen")
    mp.spawn(_worker, args=(world, wrap, _free_port(), str(logdir), out), nprocs=world, join=True)

    (run_dir,) = [p for p in logdir.iterdir()]
    names = sorted(p.name for p in run_dir.iterdir())
    assert len([n for n in names if "vdlrecords" in n]) == 1
    assert len([n for n in names if "tfevents" in n]) == 1
    assert "metrics.jsonl" in names
    written: dict[int, dict[str, float]] = {}
    for row in read_metrics(run_dir):
        written.setdefault(row["step"], {}).update(row)
    expected = _single_process_scalars(tmp_path)
    assert sorted(written) == list(range(STEPS))
    for step, scalars in enumerate(expected):
        assert set(scalars) <= set(written[step])
        for tag, value in scalars.items():
            assert written[step][tag] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, tag)
    seen = [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in range(world)]
    assert all(s == seen[0] for s in seen)  # every rank computed the same (so the same verdict)


def test_a_failing_sink_on_rank_zero_neither_hangs_nor_stops_the_other_ranks(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    out = str(tmp_path / "seen")
    job = mp.spawn(
        _worker, args=(2, "ddp-lost-run", _free_port(), str(tmp_path / "job"), out), nprocs=2, join=False
    )
    deadline = time.monotonic() + 120
    while not job.join(timeout=5):
        assert time.monotonic() < deadline, "a rank hung"
    for rank in range(2):
        assert len(json.loads(Path(f"{out}.{rank}.json").read_text())) == STEPS


_LAUNCH = """
import sys
from dualwatch import Writer
with Writer(sys.argv[1], console=None) as w:
    w.add_scalar("rank_of_writer", float(sys.argv[2]), 0)
"""


def test_twenty_launches_of_four_ranks_never_race_on_the_run_directory(tmp_path: Path) -> None:
    for _ in range(20):
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", _LAUNCH, str(tmp_path), str(rank)],
                env={**os.environ, "RANK": str(rank), "WORLD_SIZE": "4"},
                stderr=subprocess.PIPE,
                text=True,
            )
            for rank in range(4)
        ]
        for proc in procs:
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == 0, err
            assert "Traceback" not in err and "dualwatch" not in err, err
    runs = sorted(tmp_path.iterdir())
    assert len(runs) == 20
    for run in runs:
        names = sorted(p.name for p in run.iterdir())
        assert [n.split(".")[0] for n in names] == ["events", "metrics", "vdlrecords"], names
        assert [row["rank_of_writer"] for row in read_metrics(run)] == [0.0]


@pytest.mark.parametrize(
    "env, rank",
    [
        ({}, 0),
        ({"RANK": "3"}, 3),
        ({"PADDLE_TRAINER_ID": "2"}, 2),
        ({"SLURM_PROCID": "5"}, 5),
        ({"LOCAL_RANK": "1"}, 0),  # a node-local rank says nothing about the job
    ],
)
def test_the_global_rank_comes_from_the_launchers_environment(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], rank: int
) -> None:
    for name in (*RANK_VARIABLES, "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert global_rank() == rank


def test_a_writer_on_another_rank_creates_and_prints_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from dualwatch import Writer
    from dualwatch.sinks import ConsoleSink

    monkeypatch.setenv("RANK", "1")
    with Writer(tmp_path / "runs", console=ConsoleSink("title")) as w:
        w.log(0, {"loss": 1.0}, echo=True)
        w.add_histogram("h", np.arange(4.0), 0)
        assert w.run_dir is None and w.rank == 1
    assert not (tmp_path / "runs").exists()
    assert capsys.readouterr().out == ""


def _row(w: np.ndarray, prev: np.ndarray, g: np.ndarray) -> np.ndarray:
    """A reduction-table row computed with numpy, as a backend fills it (NaN where absent)."""
    row = np.full(len(Col), np.nan)
    row[Col.NUMEL], row[Col.HAS_GRAD], row[Col.W_NONFINITE] = w.size, float(w.size > 0), 0.0
    if w.size:
        for base, x in ((Col.W_SUM, w), (Col.G_SUM, g)):
            row[base : base + 6] = [x.sum(), (x * x).sum(), ((x - x.mean()) ** 2).sum(), x.min(), x.max(), 0]
        row[Col.W_ABSDIFF] = np.abs(w - prev).sum()
    return row


def test_shard_statistics_combine_to_those_of_the_whole_tensor() -> None:
    rng = np.random.default_rng(0)
    w, prev, g = (rng.normal(3.0, 0.01, 1000) for _ in range(3))  # a large mean: precision matters
    cuts = [0, 400, 400, 1000]  # three shards, the middle one empty (uneven sharding)
    shards = np.stack([[_row(w[a:b], prev[a:b], g[a:b])] for a, b in zip(cuts, cuts[1:])])
    whole = _row(w, prev, g)
    np.testing.assert_allclose(combine_shards(shards)[0], whole, rtol=1e-9)
    w[700] = np.nan
    shards = np.stack([[_row(w[a:b], prev[a:b], g[a:b])] for a, b in zip(cuts, cuts[1:])])
    combined = combine_shards(shards)[0]
    assert np.isnan(combined[[Col.W_SUM, Col.W_M2, Col.W_MIN, Col.W_MAX]]).all()
    assert combined[Col.G_SUMSQ] == pytest.approx(whole[Col.G_SUMSQ], rel=1e-12)


PADDLE_CHILD = str(Path(__file__).with_name("_paddle_child.py"))


def _paddle_job(*args: str, launcher: tuple[str, ...] = (), timeout: float = 300) -> None:
    """Runs ``tests/_paddle_child.py`` with ``args`` (under ``launcher``): it and every check succeed.

    A job still running after ``timeout`` seconds hung: its ranks are killed with it (they share
    its session) and the test fails, instead of stalling. Gloo gives up on a collective after 30 s
    on its own, so a rank left waiting in one usually ends the job with gloo's TIMEOUT first.
    """
    command = [*(launcher or (sys.executable,)), PADDLE_CHILD, *args]
    done = run_job(command, timeout)
    out, err = done.stdout, done.stderr
    gloo_gave_up = "TIMEOUT" in err or "Application timeout" in err  # gloo's words, on the waiting ranks
    hung = "the job hung: a rank waited in a collective until gloo's timeout\n" if gloo_gave_up else ""
    assert done.returncode == 0, hung + out[-3000:] + err[-3000:]
    assert "check at step" not in err, err[-3000:]  # no check failed


@pytest.fixture(scope="module")
def paddle_single(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The single-process reference runs of ``tests/_paddle_child.py``, trained once for all tests."""
    out = tmp_path_factory.mktemp("paddle_single")
    for mode in ("single", "single-tensor-parallel"):
        _paddle_job(mode, str(out / mode))
    return out


@pytest.mark.parametrize("start, ranks", [("spawn", 2), ("spawn", 4), ("launch", 2)])
def test_a_paddle_data_parallel_job_writes_one_run_with_the_single_process_statistics(
    tmp_path: Path, paddle_single: Path, start: str, ranks: int
) -> None:
    launch = (sys.executable, "-m", "paddle.distributed.launch", "--nproc_per_node", "2")
    launch += ("--log_dir", str(tmp_path / "launch_logs"))
    _paddle_job(start, str(tmp_path / start), str(ranks), launcher=launch if start == "launch" else ())
    (run_dir,) = list((tmp_path / f"{start}.runs").iterdir())
    names = sorted(p.name.split(".")[0] for p in run_dir.iterdir())
    assert names == ["events", "metrics", "vdlrecords"]
    _assert_every_rank_saw_the_single_process_scalars(tmp_path / start, ranks, paddle_single / "single")


def _assert_every_rank_saw_the_single_process_scalars(out: Path, ranks: int, single: Path) -> None:
    seen = [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in range(ranks)]
    assert all(s == seen[0] for s in seen)  # every rank computed the same (so the same verdict)
    expected = json.loads(Path(f"{single}.0.json").read_text())
    assert len(expected) == len(seen[0])
    for step, scalars in enumerate(expected):
        assert set(scalars) == set(seen[0][step])
        for tag, value in scalars.items():
            assert seen[0][step][tag] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, tag)


@pytest.mark.parametrize(
    "mode, ranks, single",
    [("auto", 2, "single"), ("auto-2d", 4, "single"), ("tensor-parallel", 2, "single-tensor-parallel")],
)
def test_paddle_parameters_split_across_ranks_give_the_statistics_of_the_whole_parameters(
    tmp_path: Path, paddle_single: Path, mode: str, ranks: int, single: str
) -> None:
    """DistTensor shards (1-D and 2-D meshes) and fleet's ``is_distributed`` tensor-parallel parameters."""
    _paddle_job(mode, str(tmp_path / mode), str(ranks))
    _assert_every_rank_saw_the_single_process_scalars(tmp_path / mode, ranks, paddle_single / single)


def test_a_paddle_fit_over_parameters_split_across_ranks_finishes_with_every_rank_checking_them_whole(
    tmp_path: Path, paddle_single: Path
) -> None:
    """``WatchCallback`` checks on every rank: a check on rank 0 alone waits for shards that never come.

    ``paddle.Model.fit`` on 2 ranks of fleet tensor parallelism; only rank 0 makes a run (the job
    checks it at every step) and every rank's statistics are those of the whole model in one process.
    """
    _paddle_job("fit-tensor-parallel", str(tmp_path / "fit"), "2", timeout=120)
    (run_dir,) = list((tmp_path / "fit.runs").iterdir())
    assert sorted(p.name.split(".")[0] for p in run_dir.iterdir()) == ["events", "metrics", "vdlrecords"]
    _assert_every_rank_saw_the_single_process_scalars(tmp_path / "fit", 2, paddle_single / "single")


def test_a_torchrun_job_writes_exactly_one_run(tmp_path: Path) -> None:
    child = str(Path(__file__).with_name("_torchrun_child.py"))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port"]
    proc = subprocess.run(
        [*cmd, str(_free_port()), child, str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = list(tmp_path.iterdir())
    assert sorted(p.name.split(".")[0] for p in run_dir.iterdir()) == ["events", "metrics", "vdlrecords"]
    assert [row["step"] for row in read_metrics(run_dir)] == [0, 1, 2]


def test_a_paddle_parameter_marked_distributed_without_fleet_warns_once_and_is_reported_as_it_is() -> None:
    """Without ``fleet.init`` nothing says where the other parts are: say so, do not guess."""
    from conftest import _import

    paddle = _import("paddle")
    from dualwatch import Watcher

    layer = paddle.nn.Linear(3, 2)
    layer.weight.is_distributed = True
    layer(paddle.ones([1, 3])).sum().backward()
    with Watcher(layer, every=1, logdir=None, console=False) as w:
        with pytest.warns(RuntimeWarning, match=r"is_distributed.*fleet\.init.*this rank's part only"):
            first = w.step(0)
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("error")
            second = w.step(1)  # no second warning; the same values
    # no optimizer stepped between the checks: the second one counts the weights not updating
    assert second.pop("train/gradient/not_updating_params") == 2.0
    assert (
        second.items()
        >= {k: v for k, v in first.items() if k != "train/gradient/not_updating_params"}.items()
    )
    assert first["model/weight/weight_max"] == pytest.approx(float(layer.weight.numpy().max()))
