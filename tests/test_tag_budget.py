"""The tag budget: ``stats=`` picks per-parameter statistics, ``aggregate=`` logs them per module.

Module statistics are checked against numpy over the module's parameters taken as one vector;
the standard deviation against a single parameter holding those same values (whose per-parameter
std the reference tests pin to the frameworks' own), so both sides use one definition.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from conftest import add_in_place, build_model, clear_grads, set_grads

import dualwatch
from dualwatch._tags import PARAMETER_STATS

RNG = np.random.default_rng(7)
WEIGHTS = {
    "enc.conv.weight": RNG.normal(0.3, 1.0, 24),
    "enc.conv.bias": RNG.normal(-2.0, 0.1, 4),
    "enc.norm.weight": RNG.normal(1.0, 0.5, 6),
    "dec.weight": RNG.normal(0.0, 2.0, 10),
    "scale": RNG.normal(5.0, 1.0, 3),
}
GRADS = {name: RNG.normal(0.0, 1e-2 * (i + 1), w.size) for i, (name, w) in enumerate(WEIGHTS.items())}
DELTAS = {name: RNG.normal(0.0, 1e-3, w.size) for name, w in WEIGHTS.items()}
MODULES = {  # the module at each depth of every parameter
    1: {
        "enc": ["enc.conv.weight", "enc.conv.bias", "enc.norm.weight"],
        "dec": ["dec.weight"],
        "scale": ["scale"],
    },
    2: {
        "enc.conv": ["enc.conv.weight", "enc.conv.bias"],
        "enc.norm": ["enc.norm.weight"],
        "dec": ["dec.weight"],
        "scale": ["scale"],
    },
}


def two_checks(
    framework: str,
    weights: dict[str, np.ndarray] = WEIGHTS,
    grads: dict[str, np.ndarray] = GRADS,
    deltas: dict[str, np.ndarray] = DELTAS,
    **watch: object,
) -> dict[str, float]:
    """The scalars of the second check: after ``deltas`` was added, with ``grads`` as gradients."""
    model = build_model(framework, weights)
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False, prefix="m", **watch)
    set_grads(framework, model, grads)
    w.step(0)
    for name, delta in deltas.items():
        add_in_place(framework, model, name, delta)
    clear_grads(framework, model)
    set_grads(framework, model, grads)
    return w.step(1)


def joined(values: dict[str, np.ndarray], module: str) -> np.ndarray:
    """A depth-1 module's values as one vector, its parameters in model order."""
    return np.concatenate([values[name] for name in MODULES[1][module]])


def _float32(values: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v.astype(np.float32).astype(np.float64) for k, v in values.items()}


@pytest.mark.parametrize("depth", [1, 2])
def test_module_statistics_equal_numpy_over_the_modules_parameters(framework: str, depth: int) -> None:
    out = two_checks(framework, aggregate=depth)
    w32, g32 = _float32(WEIGHTS), _float32(GRADS)
    after = {name: (w32[name] + DELTAS[name]).astype(np.float32).astype(np.float64) for name in WEIGHTS}
    assert {tag.rsplit("/", 1)[0] for tag in out if tag.startswith("m/")} == {
        f"m/{m}" for m in MODULES[depth]
    }
    for module, names in MODULES[depth].items():
        w = np.concatenate([after[n] for n in names])
        g = np.concatenate([g32[n] for n in names])
        change = np.concatenate([np.abs(after[n] - w32[n]) for n in names])
        expected = {
            "weight_mean": w.mean(),
            "weight_min": w.min(),
            "weight_max": w.max(),
            "weight_change": change.mean(),
            "grad_mean": g.mean(),
            "grad_min": g.min(),
            "grad_max": g.max(),
            "grad_norm": np.linalg.norm(g),
        }
        for stat, value in expected.items():
            assert out[f"m/{module}/{stat}"] == pytest.approx(value, rel=1e-5, abs=1e-9), (module, stat)


def test_a_modules_std_is_that_of_one_parameter_holding_its_values(framework: str) -> None:
    out = two_checks(framework, aggregate=1)
    single = two_checks(
        framework, *({m: joined(values, m) for m in MODULES[1]} for values in (WEIGHTS, GRADS, DELTAS))
    )
    for module in MODULES[1]:
        for stat in ("weight_std", "grad_std"):
            assert out[f"m/{module}/{stat}"] == pytest.approx(single[f"m/{module}/{stat}"], rel=1e-5)


