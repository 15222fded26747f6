"""``dualwatch monitor`` end to end, on logs written by real tools, live runs and damaged files.

Every test runs the real command (``dualwatch monitor LOGDIR --once --json`` through click's
runner, or as a child process that follows a run) on files written by the real writers:
dualwatch's ``Writer`` and ``Watcher``, VisualDL's ``LogWriter``, torch's ``SummaryWriter``,
Paddle's ``paddle.callbacks.VisualDL`` in ``Model.fit`` and MMEngine's ``Runner`` with its
``LocalVisBackend`` and ``TensorboardVisBackend``. Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dualwatch import Writer
from dualwatch._cli import main
from dualwatch._formats import formats_by_name

CHILD_TIMEOUT = 120.0


def once(logdir: Path, *args: str) -> tuple[int, dict[str, Any]]:
    """Exit code and JSON report of ``dualwatch monitor LOGDIR --once --json``; never a traceback."""
    result = CliRunner().invoke(main, ["monitor", str(logdir), "--once", "--json", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def run_python(script: str, *args: str, cwd: Path) -> None:
    path = cwd / "child.py"
    path.write_text(textwrap.dedent(script))
    proc = subprocess.run(
        [sys.executable, str(path), *args], cwd=cwd, capture_output=True, text=True, timeout=CHILD_TIMEOUT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


# -- third-party writers and dualwatch's own -----------------------------------------------------


def test_visualdl_logwriter_run_shows_its_last_step_loss_and_lr(tmp_path) -> None:
    from visualdl import LogWriter

    with LogWriter(logdir=str(tmp_path / "vdl")) as writer:
        for step in range(1, 31):
            writer.add_scalar("train/loss", 10.0 - step * 0.25, step)
            writer.add_scalar("train/lr", 0.125, step)
    code, report = once(tmp_path)
    assert code == 0 and report["format"] == "visualdl" and report["corrupt"] == 0
    assert report["step"] == 30 and report["records"] == 60
    assert report["loss"]["tag"] == "train/loss" and report["loss"]["latest"] == 2.5
    assert report["lr"] == {"tag": "train/lr", "step": 30, "value": 0.125}


def test_torch_summary_writer_run_shows_its_last_step_loss_lr_and_grad_norm(tmp_path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    for step in range(40):
        writer.add_scalar("Loss/Train", 4.0 - step * 0.0625, step)
        writer.add_scalar("Learning_Rate", 0.5, step)
        writer.add_scalar("Model/Gradient_Norm", 1.5, step)
    writer.close()
    code, report = once(tmp_path)
    assert code == 0 and report["format"] == "tensorboard" and report["corrupt"] == 0
    assert report["step"] == 39 and report["records"] == 120
    assert report["loss"]["tag"] == "Loss/Train" and report["loss"]["latest"] == 4.0 - 39 * 0.0625
    assert report["lr"]["value"] == 0.5
    assert report["grad_norm"] == {"tag": "Model/Gradient_Norm", "step": 39, "value": 1.5}
    assert report["health"] == "healthy"


def test_paddle_visualdl_callback_in_model_fit_shows_the_last_batch_loss(tmp_path) -> None:
    import warnings

    import numpy as np
    from conftest import _import

    paddle = _import("paddle")

    class Data(paddle.io.Dataset):
        def __getitem__(self, i):
            return np.full([4], i / 8, "float32"), np.array([i % 2], "int64")

        def __len__(self):
            return 16

    class Spy(paddle.callbacks.Callback):
        """What fit hands the callbacks at each batch: the loss VisualDL writes."""

        def __init__(self):
            super().__init__()
            self.losses: list[float] = []

        def on_train_batch_end(self, step, logs=None):
            self.losses.append(float(np.asarray(logs["loss"]).reshape(-1)[0]))

    net = paddle.nn.Linear(4, 2)
    model = paddle.Model(net)
    model.prepare(paddle.optimizer.SGD(0.1, parameters=net.parameters()), paddle.nn.CrossEntropyLoss())
    spy = Spy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        model.fit(
            Data(),
            epochs=2,
            batch_size=4,
            verbose=0,
            callbacks=[spy, paddle.callbacks.VisualDL(str(tmp_path / "paddle"))],
        )
    code, report = once(tmp_path)
    assert code == 0 and report["format"] == "visualdl" and report["corrupt"] == 0
    assert report["loss"]["tag"] == "train/loss"
    assert report["step"] == len(spy.losses) == 8  # 2 epochs of 4 batches, one global step per batch
    assert report["loss"]["latest"] == pytest.approx(spy.losses[-1], rel=1e-6)


def test_dualwatch_writer_run_shows_the_last_step_of_every_record(tmp_path) -> None:
    with Writer(tmp_path, run="w", console=None) as writer:
        for step in range(50):
            writer.log(step, {"train/loss": 1.0 / (step + 1), "train/lr": 0.01})
    code, report = once(tmp_path)
    assert code == 0 and report["format"] == "tensorboard" and report["corrupt"] == 0
    assert report["step"] == 49 and report["records"] == 100
    assert report["loss"]["latest"] == pytest.approx(1 / 50, rel=1e-6)
    assert report["lr"]["tag"] == "train/lr" and report["lr"]["value"] == pytest.approx(0.01)


def test_dualwatch_watcher_run_shows_loss_lr_grad_norm_and_health(tmp_path) -> None:
    import torch

    from dualwatch import Watcher

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(32, 4), torch.randn(32, 1)
    with Watcher(model, every=1, logdir=tmp_path, run="watched", console=False) as watcher:
        for step in range(20):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            scalars = watcher.step(step)
            opt.step()
            watcher.log_training(step, loss=loss.item(), lr=0.05)
    code, report = once(tmp_path)
    assert code == 0 and report["format"] == "tensorboard" and report["corrupt"] == 0
    assert report["step"] == 19
    assert report["loss"]["tag"] == "Loss/Train" and report["loss"]["latest"] == pytest.approx(loss.item())
    assert report["lr"] == {"tag": "Learning_Rate", "step": 19, "value": pytest.approx(0.05)}
    assert report["grad_norm"]["tag"] == "train/gradient/total_norm"
    assert report["grad_norm"]["value"] == pytest.approx(scalars["train/gradient/total_norm"], rel=1e-6)
    assert report["health"] == "healthy" and report["health_source"] == "train/gradient/health"


# -- MMEngine ------------------------------------------------------------------------------------

MMENGINE_CHILD = """
    import sys, time
    import torch
    from torch.utils.data import Dataset
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    backends, work_dir, pause = sys.argv[1].split(","), sys.argv[2], float(sys.argv[3])
    hooks = []
    if sys.argv[4:] == ["hook"]:  # dualwatch's hook without its vis backend: a run of its own
        import dualwatch.integrations.mmengine
        hooks = [dict(type="DualwatchHook", every=2)]

    class Net(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(2, 1)

        def forward(self, x, y, mode="loss"):
            time.sleep(pause)
            out = self.fc(x)
            return {"loss": ((out - y) ** 2).mean()} if mode == "loss" else out

    class Data(Dataset):
        def __len__(self):
            return 16

        def __getitem__(self, i):
            x = torch.randn(2, generator=torch.Generator().manual_seed(i))
            return dict(x=x, y=x.sum(0, keepdim=True))

    torch.manual_seed(0)
    Runner(
        model=Net(),
        work_dir=work_dir,
        train_dataloader=dict(
            dataset=Data(), sampler=dict(type="DefaultSampler", shuffle=False), batch_size=2,
            collate_fn=dict(type="default_collate"),
        ),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01), clip_grad=dict(max_norm=10)),
        train_cfg=dict(by_epoch=True, max_epochs=3),
        default_hooks=dict(
            logger=dict(type="LoggerHook", interval=2),
            checkpoint=dict(type="CheckpointHook", interval=100),
        ),
        visualizer=dict(type="Visualizer", vis_backends=[dict(type=b) for b in backends]),
        custom_hooks=hooks,
        default_scope="mmengine",
    ).train()
