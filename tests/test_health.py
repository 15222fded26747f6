"""The verdict switches on crafted gradients, and the per-parameter flags of seed 000 fire."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import add_in_place, build_model, clear_grads, set_grads

import dualwatch
from dualwatch import Verdict


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
