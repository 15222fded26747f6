"""``DualwatchVisBackend`` and ``DualwatchHook`` in real MMEngine ``Runner``s built from configs:
what MMEngine logs read back from VisualDL, TensorBoard and JSON lines, against MMEngine's own
``LocalVisBackend`` files; the hook's numbers recomputed with numpy from the real gradients."""

from __future__ import annotations

import glob
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from conftest import _tb, read_metrics
from mmengine.config import Config
from mmengine.device import is_cuda_available, is_mlu_available, is_musa_available, is_npu_available
from mmengine.hooks import Hook
from mmengine.model import BaseModel
from mmengine.registry import DATASETS, HOOKS, MODELS
from mmengine.runner import Runner
from PIL import Image as PILImage
from visualdl import LogReader

from dualwatch.integrations.mmengine import DualwatchHook, DualwatchVisBackend

ROOT = Path(__file__).resolve().parents[1]
SAMPLES, BATCH, EPOCHS, INTERVAL = 24, 4, 2, 2
ITERS = EPOCHS * SAMPLES // BATCH
LOGGED = list(range(INTERVAL, ITERS + 1, INTERVAL))
GROUPS = {"backbone": "backbone", "gate": "gate.*"}
IMAGE = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3)).astype(np.uint8)  # HWC RGB
IMAGE_STEP = 3
LOCAL = [dict(type="LocalVisBackend")]  # MMEngine's default
BACKENDS = [*LOCAL, dict(type="DualwatchVisBackend")]


@DATASETS.register_module(force=True)
class RegressionSet(torch.utils.data.Dataset):
    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(SAMPLES, 4, generator=g)
        self.y = self.x @ torch.tensor([[0.5], [-1.0], [0.25], [1.0]])

    def __getitem__(self, i: int):
        return self.x[i], self.y[i]

    def __len__(self) -> int:
        return SAMPLES


@MODELS.register_module(force=True)
class GatedRegressor(BaseModel):
    """Two loss terms and a gate whose mean it reports through ``dualwatch_stats``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = torch.nn.Linear(4, 8)
        self.gate = torch.nn.Linear(8, 8)
        self.head = torch.nn.Linear(8, 1)

    def forward(self, inputs, labels, mode="loss"):
        features = torch.tanh(self.backbone(inputs))
        gate = torch.sigmoid(self.gate(features))
        pred = self.head(features * gate)
        self.dualwatch_stats = {"fusion": {"gate_mean": gate.mean().detach(), "gate_max": gate.max().item()}}
        return {"loss_mse": ((pred - labels) ** 2).mean(), "loss_l1": 0.1 * (pred - labels).abs().mean()}


@HOOKS.register_module(force=True)
class GradientRecorder(Hook):
    """Captures, independently of dualwatch, each iteration's final gradients and the loss outputs."""

    priority = "VERY_LOW"

    def __init__(self) -> None:
        self.grads: dict[int, dict[str, np.ndarray]] = {}
        self.outputs: dict[int, dict[str, float]] = {}
        self.gates: dict[int, float] = {}
        self.iter = 0

    def before_train(self, runner) -> None:
        self.runner = runner
        for name, p in runner.model.named_parameters():
            p.register_post_accumulate_grad_hook(lambda p, name=name: self._grad(name, p))

    def _grad(self, name: str, p) -> None:
        self.grads.setdefault(self.iter, {})[name] = p.grad.detach().cpu().numpy().astype(np.float64).copy()

    def before_train_iter(self, runner, batch_idx, data_batch=None) -> None:
        self.iter = runner.iter + 1

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        self.outputs[self.iter] = {k: v.item() for k, v in outputs.items()}
        self.gates[self.iter] = float(runner.model.dualwatch_stats["fusion"]["gate_mean"])


@HOOKS.register_module(force=True)
class ImageLogger(Hook):
    """Logs ``IMAGE`` through the visualizer, as MMEngine's visualization hooks log samples."""

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if runner.iter + 1 == IMAGE_STEP:
            runner.visualizer.add_image("samples/input", IMAGE, step=IMAGE_STEP)


