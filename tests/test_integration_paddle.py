"""``WatchCallback`` in a real ``paddle.Model.fit``: logged values read back and recomputed with numpy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

paddle = pytest.importorskip("paddle")

from dualwatch.integrations.paddle import WatchCallback  # noqa: E402
from dualwatch.readers import RunReader  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH, SAMPLES, EPOCHS, LR = 8, 32, 2, 0.05


class Pairs(paddle.io.Dataset):
    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.x = rng.normal(size=(SAMPLES, 4)).astype("float32")
        self.y = (self.x @ np.array([[1.0], [-2.0], [0.5], [3.0]], dtype="float32")).astype("float32")

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def __len__(self) -> int:
        return SAMPLES


class Recorder(paddle.callbacks.Callback):
    """What the test knows independently: per-batch losses, gradients seen in backward, weights, lr."""

    def __init__(self) -> None:
        super().__init__()
        self.losses: list[list[float]] = []
        self.val_losses: list[list[float]] = []
        self.grad_sq: dict[int, dict[str, float]] = {}
        self.weight_norms: list[float] = []
        self.lrs: list[list[float]] = []
        self.step = 0

    def on_train_begin(self, logs=None) -> None:
        for name, p in self.model.network.named_parameters():
            p.register_hook(lambda grad, name=name: self._grad(name, grad))

    def _grad(self, name: str, grad) -> None:
        self.grad_sq.setdefault(self.step, {})[name] = float((grad.numpy().astype(np.float64) ** 2).sum())

    def on_epoch_begin(self, epoch, logs=None) -> None:
        self.losses.append([])
        self.lrs.append([])

    def on_train_batch_begin(self, step, logs=None) -> None:
        weights = [p.numpy().astype(np.float64) for p in self.model.network.parameters()]
        self.weight_norms.append(float(np.sqrt(sum((w**2).sum() for w in weights))))
        self.lrs[-1].append(float(self.model._optimizer.get_lr()))

    def on_train_batch_end(self, step, logs=None) -> None:
        self.losses[-1].append(float(logs["loss"][0]))
        self.step += 1

    def on_eval_begin(self, logs=None) -> None:
        self.val_losses.append([])

    def on_eval_batch_end(self, step, logs=None) -> None:
        self.val_losses[-1].append(float(logs["loss"][0]))


def _fit(tmp_path: Path, every: int = 1, eval_data: bool = True, **watch) -> tuple[Recorder, dict]:
    paddle.seed(0)
    net = paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.Tanh(), paddle.nn.Linear(8, 1))
    model = paddle.Model(net)
    schedule = paddle.optimizer.lr.StepDecay(learning_rate=LR, step_size=3, gamma=0.5)
    model.prepare(
        paddle.optimizer.SGD(learning_rate=schedule, parameters=net.parameters()), paddle.nn.MSELoss()
    )
    recorder = Recorder()
    callback = WatchCallback(every=every, logdir=tmp_path, run="r", console=False, **watch)
    model.fit(
        Pairs(0),
        Pairs(1) if eval_data else None,
        batch_size=BATCH,
        epochs=EPOCHS,
        shuffle=False,
        verbose=0,
        callbacks=[recorder, callback],
    )
    reader = RunReader(str(tmp_path / "r"))
    reader.poll()
    series = {tag: dict(zip(s.steps, s.values)) for tag, s in reader.series.items()}
    return recorder, series


def test_epoch_losses_are_the_mean_of_the_batch_losses_not_the_last_batch(tmp_path: Path) -> None:
    recorder, series = _fit(tmp_path)
    assert sorted(series["Loss/Train"]) == list(range(EPOCHS))
    for epoch in range(EPOCHS):
        assert series["Loss/Train"][epoch] == pytest.approx(np.mean(recorder.losses[epoch]), rel=1e-6)
        assert series["Loss/Train"][epoch] != pytest.approx(recorder.losses[epoch][-1], rel=1e-3)
        assert series["Loss/Validation"][epoch] == pytest.approx(
            np.mean(recorder.val_losses[epoch]), rel=1e-6
        )


def test_gradient_and_parameter_norms_are_those_of_each_step_before_the_update(tmp_path: Path) -> None:
    recorder, series = _fit(tmp_path, groups={"first": "0"})
    steps = EPOCHS * SAMPLES // BATCH
    assert sorted(series["Model/Gradient_Norm"]) == list(range(steps))
    for step in range(steps):
        total = sum(recorder.grad_sq[step].values())
        first = recorder.grad_sq[step]["0.weight"] + recorder.grad_sq[step]["0.bias"]
        assert series["Model/Gradient_Norm"][step] == pytest.approx(np.sqrt(total), rel=1e-5)
        assert series["train/gradient/first/share"][step] == pytest.approx(first / total, rel=1e-5)
        assert series["Model/Parameter_Norm"][step] == pytest.approx(recorder.weight_norms[step], rel=1e-5)
    assert set(series["Model/Total_Parameters"].values()) == {4 * 8 + 8 + 8 + 1}
    assert series["train/gradient/health"][steps - 1] == 0.0  # healthy
    assert "model/0.weight/grad_std" in series and "model/2.bias/weight_change" in series


def test_learning_rate_and_epoch_duration_are_logged_per_epoch(tmp_path: Path) -> None:
    recorder, series = _fit(tmp_path, eval_data=False)
    batches = SAMPLES // BATCH
    for epoch in range(EPOCHS):
        last_step = (epoch + 1) * batches - 1
        assert recorder.lrs[epoch][-1] == pytest.approx(LR * 0.5 ** (last_step // 3))
        assert series["Learning_Rate"][epoch] == pytest.approx(recorder.lrs[epoch][-1])
        assert series["Time/Epoch_Duration"][epoch] > 0
    assert "Loss/Validation" not in series


def test_checks_run_every_n_steps_and_the_optimizer_is_restored_after_fit(tmp_path: Path) -> None:
    recorder, series = _fit(tmp_path, every=3)
    assert sorted(series["Model/Gradient_Norm"]) == [0, 3, 6]
    assert series["Model/Gradient_Norm"][6] == pytest.approx(
        np.sqrt(sum(recorder.grad_sq[6].values())), rel=1e-5
    )
    optimizer = recorder.model._optimizer
    assert "minimize" not in vars(optimizer) and "step" not in vars(optimizer)


def _run_example(logdir: Path, **env: str) -> subprocess.CompletedProcess:
    script = ROOT / "examples" / "paddle_fit.py"
    environ = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, str(script), str(logdir)], capture_output=True, text=True, timeout=300, env=environ
    )


def test_non_zero_ranks_write_and_print_nothing(tmp_path: Path) -> None:
    done = _run_example(tmp_path, PADDLE_TRAINER_ID="1")  # what paddle.distributed.launch sets on rank 1
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == [] and "Monitor" not in done.stdout


def test_the_paddle_example_trains_and_writes_seed_004_tags(tmp_path: Path) -> None:
    done = _run_example(tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Model Monitor - Step 0" in done.stdout
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    reader = RunReader(str(run))
    reader.poll()
    for tag in (
        "Loss/Train",
        "Loss/Validation",
        "Learning_Rate",
        "Model/Gradient_Norm",
        "Model/Parameter_Norm",
        "Model/Total_Parameters",
        "Time/Epoch_Duration",
    ):
        assert len(reader.series[tag]) > 0, tag
    assert {p.name for p in run.iterdir()} >= {"metrics.jsonl"}


def test_a_misspelt_watcher_keyword_fails_when_the_callback_is_made() -> None:
    with pytest.raises(TypeError, match="group"):
        WatchCallback(group={"first": "0"})
