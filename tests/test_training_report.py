"""The ESAM BiFusion training guide's framed report (``Watcher.log_stats`` / ``Watcher.report``).

Layout as the guide prints it, every number recomputed with numpy or taken from the framework,
tags read back from JSONL, VisualDL and TensorBoard, torch and Paddle alike.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import _import, _tb_plugins, build_model, grad_of, params_of, read_metrics, set_grads

import dualwatch
from dualwatch._rules import ESAM_RULES, load_rules, parse_rules
from dualwatch._training_report import render

ROOT = Path(__file__).resolve().parents[1]
RULE = "=" * 80

# The guide's example block: its losses (total_loss is the sum of the others) and stat groups.
GUIDE_LOSSES = {
    "total_loss": 2.456789,
    "semantic_loss": 0.892341,
    "instance_loss": 1.234567,
    "clip_cons_loss": 0.123456,
    "spatial_cons_loss": 0.206425,
}
FUSION = {"2d_weight_mean": 0.6234, "3d_weight_mean": 0.3766, "fusion_ratio": 1.6543, "gate_entropy": 0.8921}
PROJECTION = {
    "valid_projection_rate": 0.853,
    "total_points": 12546,
    "valid_points": 10704,
    "invalid_points": 1842,
}
# Parameters in the guide's three gradient groups; the gradients give a healthy total norm.
WEIGHTS = {
    "clip.proj.weight": np.ones((2, 3)),
    "bifusion.gate.weight": np.ones(4),
    "backbone.conv.weight": np.ones((3, 3)),
}
GRADS = {
    "clip.proj.weight": np.full((2, 3), 0.01),
    "bifusion.gate.weight": np.array([0.05, -0.04, 0.03, 0.02]),
    "backbone.conv.weight": np.linspace(-0.04, 0.06, 9).reshape(3, 3),
}
GROUPS = {"clip": "clip", "bifusion": "bifusion", "backbone": "backbone"}


def _watched(
    framework: str, grads: dict[str, np.ndarray] = GRADS, **kw: Any
) -> tuple[Any, dualwatch.Watcher]:
    model = build_model(framework, WEIGHTS)
    set_grads(framework, model, grads)
    return model, dualwatch.Watcher(model, **{"logdir": None, "console": False, "groups": GROUPS, **kw})


def _tensor(framework: str, value: Any, dtype: str = "float32") -> Any:
    """A one-element tensor of ``framework`` (0-d in torch, shape [1] in paddle, as each gives a mean)."""
    fw = _import(framework)
    if framework == "torch":
        return fw.tensor(value, dtype=getattr(fw, dtype))
    return fw.to_tensor([value], dtype=dtype)


def _dualwatch_blocks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "dualwatch"]


# -- the framed layout -----------------------------------------------------------------------------


def test_the_report_has_the_guides_framed_layout_with_numbers_from_numpy(framework: str) -> None:
    model, w = _watched(framework)
    w.check(100)
    w.log_stats(100, "fusion", FUSION)
    w.log_stats(100, "projection", PROJECTION)
    text = w.report(100, GUIDE_LOSSES)

    grads = {name: grad_of(framework, p) for name, p in params_of(framework, model).items()}
    group_sq = {g: sum((v**2).sum() for n, v in grads.items() if n.startswith(g)) for g in GROUPS}
    total_sq = sum(group_sq.values())
    total = np.float64(GUIDE_LOSSES["total_loss"])
    expected = [
        RULE,
        "📊 Enhanced Training Stats - Iter 100",
        RULE,
        "🔥 Detailed Loss Breakdown:",
        "  total_loss          : 2.456789",
        *(
            f"  {n:<20}: {v:.6f} ({np.float64(v) / total:.1%})"
            for n, v in GUIDE_LOSSES.items()
            if n != "total_loss"
        ),
        "🎯 fusion:",
        "  2d_weight_mean      : 0.6234",
        "  3d_weight_mean      : 0.3766",
        "  fusion_ratio        : 1.6543",
        "  gate_entropy        : 0.8921",
        "📍 projection:",
        "  valid_projection_rate: 85.3%",
        "  total_points        : 12546",
        "  valid_points        : 10704",
        "  invalid_points      : 1842",
        "🔥 Gradient Health:",
        "  status: ✅ healthy",
        *(f"  {g}: {np.sqrt(group_sq[g]):.4f} ({group_sq[g] / total_sq:.1%})" for g in GROUPS),
        f"  total grad norm: {np.sqrt(total_sq):.4f}",
        f"  max grad: {max(np.abs(v).max() for v in grads.values()):.4f}",
        "📏 Normal Ranges:",
        "  all 4 checked values within range",  # total norm, projection rate, 2D and 3D weight means
        RULE,
    ]
    assert text.split("\n") == expected
    # the guide's own shares of its example losses
    assert [line[-7:] for line in expected[5:9]] == ["(36.3%)", "(50.3%)", " (5.0%)", " (8.4%)"]


@pytest.mark.parametrize(
    "losses",
    [
        {"loss": 2.0, "loss_cls": 1.5},  # a named total: a single part is a share of it
        {"loss_cls": 0.3, "loss_box": 0.1, "loss_mask": 0.05},  # no total: shares of their sum
        {"total_loss": 1.0, "a": 0.25, "b": 0.5},  # parts need not add up to the total
    ],
)
def test_loss_shares_are_of_the_named_total_or_else_of_the_sum(losses: dict[str, float]) -> None:
    text = render(0, losses, {}, None, [])
    named = next((n for n in ("loss", "total_loss") if n in losses), None)
    total = np.float64(losses[named]) if named else np.sum(np.array(list(losses.values()), dtype=np.float64))
    for name, value in losses.items():
        (line,) = [line for line in text.split("\n") if line.startswith(f"  {name} ")]
        share = re.search(r"\(([\d.]+)%\)$", line)
        if name == named:
            assert share is None and line == f"  {name:<20}: {value:.6f}"
        else:
            assert float(share.group(1)) == pytest.approx(100 * np.float64(value) / total, abs=0.05)


@pytest.mark.parametrize(
    "losses", [{"loss": 0.5}, {"loss_a": 0.0, "loss_b": 0.0}, {"loss": 0.0, "loss_a": 0.0}]
)
def test_a_lone_loss_or_a_zero_total_gets_no_share(losses: dict[str, float]) -> None:
    assert "%" not in render(0, losses, {}, None, [])


def test_rates_in_0_1_are_percentages_and_integer_counts_stay_integers(framework: str) -> None:
    _, w = _watched(framework)
    stats = {
        "valid_projection_rate": _tensor(framework, 0.853),
        "hit_share": 0.5,
        "miss_fraction": 0.0,
        "error_rate": 1.7,  # not a fraction: shown as the number it is
        "total_points": _tensor(framework, 12546, "int64"),
        "valid_points": np.int64(10704),
        "ratio": 1.6543,
    }
    w.log_stats(3, "projection", stats)
    lines = w.report(3).split("\n")
    start = lines.index("📍 projection:")
    assert lines[start + 1 : start + 8] == [
        "  valid_projection_rate: 85.3%",
        "  hit_share           : 50.0%",
        "  miss_fraction       : 0.0%",
        "  error_rate          : 1.7000",
        "  total_points        : 12546",
        "  valid_points        : 10704",
        "  ratio               : 1.6543",
    ]


# -- normal ranges -----------------------------------------------------------------------------------


def test_values_out_of_the_guides_ranges_and_a_users_rule_are_flagged(framework: str) -> None:
    _, w = _watched(framework)
    w.check(7)
    w.log_stats(7, "fusion", {"2d_weight_mean": 0.95, "3d_weight_mean": 0.15})
    w.log_stats(7, "projection", {"valid_projection_rate": 0.65})
    user = parse_rules({"train/detailed_loss/clip_*": {"normal": [0.0, 0.1], "label": "CLIP term"}})
    text = w.report(7, {"loss": 1.0, "clip_cons_loss": 0.3}, rules=ESAM_RULES + user)
    ranges = text.split("\n")[text.split("\n").index("📏 Normal Ranges:") + 1 : -1]
    label = {rule.glob: rule.label for rule in ESAM_RULES}
    assert ranges == [
        "  🚨 train/projection/valid_projection_rate = 0.65 below 0.7 "
        f"({label['train/projection/valid_projection_rate']})",
        f"  🚨 train/fusion/2d_weight_mean = 0.95 above 0.9 ({label['train/fusion/2d_weight_mean']})",
        "  ⚠️ train/fusion/3d_weight_mean = 0.15 outside normal 0.2..0.5 "
        f"({label['train/fusion/3d_weight_mean']})",
        "  🚨 train/detailed_loss/clip_cons_loss = 0.3 outside normal 0..0.1 (CLIP term)",
    ]
    assert "📏 Normal Ranges:" not in w.report(7, rules=())  # no rules: no section
    assert w.report(7, rules=user).split("\n")[-2] == "  no value has a rule"


def test_an_exploding_gradient_is_one_alert_and_the_status_says_so(framework: str) -> None:
    big = {name: np.full(a.shape, 10.0) for name, a in WEIGHTS.items()}
    _, w = _watched(framework, grads=big)
    with pytest.warns(RuntimeWarning, match="exploding"):
        w.check(2)
    lines = w.report(2).split("\n")
    norm = np.sqrt(sum(a.size * 100.0 for a in WEIGHTS.values()))
    assert "  status: 💥 exploding" in lines
    alerts = [line for line in lines if "🚨" in line or "⚠️" in line]
    # The guide's table judges the total norm under both its names; the report says it once.
    assert alerts == [f"  🚨 train/gradient/total_norm = {norm:.4g} above 10 ({ESAM_RULES[0].label})"]


def test_the_guides_rules_file_is_exactly_the_built_in_table() -> None:
    assert load_rules(str(ROOT / "examples" / "rules_esam.json")) == ESAM_RULES


# -- tags written, read back -----------------------------------------------------------------------


def _scalars_of_every_format(run_dir: str) -> dict[str, dict[str, dict[int, float]]]:
    """``{format: {tag: {step: value}}}`` from metrics.jsonl, VisualDL's LogReader and TensorBoard's
    plugin EventAccumulator (the one its server runs)."""
    from tensorboard.util import tensor_util
    from visualdl import LogReader

    jsonl: dict[str, dict[int, float]] = {}
    for row in read_metrics(run_dir):
        for tag, value in row.items():
            if tag not in ("step", "wall_time"):
                jsonl.setdefault(tag, {})[row["step"]] = value
    (vdl_file,) = glob.glob(os.path.join(run_dir, "vdlrecords*"))
    vdl = LogReader(file_path=vdl_file)
    visualdl = {tag: {r.id: r.value for r in vdl.get_data("scalar", tag)} for tag in vdl.get_tags()["scalar"]}
    tb = _tb_plugins(run_dir)
    tensorboard = {
        tag: {e.step: float(tensor_util.make_ndarray(e.tensor_proto)) for e in tb.Tensors(tag)}
        for tag in tb.Tags()["tensors"]
        if tb.SummaryMetadata(tag).plugin_data.plugin_name == "scalars"
    }
    return {"jsonl": jsonl, "visualdl": visualdl, "tensorboard": tensorboard}


def test_stat_groups_and_losses_are_written_to_every_format(framework: str, tmp_path: Path) -> None:
    _, w = _watched(framework, logdir=tmp_path, run="r")
    written: dict[str, dict[int, float]] = {}
    for step, scale in ((3, 1.0), (7, 0.5)):
        fusion = {"2d_weight_mean": 0.6 * scale, "fused_points": int(1000 * scale)}
        w.log_stats(step, "fusion", {**fusion, "2d_weight_mean": _tensor(framework, 0.6 * scale)})
        losses = {"loss": 2.0 * scale, "loss_cls": 1.5 * scale}
        w.report(step, {"loss": _tensor(framework, 2.0 * scale), "loss_cls": 1.5 * scale})
        for name, value in fusion.items():
            written.setdefault(f"train/fusion/{name}", {})[step] = value
        for name, value in losses.items():
            written.setdefault(f"train/detailed_loss/{name}", {})[step] = value
        written.setdefault("0_overview/loss", {})[step] = losses["loss"]  # where both viewers open
    w.close()
    for fmt, scalars in _scalars_of_every_format(str(tmp_path / "r")).items():
        assert scalars.keys() == written.keys(), fmt
        for tag, points in written.items():
            assert scalars[tag].keys() == points.keys(), (fmt, tag)
            for step, value in points.items():
                assert scalars[tag][step] == pytest.approx(value, rel=1e-6), (fmt, tag, step)


# -- the model's dualwatch_stats -----------------------------------------------------------------


def _wrap(framework: str, model: Any, wrapper: str) -> Any:
    fw = _import(framework)
    if wrapper == "none":
        return model
    if framework == "torch":
        return fw.nn.DataParallel(model)
    with warnings.catch_warnings():  # "returns to single-card operation": one process, as wanted
        warnings.simplefilter("ignore", UserWarning)
        return fw.DataParallel(model)


@pytest.mark.parametrize("wrapper", ["none", "DataParallel"])
def test_the_models_dualwatch_stats_are_reported_when_log_stats_was_not_called(
    framework: str, wrapper: str, tmp_path: Path
) -> None:
    model = build_model(framework, WEIGHTS)
    w = dualwatch.Watcher(_wrap(framework, model, wrapper), logdir=tmp_path, run="r", console=False)
    gate = np.float32(0.62)
    model.dualwatch_stats = {
        "fusion": {"gate_mean": _tensor(framework, float(gate)), "gate_max": 0.9},
        "projection": {"total_points": 12546},
    }
    text = w.report(5, {"loss": 1.0})
    assert "🎯 fusion:\n  gate_mean           : 0.6200\n  gate_max            : 0.9000\n" in text
    assert "📍 projection:\n  total_points        : 12546\n" in text
    w.close()
    row = {k: v for r in read_metrics(tmp_path / "r") for k, v in r.items()}
    assert row["train/fusion/gate_mean"] == pytest.approx(float(gate), rel=1e-7)
    assert (row["train/fusion/gate_max"], row["train/projection/total_points"]) == (0.9, 12546)


def test_log_stats_at_the_step_takes_the_place_of_the_attribute(framework: str) -> None:
    model, w = _watched(framework)
    model.dualwatch_stats = {"fusion": {"gate_mean": 0.5}, "projection": {"total_points": 10}}
    w.log_stats(1, "fusion", {"gate_mean": 0.7})  # an earlier step: the attribute is read at step 2
    assert "gate_mean           : 0.5000" in w.report(2) and "total_points" in w.report(2)
    w.log_stats(3, "fusion", {"gate_mean": 0.7})
    text = w.report(3)
    assert "gate_mean           : 0.7000" in text and "projection" not in text


def test_a_malformed_dualwatch_stats_group_warns_and_the_others_are_reported(framework: str) -> None:
    model, w = _watched(framework)
    model.dualwatch_stats = {
        "fusion": {"gate": _import(framework).ones([3])},
        "projection": {"total_points": 10},
    }
    with pytest.warns(
        RuntimeWarning, match=r"stat fusion/gate must be a number or a one-element tensor.*\[3\]"
    ):
        text = w.report(1)
    assert "fusion" not in text and "  total_points        : 10" in text
    model.dualwatch_stats = [0.5]
    with pytest.warns(RuntimeWarning, match="dualwatch_stats must map group names"):
        w.report(2)


# -- bad input -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("group", "values", "error", "match"),
    [
        ("fusion/gate", {"mean": 0.5}, ValueError, r"'fusion/gate' must be a non-empty string without '/'"),
        ("", {"mean": 0.5}, ValueError, "must be a non-empty string"),
        ("fusion", 0.5, TypeError, r"takes a mapping of name to number, got float: pass e.g."),
        ("fusion", {"mean": "high"}, TypeError, r"stat fusion/mean must be a number .* got str 'high'"),
    ],
)
def test_a_bad_stat_group_raises_a_clear_error(
    framework: str, group: Any, values: Any, error: type[Exception], match: str
) -> None:
    _, w = _watched(framework)
    with pytest.raises(error, match=match):
        w.log_stats(0, group, values)


# -- console --------------------------------------------------------------------------------------


def test_console_true_logs_the_report_on_the_dualwatch_logger_and_false_logs_nothing(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dualwatch")
    _, quiet = _watched(framework, console=False)
    quiet.report(4, {"loss": 1.0})
    assert _dualwatch_blocks(caplog) == []
    _, loud = _watched(framework, console=True)
    text = loud.report(4, {"loss": 1.0})
    assert _dualwatch_blocks(caplog) == [text]
    caught: list[str] = []
    assert loud.report(5, {"loss": 1.0}, log=caught.append) == caught[0]
    assert len(_dualwatch_blocks(caplog)) == 1  # log= took it instead of the logger


# -- parity and a plain loop ---------------------------------------------------------------------


def test_torch_and_paddle_give_the_same_report_and_tags_for_the_same_numbers(tmp_path: Path) -> None:
    texts, rows = {}, {}
    for framework in ("torch", "paddle"):
        _, w = _watched(framework, logdir=tmp_path, run=framework)
        w.check(10)
        w.log_stats(10, "fusion", {"2d_weight_mean": _tensor(framework, 0.62), "count": 5})
        texts[framework] = w.report(10, {"loss": _tensor(framework, 1.25), "loss_cls": 1.0})
        w.close()
        rows[framework] = {k: v for row in read_metrics(tmp_path / framework) for k, v in row.items()}
        del rows[framework]["wall_time"]
    assert texts["torch"] == texts["paddle"]
    assert rows["torch"].keys() == rows["paddle"].keys()
    for tag, value in rows["torch"].items():
        assert rows["paddle"][tag] == pytest.approx(value, rel=1e-5, abs=1e-12), tag


STEPS, EVERY = 4, 2
X = np.random.default_rng(1).normal(size=(6, 4)).astype("float32")
Y = X @ np.array([[0.5], [-1.0], [0.25], [1.0]], dtype="float32")


def _gated(framework: str) -> Any:
    """backbone -> sigmoid gate -> head, the same weights in both frameworks; ``forward`` sets
    ``dualwatch_stats`` as an ESAM-style model does."""
    fw = _import(framework)
    rng = np.random.default_rng(0)
    shapes = {"backbone": (4, 8), "gate": (8, 8), "head": (8, 1)}  # (in, out)
    arrays = {n: (rng.normal(scale=0.5, size=s), rng.normal(scale=0.1, size=s[1])) for n, s in shapes.items()}
    base = fw.nn.Module if framework == "torch" else fw.nn.Layer

    class Gated(base):
        def __init__(self) -> None:
            super().__init__()
            for name, (weight, bias) in arrays.items():
                layer = fw.nn.Linear(*weight.shape)
                if framework == "torch":
                    with fw.no_grad():
                        layer.weight.copy_(fw.tensor(weight.T, dtype=fw.float32))
                        layer.bias.copy_(fw.tensor(bias, dtype=fw.float32))
                else:
                    layer.weight.set_value(weight.astype("float32"))
                    layer.bias.set_value(bias.astype("float32"))
                setattr(self, name, layer)

        def forward(self, x: Any) -> Any:
            features = fw.tanh(self.backbone(x))
            gate = fw.nn.functional.sigmoid(self.gate(features))
            opened = (gate > 0.5).float() if framework == "torch" else (gate > 0.5).astype("float32")
            self.dualwatch_stats = {
                "fusion": {"2d_weight_mean": gate.mean(), "3d_weight_mean": 1 - gate.mean()},
                "projection": {"valid_projection_rate": opened.mean(), "total_points": int(gate.numel())},
            }
            return self.head(features * gate)

    return Gated()


def _plain_loop(framework: str, tmp_path: Path) -> tuple[list[dict[str, Any]], list[str], dualwatch.Watcher]:
    """The README's plain loop: ``w.step`` after backward, ``w.report`` with the named losses."""
    fw = _import(framework)
    model = _gated(framework)
    if framework == "torch":
        optimizer = fw.optim.SGD(model.parameters(), lr=0.1)
        x, y, clear = fw.tensor(X), fw.tensor(Y), optimizer.zero_grad
    else:
        optimizer = fw.optimizer.SGD(learning_rate=0.1, parameters=model.parameters())
        x, y, clear = fw.to_tensor(X), fw.to_tensor(Y), optimizer.clear_grad
    seen, texts = [], []
    groups = {"backbone": "backbone", "gate": "gate", "head": "head"}
    with dualwatch.Watcher(model, every=EVERY, groups=groups, logdir=tmp_path, run=framework) as w:
        for step in range(STEPS):
            pred = model(x)
            loss_mse = ((pred - y) ** 2).mean()
            loss_l1 = 0.1 * (pred - y).abs().mean()
            loss = loss_mse + loss_l1
            loss.backward()
            w.step(step)
            seen.append(
                {
                    "losses": {"loss": loss.item(), "loss_mse": loss_mse.item(), "loss_l1": loss_l1.item()},
                    "stats": {
                        g: {n: v.item() if hasattr(v, "item") else v for n, v in s.items()}
                        for g, s in model.dualwatch_stats.items()
                    },
                    "grads": {n: grad_of(framework, p) for n, p in model.named_parameters()},
                }
            )
            texts.append(w.report(step, {"loss": loss, "loss_mse": loss_mse, "loss_l1": loss_l1}))
            optimizer.step()
            clear()
    return seen, texts, w


