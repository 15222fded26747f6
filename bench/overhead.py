"""Benchmark: what watching costs a training loop, per integration, beside wandb.watch and .item() loops.

What it measures
    Two models, trained with Adam on the CPU: the StableSR edge monitor's ``EdgeMapProcessor``
    (the demo's model; synthetic 32x32 images, batch 8), where convolutions hide the cost of
    a check, and a parameter-heavy MLP (``MLP_WIDTHS``: 12.6M parameters in 8 tensors, batch
    ``MLP_BATCH``), where a check reads as many bytes as the optimizer step. Each variant
    trains its own copy of the model (same initial weights, same batches), so one variant's
    hooks never touch another's. One sample is the wall time of ``--steps`` training steps;
    variants are interleaved round-robin and the overhead is the ratio of medians to the
    bare run's, minus one.

    * plain torch loop, each model (sections ``torch``, ``torch_mlp``): bare;
      ``dualwatch.Watcher`` at its defaults (``every=10``, VisualDL, TensorBoard and JSON
      lines, the console block sent to /dev/null), with the loss logged each step
      (``log_training``); the edge monitor callback done its own way (every statistic of
      every parameter fetched with its own ``.item()``, a ``clone()`` for its weight change,
      every 10 steps); ``wandb.watch(log="all", log_freq=10)`` in offline mode, when wandb
      is installed, with ``wandb.log({"loss": ...})`` each step as wandb's users call it (that
      call commits the histograms its hooks made, so their cost falls inside the timing);
      beside the medians, the share of each sample the loop spent in each step callback;
    * plain paddle loop, each model (``paddle``, ``paddle_mlp``): bare, ``Watcher``, the
      seed-style callback;
    * Lightning ``Trainer.fit``, all with the trainer's default logger (``TensorBoardLogger``)
      unless replaced: bare; ``EdgeMonitorCallback`` at its defaults (every 10 steps, its run in
      the logger's version directory, the ``Model/*`` and ``train/gradient/*`` totals sent to
      the logger); ``DualwatchLogger`` in place of ``TensorBoardLogger``, with the callback
      writing into its run; and, for comparison, the callback sending every statistic to the
      logger (``log_to_trainer=True``, what it did before);
    * Paddle ``Model.fit``: bare against ``WatchCallback`` (``every=10``);
    * MMEngine ``Runner.train``: bare against ``DualwatchHook`` (``every=10``).

    In ``Trainer.fit``, ``Model.fit`` and ``Runner.train`` a sample is the time from the first
    batch to the end of the epoch, taken by a callback (hook) both variants carry, so set-up is
    not counted.

Why
    The project's targets: training throughput with each integration at its default frequency
    within 3% of the same training without it, and within 1% on the parameter-heavy model,
    where the per-parameter ``.item()`` callback costs about 10% and ``wandb.watch`` over half
    (dualwatch rows say MET / NOT MET). On a shared machine the difference of two medians
    swings by a few percent; the callback's share of the loop hardly moves. Nothing is
    asserted; the script exits 0. Each section runs in its own process (``import paddle``
    sets ``OMP_NUM_THREADS=1``).

Usage
    python bench/overhead.py [--section torch|torch_mlp|paddle|paddle_mlp|lightning|paddle_fit|mmengine]
                             [--repeats N] [--steps S] [--smoke]

``--steps`` defaults to 30, and to 20 in the MLP sections (about a second a step here).

``--smoke`` trains 4 steps, 2 repeats a variant, and the MLP at ``SMOKE_WIDTHS``, so CI runs it
in seconds.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

_ROOT = Path(__file__).resolve().parents[1]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import numpy as np  # noqa: E402

from bench._seed import seed_style_loop  # noqa: E402
from bench._timing import (  # noqa: E402
    Spent,
    env_line,
    interleaved,
    overhead_report,
    quiet,
    share_report,
    thread_env,
)

EVERY = 10
BATCH, SIZE = 8, 32
MLP_WIDTHS = (1024, 2048, 2048, 2048, 1024)  # 12.6M parameters in 8 tensors
SMOKE_WIDTHS = (64, 128, 128, 128, 64)  # the same layers, small enough for CI
MLP_BATCH = 16
WANDB = "wandb.watch(log='all')"
SECTIONS = ("torch", "torch_mlp", "paddle", "paddle_mlp", "lightning", "paddle_fit", "mmengine")


def batches(steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    from dualwatch._demo import synthetic_batch

    rng = np.random.default_rng(0)
    return [synthetic_batch(rng, BATCH, SIZE) for _ in range(steps)]


def mlp_batches(steps: int, widths: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Random inputs and targets for the parameter-heavy model."""
    rng = np.random.default_rng(0)
    shape_in, shape_out = (MLP_BATCH, widths[0]), (MLP_BATCH, widths[-1])
    return [
        (rng.standard_normal(shape_in, np.float32), rng.standard_normal(shape_out, np.float32))
        for _ in range(steps)
    ]


