"""Paddle multi-process jobs for tests/test_distributed.py, each run as its own process.

Every job trains the same small model on the same batches and saves what its Watcher
computed to ``OUT.<rank>.json``; the tests compare that with one process training whole:

* ``single OUT`` and ``single-tensor-parallel OUT``: one process, the whole model.
* ``spawn OUT [RANKS]``: ``paddle.DataParallel`` on 2 (or RANKS) ranks started with
  ``paddle.distributed.spawn`` (gloo), each on its share of every global batch;
  ``python -m paddle.distributed.launch --nproc_per_node 2 _paddle_child.py launch OUT`` is
  the same as one of the ranks ``launch`` starts.
* ``auto OUT RANKS``: semi-automatic parallel; the weights are DistTensors sharded over a 1-D
  mesh with ``dist.shard_tensor`` (one bias left replicated), every rank fed the whole batch.
  ``auto-2d OUT`` does the same on a 2 x 2 mesh, sharded over its second dimension and
  replicated over its first.
* ``tensor-parallel OUT RANKS``: fleet's ``ColumnParallelLinear``, whose ``is_distributed``
  parameters are split over the model-parallel group. Its forward needs ``c_identity``, which
  has no CPU kernel, so each rank computes its own columns' share of the loss with plain ops:
  the gradients are those of tensor-parallel training.

Runs are written under ``OUT.runs``.
"""

from __future__ import annotations

import json
import sys
import warnings

warnings.filterwarnings("ignore", message="No ccache found")

import numpy as np  # noqa: E402
import paddle  # noqa: E402
import paddle.distributed as dist  # noqa: E402

from dualwatch import Watcher  # noqa: E402

STEPS, BATCH = 3, 8


def batches(outputs: int) -> list[tuple[paddle.Tensor, paddle.Tensor]]:
    rng = np.random.default_rng(1)
    return [
        (paddle.to_tensor(rng.standard_normal((BATCH, 6)).astype("float32")),
         paddle.to_tensor(rng.standard_normal((BATCH, outputs)).astype("float32")))
        for _ in range(STEPS)
    ]  # fmt: skip


def mlp() -> paddle.nn.Sequential:
    paddle.seed(0)
    return paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.Tanh(), paddle.nn.Linear(8, 2))


def mse(model: paddle.nn.Layer, part: slice = slice(None)):
    return lambda x, y: paddle.nn.functional.mse_loss(model(x[part]), y[part])


def train(model: paddle.nn.Layer, loss_of, data: list, out: str, rank: int) -> None:
    optimizer = paddle.optimizer.SGD(0.1, parameters=model.parameters())
    seen = []
    with Watcher(model, every=1, logdir=f"{out}.runs", console=False) as w:
        for step, (x, y) in enumerate(data):
            loss_of(x, y).backward()
            seen.append(w.step(step))
            optimizer.step()
            optimizer.clear_grad()
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(seen, f)


def single(out: str) -> None:
    model = mlp()
    train(model, mse(model), batches(2), out, 0)


def data_parallel(out: str) -> None:
    dist.init_parallel_env()
    rank, world = dist.get_rank(), dist.get_world_size()
    model = paddle.DataParallel(mlp())
    train(model, mse(model, slice(rank * BATCH // world, (rank + 1) * BATCH // world)), batches(2), out, rank)


def auto(out: str, world: int, two_d: bool = False) -> None:
    dist.init_parallel_env()
    model = mlp()
    if two_d:
        mesh = dist.ProcessMesh([[0, 1], [2, 3]], dim_names=["dp", "mp"])
    else:
        mesh = dist.ProcessMesh(list(range(world)), dim_names=["x"])

    def placed(placement: dist.Placement) -> list[dist.Placement]:
        return [dist.Replicate(), placement] if two_d else [placement]

    first, last = model[0], model[2]
    first.weight = dist.shard_tensor(first.weight, mesh, placed(dist.Shard(1)))
    first.bias = dist.shard_tensor(first.bias, mesh, placed(dist.Shard(0)))
    last.weight = dist.shard_tensor(last.weight, mesh, placed(dist.Shard(0)))
    last.bias = dist.shard_tensor(last.bias, mesh, placed(dist.Replicate()))
    train(model, mse(model), batches(2), out, dist.get_rank())


def whole_linear() -> paddle.nn.Linear:
    paddle.seed(0)
    return paddle.nn.Linear(6, 8)


def tensor_parallel(out: str, world: int) -> None:
    from paddle.distributed import fleet

    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": world, "pp_degree": 1}
    fleet.init(is_collective=True, strategy=strategy)
    rank = dist.get_rank()
    whole = whole_linear()
    layer = fleet.meta_parallel.ColumnParallelLinear(6, 8, has_bias=True, gather_output=False)
    assert layer.weight.is_distributed and layer.bias.is_distributed
    columns = slice(rank * 8 // world, (rank + 1) * 8 // world)
    layer.weight.set_value(whole.weight.numpy()[:, columns])
    layer.bias.set_value(whole.bias.numpy()[columns])

    def loss_of(x: paddle.Tensor, y: paddle.Tensor) -> paddle.Tensor:
        mine = paddle.matmul(x, layer.weight) + layer.bias
        return ((mine - y[:, columns]) ** 2).sum() / y.size

    train(layer, loss_of, batches(8), out, rank)


def single_tensor_parallel(out: str) -> None:
    layer = whole_linear()
    train(layer, lambda x, y: ((layer(x) - y) ** 2).sum() / y.size, batches(8), out, 0)


if __name__ == "__main__":
    mode, out = sys.argv[1:3]
    ranks = int(sys.argv[3]) if len(sys.argv) > 3 else 2
    if mode == "single":
        single(out)
    elif mode == "single-tensor-parallel":
        single_tensor_parallel(out)
    elif mode == "launch":
        data_parallel(out)
    elif mode == "spawn":
        dist.spawn(data_parallel, args=(out,), nprocs=ranks, backend="gloo")
    elif mode == "auto-2d":
        dist.spawn(auto, args=(out, 4, True), nprocs=4, backend="gloo")
    else:
        job = {"auto": auto, "tensor-parallel": tensor_parallel}[mode]
        dist.spawn(job, args=(out, ranks), nprocs=ranks, backend="gloo")
