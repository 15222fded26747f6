"""The StableSR edge monitor with Lightning: the ``EdgeMonitorCallback`` built from the YAML config.

A tiny LightningModule whose ``edge_processor`` (the StableSR ``backbone`` + ``to_four``) turns
images into 4-channel edge features; a ``head`` beside it is not watched. The callbacks are built
exactly as latent-diffusion's ``main.py`` builds them (``instantiate_from_config`` on each
``lightning.callbacks`` entry) and the trainer keeps its default logger (TensorBoard) in ``--out``:

    python examples/lightning_edge_monitor.py --out runs/lightning_edge_monitor
    visualdl --logdir runs/lightning_edge_monitor/lightning_logs
    tensorboard --logdir runs/lightning_edge_monitor/lightning_logs

The callback writes its VisualDL, TensorBoard and JSON-lines files in the trainer's run,
``lightning_logs/version_<N>/dualwatch``: ``edge_processor/<param>/<stat>`` for
``weight_{mean,std,min,max,change}`` and ``grad_{mean,std,min,max,norm}``, ``train/gradient/*``,
``Model/*``, ``Loss/Train``, ``Learning_Rate`` and ``Time/Epoch_Duration``. Every 10 steps the
console shows the "Edge Processor Monitor - Step N" block above the progress bar.
``--logger dualwatch`` trains with ``DualwatchLogger`` instead: ``self.log`` values and the
checks then share one run, ``lightning_logs/version_<N>``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

try:
    import lightning.pytorch as pl
except ImportError:
    import pytorch_lightning as pl

from dualwatch.integrations.lightning import DualwatchLogger

HERE = Path(__file__).resolve().parent


def get_obj_from_str(string: str) -> Any:
    module, cls = string.rsplit(".", 1)
    return getattr(importlib.import_module(module), cls)


def instantiate_from_config(config: Any) -> Any:
    """latent-diffusion's ``ldm.util.instantiate_from_config``."""
    if "target" not in config:
        raise KeyError("Expected key `target` to instantiate.")
    return get_obj_from_str(config["target"])(**config.get("params", dict()))


class EdgeMapProcessor(torch.nn.Module):
    """The StableSR layer names: ``backbone.0`` conv, ``backbone.1`` batch norm, ..., ``to_four``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(8),
            torch.nn.ReLU(),
            torch.nn.Conv2d(8, 16, 3, padding=1, bias=False),
            torch.nn.BatchNorm2d(16),
            torch.nn.ReLU(),
        )
        self.to_four = torch.nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.to_four(self.backbone(x))


class TinyEdgeModel(pl.LightningModule):
    def __init__(self, lr: float = 1e-2) -> None:
        super().__init__()
        self.lr = lr
        self.edge_processor = EdgeMapProcessor()
        self.head = torch.nn.Conv2d(4, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.edge_processor(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = torch.nn.functional.mse_loss(self(x), y)
        self.log("train/loss", loss)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def data(n: int = 64, size: int = 12, seed: int = 0) -> torch.utils.data.DataLoader:
    """Images and a fixed target: their horizontal differences (a crude edge map)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, size, size, generator=g)
    y = torch.nn.functional.pad(x[..., 1:] - x[..., :-1], (0, 1))
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(HERE / "lightning_edge_monitor.yaml"))
    parser.add_argument("--out", default="runs/lightning_edge_monitor", help="the trainer's default_root_dir")
    parser.add_argument("--logger", choices=["tensorboard", "dualwatch"], default="tensorboard")
    parser.add_argument("--steps", type=int, help="override lightning.trainer.max_steps")
    args = parser.parse_args(argv)

    config = OmegaConf.load(args.config).lightning
    callbacks = [instantiate_from_config(config.callbacks[name]) for name in config.callbacks]
    trainer_kwargs = OmegaConf.to_container(config.get("trainer", {}))
    if args.steps is not None:
        trainer_kwargs["max_steps"] = args.steps
    pl.seed_everything(0, verbose=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        callbacks=callbacks,
        default_root_dir=args.out,
        logger=DualwatchLogger(args.out) if args.logger == "dualwatch" else True,
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    trainer.fit(TinyEdgeModel(), data())


if __name__ == "__main__":
    main()
