"""Jobs started as two torchrun (or ``paddle.distributed.launch``) "nodes" on this machine: one writer
per job, the job's statistics, and an exit that never aborts.

Every job runs ``tests/_multinode_child.py`` (a DDP training script ending as users end theirs,
``destroy_process_group()`` without a barrier) under two ``torchrun --nnodes=2 --nproc-per-node=1``
launchers, ``LOCAL_RANK`` 0 on both. With the c10d rendezvous the ranks go by join order, not by
``--node-rank``: the launcher given ``--node-rank=1`` starts first here, so it gets rank 0.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from _servers import _free_port
from conftest import read_metrics

CHILD = str(Path(__file__).with_name("_multinode_child.py"))
RUN = (sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1")


def _launch_two_nodes(
    out: Path, rendezvous: str, stagger_s: float, timeout_s: float = 150
) -> list[tuple[int, str]]:
    """Both launchers of one job, the second ``stagger_s`` after the first: ``(returncode, stderr)`` each.

    A launcher still running after ``timeout_s`` is killed with its worker (its session) and
    reported with returncode None: a hang must fail the test, not stall it.
    """
    port = _free_port()
    if rendezvous == "c10d":
        where = ("--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", f"--rdzv-id={out.name}")
    else:
        where = ("--master-addr=127.0.0.1", f"--master-port={port}")
    procs = []
    for node in (1, 0):
        if procs:
            time.sleep(stagger_s)
        procs.append(
            subprocess.Popen(
                [*RUN, f"--node-rank={node}", *where, CHILD, str(out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
    deadline = time.monotonic() + timeout_s
    results = []
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append((proc.returncode, err))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            results.append((None, proc.communicate()[1]))
    return results


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, float]]:
    """What the Watcher computes in one process training on the whole batches."""
    out = tmp_path_factory.mktemp("single") / "single"
    subprocess.run([sys.executable, CHILD, str(out), "single"], check=True, timeout=120, capture_output=True)
    return json.loads(Path(f"{out}.0.json").read_text())["seen"]


@pytest.mark.parametrize("rendezvous", ["static", "c10d"])
def test_a_two_node_torchrun_job_has_one_writer_and_the_single_process_statistics(
    tmp_path: Path, single: list[dict[str, float]], rendezvous: str
) -> None:
    out = tmp_path / f"job-{rendezvous}"
    assert {"train/gradient/first/share", "train/gradient/other/norm"} <= set(
        single[0]
    )  # groups compared too
    for code, err in _launch_two_nodes(out, rendezvous, stagger_s=1.0):
        assert code == 0, err[-3000:]
    ranks = [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["env"]["LOCAL_RANK"] for r in ranks] == ["0", "0"]  # a node-local rank says nothing
    assert [r["writes"] for r in ranks] == [True, False]  # only global rank 0 writes
    (run_dir,) = list(Path(f"{out}.runs").iterdir())
    names = sorted(p.name for p in run_dir.iterdir())
    assert [n.split(".")[0] for n in names] == ["events", "metrics", "vdlrecords"], names
    assert ranks[0]["seen"] == ranks[1]["seen"]  # every rank computed the same, so the same verdict
    written: dict[int, dict[str, float]] = {}
    for row in read_metrics(run_dir):
        written.setdefault(row["step"], {}).update(row)
    assert len(single) == len(written) == len(ranks[0]["seen"])
    for step, scalars in enumerate(single):
        assert set(scalars) == set(ranks[0]["seen"][step])
        for tag, value in scalars.items():
            assert ranks[0]["seen"][step][tag] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, tag)
            assert written[step][tag] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, tag)


def test_twenty_staggered_c10d_launches_all_exit_cleanly(tmp_path: Path) -> None:
    """The same script, launchers 0.5 to 3 s apart: no ``terminate called ...`` SIGABRT at exit.

    Five jobs at a time, so the twenty take about as long as four in a row.
    """

    def job(i: int) -> list[tuple[int, str]]:
        return _launch_two_nodes(tmp_path / f"job{i}", "c10d", stagger_s=0.5 + (i % 6) / 2)

    with ThreadPoolExecutor(5) as pool:
        results = list(pool.map(job, range(20)))
    failed = [
        (i, code, err[-2000:])
        for i, job_results in enumerate(results)
        for code, err in job_results
        if code != 0
    ]
    assert not failed, failed
    assert not [err for job_results in results for _, err in job_results if "terminate called" in err]
    assert len(list(tmp_path.glob("job*.runs/*"))) == 20  # one run per job


_CLOSE = """
import os, sys, time, warnings
import torch, torch.distributed as dist
from dualwatch import Watcher
rank, port, logdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
Watcher.close_timeout_s = 3.0
if sys.argv[4] == "rank-0-alone" and rank:
    dist.barrier()
    dist.destroy_process_group()
    sys.exit(0)
