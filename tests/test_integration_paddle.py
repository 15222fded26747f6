"""``WatchCallback`` in a real ``paddle.Model.fit``: logged values read back and recomputed with numpy."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import paddle
import pytest

from dualwatch.integrations.paddle import WatchCallback
from dualwatch.readers import RunReader

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
        self.loss_outputs: list[list[float]] = []  # per batch: hapi's logs["loss"], one per loss output
        self.stats: list[dict[str, dict[str, float]]] = []  # per batch: the network's dualwatch_stats
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
        self.losses[-1].append(float(sum(logs["loss"])))
        self.loss_outputs.append([float(v) for v in logs["loss"]])
        stats = getattr(self.model.network, "dualwatch_stats", {})
        self.stats.append(
            {g: {n: v.item() if hasattr(v, "item") else v for n, v in s.items()} for g, s in stats.items()}
        )
        self.step += 1

    def on_eval_begin(self, logs=None) -> None:
        self.val_losses.append([])

    def on_eval_batch_end(self, step, logs=None) -> None:
        self.val_losses[-1].append(float(logs["loss"][0]))


def _model(net: paddle.nn.Layer | None = None, loss=None) -> paddle.Model:
    paddle.seed(0)
    net = net or paddle.nn.Sequential(paddle.nn.Linear(4, 8), paddle.nn.Tanh(), paddle.nn.Linear(8, 1))
    model = paddle.Model(net)
    schedule = paddle.optimizer.lr.StepDecay(learning_rate=LR, step_size=3, gamma=0.5)
    model.prepare(
        paddle.optimizer.SGD(learning_rate=schedule, parameters=net.parameters()), loss or paddle.nn.MSELoss()
    )
    return model


def _fit(
    tmp_path: Path, every: int | None = 1, eval_data: bool = True, model: paddle.Model | None = None, **watch
) -> tuple[Recorder, dict]:
    model = model or _model()
    recorder = Recorder()
    callback = WatchCallback(every=every, logdir=tmp_path, run="r", **{"console": False, **watch})
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


def test_log_freq_is_paddles_spelling_of_every(tmp_path: Path) -> None:
    _, series = _fit(tmp_path, every=None, log_freq=3)
    assert sorted(series["Model/Gradient_Norm"]) == [0, 3, 6]
    assert (WatchCallback(log_freq=4).every, WatchCallback().every) == (4, 10)
    with pytest.raises(ValueError, match="every=2, log_freq=3 all set the check frequency: pass only one"):
        WatchCallback(every=2, log_freq=3)


class GatedNet(paddle.nn.Layer):
    """An ESAM-style network: its forward reports the gate's statistics in ``dualwatch_stats``."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = paddle.nn.Linear(4, 8)
        self.gate = paddle.nn.Linear(8, 8)
        self.head = paddle.nn.Linear(8, 1)

    def forward(self, x):
        features = paddle.tanh(self.backbone(x))
        gate = paddle.nn.functional.sigmoid(self.gate(features))
        self.dualwatch_stats = {
            "fusion": {"2d_weight_mean": gate.mean(), "3d_weight_mean": 1 - gate.mean()},
            "projection": {
                "valid_projection_rate": (gate > 0.5).astype("float32").mean(),
                "total_points": int(gate.size),
            },
        }
        return self.head(features * gate)


def two_losses(pred, label):
    """Two loss outputs: hapi logs one value per output and minimises their sum."""
    return [paddle.nn.functional.mse_loss(pred, label), 0.1 * paddle.nn.functional.l1_loss(pred, label)]


GROUPS = {"backbone": "backbone", "gate": "gate", "head": "head"}


def _blocks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dualwatch"]


