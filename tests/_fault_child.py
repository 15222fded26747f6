"""A small real training loop that ``test_fault_matrix.py`` runs under one fault at a time.

Usage: ``python _fault_child.py '<json settings>'`` (see :data:`DEFAULTS`).

It trains a tiny two-layer regression model with SGD in torch or paddle (only that framework
is imported), a ``dualwatch.Watcher`` checking every ``every`` steps and a ``dualwatch.Writer``
logging ``train/loss`` at every step, and reports on stdout, one JSON object per line, written
with one unbuffered ``os.write`` each, so that the parent sees every line sent before a SIGKILL:

* ``{"event": "ready", "pid", "host_pid", "host"}`` once the writer is open (``pid`` as the
  process sees itself, 1 in a new PID namespace; ``host_pid`` as the parent sees it);
* ``{"step", "loss", "grad_norm", "t"}`` after the step's records were handed to the writer
  (``grad_norm``: the framework's own global gradient norm on the Watcher's check steps, else
  null; ``t``: ``time.time()`` then, the parent's clock is the same);
* ``{"warning": message}`` for every warning dualwatch gives, from any thread, when it is given;
* ``{"event": "paused"}`` after step ``pause_at``, which then waits for a line on stdin;
* ``{"event": "readonly", "errno"}`` once the run directory is read-only (``errno`` of a probe);
* ``{"event": "trained"}`` after the last step; with ``hold`` it then waits for a line on stdin
  before closing;
* ``{"event": "closed", "close_s", "tracker"}`` after ``close()`` returned (``tracker``: the
  steps a sink beside the files received).

The step time is paced (``pace`` seconds of sleep per step), as real steps take time: runs
that end by a signal would otherwise log thousands of steps per second.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from typing import Any, Sequence

DEFAULTS: dict[str, Any] = {
    "framework": "torch",
    "logdir": "runs",
    "run": "r",
    "resume": False,
    "start": 0,  # the first step (a resumed run starts from its checkpoint's step)
    "steps": 30,  # None: train until a signal ends the process (or SAFETY_S passes)
    "every": 3,  # the Watcher's check period
    "max_latency": 0.2,
    "pace": 0.01,
    "sink": None,  # None, "raise" (every write raises) or "block" (write() never returns)
    "fsize": None,  # RLIMIT_FSIZE in bytes, set after the framework's import, before the writer's
    "rmtree_at": None,  # the step after which the run directory is removed
    "readonly_at": None,  # the step after which the run directory is made read-only (bind mount)
    "nonfinite": {},  # {"step": "nan" | "inf"}: that step's loss (so its gradients) is scaled by it
    "pause_at": None,  # the step after which the child waits for a line on stdin
    "hold": False,  # wait for a line on stdin between the last step and close()
}
SAFETY_S = 120.0  # a run left waiting for a signal that never comes ends here, with exit status 3
LOSS_TAG = "train/loss"
LR = 0.05


def emit(**fields: Any) -> None:
    """One JSON line on stdout in one write: whole, even if a signal ends the process right after."""
    os.write(1, (json.dumps(fields) + "\n").encode())


def show_warning(
    message: Any, category: Any, filename: str, lineno: int, file: Any = None, line: Any = None
) -> None:
    if str(message).startswith("dualwatch: "):
        emit(warning=str(message))


class Tracker:
    """A sink beside the files (as one forwarding to another tracker would be): keeps the loss steps."""

    def __init__(self) -> None:
        self.steps: list[int] = []

    def __repr__(self) -> str:
        return "tracker"

    def write(self, records: Sequence[Any]) -> None:
        self.steps += [r.step for r in records if LOSS_TAG in getattr(r, "values", {})]

    def close(self) -> None:
        pass


class RaisingSink:
    """A sink whose server refuses every batch."""

    def __repr__(self) -> str:
        return "raising sink"

    def write(self, records: Sequence[Any]) -> None:
        raise ConnectionError("the tracker's server refused the batch")

    def close(self) -> None:
        pass


class BlockingSink:
    """A sink whose server never answers: ``write`` never returns."""

    def __repr__(self) -> str:
        return "blocking sink"

    def write(self, records: Sequence[Any]) -> None:
        threading.Event().wait()

    def close(self) -> None:
        pass


def host_pid() -> int:
    """This process's pid as the parent sees it (in a new PID namespace ``os.getpid()`` is 1)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("NSpid:"):
                return int(line.split()[1])
    return os.getpid()


