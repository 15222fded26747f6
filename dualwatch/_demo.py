"""The main job: the StableSR-style ``EdgeMapProcessor`` trained on synthetic images, in either framework.

The model has the StableSR edge monitor's layer names in both frameworks
(``edge_processor.backbone.0`` Conv 3->32, ``backbone.1`` BatchNorm, ``backbone.3`` Conv 32->64,
..., ``edge_processor.to_four`` Conv 128->4), so the two runs show the same tags side by side.
The data is made here (no download): flat coloured shapes, which have sharp edges for Canny,
seen through noise. The four output channels are the denoised picture (three) and its edge map
(one); the framework's edge loss weights the picture's error by the Canny edges of the clean
one, and logs its parts through the ``Watcher``.
"""

from __future__ import annotations

import importlib
import math
import os
import shlex
import sys
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from dualwatch._watcher import Watcher
from dualwatch.backends import FRAMEWORKS

CHANNELS = (3, 32, 64, 128)
GROUPS = {"backbone": "backbone", "to_four": "to_four"}  # the two parts of edge_processor
EPOCH_STEPS = 10  # batches in the synthetic data set: one epoch
BATCH = 8
SIZE = 32
LR = 2e-3
NOISE = 0.3
EDGE_WEIGHT = 1.0  # the edge loss's weight


