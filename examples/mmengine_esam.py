"""The ESAM BiFusion guide's enhanced training report for an MMEngine ``Runner``, from a config dict.

A tiny two-branch model (a "2d" and a "3d" branch mixed by a learned gate, as the ESAM guide's
fusion) is trained for two epochs. The config does what a user's config does:

* ``visualizer=dict(type="Visualizer", vis_backends=[dict(type="DualwatchVisBackend")])``: what
  MMEngine logs (``loss``, ``lr``, ``time``...) goes to VisualDL, TensorBoard and metrics.jsonl in
  ``<work_dir>/<timestamp>/vis_data``;
* ``custom_hooks=[dict(type="DualwatchHook", every=4, ...)]``: every 4 iterations the framed
  report goes to MMEngine's log (console and ``<work_dir>/<timestamp>/<timestamp>.log``) and
  ``train/detailed_loss/*``, ``train/gradient/*``, ``train/fusion/*`` and ``train/projection/*``
  go into the same run.

    python examples/mmengine_esam.py work_dirs/demo
    visualdl --logdir work_dirs/demo     # or: tensorboard --logdir work_dirs/demo
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from mmengine.config import Config
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, MODELS
from mmengine.runner import Runner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# Registers DualwatchVisBackend and DualwatchHook. A config *file* can say instead:
# custom_imports = dict(imports=["dualwatch.integrations.mmengine"], allow_failed_imports=False)
import dualwatch.integrations.mmengine  # noqa: F401


@DATASETS.register_module()
class PointFeatures(torch.utils.data.Dataset):
    """64 samples: a "2d" and a "3d" feature vector, and a regression target."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x2d, self.x3d = torch.randn(64, 6, generator=g), torch.randn(64, 6, generator=g)
        self.y = 0.3 * self.x2d.sum(1, keepdim=True) - 0.2 * self.x3d.sum(1, keepdim=True)

    def __getitem__(self, i: int):
        return self.x2d[i], self.x3d[i], self.y[i]

    def __len__(self) -> int:
        return len(self.y)


@MODELS.register_module()
class BiFusion(BaseModel):
    """Mixes two branches with a per-sample gate and reports the gate through ``dualwatch_stats``."""

    def __init__(self) -> None:
        super().__init__()
        self.branch2d, self.branch3d = torch.nn.Linear(6, 16), torch.nn.Linear(6, 16)
        self.gate = torch.nn.Linear(32, 1)
        self.head = torch.nn.Linear(16, 1)

    def forward(self, x2d, x3d, y, mode="loss"):
        f2d, f3d = torch.relu(self.branch2d(x2d)), torch.relu(self.branch3d(x3d))
        w2d = torch.sigmoid(self.gate(torch.cat([f2d, f3d], 1)))
        pred = self.head(w2d * f2d + (1 - w2d) * f3d)
        valid = (f2d.abs().sum(1) > 0).float()
        self.dualwatch_stats = {
            "fusion": {"2d_weight_mean": w2d.mean().item(), "3d_weight_mean": 1 - w2d.mean().item()},
            "projection": {"valid_projection_rate": valid.mean().item(), "valid_points": valid.sum().item()},
        }
        return {
            "semantic_loss": ((pred - y) ** 2).mean(),
            "spatial_cons_loss": 0.02 * (f2d.mean(0) - f3d.mean(0)).pow(2).sum(),
        }


def main(work_dir: str) -> None:
    cfg = Config(
        dict(
            model=dict(type="BiFusion"),
            work_dir=work_dir,
            train_dataloader=dict(
                dataset=dict(type="PointFeatures"),
                batch_size=8,
                sampler=dict(type="DefaultSampler", shuffle=True),
                collate_fn=dict(type="default_collate"),
            ),
            optim_wrapper=dict(optimizer=dict(type="AdamW", lr=0.01), clip_grad=dict(max_norm=1.0)),
            train_cfg=dict(by_epoch=True, max_epochs=2),
            default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=4)),
            visualizer=dict(type="Visualizer", vis_backends=[dict(type="DualwatchVisBackend")]),
            custom_hooks=[
                dict(
                    type="DualwatchHook",
                    every=4,  # interval= (LoggerHook's name) and log_interval= (the guide's) work too
                    groups={"backbone": "branch(2d|3d)", "bifusion": "gate", "head": "head"},
                )
            ],
            randomness=dict(seed=0),
        )
    )
    Runner.from_cfg(cfg).train()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "work_dirs/dualwatch_demo")