w = Watcher(torch.nn.Linear(2, 1), logdir=logdir, console=False)
if sys.argv[4] == "one-dies" and rank:
    os._exit(0)  # a rank that dies: it never closes its Watcher
start = time.monotonic()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    w.close()
print(f"closed in {time.monotonic() - start:.2f} s;", *[str(c.message) for c in caught])
if sys.argv[4] == "rank-0-alone":
    dist.barrier()
    dist.destroy_process_group()
"""


@pytest.mark.parametrize("case", ["one-dies", "rank-0-alone"])
def test_closing_never_hangs_on_ranks_that_do_not_come(tmp_path: Path, case: str) -> None:
    """A rank that dies costs the others ``close_timeout_s`` and a warning; a Watcher made on rank 0
    alone (the other ranks never announced one) closes at once, without waiting or warning."""
    port = str(_free_port())
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _CLOSE, str(rank), port, str(tmp_path), case],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    out, err = procs[0].communicate(timeout=60)
    procs[1].communicate(timeout=60)
    assert procs[0].returncode == 0, err[-3000:]
    seconds = float(out.split("closed in ")[1].split(" s")[0])
    if case == "one-dies":
        assert 2.9 < seconds < 10, out
        assert "Watcher.close waited 3 s for every rank" in out and "1 of 2 ranks came" in out, out
    else:
        assert seconds < 1.0 and "waited" not in out, out


def test_a_two_node_paddle_launch_job_has_one_writer_and_the_single_process_statistics(
    tmp_path: Path,
) -> None:
    """``paddle.distributed.launch --nnodes 2``, twice: ``tests/_paddle_child.py``'s DataParallel job."""
    child = str(Path(__file__).with_name("_paddle_child.py"))
    done = subprocess.run(
        [sys.executable, child, "single", str(tmp_path / "single")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    master = f"127.0.0.1:{_free_port()}"
    procs = []
    for node in (0, 1):
        launch = [sys.executable, "-m", "paddle.distributed.launch", "--master", master, "--nnodes", "2"]
        launch += ["--nproc_per_node", "1", "--log_dir", str(tmp_path / f"log{node}")]
        procs.append(
            subprocess.Popen(
                [*launch, child, "launch", str(tmp_path / "job")],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        )
        time.sleep(1.0)
    for proc in procs:
        try:
            _, err = proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("a paddle launcher hung")
        assert proc.returncode == 0, err[-3000:]
    (run_dir,) = list((tmp_path / "job.runs").iterdir())
    assert sorted(p.name.split(".")[0] for p in run_dir.iterdir()) == ["events", "metrics", "vdlrecords"]
    seen = [json.loads((tmp_path / f"job.{rank}.json").read_text()) for rank in (0, 1)]
    assert seen[0] == seen[1]
    single = json.loads((tmp_path / "single.0.json").read_text())
    for step, scalars in enumerate(single):
        assert set(scalars) == set(seen[0][step])
        for tag, value in scalars.items():
            assert seen[0][step][tag] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, tag)
