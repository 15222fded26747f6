"""Pipeline stages: a model whose parameters are partitioned across ranks, each whole on exactly one.

Under pipeline parallelism (torch ``torch.distributed.pipelining``, Paddle ``PipelineLayer``) each
rank builds and trains one stage, a run of consecutive layers, and holds only that stage's
parameters and gradients: a Watcher on rank 0, the writer, would see the first stage alone, its
global norm too small and its group shares wrong. Unlike sharded parameters
(:func:`~dualwatch._table.combine_shards`) no row needs combining: every parameter is whole
somewhere, so the whole model's table is the stages' tables one after another, in stage order.

When watching starts, every stage tells the others its parameters' names and shapes (one
``all_gather_object`` over the pipeline's group), so every rank lists the whole model's
parameters, named as the model in one process names them (both frameworks' splits keep the
full model's names: torch's ``pipeline()`` and a sliced ``nn.Sequential`` keep the submodule
names, Paddle's ``PipelineLayer`` names each layer by its index in the whole list), selects,
groups and tags them the same way, and reaches the same verdict. At each check every rank reduces
its own parameters and one ``all_gather`` brings every stage's rows to every rank: ``stages x
rows x 15 x 8`` bytes, where ``rows`` is the largest stage's parameter count (120 bytes per
parameter and stage; 2.4 kB for two stages of ten parameters), one collective per check.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from dualwatch._table import Col, ParamInfo
from dualwatch.backends.base import Backend


class Stages:
    """The whole model's parameters when this rank holds one pipeline stage of it.

    ``infos`` and ``module_names`` describe the whole model, in stage order; ``mine`` are the
    rows of this rank's parameters among them; :meth:`whole` turns this rank's table into the
    whole model's. Every rank of the pipeline must create its Stages (and check) in step.
    """

    def __init__(
        self, backend: Backend, params: Sequence[tuple[str, Any]], index: int, count: int, group: Any
    ):
        self.backend = backend
        self.group = group
        local = [backend.info(name, p) for name, p in params]
        parts: list[tuple[int, list[ParamInfo], list[str]]] = backend.all_gather_object(
            (index, local, backend.module_names()), group
        )
        indices = [part[0] for part in parts]
        if sorted(indices) != list(range(count)):
            raise ValueError(
                f"a pipeline of {count} stages runs one stage on each of its {len(parts)} ranks here, "
                f"which hold stages {indices}: dualwatch watches one stage per rank; for schedules that "
                "run several stages on a rank (interleaved, looped, zero bubble) watch without pipelining"
            )
        self._order = sorted(range(len(parts)), key=lambda rank: indices[rank])
        self._sizes = [len(part[1]) for part in parts]
        self._width = max(1, *self._sizes)  # every rank sends the same shape
        self.infos = [info for rank in self._order for info in parts[rank][1]]
        names = [info.name for info in self.infos]
        twice = sorted({name for name in names if names.count(name) > 1})
        if twice:
            raise ValueError(
                f"pipeline stages name {len(twice)} parameter(s) alike ({', '.join(twice[:5])}): each "
                "stage should keep the whole model's parameter names (split with torch's pipeline(), slice "
                "an nn.Sequential, or delete the other stages' layers from the whole model; Paddle's "
                "PipelineLayer does so), and a layer shared between stages is not supported"
            )
        self.module_names = list(dict.fromkeys(name for rank in self._order for name in parts[rank][2]))
        mine = indices.index(index)
        start = sum(self._sizes[rank] for rank in self._order[: self._order.index(mine)])
        self.mine = list(range(start, start + len(local)))

    def whole(self, table: np.ndarray) -> np.ndarray:
        """This rank's ``[rows, len(Col)]`` table -> the whole model's, the same on every rank."""
        padded = np.full((self._width, len(Col)), np.nan)
        padded[: len(table)] = table
        parts = self.backend.all_gather(padded, self.group)
        return np.concatenate([parts[rank, : self._sizes[rank]] for rank in self._order])


def stages_of(backend: Backend, params: Sequence[tuple[str, Any]]) -> Stages | None:
    """The :class:`Stages` of a model that is one stage of a pipeline, else None (no collective)."""
    stage = backend.stage()
    if stage is None:
        return None
    index, count, group = stage
    return Stages(backend, params, index, count, group)