def samples(steps: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The same data one image at a time, for the frameworks' own data loaders."""
    return [(x[j], y[j]) for x, y in batches(steps) for j in range(BATCH)]


class Framework:
    """The few calls that differ between torch and paddle in these loops."""

    def __init__(self, name: str) -> None:
        self.name = name
        if name == "torch":
            import torch

            self.fw, self.nn = torch, torch.nn
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No ccache found")
                import paddle

            self.fw, self.nn = paddle, paddle.nn
        self.version = self.fw.__version__

    def model(self) -> Any:
        from dualwatch._demo import edge_model

        nn = self.nn
        if self.name == "torch":
            self.fw.manual_seed(0)
            return edge_model(nn, nn.Conv2d, nn.BatchNorm2d, nn.Module)
        self.fw.seed(0)
        return edge_model(nn, nn.Conv2D, nn.BatchNorm2D, nn.Layer)

    def mlp(self, widths: tuple[int, ...]) -> Any:
        """The parameter-heavy model: linear layers of these widths with ReLUs between."""
        nn = self.nn
        (self.fw.manual_seed if self.name == "torch" else self.fw.seed)(0)
        layers: list[Any] = []
        for fan_in, fan_out in zip(widths, widths[1:]):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        return nn.Sequential(*layers[:-1])  # no ReLU after the last layer

    def optimizer(self, model: Any) -> Any:
        if self.name == "torch":
            return self.fw.optim.Adam(model.parameters(), lr=1e-3)
        return self.fw.optimizer.Adam(learning_rate=1e-3, parameters=model.parameters())

    def tensor(self, array: np.ndarray) -> Any:
        return self.fw.from_numpy(array) if self.name == "torch" else self.fw.to_tensor(array)

    def mse(self, a: Any, b: Any) -> Any:
        return self.nn.functional.mse_loss(a, b)

    def clear(self, optimizer: Any) -> None:
        optimizer.zero_grad() if self.name == "torch" else optimizer.clear_grad()


# -- sections ----------------------------------------------------------------------------------


def plain_loop(
    framework: str, model_kind: str, steps: int, repeats: int, logdir: str, widths: tuple[int, ...]
) -> None:
    """A hand-written loop: bare, dualwatch's Watcher, the seed-style callback, wandb.watch (torch).

    ``model_kind``: ``"conv"`` (the edge monitor's model, batch 8 of 32x32 images) or ``"mlp"``
    (the parameter-heavy model of these ``widths``, batch ``MLP_BATCH``). The step callbacks get
    the loss after ``backward``; dualwatch's and wandb's log it each step, as their users do.
    """
    from dualwatch import Watcher

    fw = Framework(framework)
    if model_kind == "conv":  # the model holds the network the callback watches, edge_processor
        data = [(fw.tensor(x), fw.tensor(y)) for x, y in batches(steps)]
        build, module = fw.model, "edge_processor"
    else:
        data = [(fw.tensor(x), fw.tensor(y)) for x, y in mlp_batches(steps, widths)]
        build, module = (lambda: fw.mlp(widths)), None

    def network(model: Any) -> Any:
        """What is trained and watched."""
        return model if module is None else getattr(model, module)

    OnStep = Callable[[int, Any], object]

    shares: dict[str, list[float]] = {}

    def trainer(name: str, watch: Callable[[Any], OnStep] | None) -> Callable[[], None]:
        """The loop; with ``watch``, also the share of it spent in the step callback (``shares``)."""
        model = build()
        net, optimizer = network(model), fw.optimizer(model)
        on_step = watch(model) if watch is not None else None

        def train() -> None:
            spent, started = 0.0, time.perf_counter()
            for i, (x, y) in enumerate(data):
                loss = fw.mse(net(x), y)
                loss.backward()
                if on_step is not None:
                    called = time.perf_counter()
                    on_step(i, loss)
                    spent += time.perf_counter() - called
                optimizer.step()
                fw.clear(optimizer)
            if on_step is not None:
                shares.setdefault(name, []).append(spent / (time.perf_counter() - started))

        return train

    def seed_style(model: Any) -> OnStep:
        named, prev = list(network(model).named_parameters()), {}
        return lambda i, loss: seed_style_loop(named, prev) if i % EVERY == 0 else None

    watchers: list[Watcher] = []  # closed before the temporary log directory goes

    def watched(model: Any) -> OnStep:
        watcher = Watcher(model, module=module, logdir=logdir)
        watchers.append(watcher)

        def on_step(i: int, loss: Any) -> None:
            watcher.step(i)
            watcher.log_training(i, loss=float(loss.item()))

        return on_step

    print(env_line({framework: fw.version}, thread_env()))
    params = list(network(build()).parameters())
    size = sum(int(np.prod(p.shape)) for p in params)
    print(f"model: {model_kind}, {size:,} parameters in {len(params)} tensors, batch {len(data[0][0])}")
    wandb = _wandb(logdir) if framework == "torch" else None
    with quiet():
        variants = {
            name: trainer(name, watch)
            for name, watch in [
                ("bare", None),
                ("dualwatch Watcher", watched),
                ("seed-style callback", seed_style),
            ]
        }
        if wandb is not None:

            def wandb_watch(model: Any) -> OnStep:
                wandb.watch(network(model), log="all", log_freq=EVERY)
                # wandb.log commits the step: the histograms its hooks made go out with it.
                return lambda i, loss: wandb.log({"loss": loss.item()})

            variants[WANDB] = trainer(WANDB, wandb_watch)
        timings = interleaved(variants, repeats)
        for watcher in watchers:
            watcher.close()
        if wandb is not None:
            wandb.finish()
    overhead_report(f"{framework} {model_kind} loop", timings, steps, 1.0 if model_kind == "mlp" else 3.0)
    # the first sample of each is the untimed warm-up; wandb's hooks run inside forward and backward
    share_report({name: values[1:] for name, values in shares.items() if name != WANDB})


def lightning_trainer(steps: int, repeats: int, logdir: str) -> None:
    """Lightning ``Trainer.fit`` for one epoch of ``steps`` batches with its default logger, bare and
    with ``EdgeMonitorCallback``, ``DualwatchLogger`` + the callback, and the callback forwarding all."""
    import logging

    import lightning.pytorch as pl
    import torch

    from dualwatch.integrations.lightning import DualwatchLogger, EdgeMonitorCallback

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # its start-up notes, per fit

    fw = Framework("torch")
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in samples(steps)]

    class EdgeModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.edge_processor = fw.model().edge_processor

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            x, y = batch
            return fw.mse(self.edge_processor(x), y)

        def configure_optimizers(self) -> Any:
            return fw.optimizer(self)

    class EpochTimer(pl.Callback):
        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.started = time.perf_counter()

        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            self.seconds = time.perf_counter() - self.started

    class TimedMonitor(EdgeMonitorCallback):
        """The callback, timing its checks on the training thread: a share that the load other
        processes put on a shared machine hardly moves, unlike the difference of two medians."""

        def on_train_epoch_start(self, trainer: Any, module: Any) -> None:
            self.spent = 0.0
            super().on_train_epoch_start(trainer, module)

        def on_before_optimizer_step(self, *args: Any) -> None:
            started = time.perf_counter()
            super().on_before_optimizer_step(*args)
            self.spent += time.perf_counter() - started

    shares: dict[str, list[float]] = {}

    def fit(name: str, callback: dict[str, Any] | None, dualwatch_logger: bool) -> Callable[[], float]:
        """``callback``: the callback's arguments (None: no callback)."""

        def run() -> float:
            timer = EpochTimer()
            monitor = TimedMonitor(**callback) if callback is not None else None
            trainer = pl.Trainer(
                max_epochs=1,
                callbacks=[timer, *([monitor] if monitor is not None else [])],
                logger=DualwatchLogger(logdir) if dualwatch_logger else True,  # True: TensorBoardLogger
                default_root_dir=logdir,
                enable_checkpointing=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                accelerator="cpu",
                devices=1,
            )
            loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)
            trainer.fit(EdgeModule(), loader)
            if monitor is not None:
                shares.setdefault(name, []).append(monitor.spent / timer.seconds)
            return timer.seconds

        return run

    print(env_line({"torch": fw.version, "lightning": pl.__version__}, thread_env()))
    with quiet():
        variants = {
            name: fit(name, callback, dualwatch_logger)
            for name, callback, dualwatch_logger in [
                ("bare", None, False),
                ("dualwatch EdgeMonitorCallback", {}, False),
                ("dualwatch DualwatchLogger+callback", {}, True),
                ("callback, log_to_trainer=True", {"log_to_trainer": True}, False),
            ]
        }
        timings = interleaved(variants, repeats, self_timed=True)
    overhead_report("Lightning Trainer", timings, steps)
    share_report(shares)