def test_a_plain_loop_logs_the_report_with_the_models_stat_groups(
    framework: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="dualwatch")
    seen, texts, w = _plain_loop(framework, tmp_path)
    assert [t for t in _dualwatch_blocks(caplog) if "Enhanced Training Stats" in t] == texts
    for step, (record, text) in enumerate(zip(seen, texts)):
        losses = record["losses"]
        assert f"📊 Enhanced Training Stats - Iter {step}" in text
        share = np.float64(losses["loss_mse"]) / np.float64(losses["loss"])
        assert f"  loss_mse            : {losses['loss_mse']:.6f} ({share:.1%})" in text
        assert f"  2d_weight_mean      : {record['stats']['fusion']['2d_weight_mean']:.4f}" in text
        assert (
            f"  valid_projection_rate: {record['stats']['projection']['valid_projection_rate']:.1%}" in text
        )
        assert "  total_points        : 48" in text
        if step % EVERY:
            assert "  (no gradient check at this iteration)" in text
        else:
            grads = record["grads"]
            sq = {
                g: sum((v**2).sum() for n, v in grads.items() if n.startswith(g))
                for g in ("backbone", "gate")
            }
            total = sum((v**2).sum() for v in grads.values())
            for group, group_sq in sq.items():
                assert f"  {group}: {np.sqrt(group_sq):.4f} ({group_sq / total:.1%})" in text
    rows = read_metrics(w.run_dir)
    by_step: dict[int, dict[str, float]] = {}
    for row in rows:
        by_step.setdefault(row["step"], {}).update(row)
    for step, record in enumerate(seen):
        expected = {f"train/detailed_loss/{n}": v for n, v in record["losses"].items()}
        expected.update({f"train/{g}/{n}": v for g, s in record["stats"].items() for n, v in s.items()})
        for tag, value in expected.items():
            assert by_step[step][tag] == pytest.approx(value, rel=1e-6), (step, tag)


