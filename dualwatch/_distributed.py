"""Which process of a multi-process job this is: only global rank 0 writes a run.

With today's tools every rank opens its own log file (Paddle #31383) and ranks race to
create the log directory (Paddle #56200). dualwatch asks the frameworks first (an initialised
process group, such as torch.distributed's), then the launchers' environment: ``RANK``
(torchrun, Lightning), ``PADDLE_TRAINER_ID`` (``paddle.distributed.launch`` and ``spawn``),
``OMPI_COMM_WORLD_RANK`` and ``PMI_RANK`` (MPI), ``SLURM_PROCID``. ``LOCAL_RANK`` is never
used: it is 0 once per node, which is how Paddle's VisualDL callback ends up with one file
per node.
"""

from __future__ import annotations

import os

from dualwatch.backends import process_rank

RANK_VARIABLES = ("RANK", "PADDLE_TRAINER_ID", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID")


def global_rank() -> int:
    """This process's global rank; 0 when it is not part of a multi-process job."""
    rank = process_rank()
    if rank is not None:
        return rank
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 0
