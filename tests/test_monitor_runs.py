"""``dualwatch monitor``: its exit statuses, many runs at once, ``--on-alert``, ``--monitor`` and
``--rules esam``, on runs written by dualwatch's ``Writer`` (nothing mocked)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from dualwatch import Writer
from dualwatch._alerts import AlertHook
from dualwatch._cli import main
from dualwatch._following import MANY_KEEP, Runs
from dualwatch._report import Options, aged, build_report
from dualwatch._rules import BUILT_IN, ESAM_RULES, load_rules
from dualwatch.readers import RunReader

REPO = Path(__file__).resolve().parents[1]


def loss_at(step: int) -> float:
    return 1.0 / (step + 1)


def write_run(logdir: Path, run: str, n: int = 30, formats: Any = None, **last: float) -> Path:
    """``n`` healthy steps ending now (``Loss/Train`` = :func:`loss_at`); ``last`` replaces values at
    the last step (``__`` for ``/`` in tags)."""
    start = time.time() - n
    options = {"formats": formats} if formats else {}
    with Writer(logdir, run=run, console=None, **options) as writer:
        for step in range(n):
            scalars = {
                "Loss/Train": loss_at(step),
                "Learning_Rate": 0.01,
                "train/gradient/total_norm": 0.5,
                "train/gradient/health": 0.0,
            }
            if step == n - 1:
                scalars.update({tag.replace("__", "/"): value for tag, value in last.items()})
            writer.log(step, scalars, walltime=start + step)
    return logdir / run


def monitor(*args: str) -> Result:
    return CliRunner().invoke(main, ["monitor", *args])


def reports_of(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.stdout.splitlines()]


# -- exit statuses --------------------------------------------------------------------------------


def test_exit_status_is_0_healthy_1_alert_2_usage_error_3_no_logs_or_no_readable_records(
    tmp_path: Path,
) -> None:
    healthy = write_run(tmp_path / "healthy", "r")
    alert = write_run(tmp_path / "alert", "r", Loss__Train=math.nan)
    empty = tmp_path / "empty"
    empty.mkdir()
    damaged = tmp_path / "damaged" / "r"
    damaged.mkdir(parents=True)
    (damaged / "metrics.jsonl").write_text('{"step": 1, "Loss/Train": 0.5\n{oops}\n')
    cases = {
        "healthy": ([str(healthy)], 0),
        "alert": ([str(alert)], 1),
        "usage": ([str(healthy), "--interval", "0"], 2),
        "not a directory": ([str(healthy / "metrics.jsonl")], 2),
        "no such directory": ([str(tmp_path / "missing")], 3),
        "no logs": ([str(empty)], 3),
        "no readable records": ([str(damaged.parent)], 3),
    }
    codes = {name: monitor(*args, "--once").exit_code for name, (args, _) in cases.items()}
    assert codes == {name: code for name, (_, code) in cases.items()}
    last = monitor(str(damaged.parent), "--once")
    assert (
        last.stderr == f"dualwatch monitor: no scalar records yet in {damaged} (2 damaged records skipped)\n"
    )
    plotted = CliRunner().invoke(main, ["plot", str(damaged.parent), "-o", str(tmp_path / "c.png")])
    assert plotted.exit_code == 3 and "no scalar records in" in plotted.stderr


def test_help_documents_the_exit_statuses() -> None:
    text = " ".join(monitor("--help").stdout.split())
    assert "0 healthy, 1 an alert, 2 usage error" in text and "3 no logs or no readable records" in text


# -- --monitor, as the VisualDL training guide spells "follow" ------------------------------------


def test_monitor_flag_of_the_visualdl_guide_follows_like_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_run(tmp_path, "run")
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(time, "sleep", sleep)
    result = monitor("--monitor", "--interval", "30", "--log_dir", str(tmp_path), "--json")
    assert result.exit_code == 0 and sleeps == [30, 30], result.output
    assert [r["step"] for r in reports_of(result)] == [29, 29]
    clash = monitor("--monitor", "--once", str(tmp_path))
    assert clash.exit_code == 2 and "--once and --monitor" in clash.stderr


# -- --rules esam ---------------------------------------------------------------------------------


def test_rules_esam_is_the_built_in_esam_table_and_equals_the_example_file(tmp_path: Path) -> None:
    assert BUILT_IN["esam"] == ESAM_RULES == load_rules(str(REPO / "examples" / "rules_esam.json"))
    write_run(tmp_path, "run", train__projection__valid_projection_rate=0.5)
    result = monitor(str(tmp_path), "--once", "--rules", "esam")
    assert result.exit_code == 1
    assert "train/projection/valid_projection_rate = 0.5 below 0.7" in result.stdout
    own = tmp_path / "mine.json"
    own.write_text('{"Learning_Rate": {"above": 0.001}}')
    assert "Learning_Rate = 0.01 above 0.001" in monitor(str(tmp_path), "--once", "--rules", str(own)).stdout
    unknown = monitor(str(tmp_path), "--once", "--rules", "esma")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("dualwatch monitor: cannot read rules file esma: No such file")
    assert unknown.stderr.rstrip().endswith("or name a built-in rule set: esam")
    assert "esam" in " ".join(monitor("--help").stdout.split())


# -- many runs ------------------------------------------------------------------------------------


def test_many_runs_show_one_line_each_alerts_first_and_once_exits_1(tmp_path: Path) -> None:
    write_run(tmp_path / "sweep", "lr_a", n=20)
    write_run(tmp_path / "sweep", "lr_b", n=25, Loss__Train=math.inf)
    write_run(tmp_path, "other", n=12)
    result = monitor(str(tmp_path), "--once")
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "status", "step", "loss", "last", "alerts"]
    assert lines[1].split()[:4] == ["sweep/lr_b", "1", "alert", "24"]
    assert lines[1].endswith("NaN/Inf in Loss/Train")
    assert [line.split()[:4] for line in lines[2:4]] == [
        ["other", "OK", "11", f"{loss_at(11):.4g}"],
        ["sweep/lr_a", "OK", "19", f"{loss_at(19):.4g}"],
    ]
    assert lines[4] == "3 runs, 1 with alerts"
    data = reports_of(monitor(str(tmp_path), "--once", "--json"))
    assert [(r["run"], r["ok"], r["step"]) for r in data] == [
        ("sweep/lr_b", False, 24),
        ("other", True, 11),
        ("sweep/lr_a", True, 19),
    ]
    assert data[1]["loss"]["latest"] == pytest.approx(loss_at(11), rel=1e-6)
    healthy = monitor(str(tmp_path / "sweep"), "--run", "lr_a", "--once")  # --run: the full report
    assert healthy.exit_code == 0 and healthy.stdout.startswith("run      lr_a")


def test_with_many_runs_a_log_file_this_user_may_not_read_is_an_alert_of_its_run_only() -> None:
    base = Path(tempfile.mkdtemp())  # not under pytest's 0700 tmp root: nobody must reach it
    try:
        base.chmod(0o755)
        good = write_run(base / "logs", "good", formats=["jsonl"])
        bad = write_run(base / "logs", "bad", formats=["jsonl"])
        for directory in (base / "logs", good, bad):
            directory.chmod(0o755)
        (good / "metrics.jsonl").chmod(0o644)
        (bad / "metrics.jsonl").chmod(0o000)
        # root reads anything: the child imports what the command needs, then drops to nobody
        code = (
            "import os\n"
            "import dualwatch._cli, dualwatch._report, dualwatch._view, dualwatch.readers\n"
            "import dualwatch.readers._discover as d; d._formats()\n"
            "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
            "dualwatch._cli.main()"
        )
        proc = subprocess.run(
            [sys.executable, "-c", code, "monitor", str(base / "logs"), "--once", "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 1 and proc.stderr == "", proc.stderr
        first, second = map(json.loads, proc.stdout.splitlines())
        assert (first["run"], [a["kind"] for a in first["alerts"]]) == ("bad", ["unreadable"])
        why = f"cannot read log file: {bad / 'metrics.jsonl'} (Permission denied); its records are missing"
        assert first["alerts"][0]["message"] == why
        assert (second["run"], second["ok"], second["step"]) == ("good", True, 29)
    finally:
        subprocess.run(["rm", "-rf", str(base)], check=True)


def test_many_runs_keep_one_reader_each_and_read_only_what_was_appended(tmp_path: Path) -> None:
    runs = [str(write_run(tmp_path, f"r{i}", n=10, formats=["jsonl"])) for i in range(3)]
    many = Runs(str(tmp_path), Options())
    first = many.poll(runs)
    kept = dict(many.readers)
    assert [r.step for r in first] == [9, 9, 9]
    with open(os.path.join(runs[1], "metrics.jsonl"), "a") as f:
        f.write(json.dumps({"step": 10, "wall_time": time.time(), "Loss/Train": 0.125}) + "\n")
    second = many.poll(runs)
    assert all(many.readers[run] is kept[run] for run in runs)
    assert [r.step for r in second] == [9, 10, 9] and second[1].loss.latest == 0.125
    assert second[1].records == first[1].records + 1  # the one point appended, nothing re-read
    assert [many.readers[run].changed for run in runs] == [False, True, False]
    offsets = {run: many.readers[run]._files["metrics.jsonl"].offset for run in runs}
    assert offsets == {run: os.path.getsize(os.path.join(run, "metrics.jsonl")) for run in runs}
    many.poll(runs[:2])  # a run gone: its reader goes
    assert set(many.readers) == set(runs[:2])


def test_a_report_aged_without_new_records_equals_the_one_built_then(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run", n=10, Loss__Train=math.nan)
    reader = RunReader(str(run))
    reader.poll()
    now = time.time()
    options = Options(stall=60.0)
    report = build_report(reader, now, options, "run")
    assert [a.kind for a in report.alerts] == ["nonfinite"]
    for later in (30.0, 61.0, 3600.0):  # before the stall limit, just past it, long past it
        assert aged(report, later, options) == build_report(reader, now + later, options, "run")
    assert [a.kind for a in aged(report, 61.0, options).alerts] == ["nonfinite", "stalled"]


@pytest.mark.parametrize("fmt", ["tensorboard", "visualdl", "jsonl"])
def test_a_run_read_from_its_tail_has_the_written_latest_values_and_no_damage(
    tmp_path: Path, fmt: str
) -> None:
    n = 3000
    run = write_run(tmp_path, "run", n=n, formats=[fmt])
    (path,) = (p for p in run.iterdir() if not p.name.startswith("."))
    reader = RunReader(str(run), tail=8192, keep=MANY_KEEP)
    reader.poll()
    loss = reader.series["Loss/Train"]
    assert reader.format == fmt and reader.corrupt == 0
    assert 0 < reader.records < n * 4 < path.stat().st_size  # the tail only
    assert loss.steps == list(range(n - len(loss.steps), n))
    assert loss.values == pytest.approx([loss_at(s) for s in loss.steps], rel=1e-6)
    whole = RunReader(str(run))
    whole.poll()
    assert len(whole.series["Loss/Train"]) == n
    report = build_report(reader, time.time(), Options(), "run")
    assert report.step == n - 1 and report.ok


def test_a_reader_that_keeps_k_points_holds_at_most_2k_and_the_latest(tmp_path: Path) -> None:
    run = write_run(tmp_path, "run", n=500)
    reader = RunReader(str(run), keep=40)
    reader.poll()
    loss = reader.series["Loss/Train"]
    assert 40 <= len(loss) <= 80 and loss.steps[-1] == 499
    assert loss.values[-1] == pytest.approx(loss_at(499), rel=1e-6)


# -- --on-alert -----------------------------------------------------------------------------------

#: a command that records what it was given: stdin, and the env vars, one JSON line each
RECORD = (
    f'{sys.executable} -c "import json, os, sys; '
    "env = {k: v for k, v in os.environ.items() if k.startswith('DUALWATCH_ALERT_')}; "
    "open(sys.argv[1], 'a').write(json.dumps([json.loads(sys.stdin.read()), env]) + chr(10))\" "
)


def test_on_alert_runs_once_per_newly_raised_alert_with_json_on_stdin_and_env(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logdir, out = tmp_path / "logs", tmp_path / "alerts.jsonl"
    run = write_run(logdir, "run", n=10, formats=["jsonl"], Loss__Train=math.nan)
    path = run / "metrics.jsonl"
    polls: list[float] = []
    real_sleep = time.sleep

    def sleep(seconds: float) -> None:  # poll 2: still NaN; 3: healthy; 4: NaN again
        if seconds != 7:  # subprocess's own waits on the command
            return real_sleep(seconds)
        polls.append(seconds)
        value = {2: math.nan, 3: 0.5, 4: math.inf}.get(len(polls) + 1)
        if value is None:
            raise KeyboardInterrupt
        with open(path, "a") as f:
            line = {"step": 9 + len(polls), "wall_time": time.time(), "Loss/Train": value}
            f.write(json.dumps(line).replace("NaN", '"NaN"').replace("Infinity", '"Infinity"') + "\n")

    monkeypatch.setattr(time, "sleep", sleep)
    result = monitor(str(logdir), "--interval", "7", "--json", "--on-alert", RECORD + str(out))
    assert result.exit_code == 0, result.output
    assert [r["ok"] for r in reports_of(result)] == [False, False, True, False]
    sent = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(data["kind"], data["step"]) for data, _ in sent] == [("nonfinite", 9), ("nonfinite", 12)]
    data, env = sent[0]
    assert data["run"] == "run" and data["run_dir"] == str(run) and data["tags"] == ["Loss/Train"]
    assert data["message"] == "NaN/Inf in Loss/Train"
    assert env["DUALWATCH_ALERT_KIND"] == "nonfinite" and env["DUALWATCH_ALERT_RUN"] == "run"
    assert env["DUALWATCH_ALERT_STEP"] == "9" and env["DUALWATCH_ALERT_MESSAGE"] == data["message"]
    assert env["DUALWATCH_ALERT_TAGS"] == "Loss/Train"


def test_on_alert_with_once_sends_every_alert_of_every_run(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    write_run(tmp_path / "logs", "a", Loss__Train=math.nan)
    write_run(tmp_path / "logs", "b", train__gradient__health=1.0, train__gradient__total_norm=50.0)
    write_run(tmp_path / "logs", "c")
    result = monitor(str(tmp_path / "logs"), "--once", "--on-alert", RECORD + str(out))
    assert result.exit_code == 1
    sent = sorted((d["run"], d["kind"]) for d, _ in map(json.loads, out.read_text().splitlines()))
    assert sent == [("a", "nonfinite"), ("b", "exploding")]


def test_a_failing_or_hanging_on_alert_command_costs_one_warning_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_run(tmp_path, "a", Loss__Train=math.nan)
    reader = RunReader(str(tmp_path / "a"))
    reader.poll()
    report = build_report(reader, time.time(), Options(), "a")
    AlertHook("exit 3").check([report])
    AlertHook(f"{sys.executable} -c 'import time; time.sleep(30)'", timeout=0.5).check([report])
    AlertHook("/no/such/command").check([report])
    lines = capsys.readouterr().err.splitlines()
    prefix = "dualwatch monitor: warning: --on-alert command failed on the nonfinite alert of a: "
    assert lines[0] == prefix + "exit status 3"
    assert lines[1] == prefix + "still running after 0.5s, killed"
    assert lines[2] == prefix + "exit status 127"
    assert len(lines) == 3