def test_fit_logs_the_esam_report_with_the_networks_stat_groups(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dualwatch")
    model = _model(GatedNet(), two_losses)
    recorder, series = _fit(tmp_path, every=3, model=model, console=True, groups=GROUPS)
    checks = [0, 3, 6]
    blocks = _blocks(caplog)
    assert [b.split("\n")[1] for b in blocks] == [f"📊 Enhanced Training Stats - Iter {s}" for s in checks]
    for step, block in zip(checks, blocks):
        mse, l1 = recorder.loss_outputs[step]
        total = np.float64(mse) + np.float64(l1)
        assert f"  loss_0              : {mse:.6f} ({mse / total:.1%})\n" in block
        assert f"  loss_1              : {l1:.6f} ({l1 / total:.1%})\n" in block
        fusion, projection = recorder.stats[step]["fusion"], recorder.stats[step]["projection"]
        assert f"🎯 fusion:\n  2d_weight_mean      : {fusion['2d_weight_mean']:.4f}\n" in block
        assert f"  valid_projection_rate: {projection['valid_projection_rate']:.1%}\n" in block
        assert f"  total_points        : {BATCH * 8}\n" in block
        grads = recorder.grad_sq[step]
        for group in GROUPS:
            group_sq = sum(v for name, v in grads.items() if name.startswith(group))
            assert f"  {group}: {np.sqrt(group_sq):.4f} ({group_sq / sum(grads.values()):.1%})\n" in block
    for step in checks:
        expected = {
            "train/detailed_loss/loss_0": recorder.loss_outputs[step][0],
            "train/detailed_loss/loss_1": recorder.loss_outputs[step][1],
            **{f"train/{g}/{n}": v for g, values in recorder.stats[step].items() for n, v in values.items()},
        }
        for tag, value in expected.items():
            assert series[tag][step] == pytest.approx(value, rel=1e-6), (tag, step)
    assert sorted(series["train/fusion/2d_weight_mean"]) == checks
    assert series["Loss/Train"][0] == pytest.approx(np.mean(recorder.losses[0]), rel=1e-6)  # the sum's mean


def test_report_false_logs_the_monitor_block_and_writes_no_report_tags(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dualwatch")
    _, series = _fit(tmp_path, every=4, model=_model(GatedNet()), console=True, report=False)
    assert [b.split("\n")[1] for b in _blocks(caplog)] == ["Model Monitor - Step 0", "Model Monitor - Step 4"]
    assert not [
        t for t in series if t.startswith(("train/detailed_loss/", "train/fusion/", "train/projection/"))
    ]


def test_console_false_logs_nothing_and_still_writes_the_report_tags(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dualwatch")
    recorder, series = _fit(tmp_path, every=4, console=False)
    assert _blocks(caplog) == []
    assert series["train/detailed_loss/loss"] == pytest.approx(
        {s: recorder.loss_outputs[s][0] for s in (0, 4)}, rel=1e-6
    )


def _points(run_dir: Path) -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{format: {tag: [(step, value)...]}}`` in the order each viewer's reader gives them, every
    point kept (a step drawn twice shows twice): VisualDL's ``LogReader`` on the file VisualDL
    shows, TensorBoard's plugin ``EventAccumulator`` (its server's, purge marker honoured), the JSONL rows."""
    from conftest import _tb_plugins, read_metrics
    from tensorboard.util import tensor_util
    from visualdl import LogReader

    (vdl_file,) = run_dir.glob("vdlrecords*")
    vdl = LogReader(file_path=str(vdl_file))
    tb = _tb_plugins(str(run_dir))
    jsonl: dict[str, list[tuple[int, float]]] = {}
    for row in read_metrics(run_dir):
        for tag, value in row.items():
            if tag not in ("step", "wall_time"):
                jsonl.setdefault(tag, []).append((row["step"], value))
    return {
        "visualdl": {
            tag: [(r.id, r.value) for r in vdl.get_data("scalar", tag)] for tag in vdl.get_tags()["scalar"]
        },
        "tensorboard": {
            tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in tb.Tensors(tag)]
            for tag in tb.Tags()["tensors"]
            if tb.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
        },
        "jsonl": jsonl,
    }


def test_refitting_with_resume_continues_the_curves_in_visualdl_and_tensorboard(tmp_path: Path) -> None:
    model = _model()
    first, _ = _fit(tmp_path, every=2, model=model, resume=True)  # no such run yet: it is started
    second, _ = _fit(tmp_path, every=2, model=model, resume=True)  # hapi counts from 0 again
    batches = EPOCHS * SAMPLES // BATCH
    epoch_losses = [np.mean(e) for e in first.losses + second.losses]
    val_losses = [np.mean(e) for e in first.val_losses + second.val_losses]
    checks = list(range(0, 2 * batches, 2))  # as one fit of twice the epochs would have checked

    def grad_norm(step: int) -> float:
        recorder = first if step < batches else second
        return float(np.sqrt(sum(recorder.grad_sq[step % batches].values())))

    def batch_loss(step: int) -> float:
        recorder = first if step < batches else second
        return recorder.loss_outputs[step % batches][0]

    for fmt, points in _points(tmp_path / "r").items():
        expected = {
            "Loss/Train": list(enumerate(epoch_losses)),
            "Loss/Validation": list(enumerate(val_losses)),
            "Model/Gradient_Norm": [(s, grad_norm(s)) for s in checks],
            "train/detailed_loss/loss": [(s, batch_loss(s)) for s in checks],
        }
        for tag, curve in expected.items():
            assert [s for s, _ in points[tag]] == [s for s, _ in curve], (
                fmt,
                tag,
            )  # each step once, in order
            assert [v for _, v in points[tag]] == pytest.approx([v for _, v in curve], rel=1e-5), (fmt, tag)
        assert [s for s, _ in points["Time/Epoch_Duration"]] == list(range(2 * EPOCHS)), fmt


def test_refitting_a_named_run_without_resume_fails_before_training_and_says_how_to_fix(
    tmp_path: Path,
) -> None:
    model = _model()
    _fit(tmp_path, model=model)
    recorder = Recorder()
    callback = WatchCallback(logdir=tmp_path, run="r", console=False)
    with pytest.raises(ValueError, match=r"run 'r' already exists .*pass resume=True"):
        model.fit(Pairs(0), batch_size=BATCH, epochs=1, verbose=0, callbacks=[recorder, callback])
    assert recorder.step == 0


def test_resume_needs_a_run_name_and_is_true_or_false() -> None:
    with pytest.raises(ValueError, match="resume=True needs run="):
        WatchCallback(resume=True)
    with pytest.raises(TypeError, match=r"resume= is True .* or False, got 5"):
        WatchCallback(run="r", resume=5)


def _run_example(logdir: Path, **env: str) -> subprocess.CompletedProcess:
    script = ROOT / "examples" / "paddle_fit.py"
    environ = {**os.environ, **env}
    return subprocess.run(
        [sys.executable, str(script), str(logdir)], capture_output=True, text=True, timeout=300, env=environ
    )


def test_non_zero_ranks_write_and_print_nothing(tmp_path: Path) -> None:
    done = _run_example(tmp_path, PADDLE_TRAINER_ID="1")  # what paddle.distributed.launch sets on rank 1
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == [] and "Training Stats" not in done.stdout + done.stderr


def test_the_paddle_example_trains_writes_the_guides_tags_and_logs_the_report(tmp_path: Path) -> None:
    done = _run_example(tmp_path)
    assert done.returncode == 0, done.stderr
    # importing paddle gives the root logger a handler, so the dualwatch logger's blocks go there
    assert "📊 Enhanced Training Stats - Iter 0" in done.stdout + done.stderr
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
        "train/detailed_loss/loss",
        "train/fusion/gate_mean",
        "train/fusion/open_rate",
        "train/gradient/gate/share",
    ):
        assert len(reader.series[tag]) > 0, tag
    assert {p.name for p in run.iterdir()} >= {"metrics.jsonl"}


def test_a_misspelt_watcher_keyword_fails_when_the_callback_is_made() -> None:
    with pytest.raises(TypeError, match="group"):
        WatchCallback(group={"first": "0"})
