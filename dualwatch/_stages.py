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
groups and tags them the same way, and reaches the same verdict. A weight that several stages
hold and the framework keeps equal (Paddle's ``SharedLayerDesc``, tied embeddings) is one
parameter of the whole model, counted once: its first stage's row. Stages naming different
parameters alike are refused, on every rank alike, before training starts.

At each check every rank reduces its own parameters, and one ``all_gather`` over the pipeline's
group brings every stage's rows to every rank: ``stages x rows x 16 x 8`` bytes, where ``rows``
is the largest stage's parameter count and the 16 columns are the table's 15 and a flag saying
whether the rank's reduction failed (128 bytes per parameter and stage; 2.6 kB for two stages of
ten parameters), one collective per check.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

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
        parts: list[tuple[int, list[ParamInfo], list[str], set[str]]] = backend.all_gather_object(
            (index, local, backend.module_names(), backend.shared_with_other_stages()), group
        )
        indices = [part[0] for part in parts]
        if sorted(indices) != list(range(count)):
            raise ValueError(
                f"this pipeline has {count} stages, and its {len(parts)} rank(s) watch stages {indices} "
                "(one each): dualwatch watches one stage per rank; use a schedule that "
                "runs one stage per rank (ScheduleGPipe, Schedule1F1B)"
            )
        self._order = sorted(range(len(parts)), key=lambda rank: indices[rank])
        self._width = max(1, *(len(part[1]) for part in parts))  # every rank sends the same shape
        row_of: dict[str, int] = {}  # the whole model's row of each name
        shared_first: set[str] = set()  # names whose first holder shares them with other stages
        self.infos: list[ParamInfo] = []
        self._kept: dict[int, list[int]] = {}  # each rank's rows that are new to the whole model
        twice = []
        for rank in self._order:
            _, infos, _, shared = parts[rank]
            self._kept[rank] = []
            for row, info in enumerate(infos):
                if info.name in row_of:  # one parameter only where both holders say they share it
                    if info.name not in shared or info.name not in shared_first:
                        twice.append(info.name)
                    continue
                row_of[info.name] = len(self.infos)
                shared_first.update({info.name} & shared)
                self.infos.append(info)
                self._kept[rank].append(row)
        if twice:
            listed = ", ".join(sorted(twice)[:5])
            raise ValueError(
                f"pipeline stages name {len(twice)} parameter(s) alike ({listed}): each stage should keep "
                "the whole model's parameter names (split with torch's pipeline(), slice an nn.Sequential, "
                "or delete the other stages' layers from the whole model; Paddle's PipelineLayer does so)"
            )
        self.module_names = list(dict.fromkeys(name for rank in self._order for name in parts[rank][2]))
        self.mine = [row_of[info.name] for info in local]  # a shared parameter: its first holder's row

    def whole(self, reduce: Callable[[], np.ndarray]) -> np.ndarray:
        """The whole model's ``[rows, len(Col)]`` table, the same on every rank, from ``reduce()``,
        this rank's table.

        A rank whose ``reduce`` fails still joins the gather (its other stages wait for it), with a
        flag in one more column; then every rank raises, so each warns and training goes on.
        """
        padded = np.full((self._width, len(Col) + 1), np.nan)
        padded[:, -1] = 0.0
        failure = None
        try:
            table = reduce()
            padded[: len(table), :-1] = table
        except Exception as err:
            failure = err
            padded[:, -1] = 1.0
        parts = self.backend.all_gather(padded, self.group)
        if failure is not None:
            raise failure
        failed = [stage for stage, rank in enumerate(self._order) if parts[rank, 0, -1]]
        if failed:
            raise RuntimeError(f"the check failed on the rank(s) of pipeline stage(s) {failed}")
        return np.concatenate([parts[rank, self._kept[rank], :-1] for rank in self._order])


def stages_of(backend: Backend, params: Sequence[tuple[str, Any]]) -> Stages | None:
    """The :class:`Stages` of a model that is one stage of a pipeline, else None (no collective)."""
    stage = backend.stage()
    if stage is None:
        return None
    index, count, group = stage
    return Stages(backend, params, index, count, group)
