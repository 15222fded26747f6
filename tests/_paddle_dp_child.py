"""A Paddle DataParallel job for tests/test_distributed.py, run as its own process.

``python _paddle_dp_child.py spawn LOGDIR OUT [RANKS]`` trains 2 (or RANKS) ranks with
``paddle.distributed.spawn`` (gloo), each on its share of every global batch;
``python -m paddle.distributed.launch --nproc_per_node 2 _paddle_dp_child.py launch LOGDIR OUT``
does the same as one of the ranks ``launch`` starts; ``... single LOGDIR OUT`` trains one
process on the whole batches. Each process saves what its Watcher computed to ``OUT.<rank>.json``.
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


def train(logdir: str, out: str, parallel: bool) -> None:
    if parallel:
        dist.init_parallel_env()
    rank, world = (dist.get_rank(), dist.get_world_size()) if parallel else (0, 1)
    paddle.seed(0)
    model = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.Tanh(), paddle.nn.Linear(8, 2))
    if parallel:
        model = paddle.DataParallel(model)
    optimizer = paddle.optimizer.SGD(0.1, parameters=model.parameters())
    rng = np.random.default_rng(1)
    part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    seen = []
    with Watcher(model, every=1, logdir=logdir, console=False) as w:
        for step in range(STEPS):
            x, y = (rng.standard_normal((BATCH, n)).astype("float32") for n in (6, 2))
            loss = paddle.nn.functional.mse_loss(model(paddle.to_tensor(x[part])), paddle.to_tensor(y[part]))
            loss.backward()
            seen.append(w.step(step))
            optimizer.step()
            optimizer.clear_grad()
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(seen, f)


if __name__ == "__main__":
    mode, logdir, out = sys.argv[1:4]
    if mode == "spawn":
        ranks = int(sys.argv[4]) if len(sys.argv) > 4 else 2
        dist.spawn(train, args=(logdir, out, True), nprocs=ranks, backend="gloo")
    else:
        train(logdir, out, mode == "launch")