"""
#: 3 epochs of 8 iterations, logged every 2: 12 lines of lr, data_time, grad_norm, loss, time, epoch, iter
MM_STEPS, MM_LINES, MM_TAGS = 24, 12, 7


def mmengine_lines(work_dir: Path) -> list[dict[str, Any]]:
    (path,) = work_dir.glob("*/vis_data/scalars.json")
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    ("backends", "fmt"),
    [("LocalVisBackend", "mmengine"), ("LocalVisBackend,TensorboardVisBackend", "tensorboard")],
)
def test_mmengine_runner_run_shows_its_loss_lr_grad_norm_epoch_and_is_not_stalled(
    tmp_path, backends, fmt
) -> None:
    work_dir = tmp_path / "work"
    run_python(MMENGINE_CHILD, backends, str(work_dir), "0", cwd=tmp_path)
    lines = mmengine_lines(work_dir)
    last = lines[-1]
    assert len(lines) == MM_LINES and last["step"] == MM_STEPS and "wall_time" not in last
    code, report = once(work_dir, "--stall", "60")
    assert code == 0 and report["format"] == fmt and report["corrupt"] == 0
    assert report["run"].endswith("vis_data")
    assert report["step"] == MM_STEPS and report["records"] == MM_LINES * MM_TAGS
    assert report["loss"]["tag"] == "loss" and report["loss"]["latest"] == pytest.approx(
        last["loss"], rel=1e-6
    )
    assert report["lr"] == {"tag": "lr", "step": MM_STEPS, "value": pytest.approx(0.01)}
    assert report["grad_norm"]["tag"] == "grad_norm"
    assert report["grad_norm"]["value"] == pytest.approx(last["grad_norm"], rel=1e-6)
    assert report["epoch"] == 3 and report["health"] == "healthy"
    assert 0 <= report["since_last_s"] < 60 and not report["alerts"]
    assert report["steps_per_s"] is not None and report["steps_per_s"] > 0


def test_mmengine_work_dir_with_dualwatch_hook_shows_both_runs_each_with_its_loss(tmp_path) -> None:
    work_dir = tmp_path / "work"
    run_python(MMENGINE_CHILD, "LocalVisBackend", str(work_dir), "0", "hook", cwd=tmp_path)
    (launch,) = [p for p in work_dir.iterdir() if p.is_dir()]  # <timestamp>/
    assert sorted(p.name for p in launch.iterdir() if p.is_dir()) == ["dualwatch", "vis_data"]
    result = CliRunner().invoke(main, ["monitor", str(work_dir), "--once", "--json", "--stall", "60"])
    assert result.exit_code == 0, result.output
    reports = {r["run"]: r for r in map(json.loads, result.stdout.splitlines())}
    assert set(reports) == {f"{launch.name}/dualwatch", f"{launch.name}/vis_data"}
    last = mmengine_lines(work_dir)[-1]
    mm = reports[f"{launch.name}/vis_data"]
    assert mm["loss"]["tag"] == "loss" and mm["loss"]["latest"] == pytest.approx(last["loss"], rel=1e-6)
    hook = reports[f"{launch.name}/dualwatch"]
    assert hook["loss"]["tag"] == "train/detailed_loss/loss" and hook["health"] == "healthy"
    # the hook logs the loss of the iteration it checks; MMEngine's line is the interval's mean
    jsonl = (launch / "dualwatch" / "metrics.jsonl").read_text()
    logged = [json.loads(line) for line in jsonl.splitlines()]
    losses = {r["step"]: r["train/detailed_loss/loss"] for r in logged if "train/detailed_loss/loss" in r}
    assert hook["loss"]["latest"] == pytest.approx(losses[max(losses)], rel=1e-6)
    one = CliRunner().invoke(main, ["monitor", str(work_dir), "--run", "dualwatch", "--once", "--json"])
    assert json.loads(one.stdout)["loss"]["tag"] == "train/detailed_loss/loss"


def test_mmengine_lines_read_in_one_poll_end_at_the_file_mtime_and_go_back_by_their_time(tmp_path) -> None:
    from dualwatch.readers import RunReader

    vis = tmp_path / "vis_data"
    vis.mkdir()
    path = vis / "scalars.json"
    lines = [{"loss": 1.0, "time": 0.5, "step": 10}, {"loss": 0.5, "time": 0.25, "step": 20}]
    lines.append({"accuracy/top1": 90.0, "time": 9.0, "step": 1})  # validation, at the epoch: no time
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    os.utime(path, (1_700_000_100.0, 1_700_000_100.0))
    reader = RunReader(str(vis))
    reader.poll()
    assert reader.format == "mmengine"
    assert reader.series["loss"].wall_times == [1_700_000_100.0 - 10 * 0.25, 1_700_000_100.0]
    assert reader.series["accuracy/top1"].wall_times == [1_700_000_100.0]
    with open(path, "a") as f:
        f.write(json.dumps({"loss": 0.25, "time": 100.0, "step": 30}) + "\n")
    os.utime(path, (1_700_000_200.0, 1_700_000_200.0))
    reader.poll()  # a later poll: its lines end at the new mtime, none goes back before the last one
    assert reader.series["loss"].wall_times[-1] == 1_700_000_200.0


def test_mmengine_scalars_json_outside_vis_data_is_not_a_log(tmp_path) -> None:
    (tmp_path / "scalars.json").write_text('{"loss": 1.0, "step": 1}\n')
    result = CliRunner().invoke(main, ["monitor", str(tmp_path), "--once", "--json"])
    assert result.exit_code == 3 and "no logs" in result.stderr


# -- a run written by another process while the monitor follows it --------------------------------

DUALWATCH_CHILD = """
    import sys, time
    from dualwatch import Writer

    with Writer(sys.argv[1], run="live", console=None, max_latency=0.1) as writer:
        for step in range(int(sys.argv[2])):
            writer.log(step, {"train/loss": 1.0 / (step + 1), "train/lr": 0.01})
            time.sleep(0.02)