def _config(
    work_dir: Path,
    name: str,
    *,
    hook: dict[str, Any] | None = None,
    backends: list[dict] | None = BACKENDS,
    epochs: int = EPOCHS,
    **extra: Any,
) -> Config:
    """A config as a user writes it, with the recorder hook; ``hook=None``: no DualwatchHook."""
    optim = extra.pop("optim", {})
    hooks = [dict(type="GradientRecorder")] + (
        [dict(type="DualwatchHook", **hook)] if hook is not None else []
    )
    return Config(
        dict(
            model=dict(type="GatedRegressor"),
            work_dir=str(work_dir),
            train_dataloader=dict(
                dataset=dict(type="RegressionSet"),
                batch_size=BATCH,
                sampler=dict(type="DefaultSampler", shuffle=False),
                collate_fn=dict(type="default_collate"),
            ),
            optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.05), **optim),
            train_cfg=dict(by_epoch=True, max_epochs=epochs),
            default_hooks=dict(checkpoint=None, logger=dict(type="LoggerHook", interval=INTERVAL)),
            custom_hooks=hooks,
            visualizer=dict(type="Visualizer", vis_backends=backends) if backends else None,
            default_scope="mmengine",
            experiment_name=name,
            **extra,
        )
    )


def _train(cfg: Config) -> tuple[Runner, GradientRecorder]:
    runner = Runner.from_cfg(cfg)
    runner.train()
    return runner, next(h for h in runner.hooks if isinstance(h, GradientRecorder))


def _series(run_dir: str | Path) -> dict[str, dict[int, float]]:
    """``{tag: {step: value}}`` of a run's ``metrics.jsonl`` (scalar records)."""
    series: dict[str, dict[int, float]] = {}
    for record in read_metrics(run_dir):
        if "kind" not in record:
            for tag, value in record.items():
                if tag not in ("step", "wall_time"):
                    series.setdefault(tag, {})[record["step"]] = value
    return series


def _only(run_dir: str | Path, mark: str) -> str:
    paths = glob.glob(os.path.join(run_dir, f"*{mark}*"))
    assert len(paths) == 1, f"expected one {mark} file in {run_dir}, found {os.listdir(run_dir)}"
    return paths[0]


def _vdl_scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    return [
        (r.id, r.value) for r in LogReader(file_path=_only(run_dir, "vdlrecords")).get_data("scalar", tag)
    ]


