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
* ``fit-tensor-parallel OUT RANKS``: ``paddle.Model.fit`` with ``WatchCallback``, the model's
  first layer split by columns over the ranks and its second by rows (fleet's parallel layers);
  its statistics are those of ``single``.

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
from dualwatch.integrations.paddle import WatchCallback  # noqa: E402

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


def init_tensor_parallel(world: int) -> tuple[int, slice]:
    """Every rank in one model-parallel group; returns this rank and its share of 8 columns."""
    from paddle.distributed import fleet

    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {"dp_degree": 1, "mp_degree": world, "pp_degree": 1}
    fleet.init(is_collective=True, strategy=strategy)
    rank = dist.get_rank()
    return rank, slice(rank * 8 // world, (rank + 1) * 8 // world)


def tensor_parallel(out: str, world: int) -> None:
    from paddle.distributed import fleet

    rank, columns = init_tensor_parallel(world)
    whole = whole_linear()
    layer = fleet.meta_parallel.ColumnParallelLinear(6, 8, has_bias=True, gather_output=False)
    assert layer.weight.is_distributed and layer.bias.is_distributed
    layer.weight.set_value(whole.weight.numpy()[:, columns])
    layer.bias.set_value(whole.bias.numpy()[columns])

    def loss_of(x: paddle.Tensor, y: paddle.Tensor) -> paddle.Tensor:
        mine = paddle.matmul(x, layer.weight) + layer.bias
        return ((mine - y[:, columns]) ** 2).sum() / y.size

    train(layer, loss_of, batches(8), out, rank)


def single_tensor_parallel(out: str) -> None:
    layer = whole_linear()
    train(layer, lambda x, y: ((layer(x) - y) ** 2).sum() / y.size, batches(8), out, 0)


class SumOverRanks(paddle.autograd.PyLayer):
    """All-reduce forward, identity backward: fleet's ``_mp_allreduce`` (gloo lacks its calc-stream op)."""

    @staticmethod
    def forward(ctx, part: paddle.Tensor, group) -> paddle.Tensor:
        total = part.clone()
        dist.all_reduce(total, group=group)
        return total

    @staticmethod
    def backward(ctx, grad: paddle.Tensor) -> paddle.Tensor:
        return grad


class TensorParallelMLP(paddle.nn.Sequential):
    """``mlp`` split as Megatron splits an MLP: its first layer by columns, its second by rows.

    The forward is fleet's in plain ops (``c_identity`` has no CPU kernel; it only all-reduces
    the input's gradient, and the input needs none): each rank's hidden columns, their part of
    the output summed over the ranks, the replicated bias added. Every rank gets the whole output.
    """

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        first, last = self[0], self[2]
        hidden = paddle.tanh(paddle.matmul(x, first.weight) + first.bias)
        return SumOverRanks.apply(paddle.matmul(hidden, last.weight), last.model_parallel_group) + last.bias


def fit_tensor_parallel(out: str, world: int) -> None:
    """``mlp`` trained by ``paddle.Model.fit`` on ``single``'s batches, each fed whole to every rank
    (a list: hapi splits a ``Dataset``'s batches across the ranks, not a list's).

    hapi wraps the network in ``paddle.DataParallel`` when there are several ranks, which
    broadcasts rank 0's parameters and averages the gradients: the split parameters are marked
    ``no_sync`` to keep their own parts; the replicated bias's gradient is the same on every rank.
    (A model of ``shard_tensor`` DistTensors segfaults in that wrapping, hence fleet's layers.)
    """
    from paddle.distributed import fleet

    rank, columns = init_tensor_parallel(world)
    whole = mlp()
    network = TensorParallelMLP(
        fleet.meta_parallel.ColumnParallelLinear(6, 8, has_bias=True, gather_output=False),
        paddle.nn.Tanh(),
        fleet.meta_parallel.RowParallelLinear(8, 2, has_bias=True, input_is_parallel=True),
    )
    first, last = network[0], network[2]
    first.weight.set_value(whole[0].weight.numpy()[:, columns])
    first.bias.set_value(whole[0].bias.numpy()[columns])
    last.weight.set_value(whole[2].weight.numpy()[columns])
    last.bias.set_value(whole[2].bias.numpy())
    for p in (first.weight, first.bias, last.weight):
        assert p.is_distributed
        p.no_sync = True
    seen = []
    check = Watcher.check

    def recorded_check(watcher: Watcher, step: int) -> dict[str, float]:
        assert (watcher.run_dir is None) == (rank != 0)  # only rank 0 writes
        seen.append(check(watcher, step))
        return seen[-1]

    Watcher.check = recorded_check  # what this rank's callback computed, check by check
    model = paddle.Model(network)
    model.prepare(paddle.optimizer.SGD(0.1, parameters=network.parameters()), paddle.nn.MSELoss())
    callback = WatchCallback(every=1, logdir=f"{out}.runs", console=False)
    model.fit(batches(2), epochs=1, verbose=0, callbacks=[callback])
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(seen, f)


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
        jobs = {"auto": auto, "tensor-parallel": tensor_parallel, "fit-tensor-parallel": fit_tensor_parallel}
        job = jobs[mode]
        dist.spawn(job, args=(out, ranks), nprocs=ranks, backend="gloo")
