"""DeepSpeed ZeRO-2 and ZeRO-3 jobs: ``Watcher(engine)`` gives the statistics of one process.

Real DeepSpeed on the CPU (``DS_ACCELERATOR=cpu``, which falls back to gloo). Its first run in a
fresh environment compiles a small communication op with g++ (about 30 s, then cached under
``~/.cache/torch_extensions``): the jobs get a timeout that leaves room for it.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import pytest
from _servers import _free_port
from conftest import read_metrics

pytest.importorskip("deepspeed")

STEPS, BATCH, ACCUMULATE = 3, 8, 2
GROUPS = {"first": "0.*"}


def _model_and_data(torch):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    model[2].bias.requires_grad_(False)  # a frozen parameter: ZeRO-1/2 leave it whole, ZeRO-3 splits it
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 2, generator=g)) for _ in range(STEPS)]
    return model, data


def _worker(rank: int, world: int, stage: int, dtype: str, port: int, logdir: str, out: str) -> None:
    """One rank of a ZeRO job: each global batch of 8 is split over the ranks and over two
    micro-batches of gradient accumulation; the Watcher checks inside ``engine.step()`` by itself.

    A second Watcher, made on the model before ``deepspeed.initialize`` partitions it (as a
    Lightning callback's is), is checked by hand at the same moment: it must agree.
    Rank 0 also saves the statistics of the whole tensors DeepSpeed assembles (its own
    ``safe_get_full_grad`` and gathered weights), and DeepSpeed's global gradient norm.
    """
    os.environ.update(
        DS_ACCELERATOR="cpu",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    import deepspeed
    import torch
    import torch.distributed as dist
    from deepspeed.utils import safe_get_full_grad

    from dualwatch import Watcher

    deepspeed.init_distributed(dist_backend="gloo", timeout=datetime.timedelta(seconds=300))  # a hang fails
    try:
        model, data = _model_and_data(torch)
        micro = BATCH // world // ACCUMULATE
        config = {
            "train_batch_size": BATCH,
            "train_micro_batch_size_per_gpu": micro,
            "gradient_accumulation_steps": ACCUMULATE,
            "zero_optimization": {"stage": stage, "stage3_param_persistence_threshold": 0},
            "bf16": {"enabled": dtype == "bfloat16"},
            "zero_allow_untested_optimizer": True,
            "steps_per_print": 10**9,
        }
        by_hand = Watcher(model, every=1, groups=GROUPS, logdir=None, console=False)  # before DeepSpeed
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
        if dtype == "bfloat16" and stage > 1:  # gradients loss-scaled until step() unscales them, as fp16
            engine.optimizer.loss_scale = 8.0  # (which this CPU lacks); DeepSpeed's norm is unscaled
        seen, deepspeeds = [], []
        with Watcher(engine, every=1, groups=GROUPS, logdir=logdir, console=False) as w:
            for step, (x, y) in enumerate(data):
                for m in range(ACCUMULATE):
                    part = slice((m * world + rank) * micro, (m * world + rank + 1) * micro)
                    x_part = x[part].to(getattr(torch, dtype))
                    engine.backward(torch.nn.functional.mse_loss(engine(x_part).float(), y[part]))
                    if m == ACCUMULATE - 1:
                        checked = by_hand.check(step)
                        scale = engine.optimizer.loss_scale
                        deepspeeds.append(
                            _whole_tensor_stats(deepspeed, engine.module, safe_get_full_grad, scale)
                        )
                    engine.step()  # the Watcher's check runs in here, before the optimizer step
                if stage == 3 or engine.optimizer.loss_scale == 1:  # ZeRO-2 parameters do not lead
                    assert w.last.scalars == checked  # to the loss scale: only the engine's Watcher knows it
                seen.append(w.last.scalars)
                deepspeeds[-1]["train/gradient/total_norm"] = float(engine.get_global_grad_norm())
            assert w.step(0) == {}  # checks run inside engine.step(): a late w.step does nothing
            assert (w.run_dir is None) == (rank != 0)
        assert "step" not in engine.__dict__  # close() took the hook off again
        by_hand.close()
        with open(f"{out}.{rank}.json", "w") as f:
            json.dump({"seen": seen, "deepspeed": deepspeeds}, f)
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


def _whole_tensor_stats(deepspeed, model, full_grad, scale: float) -> dict[str, float]:
    """Per-parameter statistics of the whole weights and gradients (divided by the loss scale)
    DeepSpeed assembles itself (collectives on every rank: weights gathered under ZeRO-3, a
    gradient all-reduce per parameter)."""
    stats = {}
    params = dict(model.named_parameters())
    with deepspeed.zero.GatheredParameters(list(params.values())):
        for name, p in params.items():
            grad = full_grad(p) / scale if p.requires_grad else None
            for kind, x in (("weight", p.detach()), ("grad", grad)):
                if x is None:
                    continue
                x = x.double().flatten()
                values = {"mean": x.mean(), "std": x.std(), "min": x.min(), "max": x.max()}
                if kind == "grad":
                    values["norm"] = x.norm()
                for stat, value in values.items():
                    stats[f"model/{name}/{kind}_{stat}"] = float(value)
    return stats


def _single_process_scalars(tmp_path: Path) -> list[dict[str, float]]:
    import torch

    from dualwatch import Watcher

    model, data = _model_and_data(torch)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rows = []
    with Watcher(model, every=1, groups=GROUPS, logdir=str(tmp_path / "single"), console=False) as w:
        for step, (x, y) in enumerate(data):
            torch.nn.functional.mse_loss(model(x), y).backward()
            rows.append(w.step(step))
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # DeepSpeed's default clipping
            optimizer.step()
            optimizer.zero_grad()
    return rows


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, float]]:
    return _single_process_scalars(tmp_path_factory.mktemp("single"))


def _job(tmp_path: Path, stage: int, world: int, dtype: str) -> tuple[Path, list[dict]]:
    """Runs one job; its run directory and what each rank saw."""
    import torch.multiprocessing as mp

    logdir, out = tmp_path / "job", str(tmp_path / "seen")
    mp.spawn(_worker, args=(world, stage, dtype, _free_port(), str(logdir), out), nprocs=world, join=True)
    (run_dir,) = list(logdir.iterdir())
    names = sorted(p.name for p in run_dir.iterdir())
    assert len([n for n in names if "vdlrecords" in n]) == 1
    assert len([n for n in names if "tfevents" in n]) == 1
    seen = [json.loads(Path(f"{out}.{rank}.json").read_text()) for rank in range(world)]
    assert all(
        s["seen"] == seen[0]["seen"] for s in seen
    )  # every rank computed the same (so the same verdict)
    return run_dir, seen


@pytest.mark.parametrize("stage, world", [(2, 2), (3, 2), (2, 4), (3, 4)])
def test_a_zero_job_writes_one_run_with_the_single_process_statistics(
    tmp_path: Path, stage: int, world: int, single: list[dict[str, float]]
) -> None:
    run_dir, seen = _job(tmp_path, stage, world, "float32")
    written: dict[int, dict[str, float]] = {}
    for row in read_metrics(run_dir):
        written.setdefault(row["step"], {}).update(row)
    assert sorted(written) == list(range(STEPS))
    for step, scalars in enumerate(single):
        assert set(seen[0]["seen"][step]) == set(scalars)
        assert any(tag.endswith("weight_change") for tag in scalars) == (step > 0)
        for tag, value in scalars.items():
            assert written[step][tag] == pytest.approx(value, rel=1e-5, abs=1e-7), (step, tag)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_a_bfloat16_zero_job_gives_the_statistics_of_the_tensors_deepspeed_assembles(
    tmp_path: Path, stage: int
) -> None:
    _, seen = _job(tmp_path, stage, 2, "bfloat16")
    for ours, whole in zip(seen[0]["seen"], seen[0]["deepspeed"]):
        assert "model/2.bias/grad_norm" not in ours and "model/2.bias/weight_mean" in ours  # frozen
        for tag, value in whole.items():
            assert ours[tag] == pytest.approx(value, rel=1e-5, abs=1e-7), tag
