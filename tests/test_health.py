"""The verdict switches on crafted gradients, and the per-parameter flags of seed 000 fire."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import add_in_place, build_model, clear_grads, set_grads

import dualwatch
from dualwatch import Verdict
from dualwatch._health import NEGLIGIBLE_GRAD
from dualwatch._report import Options, build_report
from dualwatch.readers._series import Series


def run_of(points: dict[str, list[tuple[int, float, float]]]) -> SimpleNamespace:
    """A run shaped like a RunReader, holding ``{tag: [(step, wall, value), ...]}``."""
    series = {}
    for tag, rows in points.items():
        s = series[tag] = Series()
        for row in rows:
            s.put(*row)
    return SimpleNamespace(run_dir="/logs/r", format="jsonl", series=series, corrupt=0, records=1)


def _check(framework: str, grad_value: float, **watch: object) -> dualwatch.Watcher:
    model = build_model(framework, {"enc.weight": np.ones(4), "dec.weight": np.ones(4)})
    grad = np.full(4, grad_value)
    set_grads(framework, model, {"enc.weight": grad, "dec.weight": grad})
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False, **watch)
    w.step(0)
    return w


@pytest.mark.filterwarnings("ignore:dualwatch. gradients are:RuntimeWarning")
@pytest.mark.parametrize(
    ("grad_value", "verdict"),
    [
        (0.0, Verdict.VANISHING),
        (1e-8, Verdict.VANISHING),
        (0.1, Verdict.HEALTHY),
        (50.0, Verdict.EXPLODING),
        (np.nan, Verdict.NAN),
        (np.inf, Verdict.NAN),
    ],
)
def test_verdict_follows_the_global_gradient_norm(
    framework: str, grad_value: float, verdict: Verdict
) -> None:
    w = _check(framework, grad_value)
    assert w.health.verdict is verdict
    assert w.last.scalars["train/gradient/health"] == verdict.code
    assert w.health.healthy == (verdict is Verdict.HEALTHY)
    if verdict is Verdict.NAN:
        assert w.health.first_nonfinite == "enc.weight"
    else:
        assert w.health.first_nonfinite is None


def test_thresholds_are_configurable(framework: str) -> None:
    w = _check(framework, 50.0, thresholds=dualwatch.Thresholds(exploding=1000.0))
    assert w.health.verdict is Verdict.HEALTHY


def test_a_turn_to_unhealthy_warns_once_with_advice(framework: str) -> None:
    model = build_model(framework, {"w": np.ones(4)})
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    set_grads(framework, model, {"w": np.full(4, 50.0)})
    with pytest.warns(RuntimeWarning, match="exploding.*gradient clipping"):
        w.step(0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.step(1)  # still exploding: no second warning


@pytest.mark.filterwarnings("ignore:dualwatch. gradients are:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:dualwatch. No gradient:UserWarning")
def test_zero_gradients_are_flagged_with_the_seed_advice(framework: str) -> None:
    model = build_model(framework, {"edge.weight": np.ones(4), "head.weight": np.ones(4)})
    set_grads(framework, model, {"edge.weight": np.zeros(4), "head.weight": np.full(4, 0.5)})
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    w.step(0)
    assert w.health.zero_grad == ("edge.weight",)
    assert any("requires_grad" in a and "edge.weight" in a for a in w.health.advice)


def test_weights_that_do_not_change_despite_gradients_are_flagged(framework: str) -> None:
    model = build_model(framework, {"moving": np.ones(4), "stuck": np.ones(4)})
    grads = {"moving": np.full(4, 0.5), "stuck": np.full(4, 0.5)}
    set_grads(framework, model, grads)
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    w.step(0)
    assert w.health.not_updating == ()  # first check: nothing to compare with
    add_in_place(framework, model, "moving", np.full(4, 0.01))
    clear_grads(framework, model)
    set_grads(framework, model, grads)
    w.step(1)
    assert w.health.not_updating == ("stuck",)
    assert any("learning rate" in a and "stuck" in a for a in w.health.advice)


@pytest.mark.filterwarnings("ignore:dualwatch. gradients are:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:dualwatch. No gradient:UserWarning")
def test_parameters_without_gradients_are_reported_not_crashed_on(framework: str) -> None:
    model = build_model(framework, {"a.weight": np.ones(3), "b.weight": np.ones(3)})
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    out = w.step(0)  # before any backward
    assert "model/a.weight/weight_mean" in out and "model/a.weight/grad_norm" not in out
    assert w.health.verdict is Verdict.VANISHING and w.health.no_grad == ("a.weight", "b.weight")
    set_grads(framework, model, {"a.weight": np.ones(3)})
    out = w.step(1)
    assert "model/a.weight/grad_norm" in out and "model/b.weight/grad_norm" not in out
    assert w.health.no_grad == ("b.weight",)
    assert out["train/gradient/total_norm"] == pytest.approx(np.sqrt(3))


@pytest.mark.parametrize(
    ("relative_grad", "not_updating"),
    [(0.0, False), (1e-7, False), (0.9 * NEGLIGIBLE_GRAD, False), (1.1 * NEGLIGIBLE_GRAD, True), (0.5, True)],
)
def test_an_unmoved_weight_is_not_updating_only_past_the_negligible_gradient_bound(
    framework: str, relative_grad: float, not_updating: bool
) -> None:
    """The rule on weights of rms 2 (all 2s): gradient rms / weight rms against sqrt(eps32), in the
    Watcher and, from the same numbers as logged tags, in the monitor."""
    model = build_model(framework, {"moving": np.full(4, 2.0), "still": np.full(4, 2.0)})
    grads = {"moving": np.full(4, 0.5), "still": np.full(4, 2.0 * relative_grad)}
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(2):
            clear_grads(framework, model)
            set_grads(framework, model, grads)
            out = w.step(step)
            add_in_place(framework, model, "moving", np.full(4, 0.01))
    assert w.health.not_updating == (("still",) if not_updating else ())
    assert out["model/still/weight_change"] == 0.0
    assert (w.health.zero_grad, w.health.negligible_grad) == (
        (("still",), ()) if relative_grad == 0 else ((), ("still",)) if not not_updating else ((), ())
    )
    assert out["train/gradient/not_updating_params"] == float(not_updating)
    tags = {tag: [(1, 0.0, value)] for tag, value in out.items() if np.isfinite(value)}
    del tags["train/gradient/not_updating_params"]  # the rule alone, as for another tool's logs
    report = build_report(run_of(tags), 1.0, Options(stall=1e9))
    alerts = [a.tags for a in report.alerts if a.kind == "not_updating"]
    assert alerts == ([("model/still",)] if not_updating else [])


def test_a_zero_gradient_warns_once_however_many_checks_see_it(framework: str) -> None:
    model = build_model(framework, {"edge.weight": np.ones(4), "head.weight": np.ones(4)})
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            clear_grads(framework, model)
            set_grads(framework, model, {"edge.weight": np.zeros(4), "head.weight": np.full(4, 0.5)})
            out = w.step(step)
            assert out["train/gradient/zero_grad_params"] == 1.0
    about = [str(c.message) for c in caught if "used in the forward pass" in str(c.message)]
    assert len(about) == 1 and "edge.weight" in about[0]
