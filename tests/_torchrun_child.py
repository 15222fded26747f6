"""A DDP job started by ``torchrun`` (which sets RANK, WORLD_SIZE, MASTER_ADDR...) for tests.

``torchrun --nproc_per_node 2 _torchrun_child.py LOGDIR`` trains 3 steps watched every step.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from dualwatch import Watcher

if __name__ == "__main__":
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with Watcher(model, every=1, logdir=sys.argv[1], console=False) as w:
        for step in range(3):
            torch.nn.functional.mse_loss(model(torch.randn(4, 4)), torch.randn(4, 2)).backward()
            w.step(step)
            optimizer.step()
            optimizer.zero_grad()
    dist.destroy_process_group()
