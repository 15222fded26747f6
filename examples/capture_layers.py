"""The layer-output Monitor script's three usage patterns with dualwatch: callbacks, wrapper, loop.

A tiny transformer-style model trains for 3 epochs of 4 batches; the attention layer is
recorded on chosen batches (``single``) and the feed-forward layer on every batch of the
recorded epochs (``epoch_full``): the script's mixed-record example. Runs in seconds.

    python examples/capture_layers.py [--framework torch|paddle] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import warnings
from typing import Any, Callable

import numpy as np

from dualwatch import Monitor, MonitoredTrainer

LAYERS = {
    "encoder.self_attn": {"alias": "attention_weights", "record_type": "single"},
    "encoder.ffn": {"alias": "ffn_epoch_stats", "record_type": "epoch_full"},
}
EPOCHS, BATCHES = 3, 4


def build(framework: str) -> tuple[Any, Callable[[int], None]]:
    """The model and a ``train_one_batch(batch_idx)`` for it."""
    if framework == "torch":
        import torch as fw

        base, attn = fw.nn.Module, fw.nn.MultiheadAttention(16, 2, batch_first=True)
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="No ccache found")
            import paddle as fw
        base, attn = fw.nn.Layer, fw.nn.MultiHeadAttention(16, 2, need_weights=True)

    class Encoder(base):
        def __init__(self) -> None:
            super().__init__()
            self.self_attn, self.ffn = attn, fw.nn.Linear(16, 16)

        def forward(self, x: Any) -> Any:
            return self.ffn(self.self_attn(x, x, x)[0])

    class Net(base):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = Encoder()

        def forward(self, x: Any) -> Any:
            return self.encoder(x)

    model = Net()
    params = model.parameters()
    opt = fw.optim.SGD(params, lr=0.01) if framework == "torch" else fw.optimizer.SGD(0.01, parameters=params)
    rng = np.random.default_rng(0)

    def train_one_batch(batch_idx: int) -> None:
        x = rng.standard_normal((8, 5, 16)).astype(np.float32)
        loss = (model(fw.to_tensor(x) if framework == "paddle" else fw.from_numpy(x)) ** 2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad() if framework == "torch" else opt.clear_grad()

    return model, train_one_batch


def end_of_epoch(monitor: Monitor, epoch: int) -> None:
    """The script's epoch-end block: read, process, save, clear."""
    for alias, info in monitor.get_single_data(copy=False).items():
        for (e, b), (out, weights) in info["data"].items():
            print(f"  epoch {e} batch {b} {alias}: out {list(out.shape)}, weights {list(weights.shape)}")
    for alias, info in monitor.get_epoch_data(copy=False).items():
        outputs = [o.numpy() for o in info["data"].values()]
        if outputs:
            stacked = np.concatenate(outputs)
            print(f"  epoch {epoch} {alias}: {len(outputs)} batches, mean {stacked.mean():+.4f}")
    monitor.save_single_outputs()
    monitor.save_epoch_outputs()
    monitor.clear_current_epoch_data()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--framework", choices=["torch", "paddle"], default="torch")
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="dualwatch-capture-")

    # Method 1: callbacks passed into an encapsulated training function.
    model, train_one_batch = build(args.framework)
    monitor = Monitor(model, LAYERS, [2, 3], f"{out}/callbacks", batch_indices=[0, 3])

    def encapsulated_train(num_epochs: int, **kwargs: Any) -> None:
        for epoch in range(1, num_epochs + 1):
            kwargs["epoch_callback"](epoch)
            for batch_idx in range(BATCHES):
                kwargs["batch_callback"](batch_idx)
                train_one_batch(batch_idx)
            end_of_epoch(monitor, epoch)
        monitor.remove_hooks()

    print("method 1: callbacks")
    encapsulated_train(
        EPOCHS, epoch_callback=monitor.create_epoch_callback(), batch_callback=monitor.create_batch_callback()
    )

    # Method 2: the wrapper saves each epoch and removes the hooks at the end.
    model, train_one_batch = build(args.framework)
    monitor = Monitor(model, LAYERS, [2, 3], f"{out}/wrapper", batch_indices=[0, 3])

    def callback_train(num_epochs: int, epoch_callback: Any = None, batch_callback: Any = None) -> None:
        for epoch in range(1, num_epochs + 1):
            epoch_callback(epoch)
            for batch_idx in range(BATCHES):
                batch_callback(batch_idx)
                train_one_batch(batch_idx)

    print("method 2: MonitoredTrainer")
    MonitoredTrainer(monitor).wrap_training_function(callback_train)(EPOCHS)

    # Method 3: the loop calls the monitor directly; the context manager removes the hooks.
    model, train_one_batch = build(args.framework)
    print("method 3: direct loop")
    with Monitor(model, LAYERS, [2, 3], f"{out}/direct", batch_indices=[0, 3]) as monitor:
        for epoch in range(1, EPOCHS + 1):
            monitor.set_epoch(epoch)
            for batch_idx in range(BATCHES):
                monitor.set_batch_idx(batch_idx)
                train_one_batch(batch_idx)
            end_of_epoch(monitor, epoch)
    print(f"files and manifest.json under {out}")


if __name__ == "__main__":
    main()