def synthetic_images(rng: np.random.Generator, n: int, size: int = SIZE) -> np.ndarray:
    """``[n, 3, size, size]`` images in [-1, 1]: a flat background with flat rectangles and discs."""
    yy, xx = np.mgrid[0:size, 0:size]
    images = np.empty((n, 3, size, size), np.float32)
    for image in images:
        image[:] = rng.uniform(-1, 1, (3, 1, 1))
        for _ in range(4):
            (cx, cy), (w, h) = rng.integers(0, size, 2), rng.integers(size // 8, size // 2, 2)
            if rng.random() < 0.5:
                shape = (abs(xx - cx) < w / 2) & (abs(yy - cy) < h / 2)
            else:
                shape = (xx - cx) ** 2 + (yy - cy) ** 2 < (w / 2) ** 2
            image[:, shape] = rng.uniform(-1, 1, (3, 1))
    return images


def synthetic_batch(
    rng: np.random.Generator, batch: int = 4, size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random images and their 4-channel difference maps (right, left, down, up).

    The benches' data (``bench/overhead.py``, ``bench/distributed.py``): no OpenCV needed, and
    kept as it was so their timings stay comparable across versions.
    """
    noise = rng.standard_normal((batch, 3, size // 4, size // 4)).astype(np.float32)
    images = np.repeat(np.repeat(noise, 4, axis=2), 4, axis=3)
    grey = images.mean(axis=1)
    dx = np.diff(grey, axis=2, append=grey[:, :, -1:])
    dy = np.diff(grey, axis=1, append=grey[:, -1:, :])
    target = np.stack([np.maximum(dx, 0), np.maximum(-dx, 0), np.maximum(dy, 0), np.maximum(-dy, 0)], axis=1)
    return images, target.astype(np.float32)


@dataclass(frozen=True)
class Kit:
    """What the training loop needs from one framework, spelled beside its backend (``backends/*_nn.py``)."""

    model: Any
    optimizer: Any
    set_lr: Callable[[float], None]
    clear_grad: Callable[[], None]
    to_tensor: Callable[[np.ndarray], Any]
    mse: Callable[[Any, Any], Any]
    edge_loss: Callable[..., Any]  # the framework's EdgeLoss class
    load_weights: Callable[[dict[str, np.ndarray]], None]  # {parameter name: array}, copied in


def edge_model(nn: Any, conv: Any, norm: Any, base: type) -> Any:
    """A model holding the StableSR-style ``edge_processor``, built from one framework's layers."""

    class EdgeMapProcessor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            layers: list[Any] = []
            for cin, cout in zip(CHANNELS, CHANNELS[1:]):
                layers += [conv(cin, cout, 3, padding=1), norm(cout), nn.ReLU()]
            self.backbone = nn.Sequential(*layers)
            self.to_four = conv(CHANNELS[-1], 4, 1)

        def forward(self, x: Any) -> Any:
            return self.to_four(self.backbone(x))

    model = base()
    model.edge_processor = EdgeMapProcessor()
    return model


def kit(framework: str, seed: int) -> Kit:
    """``framework``'s training kit (imports the framework), its weights set by :func:`initial_weights`."""
    fw = importlib.import_module(f"{FRAMEWORKS[framework]}_nn").demo_kit(seed, LR)
    fw.load_weights(
        initial_weights([(name, tuple(p.shape)) for name, p in fw.model.named_parameters()], seed)
    )
    return fw


def initial_weights(shapes: Sequence[tuple[str, tuple[int, ...]]], seed: int) -> dict[str, np.ndarray]:
    """The model's starting weights, the same in both frameworks: drawn with numpy, not by either one.

    Each framework initialises its layers its own way (torch's convolutions start about 2.4 times
    narrower than paddle's), so without this the two runs' curves would differ from step 0 and
    could not show that one engine measures both alike. The scheme is torch's default: a
    convolution's weight and bias uniform in +-1/sqrt(fan_in), a BatchNorm's scale 1 and shift 0.
    Both frameworks store a convolution as ``[out, in, kh, kw]``, so the arrays load as they are.
    """
    rng = np.random.default_rng([seed, 1])  # its own stream: the data's stays as it was
    shape_of = dict(shapes)
    weights: dict[str, np.ndarray] = {}
    for name, shape in shapes:
        conv_shape = shape_of.get(f"{name.rsplit('.', 1)[0]}.weight", ())  # the layer's weight
        if len(conv_shape) == 4:  # a convolution's weight or bias
            bound = 1 / math.sqrt(int(np.prod(conv_shape[1:])))
            weights[name] = rng.uniform(-bound, bound, shape).astype(np.float32)
        else:  # BatchNorm: scale 1, shift 0
            weights[name] = np.full(shape, 1.0 if name.endswith(".weight") else 0.0, np.float32)
    return weights


def learning_rate(step: int, steps: int) -> float:
    """Cosine decay from ``LR`` to a tenth of it, so ``Learning_Rate`` has a curve to show."""
    return LR * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps - 1, 1))))


def run_demo(
    framework: str,
    *,
    steps: int = 60,
    every: int = 10,
    logdir: str = "runs",
    seed: int = 0,
    progress: Any = None,
    losses: list[float] | None = None,
) -> str:
    """Train ``steps`` steps in ``framework`` (``torch`` or ``paddle``); returns the run directory.

    ``progress`` is a ``rich.progress.Progress`` to advance (on a terminal); without one, a
    plain line per epoch is printed, which reads well in a pipe or a container log. Each step's
    loss is appended to ``losses`` when given.

    The loss and learning rate are logged before the check's statistics, so a reader that lists
    tags in the order they first appear (VisualDL's and TensorBoard's tag lists, ``metrics.jsonl``)
    starts with the training curves, not with the per-parameter charts.
    """
    from dualwatch._edge import EdgeMapGenerator, log_edge_maps

    fw = kit(framework, seed)
    rng = np.random.default_rng(seed)
    clean = synthetic_images(rng, EPOCH_STEPS * BATCH)
    edges = EdgeMapGenerator()
    edge_maps = [edges(fw.to_tensor(clean[i : i + BATCH])) for i in range(0, len(clean), BATCH)]
    epochs = math.ceil(steps / EPOCH_STEPS)
    task = progress.add_task(framework, total=steps, loss=math.nan) if progress else None
    with Watcher(
        fw.model, every=every, module="edge_processor", groups=GROUPS, logdir=f"{logdir}/{framework}"
    ) as w:
        edge_loss = fw.edge_loss(weight=EDGE_WEIGHT, edges=edges, watcher=w)
        for step in range(steps):
            batch = step % EPOCH_STEPS
            target = clean[batch * BATCH : (batch + 1) * BATCH]
            noisy = target + rng.normal(0, NOISE, target.shape).astype(np.float32)
            gt, edge_gt = fw.to_tensor(target), edge_maps[batch]
            out = fw.model.edge_processor(fw.to_tensor(noisy))
            picture, edge_pred = out[:, :3], out[:, 3:]
            weighted, parts = edge_loss(picture, gt, edge_gt=edge_gt, step=step)
            # The edge loss's Canny edge-map term is a metric (logged as train/edge_map_mse): no
            # gradient flows from it, and Canny's 8-bit thresholds turn a last-bit difference
            # between the frameworks into flipped edge pixels (up to 1e-2 of the loss at a step).
            # Loss/Train is what the optimizer minimises, so it is left out.
            objective = weighted - parts["edge_map_mse"] * EDGE_WEIGHT
            loss = fw.mse(picture, gt) + objective + fw.mse(edge_pred, edge_gt)
            loss.backward()
            lr, value = learning_rate(step, steps), loss.item()
            w.log_training(step, loss=value, lr=lr)
            w.step(step)
            if losses is not None:
                losses.append(value)
            fw.set_lr(lr)
            fw.optimizer.step()
            fw.clear_grad()
            if task is not None:
                progress.update(task, advance=1, loss=value)
            if batch == EPOCH_STEPS - 1 or step == steps - 1:
                epoch = step // EPOCH_STEPS
                seconds = w.end_epoch(epoch)
                log_edge_maps(w, edge_pred.clip(0, 1), edge_gt, step)
                if task is None:
                    print(
                        f"{framework}: epoch {epoch + 1}/{epochs}  step {step + 1}/{steps}  "
                        f"loss {value:.4f}  {seconds:.1f} s",
                        flush=True,
                    )
        return w.run_dir or ""


def check_logdir(logdir: str, frameworks: Sequence[str]) -> None:
    """A ValueError saying why runs cannot be written under ``logdir``, before any training.

    Each framework's run goes to ``logdir/<framework>``: every part of that path that exists must
    be a folder, and the deepest existing one writable, else training would run to the end and
    fail only when the run is written.
    """
    for framework in frameworks:
        path = os.path.abspath(os.path.join(logdir, framework))
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise ValueError(
                f"{existing} is a file, so {path} cannot be a folder for the {framework} run: "
                "pass --logdir a folder (it is created if missing)"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise ValueError(
                f"cannot write in {existing} (permission denied): pass --logdir a folder you can write"
            )


def run_all(frameworks: Sequence[str], *, steps: int, every: int, logdir: str) -> list[str]:
    """Train each framework in turn under a progress bar, then say how to look at the runs.

    On a terminal the bar is ``rich``'s, which takes over ``sys.stdout`` while it runs, so the
    "Edge Processor Monitor" blocks the ``Watcher`` prints scroll above the bar instead of tearing it; in a
    pipe there is no bar, only a line per epoch.
    """
    tty = sys.stdout.isatty()
    with warnings.catch_warnings():
        # paddle's import warns that ccache (for compiling C++ extensions) is missing, and its
        # BatchNorm that it tracks running statistics in training: neither concerns this job
        warnings.filterwarnings("ignore", message="No ccache found")
        warnings.filterwarnings("ignore", message="When training, we now always track global mean")
        run_dirs, losses = _train(frameworks, steps, every, logdir, tty)
    for run_dir in run_dirs:
        print_monitor(run_dir, tty)
    if len(frameworks) == 2:
        (a, b), (la, lb) = frameworks, losses.values()
        diff, step = largest_difference(la, lb)
        print(
            f"\nSame start, same data, same optimizer: the {a} and {b} losses differ by at most "
            f"{diff:.2e} (relative, at step {step})"
        )
    # serve picks the listening address (0.0.0.0 inside a container) and stops both viewers at once
    print("\nView the runs (both frameworks side by side) in VisualDL on port 8040 and TensorBoard on 6006:")
    print(f"  dualwatch serve {shlex.quote(logdir)}")
    return run_dirs


def _train(
    frameworks: Sequence[str], steps: int, every: int, logdir: str, tty: bool
) -> tuple[list[str], dict[str, list[float]]]:
    """Each framework's run and its per-step losses; a bar per framework on a terminal, else epoch lines."""
    losses: dict[str, list[float]] = {f: [] for f in frameworks}
    if not tty:
        runs = [run_demo(f, steps=steps, every=every, logdir=logdir, losses=losses[f]) for f in frameworks]
        return runs, losses
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("{task.description:>6}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        runs = [
            run_demo(f, steps=steps, every=every, logdir=logdir, progress=progress, losses=losses[f])
            for f in frameworks
        ]
    return runs, losses


def largest_difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, int]:
    """The largest relative difference ``|a - b| / max(|a|, |b|)`` of two loss curves, and its step."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    rel = np.abs(x - y) / np.maximum(np.maximum(np.abs(x), np.abs(y)), np.finfo(np.float64).tiny)
    step = int(np.argmax(rel))
    return float(rel[step]), step


def print_monitor(run_dir: str, tty: bool) -> None:
    """What ``dualwatch monitor --once <run_dir>`` prints, computed here rather than in a subprocess."""
    from dualwatch._report import build_report
    from dualwatch._view import Display
    from dualwatch.readers import RunReader
    from dualwatch.readers._discover import display_name

    print(f"\n$ dualwatch monitor --once {shlex.quote(run_dir)}")
    reader = RunReader(run_dir)
    reader.poll()
    with Display(as_json=False, follow=False, tty=tty) as display:
        display.show(build_report(reader, time.time(), name=display_name(run_dir, run_dir)))