def _tb_scalars(run_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """As TensorBoard shows them: every file of the run, purge markers applied."""
    return [(e.step, e.value) for e in _tb(str(run_dir)).Scalars(tag)]


def _png(png: bytes) -> np.ndarray:
    with PILImage.open(io.BytesIO(png)) as image:
        return np.asarray(image.convert("RGB"))


def _norm(grads: dict[str, np.ndarray], prefix: str = "") -> float:
    return float(np.sqrt(sum((g**2).sum() for name, g in grads.items() if name.startswith(prefix))))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One training with both vis backends and the hook (``interval=``, MMEngine's spelling),
    then a record logged after MMEngine closed the visualizer, as ``runner.test()`` would."""
    work = tmp_path_factory.mktemp("trained")
    cfg = _config(work, "trained", hook=dict(interval=INTERVAL, groups=GROUPS))
    cfg.custom_hooks.append(dict(type="ImageLogger"))
    runner, recorder = _train(cfg)
    runner.visualizer.add_scalars({"test/accuracy": 0.75}, step=ITERS)
    runner.visualizer.close()
    run_dir = Path(runner.log_dir) / "vis_data"
    local = [json.loads(line) for line in (run_dir / "scalars.json").read_text().splitlines()]
    log = (Path(runner.log_dir) / f"{runner.timestamp}.log").read_text(encoding="utf-8")
    return SimpleNamespace(
        runner=runner, recorder=recorder, run_dir=run_dir, series=_series(run_dir), local=local, log=log
    )


# -- the vis backend: what MMEngine logs -------------------------------------------------------


def test_mmengines_logged_scalars_read_back_equal_from_visualdl_tensorboard_and_jsonl(trained) -> None:
    # The reference is MMEngine's own LocalVisBackend, fed the same add_scalars calls.
    expected: dict[str, list[tuple[int, float]]] = {}
    for record in trained.local:
        for tag, value in record.items():
            if tag != "step":
                expected.setdefault(tag, []).append((record["step"], value))
    assert {"loss", "loss_mse", "loss_l1", "lr", "time", "data_time", "test/accuracy"} <= set(expected)
    assert [step for step, _ in expected["loss"]] == LOGGED
    for tag, points in expected.items():
        for read in (_vdl_scalars, _tb_scalars):
            got = read(trained.run_dir, tag)
            assert [s for s, _ in got] == [s for s, _ in points], (read.__name__, tag)
            assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-6), (
                read.__name__,
                tag,
            )
        assert trained.series[tag] == dict(points)


def test_a_record_logged_after_mmengine_closed_the_visualizer_is_appended_to_the_same_run(trained) -> None:
    vdl = _vdl_scalars(trained.run_dir, "test/accuracy")  # the one VisualDL file holds all of it
    assert vdl == [(ITERS, 0.75)] and [s for s, _ in _vdl_scalars(trained.run_dir, "loss")] == LOGGED
    assert _tb_scalars(trained.run_dir, "test/accuracy") == [(ITERS, 0.75)]
    assert [s for s, _ in _tb_scalars(trained.run_dir, "loss")] == LOGGED


def test_the_config_and_an_image_land_in_both_viewers(trained) -> None:
    text = f"```python\n{trained.runner.cfg.pretty_text}\n```"
    reader = LogReader(file_path=_only(trained.run_dir, "vdlrecords"))
    ((step, vdl_text),) = [(r.id, r.text.encoded_text_string) for r in reader.get_data("text", "config")]
    assert (step, vdl_text) == (0, text)
    tb = _tb(str(trained.run_dir))
    (event,) = tb.Tensors("config")
    assert (event.step, event.tensor_proto.string_val) == (0, [text.encode("utf-8")])

    (image,) = reader.get_data("image", "samples/input")
    assert image.id == IMAGE_STEP
    np.testing.assert_array_equal(_png(image.image.encoded_image_string), IMAGE)
    (event,) = tb.Images("samples/input")
    assert event.step == IMAGE_STEP
    np.testing.assert_array_equal(_png(event.encoded_image_string), IMAGE)


def test_the_hook_writes_into_the_vis_backends_run(trained) -> None:
    log_dir = Path(trained.runner.log_dir)
    assert not (log_dir / "dualwatch").exists()
    assert {"loss", "lr", "train/gradient/total_norm", "train/detailed_loss/loss"} <= set(trained.series)
    assert [s for s, _ in _vdl_scalars(trained.run_dir, "train/gradient/total_norm")] == LOGGED
    (backend,) = [
        b for b in trained.runner.visualizer._vis_backends.values() if isinstance(b, DualwatchVisBackend)
    ]
    hook = next(h for h in trained.runner.hooks if isinstance(h, DualwatchHook))
    assert hook.watcher.writer.run_dir == str(trained.run_dir) == backend._run_dir


# -- the hook: the ESAM guide's numbers ----------------------------------------------------------


def test_gradient_norms_and_group_shares_match_the_real_gradients(trained) -> None:
    series, recorder = trained.series, trained.recorder
    assert sorted(series["train/gradient/total_norm"]) == LOGGED
    for it in LOGGED:
        grads = recorder.grads[it]
        total, backbone, gate = _norm(grads), _norm(grads, "backbone."), _norm(grads, "gate.")
        assert series["train/gradient/total_norm"][it] == pytest.approx(total, rel=1e-5)
        assert series["train/gradient/max_grad"][it] == pytest.approx(
            max(np.abs(g).max() for g in grads.values())
        )
        assert series["train/gradient/backbone/norm"][it] == pytest.approx(backbone, rel=1e-5)
        assert series["train/gradient/gate/share"][it] == pytest.approx(gate**2 / total**2, rel=1e-5)
        shares = [series[f"train/gradient/{g}/share"][it] for g in ("backbone", "gate", "other")]
        assert sum(shares) == pytest.approx(1.0)
        assert series["Model/Gradient_Norm"][it] == series["train/gradient/total_norm"][it]


def test_loss_breakdown_and_user_stat_groups_are_written_per_interval(trained) -> None:
    series, recorder = trained.series, trained.recorder
    for name in ("loss", "loss_mse", "loss_l1"):
        tag = f"train/detailed_loss/{name}"
        assert sorted(series[tag]) == LOGGED
        for it in LOGGED:
            assert series[tag][it] == pytest.approx(recorder.outputs[it][name], rel=1e-6)
    for it in LOGGED:
        assert series["train/fusion/gate_mean"][it] == pytest.approx(recorder.gates[it], rel=1e-6)
    assert sorted(series["train/fusion/gate_max"]) == LOGGED


def test_mmengines_log_file_holds_the_esam_guides_framed_report(trained) -> None:
    log, recorder, series = trained.log, trained.recorder, trained.series
    assert log.count("📊 Enhanced Training Stats - Iter") == len(LOGGED)
    lines = log.splitlines()
    start = lines.index("📊 Enhanced Training Stats - Iter 4")
    block = lines[start - 1 : lines.index("=" * 80, start + 2) + 1]
    assert lines[start - 2].endswith(" - mmengine - INFO - ")  # MMEngine's logger wrote it
    assert block[:4] == [
        "=" * 80,
        "📊 Enhanced Training Stats - Iter 4",
        "=" * 80,
        "🔥 Detailed Loss Breakdown:",
    ]
    out = recorder.outputs[4]
    assert f"  loss                : {out['loss']:.6f}" in block
    assert f"  loss_mse            : {out['loss_mse']:.6f} ({out['loss_mse'] / out['loss']:.1%})" in block
    assert "🎯 fusion:" in block and f"  gate_mean           : {recorder.gates[4]:.4f}" in block
    assert "  status: ✅ healthy" in block
    share = series["train/gradient/backbone/share"][4]
    assert f"  backbone: {series['train/gradient/backbone/norm'][4]:.4f} ({share:.1%})" in block
    assert f"  total grad norm: {_norm(recorder.grads[4]):.4f}" in block
    assert "📏 Normal Ranges:" in block


def test_the_optimizer_wrapper_is_restored_after_training(trained) -> None:
    wrapper = trained.recorder.runner.optim_wrapper
    assert len(trained.recorder.grads) == ITERS and "step" not in vars(wrapper)


def _hook_run(runner: Runner) -> Path:
    """The hook's own run, without a DualwatchVisBackend: ``<log_dir>/dualwatch``."""
    return Path(runner.log_dir) / "dualwatch"


def test_gradients_are_read_before_clipping(tmp_path: Path) -> None:
    hook = dict(log_interval=INTERVAL, groups=GROUPS)  # the ESAM guide's spelling
    runner, recorder = _train(
        _config(tmp_path, "clip", hook=hook, backends=LOCAL, optim=dict(clip_grad=dict(max_norm=0.01)))
    )
    series = _series(_hook_run(runner))
    for it in LOGGED:
        assert series["train/gradient/total_norm"][it] == pytest.approx(_norm(recorder.grads[it]), rel=1e-5)
        assert series["train/gradient/total_norm"][it] > 0.1  # the clipped norm would be 0.01


def test_accumulated_gradients_are_read_once_per_optimizer_step(tmp_path: Path) -> None:
    hook = dict(every=INTERVAL, groups=GROUPS)
    runner, recorder = _train(
        _config(tmp_path, "accumulate", hook=hook, backends=LOCAL, optim=dict(accumulative_counts=2))
    )
    series = _series(_hook_run(runner))
    assert sorted(series["train/gradient/total_norm"]) == LOGGED
    for it in LOGGED:  # every second iteration steps the optimizer
        accumulated = _norm(recorder.grads[it])
        assert series["train/gradient/total_norm"][it] == pytest.approx(accumulated, rel=1e-5)
        assert accumulated != pytest.approx(_norm(recorder.grads[it - 1]), rel=1e-3)


# MMEngine's own condition: AmpOptimWrapper asserts one of these devices at construction
AMP_DEVICE = is_cuda_available() or is_npu_available() or is_mlu_available() or is_musa_available()


@pytest.mark.skipif(
    not AMP_DEVICE, reason="MMEngine's AmpOptimWrapper runs only on a GPU, NPU, MLU or MUSA device"
)
def test_amp_gradients_are_read_unscaled(tmp_path: Path) -> None:
    optim = dict(type="AmpOptimWrapper", loss_scale=1024.0)
    runner, recorder = _train(
        _config(tmp_path, "amp", hook=dict(every=INTERVAL), backends=LOCAL, optim=optim)
    )
    series = _series(_hook_run(runner))
    for it in LOGGED:
        unscaled = _norm(recorder.grads[it]) / 1024.0
        assert series["train/gradient/total_norm"][it] == pytest.approx(unscaled, rel=1e-3)


def test_console_false_keeps_the_report_out_of_the_log_but_still_writes_it(tmp_path: Path) -> None:
    cfg = _config(tmp_path, "quiet", hook=dict(every=INTERVAL, console=False), epochs=1)
    runner, recorder = _train(cfg)
    log = (Path(runner.log_dir) / f"{runner.timestamp}.log").read_text(encoding="utf-8")
    assert "Epoch(train)" in log and "Enhanced Training Stats" not in log
    series = _series(Path(runner.log_dir) / "vis_data")
    assert series["train/detailed_loss/loss"] == pytest.approx(
        {it: recorder.outputs[it]["loss"] for it in (2, 4, 6)}
    )


def test_the_frequency_is_every_or_mmengines_interval_or_the_guides_log_interval() -> None:
    assert DualwatchHook().every == 10
    assert [DualwatchHook(**{name: 7}).every for name in ("every", "interval", "log_interval")] == [7, 7, 7]
    assert DualwatchHook(every=5, interval=5).every == 5
    with pytest.raises(ValueError, match=r"every=5, interval=3 all set the check frequency"):
        DualwatchHook(every=5, interval=3)


def test_resume_that_is_not_a_bool_or_a_step_fails_when_built() -> None:
    with pytest.raises(TypeError, match=r"resume= is None .* got 'yes'"):
        DualwatchHook(resume="yes")
    with pytest.raises(TypeError, match=r"resume= is None .* got 1.5"):
        DualwatchVisBackend("unused", resume=1.5)
    with pytest.raises(ValueError, match=r"formats= takes a list of .* got \['wandb'\]"):
        DualwatchVisBackend("unused", formats=["wandb"])


# -- resume ------------------------------------------------------------------------------------

RESUMES = {
    # name: (DualwatchHook options or None, vis backends)
    "vis backend and hook": (dict(every=INTERVAL), BACKENDS),
    "vis backend alone": (None, BACKENDS),
    "hook alone": (dict(every=INTERVAL), LOCAL),
}


@pytest.mark.parametrize("case", list(RESUMES))
def test_mmengines_resume_continues_the_curves_with_no_step_twice(
    tmp_path: Path, case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # MMEngine 0.10.7 resumes with torch.load's old default; torch >= 2.6 needs this to let it.
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    hook, backends = RESUMES[case]
    checkpoints = dict(checkpoint=dict(type="CheckpointHook", interval=1))
    first_cfg = _config(tmp_path, "first", hook=hook, backends=backends)
    first_cfg.default_hooks.update(checkpoints)
    first, first_recorder = _train(first_cfg)  # iterations 1-12, a checkpoint after 6 and 12
    time.sleep(1 - time.time() % 1)  # the next launch gets a timestamp directory of its own
    # A crash after the epoch-1 checkpoint, as a user resumes it: resume=True, load_from=...
    second_cfg = _config(
        tmp_path,
        "second",
        hook=hook,
        backends=backends,
        epochs=3,
        resume=True,
        load_from=str(tmp_path / "epoch_1.pth"),
    )
    second_cfg.default_hooks.update(checkpoints)
    second, second_recorder = _train(second_cfg)  # iterations 7-18
    assert first.log_dir != second.log_dir
    run_dir = Path(first.log_dir) / ("vis_data" if hook is None or len(backends) == 2 else "dualwatch")
    steps = list(range(INTERVAL, 3 * ITERS // 2 + 1, INTERVAL))

    def expected(first_values: dict[int, float], second_values: dict[int, float]) -> list[tuple[int, float]]:
        return [(s, first_values[s] if s <= ITERS // 2 else second_values[s]) for s in steps]

    curves = {}
    if len(backends) == 2:  # MMEngine's "time" differs between launches: it tells whose point it is
        times = [{r["step"]: r["time"] for r in _local(run)} for run in (first, second)]
        curves["time"] = expected(*times)
    if hook is not None:
        losses = [{s: o["loss"] for s, o in r.outputs.items()} for r in (first_recorder, second_recorder)]
        curves["train/detailed_loss/loss"] = expected(*losses)
        norms = [{s: _norm(g) for s, g in r.grads.items()} for r in (first_recorder, second_recorder)]
        curves["train/gradient/total_norm"] = expected(*norms)
    series = _series(run_dir)
    for tag, points in curves.items():
        for read in (_vdl_scalars, _tb_scalars):
            got = read(run_dir, tag)
            assert [s for s, _ in got] == steps, (read.__name__, tag)
            assert [v for _, v in got] == pytest.approx([v for _, v in points], rel=1e-5), (
                read.__name__,
                tag,
            )
        assert series[tag] == pytest.approx(dict(points), rel=1e-6)
    assert not (Path(second.log_dir) / run_dir.name / "metrics.jsonl").exists()


def _local(runner: Runner) -> list[dict[str, Any]]:
    path = Path(runner.log_dir) / "vis_data" / "scalars.json"
    return [json.loads(line) for line in path.read_text().splitlines()]


# -- configs and the example -----------------------------------------------------------------


def test_the_mmengine_example_trains_and_reports(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mmengine_esam.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "📊 Enhanced Training Stats - Iter 4" in done.stdout and "🎯 fusion:" in done.stdout
    (log,) = tmp_path.glob("*/*.log")
    assert "🔥 Gradient Health:" in log.read_text(encoding="utf-8")
    (run_dir,) = tmp_path.glob("*/vis_data")
    tags = set(_series(run_dir))
    assert {
        "loss",
        "lr",
        "train/detailed_loss/semantic_loss",
        "train/gradient/bifusion/share",
        "train/fusion/2d_weight_mean",
        "train/projection/valid_projection_rate",
    } <= tags


def test_a_config_file_registers_the_hook_and_the_vis_backend_through_custom_imports(tmp_path: Path) -> None:
    config = tmp_path / "config.py"
    config.write_text('custom_imports = dict(imports=["dualwatch.integrations.mmengine"])\n')
    code = (
        "import sys; from mmengine.config import Config; from mmengine.registry import HOOKS, VISBACKENDS; "
        "before = 'DualwatchHook' in HOOKS.module_dict or 'DualwatchVisBackend' in VISBACKENDS.module_dict; "
        "Config.fromfile(sys.argv[1]); "
        "print(before, HOOKS.get('DualwatchHook').__module__, "
        "VISBACKENDS.get('DualwatchVisBackend').__module__)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, cwd=ROOT)
    assert done.stdout.split() == ["False"] + ["dualwatch.integrations.mmengine"] * 2, done.stderr
