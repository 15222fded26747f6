"""One rank of a two-node DDP job, written as a user writes it, for tests/test_multinode.py.

``torchrun --nnodes=2 --nproc-per-node=1 ... _multinode_child.py OUT [single]`` trains the model of
``tests/test_distributed.py`` (6-8-2 MLP, 3 steps, global batches of 8 split over the ranks), watched
at every step (two parameter groups), and saves what this rank's Watcher computed to
``OUT.<rank>.json``; the run goes under ``OUT.runs``. The script ends as many users' scripts
end: ``destroy_process_group()`` with no barrier before it. ``single`` trains the whole batches in
one process without a launcher.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.distributed as dist

from dualwatch import Watcher

STEPS, BATCH = 3, 8


def main(out: str, distributed: bool) -> None:
    if distributed:
        dist.init_process_group("gloo")
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(BATCH, 6, generator=g), torch.randn(BATCH, 2, generator=g)) for _ in range(STEPS)]
    if distributed:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    part = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    seen = []
    with Watcher(model, every=1, groups={"first": "0.*"}, logdir=f"{out}.runs", console=False) as w:
        for step, (x, y) in enumerate(data):
            torch.nn.functional.mse_loss(model(x[part]), y[part]).backward()
            seen.append(w.step(step))
            optimizer.step()
            optimizer.zero_grad()
    launcher = {k: os.environ.get(k) for k in ("RANK", "LOCAL_RANK", "GROUP_RANK")}
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump({"seen": seen, "env": launcher, "writes": w.run_dir is not None}, f)
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:] != ["single"])
