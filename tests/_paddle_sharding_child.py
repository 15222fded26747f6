"""Fleet sharding stage 1 jobs for tests/test_paddle_sharding.py, each run as its own process.

``single OUT 1``: the model and batches of ``tests/_paddle_child.py`` in one process, the whole
batches, watched at every step with two parameter groups. ``sharding OUT RANKS``: the same
trained with ``fleet`` ``sharding_degree=RANKS`` (``DygraphShardingOptimizer``
inside ``HybridParallelOptimizer``), each rank on its share of every global batch, watched at every
step with ``watch_fleet_optimizer``. ``sharding-unlinked OUT RANKS`` is the same without it (a warning
says the statistics are the rank's own). Each rank saves the scalars of its checks to
``OUT.<rank>.json``; the run goes under ``OUT.runs``.
"""

from __future__ import annotations

import json
import sys
import warnings

warnings.filterwarnings("ignore", message="No ccache found")

import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402
from _paddle_child import BATCH, batches, mlp  # noqa: E402
from paddle.distributed import fleet  # noqa: E402

from dualwatch import Watcher  # noqa: E402
from dualwatch.integrations.paddle import watch_fleet_optimizer  # noqa: E402

GROUPS = {"first": "0.*"}  # the first layer; the rest is "other": group norms and shares are checked too


def sharded(out: str, world: int, mode: str) -> None:
    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": 1, "pp_degree": 1, "sharding_degree": world}
    fleet.init(is_collective=True, strategy=strategy)
    rank = dist.get_rank()
    model = mlp()
    optimizer = fleet.distributed_optimizer(paddle.optimizer.SGD(0.1, parameters=model.parameters()))
    model = fleet.distributed_model(model)
    train(model, optimizer, slice(rank * BATCH // world, (rank + 1) * BATCH // world), out, rank, mode)


def train(model: paddle.nn.Layer, optimizer, part: slice, out: str, rank: int, mode: str) -> None:
    seen, refused = [], None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Watcher(model, every=1, groups=GROUPS, logdir=f"{out}.runs", console=False) as w:
            if mode == "sharding":
                watch_fleet_optimizer(w, optimizer)
                try:
                    watch_fleet_optimizer(w, optimizer)
                except ValueError as err:
                    refused = str(err)
            for step, (x, y) in enumerate(batches(2)):
                paddle.nn.functional.mse_loss(model(x[part]), y[part]).backward()
                returned = w.step(step)
                optimizer.step()
                optimizer.clear_grad()
                seen.append(returned or w.last.scalars)
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump({"seen": seen, "warnings": [str(c.message) for c in caught], "relinked": refused}, f)


if __name__ == "__main__":
    mode, out, ranks = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if mode == "single":
        model = mlp()
        train(model, paddle.optimizer.SGD(0.1, parameters=model.parameters()), slice(None), out, 0, mode)
    else:
        dist.spawn(sharded, args=(out, ranks, mode), nprocs=ranks, backend="gloo")