def test_stats_selects_the_per_parameter_statistics_logged(framework: str) -> None:
    out = two_checks(framework, stats=("grad_norm", "weight_change"))
    per_parameter = sorted(tag for tag in out if tag.startswith("m/"))
    assert per_parameter == sorted(f"m/{n}/{s}" for n in WEIGHTS for s in ("grad_norm", "weight_change"))
    for name in WEIGHTS:
        assert out[f"m/{name}/grad_norm"] == pytest.approx(np.linalg.norm(_float32(GRADS)[name]), rel=1e-5)
    assert out["train/gradient/total_norm"] == pytest.approx(
        np.sqrt(sum(np.sum(g**2) for g in _float32(GRADS).values())), rel=1e-5
    )  # the model totals stay whatever the selection


def test_torch_and_paddle_log_the_same_module_tags_and_values() -> None:
    torch_out = two_checks("torch", aggregate=2, stats=("grad_norm", "weight_mean", "weight_std"))
    paddle_out = two_checks("paddle", aggregate=2, stats=("grad_norm", "weight_mean", "weight_std"))
    assert sorted(torch_out) == sorted(paddle_out)
    for tag, value in torch_out.items():
        assert paddle_out[tag] == pytest.approx(value, rel=1e-5, abs=1e-9), tag


def test_the_default_is_the_full_set_per_parameter(framework: str) -> None:
    out = two_checks(framework)
    assert {tag for tag in out if tag.startswith("m/")} == {
        f"m/{n}/{s}" for n in WEIGHTS for s in PARAMETER_STATS
    }


def test_an_unknown_statistic_or_depth_is_refused_with_the_valid_choices() -> None:
    model = build_model("torch", {"w": np.ones(3)})
    with pytest.raises(ValueError, match=r"'grad_nrom'.*did you mean 'grad_norm'.*weight_mean, weight_std"):
        dualwatch.Watcher(model, logdir=None, stats=("grad_nrom",))
    with pytest.raises(ValueError, match="aggregate= must be >= 1"):
        dualwatch.Watcher(model, logdir=None, aggregate=0)
    with pytest.raises(TypeError, match="module depth"):
        dualwatch.Watcher(model, logdir=None, aggregate="enc")


def test_the_integrations_take_the_budget_and_check_it_when_built() -> None:
    from dualwatch.integrations.lightning import EdgeMonitorCallback
    from dualwatch.integrations.mmengine import DualwatchHook

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        from dualwatch.integrations.paddle import WatchCallback

    assert EdgeMonitorCallback().stats == PARAMETER_STATS  # the StableSR callback's full set
    assert EdgeMonitorCallback(stats="grad_norm", aggregate=2).stats == ("grad_norm",)
    for build in (EdgeMonitorCallback, DualwatchHook, lambda **kw: WatchCallback(logdir=None, **kw)):
        with pytest.raises(ValueError, match="unknown statistic 'norm'"):
            build(stats=("norm",))
        with pytest.raises(ValueError, match="aggregate= must be >= 1"):
            build(aggregate=-1)


def test_a_parameter_without_a_gradient_counts_as_zeros_in_its_module(framework: str) -> None:
    """``enc.conv.bias`` gets no gradient: in ``enc`` it counts as zeros (torch's meaning of a
    ``None`` gradient, and what Paddle's ``clear_grad`` leaves)."""
    grads = {name: g for name, g in GRADS.items() if name != "enc.conv.bias"}
    out = two_checks(framework, grads=grads, aggregate=1)
    with_zeros = {**_float32(GRADS), "enc.conv.bias": np.zeros(WEIGHTS["enc.conv.bias"].size)}
    g = joined(with_zeros, "enc")
    for stat, value in {
        "grad_norm": np.linalg.norm(g),
        "grad_mean": g.mean(),
        "grad_min": g.min(),
        "grad_max": g.max(),
    }.items():
        assert out[f"m/enc/{stat}"] == pytest.approx(value, rel=1e-5), stat
    single = two_checks(
        framework,
        {"enc": joined(WEIGHTS, "enc")},
        {"enc": g},
        {"enc": joined(DELTAS, "enc")},
    )
    assert out["m/enc/grad_std"] == pytest.approx(single["m/enc/grad_std"], rel=1e-5)
