"""Pipeline-parallel jobs for tests/test_pipeline.py, each run as its own process.

Every job trains the same model, ``Linear(6, 8) -> Tanh -> Linear(8, 2)`` with the same weights,
on the same 3 batches of 8 (SGD, lr 0.1), watched at every step with the groups ``head`` (the
last Linear) and ``other``, and saves what its Watcher computed to ``OUT.<rank>.json``; runs are
written under ``OUT.runs``:

* ``torch-single OUT`` / ``paddle-single OUT``: one process, the whole model, the whole batch.
* ``torchrun --nproc-per-node 2 _pipeline_child.py torch-pipe OUT``: two stages (``model[:2]``
  and ``model[2:]``, slices keep the whole model's names) run by ``PipelineStage`` and
  ``ScheduleGPipe`` over 2 microbatches; with 3 ranks, three stages, the middle one (``Tanh``)
  without parameters. Rank 0 gives the Watcher its stage, the others the stage's module: both
  forms are watched as the whole model. A further check fails on the last rank (a fault
  injected into its reduction): every rank warns and goes on. Then each rank gives a Watcher a
  stage, the last one's layers numbered afresh (``0.weight`` as on the first stage), which every
  rank refuses alike.
* ``python -m paddle.distributed.launch --nproc_per_node 2 _pipeline_child.py paddle-pipe OUT``:
  a fleet ``PipelineLayer`` of 2 stages (pp_degree 2), 2 microbatches, trained with
  ``forward_backward_pipeline`` and checked before ``optimizer.step()``. On the CPU Paddle needs
  two settings from its user, made here: ``ParallelEnv`` has no ``_device_id`` there, and gloo
  has no batched send (``pp_configs={"use_batch_p2p_comm": False}``).
* ``paddle-tied-single OUT`` / ``paddle-tied-pipe OUT``: an autoencoder whose input layer's weight is
  also, transposed, its output layer's (a ``SharedLayerDesc`` held by both stages); its groups are
  ``head`` (the middle ``Linear``, named ``2``) and ``other``.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from dualwatch import Watcher

STEPS, BATCH, MICROBATCHES = 3, 8, 2
GROUPS = {"head": "2.*"}


def weights() -> dict[str, np.ndarray]:
    """The model's starting weights, by the whole model's parameter names (``[in, out]`` as paddle)."""
    rng = np.random.default_rng(0)
    shapes = {"0.weight": (6, 8), "0.bias": (8,), "2.weight": (8, 2), "2.bias": (2,)}
    return {name: rng.standard_normal(shape).astype("float32") * 0.5 for name, shape in shapes.items()}


def batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        (rng.standard_normal((BATCH, 6)).astype("float32"), rng.standard_normal((BATCH, 2)).astype("float32"))
        for _ in range(STEPS)
    ]


def save(seen: list[dict[str, float]], out: str, rank: int) -> None:
    with open(f"{out}.{rank}.json", "w") as f:
        json.dump(seen, f)


def torch_model():
    import torch

    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
    with torch.no_grad():
        for name, p in model.named_parameters():
            value = torch.from_numpy(weights()[name])
            p.copy_(value.T if value.ndim == 2 else value)  # torch's Linear keeps [out, in]
    return model


def torch_single(out: str) -> None:
    import torch

    model = torch_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen = []
    with Watcher(model, every=1, groups=GROUPS, logdir=f"{out}.runs", console=False) as w:
        for step, (x, y) in enumerate(batches()):
            torch.nn.functional.mse_loss(model(torch.from_numpy(x)), torch.from_numpy(y)).backward()
            seen.append(w.step(step))
            optimizer.step()
            optimizer.zero_grad()
    save(seen, out, 0)


def torch_pipe(out: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.distributed.pipelining import PipelineStage, ScheduleGPipe

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        cuts = {2: [0, 2, 3], 3: [0, 1, 2, 3]}[world]
        part = torch_model()[cuts[rank] : cuts[rank + 1]]
        stage = PipelineStage(part, rank, world, torch.device("cpu"))
        schedule = ScheduleGPipe(stage, MICROBATCHES, loss_fn=torch.nn.functional.mse_loss)
        params = list(part.parameters())  # none on a stage of activations only
        optimizer = torch.optim.SGD(params, lr=0.1) if params else None
        seen = []
        watched = stage if rank == 0 else stage.submod
        with Watcher(watched, every=1, groups=GROUPS, logdir=f"{out}.runs", console=False) as w:
            for step, (x, y) in enumerate(batches()):
                if rank == 0:
                    schedule.step(torch.from_numpy(x))
                elif rank == world - 1:
                    schedule.step(target=torch.from_numpy(y))
                else:
                    schedule.step()
                seen.append(w.step(step))
                if optimizer is not None:
                    optimizer.step()
                    optimizer.zero_grad()
            if rank == world - 1:  # a fault in the last stage's reduction: no rank waits for its rows
                w._reducer.reduce = fail
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                failed = w.check(STEPS)
            Path(f"{out}.{rank}.failed").write_text(json.dumps([failed, [str(c.message) for c in caught]]))
        save(seen, out, rank)
        # stages that renumber their layers (here the last one as "0") cannot be named as the whole model
        renamed = part if rank < world - 1 else torch.nn.Sequential(torch.nn.Linear(8, 2))
        try:
            Watcher(PipelineStage(renamed, rank, world, torch.device("cpu")), logdir=None)
        except ValueError as err:
            Path(f"{out}.{rank}.refused").write_text(str(err))
        dist.barrier()  # no rank tears gloo down while another still talks to it
    finally:
        dist.destroy_process_group()


def fail(*args: object, **kwargs: object) -> None:
    raise MemoryError("injected")


def paddle_single(out: str) -> None:
    import paddle

    model = paddle.nn.Sequential(paddle.nn.Linear(6, 8), paddle.nn.Tanh(), paddle.nn.Linear(8, 2))
    model.set_state_dict(weights())
    _paddle_single_process(model, batches(), out)


def paddle_pipe(out: str, tied: bool = False) -> None:
    import paddle
    import paddle.distributed as dist
    from paddle.distributed import fleet
    from paddle.distributed.fleet.meta_parallel import LayerDesc, PipelineLayer, SharedLayerDesc

    if not hasattr(dist.ParallelEnv, "_device_id"):  # the CPU's ParallelEnv lacks it; PipelineLayer reads it
        dist.ParallelEnv._device_id = 0
    strategy = fleet.DistributedStrategy()
    strategy.hybrid_configs = {
        "dp_degree": 1,
        "mp_degree": 1,
        "pp_degree": 2,
        "pp_configs": {"use_batch_p2p_comm": False},  # gloo has no batched send
    }
    strategy.pipeline_configs = {"accumulate_steps": MICROBATCHES, "micro_batch_size": BATCH // MICROBATCHES}
    fleet.init(is_collective=True, strategy=strategy)
    rank = dist.get_rank()
    if tied:
        linear = {"in_features": 6, "out_features": 6, "bias_attr": False}
        descs = [
            SharedLayerDesc("tied", paddle.nn.Linear, **linear),
            LayerDesc(paddle.nn.Tanh),
            LayerDesc(paddle.nn.Linear, 6, 6),
            SharedLayerDesc("tied", paddle.nn.Linear, forward_func=untied_output, **linear),
        ]
    else:
        descs = [
            LayerDesc(paddle.nn.Linear, 6, 8),
            LayerDesc(paddle.nn.Tanh),
            LayerDesc(paddle.nn.Linear, 8, 2),
        ]
    layer = PipelineLayer(descs, num_stages=2, loss_fn=paddle.nn.MSELoss())
    start = tied_weights() if tied else weights()
    layer.set_state_dict({name: value for name, value in start.items() if name in layer.state_dict()})
    optimizer = fleet.distributed_optimizer(paddle.optimizer.SGD(0.1, parameters=layer.parameters()))
    model = fleet.distributed_model(layer)
    seen = []
    with Watcher(model, every=1, groups=GROUPS, logdir=f"{out}.runs", console=False) as w:
        for step, (x, y) in enumerate(tied_batches() if tied else batches()):
            model.forward_backward_pipeline([paddle.to_tensor(x), paddle.to_tensor(y)])
            seen.append(w.step(step))
            optimizer.step()
            optimizer.clear_grad()
    save(seen, out, rank)
    dist.barrier()


def tied_weights() -> dict[str, np.ndarray]:
    """The tied model's weights: ``shared_layers.tied.weight`` is its input layer's and, transposed, its
    output layer's (as an embedding tied to the output head)."""
    rng = np.random.default_rng(2)
    shapes = {"shared_layers.tied.weight": (6, 6), "2.weight": (6, 6), "2.bias": (6,)}
    return {name: rng.standard_normal(shape).astype("float32") * 0.5 for name, shape in shapes.items()}