def make_read_only(path: str) -> int:
    """Bind-mounts ``path`` read-only over itself (run under ``unshare --mount``: the mount is this
    process's alone); returns the errno a new file in it then meets. Root ignores permission bits."""
    subprocess.run(["mount", "--bind", path, path], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", path], check=True)
    try:
        open(os.path.join(path, "probe"), "w").close()
    except OSError as err:
        return err.errno
    return 0


class Trainer:
    """``y = x @ w`` learned by a Linear-ReLU-Linear model with plain SGD, in one framework.

    The SGD step is written out: ``torch.optim`` imports ``torch._dynamo``, seconds per child."""

    def __init__(self, framework: str) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        x = rng.standard_normal((16, 4)).astype("float32")
        y = (x @ rng.standard_normal((4, 1))).astype("float32")
        self.framework = framework
        if framework == "torch":
            import torch

            torch.set_num_threads(1)
            torch.manual_seed(0)
            self.fw = torch
            self.model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
            self.x, self.y = torch.tensor(x), torch.tensor(y)
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="No ccache found")
                import paddle

            paddle.set_device("cpu")
            paddle.seed(0)
            self.fw = paddle
            self.model = paddle.nn.Sequential(
                paddle.nn.Linear(4, 8), paddle.nn.ReLU(), paddle.nn.Linear(8, 1)
            )
            self.x, self.y = paddle.to_tensor(x), paddle.to_tensor(y)

    def forward_backward(self, scale: float) -> float:
        """The loss, its gradients in place (times ``scale``); returns the loss as a float."""
        loss = ((self.model(self.x) - self.y) ** 2).mean()
        (loss * scale).backward()
        return float(loss.item()) * scale

    def grad_norm(self) -> float:
        """The global gradient norm as the framework computes it (the Watcher's reference)."""
        squares = [
            (p.grad.double() if self.framework == "torch" else p.grad.astype("float64")) ** 2
            for p in self.model.parameters()
        ]
        return float(sum(s.sum() for s in squares) ** 0.5)

    def update(self) -> None:
        """``p -= LR * grad``, skipped when a gradient is not finite (as a loss scaler does)."""
        params = list(self.model.parameters())
        finite = all(bool(self.fw.isfinite(p.grad).all()) for p in params)
        if finite:
            with self.fw.no_grad():
                for p in params:
                    if self.framework == "torch":
                        p -= LR * p.grad
                    else:
                        p.set_value(p - LR * p.grad)
        if self.framework == "torch":
            self.model.zero_grad()
        else:
            self.model.clear_gradients()


def main() -> None:
    cfg = {**DEFAULTS, **json.loads(sys.argv[1])}
    # Ctrl-C in a terminal raises KeyboardInterrupt; a child of a job started in the background
    # (a CI script run with `&`) inherits SIGINT ignored, and Python then installs no handler.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    warnings.simplefilter("always")
    warnings.showwarning = show_warning
    trainer = Trainer(cfg["framework"])
    if cfg["fsize"] is not None:  # after the framework's import, which may write caches
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["fsize"], resource.RLIM_INFINITY))

    import dualwatch

    tracker = Tracker()
    extra = {"raise": [RaisingSink()], "block": [BlockingSink()], None: []}[cfg["sink"]]
    writer = dualwatch.Writer(
        cfg["logdir"],
        run=cfg["run"],
        resume=cfg["resume"],
        max_latency=cfg["max_latency"],
        sinks=[tracker, *extra],
    )
    watcher = dualwatch.Watcher(trainer.model, every=cfg["every"], writer=writer, console=False)
    emit(event="ready", pid=os.getpid(), host_pid=host_pid(), host=socket.gethostname())

    started = time.monotonic()
    step = cfg["start"]
    end = None if cfg["steps"] is None else cfg["start"] + cfg["steps"]
    while step != end:
        if time.monotonic() - started > SAFETY_S:
            emit(event="safety stop")
            sys.exit(3)
        scale = float(cfg["nonfinite"].get(str(step), 1.0))
        loss = trainer.forward_backward(scale)
        watcher.step(step)
        writer.log(step, {LOSS_TAG: loss})
        norm = trainer.grad_norm() if step % cfg["every"] == 0 else None
        trainer.update()
        emit(step=step, loss=loss, grad_norm=norm, t=time.time())
        if step == cfg["rmtree_at"]:
            import shutil

            writer.flush()  # the files are open: they are deleted under the writer, not missing at its start
            shutil.rmtree(writer.run_dir)
        if step == cfg["readonly_at"]:
            writer.flush()  # the files are open: what a read-only directory denies is what comes next
            emit(event="readonly", errno=make_read_only(writer.run_dir))
        if step == cfg["pause_at"]:
            emit(event="paused")
            sys.stdin.readline()
        time.sleep(cfg["pace"])
        step += 1
    emit(event="trained")
    if cfg["hold"]:
        sys.stdin.readline()
    began = time.monotonic()
    watcher.close()
    writer.close()
    emit(event="closed", close_s=time.monotonic() - began, tracker=tracker.steps)


if __name__ == "__main__":
    main()
