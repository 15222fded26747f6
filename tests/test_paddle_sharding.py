"""Fleet sharding stage 1: a Watcher linked to fleet's optimizer reads each gradient after fleet has
averaged it onto its owner rank, and gives the statistics of one process on the whole batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from _jobs import run_job
from conftest import read_metrics

TESTS = Path(__file__).parent
CHILD = str(TESTS / "_paddle_sharding_child.py")
#: fleet.init creates its process groups one after another; under load a gloo peer is sometimes not
#: listening yet ("Connection refused" in new_group): the job never reached dualwatch, so it is rerun.
FLEET_INIT_FAILED = "_create_hcg"


def _job(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return run_job([sys.executable, *args], timeout)


def _sharded_job(mode: str, out: Path, ranks: int) -> list[dict]:
    """Runs the child job (again once if fleet.init itself failed to connect); every rank's record."""
    for attempt in range(2):
        done = _job(CHILD, mode, str(out), str(ranks))
        if done.returncode == 0 or FLEET_INIT_FAILED not in done.stderr or attempt:
            break
    assert done.returncode == 0, done.stderr[-3000:]
    assert "check at step" not in done.stderr, done.stderr[-3000:]  # no check failed
    return [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in range(ranks)]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, float]]:
    """The same model, batches and groups, one process, the whole batch."""
    out = tmp_path_factory.mktemp("single") / "single"
    done = _job(CHILD, "single", str(out), "1")
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(Path(f"{out}.0.json").read_text())["seen"]


def _differences(seen: list[dict[str, float]], single: list[dict[str, float]]) -> list[tuple[int, str]]:
    assert len(seen) == len(single)
    return [
        (step, tag)
        for step, scalars in enumerate(single)
        for tag, value in scalars.items()
        if seen[step].get(tag) != pytest.approx(value, rel=1e-5, abs=1e-7)
    ]


FEWER_CORES_THAN_RANKS = pytest.mark.skipif(
    (os.cpu_count() or 1) < 4, reason="fleet.init's gloo groups of 4 ranks time out on fewer than 4 cores"
)


@pytest.mark.parametrize("ranks", [2, pytest.param(4, marks=FEWER_CORES_THAN_RANKS)])
def test_a_sharding_stage_1_job_gives_the_single_process_statistics_on_every_rank(
    tmp_path: Path, single: list[dict[str, float]], ranks: int
) -> None:
    """Every per-parameter statistic, group, norm and the verdict, on every rank; one run, by rank 0."""
    records = _sharded_job("sharding", tmp_path / "job", ranks)
    assert {"train/gradient/first/share", "train/gradient/other/norm"} <= set(
        single[0]
    )  # groups compared too
    assert all(r["seen"] == records[0]["seen"] for r in records)  # every rank the same: the same verdict
    assert all(set(step) == set(expected) for step, expected in zip(records[0]["seen"], single))
    assert _differences(records[0]["seen"], single) == []
    assert not [w for r in records for w in r["warnings"] if "dualwatch" in w]
    assert all(
        "already runs a Watcher's checks" in r["relinked"] for r in records
    )  # a second link is refused
    (run_dir,) = list((tmp_path / "job.runs").iterdir())
    assert sorted(p.name.split(".")[0] for p in run_dir.iterdir()) == ["events", "metrics", "vdlrecords"]
    written: dict[int, dict[str, float]] = {}
    for row in read_metrics(run_dir):
        written.setdefault(row["step"], {}).update(row)
    assert _differences([written[step] for step in sorted(written)], single) == []


def test_a_sharding_job_watched_without_the_optimizer_says_its_statistics_are_per_rank(
    tmp_path: Path, single: list[dict[str, float]]
) -> None:
    """Before ``optimizer.step()`` each rank holds its own batch's gradients: a warning says how to link."""
    records = _sharded_job("sharding-unlinked", tmp_path / "job", 2)
    for record in records:
        (warning,) = [w for w in record["warnings"] if "fleet sharding" in w]
        assert "watch_fleet_optimizer(watcher, optimizer)" in warning
    assert _differences(records[0]["seen"], single)  # the gradients' statistics are this rank's own


def test_watch_fleet_optimizer_refuses_an_optimizer_fleet_did_not_make() -> None:
    from conftest import _import

    paddle = _import("paddle")
    from dualwatch import Watcher
    from dualwatch.integrations.paddle import watch_fleet_optimizer

    layer = paddle.nn.Linear(2, 1)
    optimizer = paddle.optimizer.SGD(0.1, parameters=layer.parameters())
    w = Watcher(layer, logdir=None, console=False)
    with pytest.raises(TypeError, match=r"fleet\.distributed_optimizer.*got SGD"):
        watch_fleet_optimizer(w, optimizer)
    w.close()