def tied_batches() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(3)
    return [(rng.standard_normal((BATCH, 6)).astype("float32"),) * 2 for _ in range(STEPS)]  # an autoencoder


def untied_output(layer, h):
    """The tied layer used as the output layer: ``h @ W^T``."""
    import paddle

    return paddle.matmul(h, layer.weight, transpose_y=True)


def paddle_tied_single(out: str) -> None:
    """The tied model in one process: one ``Linear`` is the input layer and, transposed, the output."""
    import paddle

    class Tied(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.shared_layers = paddle.nn.LayerDict({"tied": paddle.nn.Linear(6, 6, bias_attr=False)})
            self.add_sublayer("2", paddle.nn.Linear(6, 6))

        def forward(self, x):
            tied = self.shared_layers["tied"]
            return untied_output(tied, getattr(self, "2")(paddle.tanh(tied(x))))

    model = Tied()
    model.set_state_dict(tied_weights())
    _paddle_single_process(model, tied_batches(), out)


def _paddle_single_process(model: Any, data: Any, out: str) -> None:
    """Trains ``model`` on the whole batches in one process, watched; saves what every check saw."""
    import paddle

    optimizer = paddle.optimizer.SGD(0.1, parameters=model.parameters())
    seen = []
    with Watcher(model, every=1, groups=GROUPS, logdir=f"{out}.runs", console=False) as w:
        for step, (x, y) in enumerate(data):
            paddle.nn.functional.mse_loss(model(paddle.to_tensor(x)), paddle.to_tensor(y)).backward()
            seen.append(w.step(step))
            optimizer.step()
            optimizer.clear_grad()
    save(seen, out, 0)


if __name__ == "__main__":
    warnings.filterwarnings("ignore", message="No ccache found")
    mode, out = sys.argv[1:3]
    jobs = {
        "torch-single": torch_single,
        "torch-pipe": torch_pipe,
        "paddle-single": paddle_single,
        "paddle-pipe": paddle_pipe,
        "paddle-tied-single": paddle_tied_single,
        "paddle-tied-pipe": lambda out: paddle_pipe(out, tied=True),
    }
    jobs[mode](out)