def paddle_fit(steps: int, repeats: int, logdir: str) -> None:
    """``paddle.Model.fit`` for one epoch of ``steps`` batches, bare and with ``WatchCallback``."""
    fw = Framework("paddle")
    paddle = fw.fw
    from dualwatch.integrations.paddle import WatchCallback

    data = samples(steps)

    class Images(paddle.io.Dataset):
        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            return data[i]

        def __len__(self) -> int:
            return len(data)

    class EdgeNet(paddle.nn.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.edge_processor = fw.model().edge_processor

        def forward(self, x: Any) -> Any:
            return self.edge_processor(x)

    class EpochTimer(paddle.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
            self.seconds = time.perf_counter() - self.started

    class TimedWatch(WatchCallback):
        """The callback, timing its own code on the training thread (see ``Spent``)."""

        def on_train_begin(self, logs: Any = None) -> None:
            super().on_train_begin(logs)
            self.spent = Spent()
            self.spent.wrap(self, "on_train_batch_begin", "on_train_batch_end", "on_epoch_end")
            self.spent.wrap(self.watcher, "check")

        def on_train_end(self, logs: Any = None) -> None:
            for name in ("on_train_batch_begin", "on_train_batch_end", "on_epoch_end"):
                vars(self).pop(name)
            super().on_train_end(logs)

    shares: dict[str, list[float]] = {}

    def fit(callbacks: list[Any]) -> Callable[[], float]:
        net = EdgeNet()
        model = paddle.Model(net)
        model.prepare(fw.optimizer(net), paddle.nn.MSELoss())
        timer = EpochTimer()

        def run() -> float:
            model.fit(  # the timer last, so it also times the callbacks' epoch end
                Images(), epochs=1, batch_size=BATCH, verbose=0, shuffle=False, callbacks=[*callbacks, timer]
            )
            for callback in callbacks:
                share = callback.spent.seconds / timer.seconds
                shares.setdefault("dualwatch WatchCallback", []).append(share)
            return timer.seconds

        return run

    print(env_line({"paddle": fw.version}, thread_env()))
    with quiet():
        watch = TimedWatch(every=EVERY, logdir=logdir, module="edge_processor")
        timings = interleaved(
            {"bare": fit([]), "dualwatch WatchCallback": fit([watch])}, repeats, self_timed=True
        )
    overhead_report("paddle Model.fit", timings, steps)
    share_report(shares)


def mmengine_runner(steps: int, repeats: int, logdir: str) -> None:
    """MMEngine ``Runner.train`` for one epoch of ``steps`` iterations, bare and with ``DualwatchHook``."""
    import torch
    from mmengine.hooks import Hook
    from mmengine.model import BaseModel
    from mmengine.registry import HOOKS
    from mmengine.runner import Runner

    from dualwatch.integrations.mmengine import DualwatchHook

    fw = Framework("torch")
    data = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in samples(steps)]

    class EdgeModel(BaseModel):
        def __init__(self) -> None:
            super().__init__()
            self.edge_processor = fw.model().edge_processor

        def forward(self, x: Any, y: Any, mode: str = "loss") -> dict[str, Any]:
            return {"loss": fw.mse(self.edge_processor(x), y)}

    class EpochTimer(Hook):
        def before_train_epoch(self, runner: Any) -> None:
            self.started = time.perf_counter()

        def after_train_epoch(self, runner: Any) -> None:
            self.seconds = time.perf_counter() - self.started

    shares: dict[str, list[float]] = {}

    @HOOKS.register_module(force=True)
    class TimedDualwatchHook(DualwatchHook):
        """The hook, timing its own code on the training thread (see ``Spent``)."""

        def before_train(self, runner: Any) -> None:
            super().before_train(runner)
            self.spent = Spent()
            self.spent.wrap(self, "before_train_iter", "after_train_iter")
            self.spent.wrap(self.watcher, "check")

        def after_train_epoch(self, runner: Any) -> None:  # after the timer's (VERY_HIGH) epoch end
            timer = next(h for h in runner.hooks if isinstance(h, EpochTimer))
            shares.setdefault("dualwatch DualwatchHook", []).append(self.spent.seconds / timer.seconds)

    def runner(hooks: list[dict[str, Any]]) -> Callable[[], float]:
        def run() -> float:
            timer = EpochTimer()
            r = Runner(
                model=EdgeModel(),
                work_dir=tempfile.mkdtemp(dir=logdir),
                train_dataloader=dict(
                    dataset=data,
                    sampler=dict(type="DefaultSampler", shuffle=False),
                    collate_fn=dict(type="default_collate"),
                    batch_size=BATCH,
                ),
                optim_wrapper=dict(optimizer=dict(type="Adam", lr=1e-3)),
                train_cfg=dict(by_epoch=True, max_epochs=1),
                default_hooks=dict(logger=dict(type="LoggerHook", interval=EVERY), checkpoint=None),
                custom_hooks=hooks,
                log_level="ERROR",
            )
            r.register_hook(timer, priority="VERY_HIGH")
            r.train()
            return timer.seconds

        return run

    hook = dict(type="TimedDualwatchHook", every=EVERY, module="edge_processor")
    print(env_line({"torch": fw.version}, thread_env()))
    with quiet():
        timings = interleaved(
            {"bare": runner([]), "dualwatch DualwatchHook": runner([hook])}, repeats, self_timed=True
        )
    overhead_report("MMEngine Runner", timings, steps)
    share_report(shares)


# -- helpers -----------------------------------------------------------------------------------


def _wandb(logdir: str) -> Any:
    """wandb with an offline run started, or None when it is not installed."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    try:
        import wandb
    except ImportError:
        print("  wandb not installed: wandb.watch skipped")
        return None
    wandb.init(project="dualwatch-bench", dir=logdir, mode="offline")
    return wandb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--section", choices=SECTIONS, help="run one section (default: each, in its own process)"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed samples per variant")
    parser.add_argument(
        "--steps", type=int, help="training steps per sample (default 30; 20 in the MLP sections)"
    )
    parser.add_argument("--smoke", action="store_true", help="4 steps, 2 repeats, a small MLP (for CI)")
    args = parser.parse_args()
    steps, repeats = (4, 2) if args.smoke else (args.steps, args.repeats)
    if args.section is None:
        for section in SECTIONS:
            cmd = [sys.executable, __file__, "--section", section, "--repeats", str(repeats)]
            cmd += ["--steps", str(steps)] if steps is not None else []
            cmd += ["--smoke"] if args.smoke else []
            print(f"\n== {section} ==", flush=True)
            subprocess.run(cmd, check=True)
        return
    if steps is None:
        steps = 20 if args.section.endswith("_mlp") else 30
    with tempfile.TemporaryDirectory() as logdir:
        if args.section in ("torch", "torch_mlp", "paddle", "paddle_mlp"):
            framework, _, kind = args.section.partition("_")
            widths = SMOKE_WIDTHS if args.smoke else MLP_WIDTHS
            plain_loop(framework, kind or "conv", steps, repeats, logdir, widths)
        elif args.section == "lightning":
            lightning_trainer(steps, repeats, logdir)
        elif args.section == "paddle_fit":
            paddle_fit(steps, repeats, logdir)
        else:
            mmengine_runner(steps, repeats, logdir)


if __name__ == "__main__":
    main()
