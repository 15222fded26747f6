"""``dualwatch monitor``: the report on hand-built series, and the command on real dualwatch runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import CLI_AS_NOBODY

from dualwatch import DualwatchError, Watcher, Writer
from dualwatch._cli import main
from dualwatch._report import Options, build_report
from dualwatch._rules import load_rules, parse_rules
from dualwatch._view import render_json, render_text
from dualwatch.readers import Series

REPO = Path(__file__).resolve().parents[1]
RULES = str(REPO / "examples" / "rules_esam.json")
NOW = 1_700_000_000.0


def run_of(points: dict[str, list[tuple[int, float, float]]], corrupt: int = 0) -> Any:
    """A run shaped like a RunReader, holding ``{tag: [(step, wall, value), ...]}``."""
    series = {}
    for tag, rows in points.items():
        s = series[tag] = Series()
        for row in rows:
            s.put(*row)
    return SimpleNamespace(run_dir="/logs/run1", format="jsonl", series=series, corrupt=corrupt, records=9)


def every_step(
    n: int, value: Any, wall0: float = NOW - 100, dt: float = 0.5
) -> list[tuple[int, float, float]]:
    """``n`` points, one per step, ``dt`` seconds apart; ``value`` is a number or a function of the step."""
    return [(s, wall0 + s * dt, value(s) if callable(value) else value) for s in range(n)]


def write_run(logdir: Path, run: str = "r", n: int = 30, age: float = 0.0, **last: float) -> Path:
    """A run written by dualwatch's Writer: ``n`` healthy steps, its last record ``age`` seconds old.

    ``last`` replaces values at the last step (tags with ``__`` for ``/``).
    """
    start = time.time() - age - n
    with Writer(logdir, run=run) as writer:
        for step in range(n):
            scalars = {
                "Loss/Train": 1.0 / (step + 1),
                "Learning_Rate": 0.01,
                "train/gradient/total_norm": 0.5,
                "train/gradient/health": 0.0,
                "train/gradient/backbone/share": 0.75,
                "train/gradient/head/share": 0.25,
            }
            if step == n - 1:
                scalars.update({tag.replace("__", "/"): value for tag, value in last.items()})
            writer.log(step, scalars, walltime=start + step)
    return logdir / run


def monitor(*args: str, **env: str) -> Result:
    return CliRunner(env=env).invoke(main, ["monitor", *args])


# -- the report, on hand-built series ----------------------------------------------------------


def test_report_fields_from_log_wall_times() -> None:
    run = run_of(
        {
            "Loss/Train": every_step(100, lambda s: 2.0 / (s + 1)),
            "train/loss": every_step(100, 9.0),  # a later candidate: not the main loss
            "lr": every_step(100, 0.001),
            "Model/Gradient_Norm": every_step(100, 0.3),
            "train/epoch": every_step(100, lambda s: s // 25),
            "train/gradient/clip/share": every_step(100, 0.2),
            "train/gradient/bifusion/share": every_step(100, 0.8),
        }
    )
    report = build_report(run, NOW, Options(total_steps=299, tags=("lr",)))
    assert (report.run, report.format, report.step, report.epoch) == ("run1", "jsonl", 99, 3)
    assert report.steps_per_s == pytest.approx(2.0)  # one step per 0.5 s of log time
    assert report.since_last_s == pytest.approx(100 - 99 * 0.5)
    assert report.eta_s == pytest.approx(200 / 2.0)
    loss = report.loss
    assert (loss.tag, loss.latest, loss.best, loss.best_step) == ("Loss/Train", 0.02, 0.02, 99)
    assert loss.direction == "falling" and loss.trend_percent < -40
    assert loss.smoothed == pytest.approx(0.02, rel=0.1)
    assert (report.lr.tag, report.grad_norm.tag, report.health) == ("lr", "Model/Gradient_Norm", "healthy")
    assert report.health_source == "Model/Gradient_Norm"  # no health tag: judged from the norm
    assert list(report.shares) == ["bifusion", "clip"]
    assert list(report.tags) == ["lr"]
    assert report.ok and not report.alerts and not report.warnings


def test_flat_loss_and_best_before_the_end() -> None:
    values = [3.0, 1.0] + [2.0] * 60
    run = run_of({"loss": [(s, NOW - 10 + s * 0.1, v) for s, v in enumerate(values)]})
    loss = build_report(run, NOW).loss
    assert (loss.best, loss.best_step, loss.direction) == (1.0, 1, "flat")


def test_nonfinite_values_alert_and_name_their_tags() -> None:
    run = run_of(
        {"Loss/Train": [*every_step(5, 1.0), (5, NOW - 1, math.nan)], "x/y": every_step(6, math.inf)}
    )
    report = build_report(run, NOW)
    (alert,) = report.alerts
    assert alert.kind == "nonfinite" and alert.tags == ("Loss/Train", "x/y")
    assert "Loss/Train" in alert.message and report.loss.best == 1.0
    data = json.loads(render_json(report))  # still valid JSON: non-finite numbers become strings
    assert data["loss"]["latest"] == "NaN" and data["ok"] is False


def test_health_tag_and_norm_verdicts() -> None:
    exploding = build_report(
        run_of(
            {"train/gradient/health": every_step(3, 1.0), "train/gradient/total_norm": every_step(3, 42.0)}
        ),
        NOW,
    )
    assert exploding.health == "exploding" and exploding.health_source == "train/gradient/health"
    assert exploding.alerts[0].kind == "exploding" and "42" in exploding.alerts[0].message
    assert "learning rate" in exploding.alerts[0].hint
    vanishing = build_report(run_of({"grad_norm": every_step(3, 1e-9)}), NOW)
    assert [a.kind for a in vanishing.alerts] == ["vanishing"]


def test_stall_is_measured_from_now() -> None:
    run = run_of({"loss": every_step(10, 1.0, wall0=NOW - 1000)})
    assert [a.kind for a in build_report(run, NOW).alerts] == ["stalled"]
    assert build_report(run, NOW, Options(stall=3600)).ok


def test_weights_not_updating_while_gradients_exist() -> None:
    run = run_of(
        {
            "m/fc.weight/weight_change": every_step(3, 0.0),
            "m/fc.weight/grad_norm": every_step(3, 0.2),
            "m/frozen.weight/weight_change": every_step(3, 0.0),
            "m/frozen.weight/grad_norm": every_step(3, 0.0),  # no gradient: not an alert
            "m/ok.weight/weight_change": every_step(3, 1e-3),
        }
    )
    (alert,) = build_report(run, NOW).alerts
    assert alert.kind == "not_updating" and alert.tags == ("m/fc.weight",)


def test_a_parameter_without_gradient_is_shown_as_information_with_advice_not_as_a_warning() -> None:
    run = run_of(
        {
            "m/frozen.weight/weight_change": every_step(3, 0.0),
            "m/frozen.weight/grad_norm": every_step(3, 0.0),
            "m/ok.weight/weight_change": every_step(3, 1e-3),
            "m/ok.weight/grad_norm": every_step(3, 0.2),
        }
    )
    lines = render_text(build_report(run, NOW)).splitlines()
    (info,) = [i for i, line in enumerate(lines) if line.startswith("info ")]
    assert "no gradient" in lines[info] and "m/frozen.weight" in lines[info], lines
    assert "used in the forward pass" in lines[info + 1], lines  # its advice, on the next line
    assert not any(line.startswith("warning") for line in lines), lines
    assert lines[-1] == "status   OK (1 info)", lines


def test_rules_alert_beyond_abnormal_bounds_and_warn_outside_normal() -> None:
    rules = load_rules(RULES)
    run = run_of(
        {
            "train/gradient/total_norm": every_step(3, 5.0),  # outside 0.1..2 but below 10: a warning
            "train/fusion/2d_weight_mean": every_step(3, 0.95),  # above 0.9: an alert
            "train/projection/valid_projection_rate": every_step(3, 0.85),  # normal
        },
        corrupt=2,
    )
    report = build_report(run, NOW, Options(rules=rules))
    assert [a.tags for a in report.alerts] == [("train/fusion/2d_weight_mean",)]
    assert "above 0.9" in report.alerts[0].message
    assert [w.kind for w in report.warnings] == ["rule", "corrupt"]
    assert "2 damaged records" in report.warnings[1].message
    only_normal = parse_rules({"acc*": {"normal": [0.5, 1]}})
    assert not build_report(run_of({"acc": every_step(3, 0.2)}), NOW, Options(rules=only_normal)).ok


@pytest.mark.parametrize(
    "data, why",
    [
        ([], "expected an object"),
        ({"a": {"normal": [2, 1]}}, "low 2 is above its high 1"),
        ({"a": {"normal": [1]}}, "normal must be [low, high]"),
        ({"a": {"above": "x"}}, "above must be a number"),
        ({"a": {"label": "only"}}, "give normal, above or below"),
        ({"a": {"upper": 1}}, "expected an object with"),
    ],
)
def test_bad_rules_say_why(data: Any, why: str) -> None:
    with pytest.raises(ValueError, match=why.replace("[", r"\[").replace("]", r"\]")):
        parse_rules(data)


def test_text_shows_every_part() -> None:
    run = run_of(
        {
            "Loss/Train": every_step(4, 1.0),
            "Loss/Validation": every_step(4, lambda s: 2.0 - s / 4),
            "train/gradient/health": every_step(4, 3.0),
        }
    )
    text = render_text(build_report(run, NOW))
    assert "loss     Loss/Train 1" in text and "health nan" in text
    assert "val loss Loss/Validation 1.25" in text and "best 1.25 @ 3" in text
    assert "ALERT    gradients nan" in text and text.endswith("status   1 alert")


# -- the command, on runs written by dualwatch ------------------------------------------------


def test_healthy_watched_run_exits_0(tmp_path: Path) -> None:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("backbone", torch.nn.Linear(4, 8))
    model.add_module("head", torch.nn.Linear(8, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    groups = {"backbone": "backbone", "head": "head"}
    with Watcher(model, every=2, groups=groups, logdir=tmp_path, run="torch", console=False) as w:
        for step in range(7):
            loss = model(torch.randn(16, 4)).pow(2).mean()
            loss.backward()
            w.step(step)
            w.log_training(step, loss=loss.item(), lr=0.05)
            optimizer.step()
            optimizer.zero_grad()
    result = monitor(str(tmp_path), "--once", "--json", "--total-steps", "100")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["run"], data["step"], data["health"], data["ok"]) == ("torch", 6, "healthy", True)
    assert data["loss"]["tag"] == "Loss/Train" and data["loss"]["best"] <= data["loss"]["latest"]
    assert data["lr"]["value"] == pytest.approx(0.05)
    assert data["grad_norm"]["tag"] == "train/gradient/total_norm"
    assert set(data["shares"]) == {"backbone", "head"} and sum(data["shares"].values()) == pytest.approx(1)
    assert data["steps_per_s"] > 0 and data["eta_s"] >= 0 and data["since_last_s"] < 60
    text = monitor(str(tmp_path), "--once").stdout
    assert "health healthy" in text and "shares   " in text and text.rstrip().endswith("status   OK")


def test_nan_run_exits_1_naming_the_tag(tmp_path: Path) -> None:
    write_run(tmp_path, Loss__Train=math.nan)
    result = monitor(str(tmp_path), "--once")
    assert result.exit_code == 1
    assert "ALERT    NaN/Inf in Loss/Train" in result.stdout


def test_stalled_run_exits_1(tmp_path: Path) -> None:
    write_run(tmp_path, age=600)
    result = monitor(str(tmp_path), "--once")
    assert result.exit_code == 1 and "stalled: no new record for 10m" in result.stdout
    assert monitor(str(tmp_path), "--once", "--stall", "3600").exit_code == 0


def test_exploding_run_exits_1(tmp_path: Path) -> None:
    write_run(tmp_path, train__gradient__health=1.0, train__gradient__total_norm=50.0)
    result = monitor(str(tmp_path), "--once")
    assert result.exit_code == 1 and "gradients exploding (global norm 50)" in result.stdout


def test_rule_violation_exits_1(tmp_path: Path) -> None:
    write_run(tmp_path, train__projection__valid_projection_rate=0.5)
    result = monitor(str(tmp_path), "--once", "--rules", RULES)
    assert result.exit_code == 1
    assert "train/projection/valid_projection_rate = 0.5 below 0.7" in result.stdout
    assert monitor(str(tmp_path), "--once").exit_code == 0  # without the rules: healthy


def test_json_run_and_logdir_spellings(tmp_path: Path) -> None:
    older = write_run(tmp_path, "older", n=5)
    for f in older.iterdir():
        os.utime(f, (time.time() - 100, time.time() - 100))
    write_run(tmp_path / "torch", "newer", n=7)
    many = [json.loads(line) for line in monitor(str(tmp_path), "--once", "--json").stdout.splitlines()]
    assert [(r["run"], r["step"]) for r in many] == [("older", 4), ("torch/newer", 6)]
    one = monitor("--log_dir", str(tmp_path / "torch"), "--once", "--json").stdout
    assert json.loads(one)["step"] == 6
    picked = monitor("--logdir", str(tmp_path), "--run", "older", "--once", "--json")
    assert json.loads(picked.stdout)["step"] == 4
    by_dir = monitor(str(tmp_path), "--run", "torch", "--once", "--json")
    assert json.loads(by_dir.stdout)["run"] == "torch/newer"
    from_env = monitor("--once", "--json", DUALWATCH_LOGDIR=str(tmp_path / "torch"))
    assert json.loads(from_env.stdout)["run"] == "newer"
    unknown = monitor(str(tmp_path), "--run", "nope", "--once")
    assert unknown.exit_code == 3 and unknown.stderr.startswith("dualwatch monitor: no run 'nope' under ")
    assert "torch/newer, older" in unknown.stderr


def one_line_error(result: Result, code: int = 2) -> str:
    assert result.exit_code == code and result.stdout == "", result.output
    (line,) = result.stderr.splitlines()
    return line


def test_no_logs_exit_3_and_bad_options_exit_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "runs"
    assert (
        one_line_error(monitor(str(missing), "--once"), 3)
        == f"dualwatch monitor: no such directory: {missing}"
    )
    missing.mkdir()
    assert "no logs under" in one_line_error(monitor(str(missing), "--once"), 3)
    (missing / "metrics.jsonl").touch()  # a run that has not logged yet
    assert "no scalar records yet in" in one_line_error(monitor(str(missing), "--once"), 3)
    a_file = write_run(tmp_path) / "metrics.jsonl"
    assert one_line_error(monitor(str(a_file), "--once")).endswith(f"not a directory: {a_file}")
    (tmp_path / "bad.json").write_text("{oops")
    assert "bad rules file" in one_line_error(
        monitor(str(tmp_path), "--once", "--rules", str(tmp_path / "bad.json"))
    )
    assert "two log directories" in one_line_error(monitor("a", "--logdir", "b", "--once"))


def test_unreadable_directory_exits_2_with_one_line() -> None:
    base = Path(tempfile.mkdtemp())  # not under pytest's 0700 tmp root: another user must reach it
    try:
        base.chmod(0o755)
        logdir = base / "runs"
        write_run(logdir)
        logdir.chmod(0o000)
        # root reads anything: the child imports what the command needs (the interpreter lives
        # under /root here), then drops to nobody before the command runs
        code = CLI_AS_NOBODY
        proc = subprocess.run(
            [sys.executable, "-c", code, "monitor", str(logdir), "--once"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr == f"dualwatch monitor: cannot read directory: {logdir} (Permission denied)\n"
    finally:
        (base / "runs").chmod(0o755)
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_polling_loop_waits_for_logs_and_stops_on_ctrl_c(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sleeps = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 1:
            write_run(tmp_path)  # the run starts while the monitor waits
        else:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    result = monitor(str(tmp_path), "--interval", "7")
    assert result.exit_code == 0 and sleeps == [7, 7]
    assert result.stdout.startswith(f"waiting: no logs under {tmp_path}")
    assert "status   OK" in result.stdout


def test_once_imports_no_framework_and_no_viewer_server(tmp_path: Path) -> None:
    write_run(tmp_path)
    code = (
        "import sys\nfrom dualwatch._cli import main\n"
        "try: main(['monitor', sys.argv[1], '--once', '--json'])\nexcept SystemExit as e: code = e.code\n"
        "heavy = ('torch', 'paddle', 'visualdl.server', 'tensorboard.program', 'tensorboard.backend')\n"
        "print(code, sorted(m for m in sys.modules if m.startswith(heavy)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    report, verdict = proc.stdout.splitlines()
    assert json.loads(report)["ok"] is True
    assert verdict == "0 []", proc.stderr
    help_code = code.replace("'monitor', sys.argv[1], '--once', '--json'", "'--help'")
    proc = subprocess.run([sys.executable, "-c", help_code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.splitlines()[-1] == "0 []", proc.stderr


def test_help_lists_the_options() -> None:
    out = monitor("--help").stdout
    for option in ("--logdir", "--log_dir", "--run", "--interval", "--once", "--json", "--tags", "--stall"):
        assert option in out
    assert "--total-steps" in out and "--rules" in out and "--monitor" in out and "--on-alert" in out


def test_yaml_rules_read_like_the_json_example(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text('"train/gradient/total_norm":\n  normal: [0.1, 2.0]\n  above: 10\n  label: norm\n')
    (rule,) = load_rules(str(path))
    assert (
        rule
        == parse_rules({"train/gradient/total_norm": {"normal": [0.1, 2.0], "above": 10, "label": "norm"}})[0]
    )
    path.write_text("a: [unclosed\n")
    with pytest.raises(DualwatchError, match=r"bad rules file .*rules\.yaml"):
        load_rules(str(path))


def test_best_loss_follows_appends_replacements_and_purges() -> None:
    s = Series()
    for step, value in [(0, 3.0), (1, float("nan")), (2, 1.0), (3, 2.0)]:
        s.put(step, 0.0, value)
    assert s.best() == (2, 1.0)
    s.put(4, 0.0, 0.5)
    assert s.best() == (4, 0.5)
    s.put(2, 0.0, 9.0)  # step 2 logged again after a resume
    s.drop_from(4)
    assert s.best() == (3, 2.0)
    assert Series().best() is None


def test_missing_rules_file_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DualwatchError, match="cannot read rules file"):
        load_rules(str(tmp_path / "none.json"))