def test_a_plain_loop_gives_the_same_tags_and_values_in_torch_and_paddle(tmp_path: Path) -> None:
    runs = {}
    for framework in ("torch", "paddle"):
        _, _, w = _plain_loop(framework, tmp_path)
        runs[framework] = {
            (r["step"], tag): v for r in read_metrics(w.run_dir) for tag, v in r.items() if tag != "wall_time"
        }
    assert runs["torch"].keys() == runs["paddle"].keys()
    assert any(tag.startswith("train/fusion/") for _, tag in runs["torch"])
    for key, value in runs["torch"].items():
        assert runs["paddle"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key


def test_the_plain_loop_example_logs_the_report_and_writes_the_same_tags_in_both_frameworks(
    tmp_path: Path,
) -> None:
    tags = {}
    for backend in ("torch", "paddle"):
        args = ["--backend", backend, "--logdir", str(tmp_path), "--epochs", "1"]
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "plain_loop.py"), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        assert "📊 Enhanced Training Stats - Iter 0" in done.stdout + done.stderr
        (run_dir,) = (tmp_path / backend).iterdir()
        rows = read_metrics(run_dir)
        tags[backend] = set().union(*rows) - {"step", "wall_time"}
        assert sorted(r["step"] for r in rows if "train/batch/correct_rate" in r) == [0]
    assert tags["torch"] == tags["paddle"]
    report_tags = {"train/detailed_loss/loss_ce", "train/detailed_loss/loss_l2", "train/batch/samples"}
    assert report_tags <= tags["torch"]