"""


MONITOR = (sys.executable, "-c", "from dualwatch._cli import main; main()", "monitor")


def follow(
    logdir: Path, child: list[str], *args: str, running: list[bool] | None = None
) -> tuple[list[dict[str, Any]], bool]:
    """Reports of ``dualwatch monitor --json`` following ``logdir`` while ``child`` writes there.

    Returns every report and whether the child had ended when the monitor was stopped: three
    reports after the child ended, or the timeout. Both processes are always killed. ``running``,
    if given, gets one bool per report: whether the child was still running when it came (a run
    that has ended is rightly stalled a while later; only one still writing can be falsely so).
    """
    monitor = subprocess.Popen(
        [*MONITOR, str(logdir), "--json", "--interval", "0.2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in monitor.stdout:  # type: ignore[union-attr]
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    writer = subprocess.Popen(child, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + CHILD_TIMEOUT
    after = 0  # reports that came at least a poll after the child ended
    ended: float | None = None
    try:
        while time.monotonic() < deadline and after < 3:
            try:
                line = lines.get(timeout=1.0)
            except queue.Empty:
                continue
            if line is None:
                break  # the monitor ended: the assertions tell
            if ended is None and writer.poll() is not None:
                ended = time.monotonic()
            try:
                report = json.loads(line)
            except ValueError:
                continue
            if "step" not in report:
                continue  # waiting for the first records
            reports.append(report)
            if running is not None:
                running.append(ended is None and writer.poll() is None)
            if ended is not None and time.monotonic() > ended + 0.3:
                after += 1
        writer_done = writer.poll() is not None
    finally:
        for proc in (writer, monitor):
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    assert writer.returncode == 0, writer.stderr.read()[-3000:] if writer.stderr else ""
    return reports, writer_done


#: --stall for a followed live run: generous, as a loaded 2-core machine can pause a child for
#: seconds (its records come tenths of a second apart idle); the alert's exactness is checked
#: against each report's own age of the last record instead
LIVE_STALL = 10.0


def assert_no_false_stall(reports: list[dict[str, Any]], running: list[bool]) -> None:
    """No report made while the child still wrote says stalled, each one's age of the last record is
    below the limit, and at any time the alert is raised exactly when that age passes the limit."""
    live = [r for r, alive in zip(reports, running) if alive]
    assert len(live) >= 2, f"only {len(live)} reports while the child wrote"
    assert all(0 <= r["since_last_s"] < LIVE_STALL for r in live), [r["since_last_s"] for r in live]
    assert not any(a["kind"] == "stalled" for r in live for a in r["alerts"])
    for r in reports:
        stalled = any(a["kind"] == "stalled" for a in r["alerts"])
        assert stalled == (r["since_last_s"] > LIVE_STALL), r


def test_a_dualwatch_run_written_by_another_process_is_followed_to_its_last_step_and_record(tmp_path) -> None:
    steps = 200
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(DUALWATCH_CHILD))
    running: list[bool] = []
    child = [sys.executable, str(script), str(tmp_path), str(steps)]
    reports, done = follow(tmp_path, child, "--stall", str(LIVE_STALL), running=running)
    assert done and reports
    seen = [r["step"] for r in reports]
    assert seen == sorted(seen) and len(set(seen)) >= 3, seen  # the step rose while it wrote
    final = reports[-1]
    assert final["step"] == steps - 1 and final["records"] == 2 * steps and final["corrupt"] == 0
    assert final["loss"]["latest"] == pytest.approx(1 / steps, rel=1e-6)
    assert_no_false_stall(reports, running)


def test_a_live_mmengine_runner_is_followed_without_a_false_stall_to_its_last_line(tmp_path) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(MMENGINE_CHILD))
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    child = [sys.executable, str(script), "LocalVisBackend", str(work_dir), "0.05"]
    running: list[bool] = []
    reports, done = follow(work_dir, child, "--stall", str(LIVE_STALL), running=running)
    assert done and reports
    assert all(r["format"] == "mmengine" for r in reports)
    seen = [r["step"] for r in reports]
    assert seen == sorted(seen) and len(set(seen)) >= 3, seen
    final = reports[-1]
    assert final["step"] == MM_STEPS and final["records"] == MM_LINES * MM_TAGS and final["corrupt"] == 0
    assert final["loss"]["latest"] == pytest.approx(mmengine_lines(work_dir)[-1]["loss"], rel=1e-6)
    assert_no_false_stall(reports, running)


# -- damaged files --------------------------------------------------------------------------------

DAMAGE_STEPS = 40


def frames(fmt: str, data: bytes) -> list[tuple[int, int]]:
    """``(start, end)`` of each record of a whole, undamaged file."""
    spans = [(frame.start, frame.end) for frame in formats_by_name()[fmt]().scan(data)]
    assert spans[-1][1] == len(data)
    return spans


def damaged_run(tmp_path: Path, fmt: str) -> tuple[Path, bytes, list[tuple[int, int]]]:
    """A dualwatch run in ``fmt`` alone, one ``train/loss`` point per step; its bytes and records."""
    with Writer(tmp_path, run="run", formats=[fmt], console=None) as writer:
        for step in range(DAMAGE_STEPS):
            writer.add_scalar("train/loss", step * 0.5, step)
    (path,) = (tmp_path / "run").iterdir()
    data = path.read_bytes()
    spans = frames(fmt, data)
    # header records (TensorBoard's file version and session start, VisualDL's meta data) lead
    assert len(spans) - DAMAGE_STEPS == {"tensorboard": 2, "visualdl": 1, "jsonl": 0}[fmt]
    return path, data, spans[-DAMAGE_STEPS:]


FORMAT_NAMES = ["tensorboard", "visualdl", "jsonl"]


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_a_file_cut_mid_record_shows_every_record_before_the_cut(tmp_path, fmt) -> None:
    path, data, spans = damaged_run(tmp_path, fmt)
    start, end = spans[-1]
    path.write_bytes(data[: (start + end) // 2])
    code, report = once(tmp_path)
    assert code == 0 and report["corrupt"] == 0
    assert report["records"] == DAMAGE_STEPS - 1 and report["step"] == DAMAGE_STEPS - 2
    assert report["loss"]["latest"] == (DAMAGE_STEPS - 2) * 0.5


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_a_zero_filled_tail_shows_every_record_before_it(tmp_path, fmt) -> None:
    path, data, _ = damaged_run(tmp_path, fmt)
    path.write_bytes(data + bytes(4096))
    code, report = once(tmp_path)
    assert code == 0
    assert report["records"] == DAMAGE_STEPS and report["step"] == DAMAGE_STEPS - 1


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_a_zero_filled_record_mid_file_is_counted_and_every_record_after_it_shown(tmp_path, fmt) -> None:
    path, data, spans = damaged_run(tmp_path, fmt)
    start, end = spans[DAMAGE_STEPS // 2]
    path.write_bytes(data[:start] + bytes(end - start) + data[end:])
    code, report = once(tmp_path)
    assert code == 0 and report["corrupt"] >= 1
    assert report["records"] == DAMAGE_STEPS - 1 and report["step"] == DAMAGE_STEPS - 1
    assert report["loss"]["latest"] == (DAMAGE_STEPS - 1) * 0.5


@pytest.mark.parametrize("fmt", FORMAT_NAMES)
def test_a_bit_flipped_record_is_counted_and_every_other_record_shown(tmp_path, fmt) -> None:
    path, data, spans = damaged_run(tmp_path, fmt)
    start, end = spans[DAMAGE_STEPS // 2]
    at = start + 8 if fmt == "visualdl" else (start + end) // 2  # VisualDL: the record's first field
    path.write_bytes(data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :])
    code, report = once(tmp_path)
    assert code == 0 and report["corrupt"] == 1
    assert report["records"] == DAMAGE_STEPS - 1 and report["step"] == DAMAGE_STEPS - 1
    assert any(w["kind"] == "corrupt" for w in report["warnings"])


def test_a_damaged_mmengine_scalars_json_is_counted_and_every_whole_line_shown(tmp_path) -> None:
    vis = tmp_path / "20260101_000000" / "vis_data"
    vis.mkdir(parents=True)
    lines = [
        json.dumps({"lr": 0.1, "loss": 1.0 / s, "time": 0.5, "step": s}).encode() + b"\n"
        for s in range(1, 21)
    ]
    lines[5] = lines[5][:10] + bytes([lines[5][10] ^ 0xFF]) + lines[5][11:]  # bit flip
    lines[9] = bytes(len(lines[9]))  # zero-filled, its newline too
    (vis / "scalars.json").write_bytes(b"".join(lines) + b'{"lr": 0.1, "lo')  # cut mid-line
    code, report = once(tmp_path)
    assert code == 0 and report["format"] == "mmengine" and report["corrupt"] == 2
    assert report["records"] == 18 * 3 and report["step"] == 20  # lr, loss and time
    assert report["loss"]["latest"] == pytest.approx(1 / 20)
