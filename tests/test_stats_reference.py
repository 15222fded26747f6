"""Every statistic against numpy float64 on known tensors, in both frameworks, on every path, to
1e-5 relative; ``*_std`` is the sample std (ddof=1), as ``torch.std`` and ``paddle.std``."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import paddle
import pytest
import torch
from conftest import add_in_place, build_model, grad_of, params_of, set_grads, to_numpy

import dualwatch
from dualwatch import _host as host

RTOL = 1e-5
LOOSE = dualwatch.Thresholds(exploding=1e30, vanishing=0.0)


def _cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    return {
        "random": rng.standard_normal((64, 33)),
        "one_element": np.array([2.5]),
        "all_equal": np.full((300, 1000), 0.1),
        "offset": rng.standard_normal(100_000) + 1000.0,
        "huge": rng.standard_normal((50, 40)) * 1e15,
        "tiny": rng.standard_normal((50, 40)) * 1e-15,
    }


def _adversarial_cases() -> dict[str, Callable[[np.random.Generator], np.ndarray]]:
    """Tensors that break sums taken around one value in float lanes: an outlier or a spike where a
    tensor, a kernel chunk (``_host.CHUNK``) or a block starts, in the middle or at the end; a large
    offset; and ten million values (float32 sums drift with length)."""

    def spike(n: int, at: int, height: float = 1e4) -> Callable[[np.random.Generator], np.ndarray]:
        def make(rng: np.random.Generator) -> np.ndarray:
            a = rng.standard_normal(n)
            a[at] = height
            return a

        return make

    million = 1_000_000
    return {
        "outlier_first": lambda rng: np.concatenate(([1000.0], rng.standard_normal(100_000))),
        "spike_first": spike(million, 0),
        "spike_middle": spike(million, million // 2 + 1),
        "spike_last": spike(million, million - 1),
        "spike_at_chunk_start": spike(host.CHUNK + 5000, host.CHUNK, -1e4),
        "offset": lambda rng: 1e4 + rng.standard_normal(million),
        "ten_million_offset_spike_first": spike(10_000_000, 0, -1e5),
    }


def _reference(w: np.ndarray) -> dict[str, float]:
    std = w.std(ddof=1) if w.size > 1 else 0.0  # the sample std; 0 for one value (see sample_std)
    return {"mean": w.mean(), "std": std, "min": w.min(), "max": w.max(), "norm": np.sqrt((w * w).sum())}


def _assert_close(got: float, want: float, scale: float, what: str) -> None:
    """1e-5 relative to the value, or to ``scale`` = the tensor's mean |x| where the value is ~0: a
    mean of values of both signs can only be as exact as their sum, whose error is relative to the
    sum of |x| (a max |x| scale would let a spike of 1e4 hide any error in the mean)."""
    assert math.isclose(got, want, rel_tol=RTOL, abs_tol=RTOL * scale), f"{what}: {got} != {want}"


@pytest.fixture(params=["host", "host-without-kernel", "device", "device-one-at-a-time"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Checks through the host paths (numpy batches for small tensors, the C kernel for large ones),
    through the host path of an install built without a C compiler, or the accelerator path run on
    the CPU: tensors of up to a million elements in batches (larger ones one at a time, see
    :mod:`dualwatch._device`), or every tensor one at a time."""
    assert host.fused_kernel_built(), "the C kernel should be built in the test environment"
    if request.param == "host-without-kernel":
        monkeypatch.setattr(host, "_hoststats", None)

    def watcher(model, **kw):
        w = dualwatch.Watcher(model, every=1, logdir=None, console=False, thresholds=LOOSE, **kw)
        if request.param.startswith("device"):
            w._reducer.host_paths = False
            w._reducer.batched = request.param == "device"
        return w

    return watcher


def _half_range_skip(array: np.ndarray, dtype: str) -> None:
    """Skip a case whose values a half-precision dtype cannot hold (they would all read inf or 0).

    Every other half-precision case runs at the full 1e-5: the reference is numpy over the values
    as the framework holds them (widened to float64), and dualwatch reduces half precision in
    float32 or float64, so storing in fp16/bf16 changes which values are compared, not how closely.
    """
    if dtype not in ("float16", "bfloat16"):
        return
    info = torch.finfo(getattr(torch, dtype))
    magnitude = np.abs(array)
    if magnitude.max() > info.max:
        pytest.skip(f"|values| up to {magnitude.max():.1e} overflow {dtype} (max {info.max:.1e}): all inf")
    if magnitude.max() < info.smallest_normal * info.eps:  # below the smallest subnormal
        pytest.skip(f"|values| up to {magnitude.max():.1e} underflow {dtype}: all 0, nothing to compare")


def _check_every_statistic(framework: str, path, array: np.ndarray, grad: np.ndarray, dtype: str) -> None:
    """Two checks of one parameter (the second after an update, for ``weight_change``), every
    statistic of both against numpy float64 over the values the framework holds."""
    model = build_model(framework, {"layer.weight": array}, dtype)
    set_grads(framework, model, {"layer.weight": grad})
    w = path(model)
    first = w.step(0)
    param = params_of(framework, model)["layer.weight"]
    before = to_numpy(framework, param)
    rng = np.random.default_rng(2)
    delta = rng.standard_normal(array.shape) * np.abs(array).max() * 1e-2
    add_in_place(framework, model, "layer.weight", delta)
    after = to_numpy(framework, param)
    second = w.step(1)

    assert "model/layer.weight/weight_change" not in first
    for check, weight in ((first, before), (second, after)):
        scale = float(np.abs(weight).mean())
        for stat, want in _reference(weight).items():
            if stat != "norm":
                _assert_close(check[f"model/layer.weight/weight_{stat}"], want, scale, f"weight_{stat}")
        _assert_close(check["Model/Parameter_Norm"], _reference(weight)["norm"], scale, "Parameter_Norm")
    scale = float(np.abs(after).mean())
    _assert_close(
        second["model/layer.weight/weight_change"], np.abs(after - before).mean(), scale, "weight_change"
    )
    g = grad_of(framework, param)
    gscale = float(np.abs(g).mean())
    for check in (first, second):
        for stat, want in _reference(g).items():
            _assert_close(check[f"model/layer.weight/grad_{stat}"], want, gscale, f"grad_{stat}")
        _assert_close(check["train/gradient/total_norm"], _reference(g)["norm"], gscale, "total_norm")
        _assert_close(check["train/gradient/max_grad"], np.abs(g).max(), gscale, "max_grad")
    assert second["Model/Total_Parameters"] == array.size
    assert second["train/gradient/nonfinite"] == 0 and second["Model/Nonfinite_Weights"] == 0


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
@pytest.mark.parametrize("case", list(_cases()))
def test_every_statistic_matches_numpy(framework: str, path, case: str, dtype: str) -> None:
    array = _cases()[case]
    _half_range_skip(array, dtype)
    rng = np.random.default_rng(1)
    grad = rng.standard_normal(array.shape) * (np.abs(array).max() or 1.0)
    _check_every_statistic(framework, path, array, grad, dtype)


@pytest.mark.parametrize("case", list(_adversarial_cases()))
def test_adversarial_tensors_match_numpy(framework: str, path, case: str) -> None:
    """Outliers, spikes and offsets in weights and gradients, on the kernel, host and device paths."""
    make = _adversarial_cases()[case]
    _check_every_statistic(
        framework, path, make(np.random.default_rng(3)), make(np.random.default_rng(4)), "float32"
    )


def test_sample_std_of_one_value_is_zero(framework: str, path) -> None:
    """torch.std and paddle.std give NaN for one value; dualwatch logs 0 (no spread, not a broken run)."""
    model = build_model(framework, {"w": np.array([2.5])})
    set_grads(framework, model, {"w": np.array([-1.0])})
    out = path(model).step(0)
    assert out["model/w/weight_std"] == 0.0 and out["model/w/grad_std"] == 0.0


@pytest.mark.parametrize("size", [1000, 1_000_000])
def test_all_equal_tensor_has_exactly_zero_std(framework: str, path, size: int) -> None:
    """A two-pass std: no E[x^2] - E[x]^2 cancellation noise on constant tensors (e.g. fresh norm weights)."""
    model = build_model(framework, {"w": np.full(size, 0.1)})
    set_grads(framework, model, {"w": np.full(size, -3.0)})
    out = path(model).step(0)
    assert out["model/w/weight_std"] == 0.0
    assert out["model/w/grad_std"] == 0.0


def test_empty_parameters_are_counted_not_crashed_on(framework: str, path) -> None:
    model = build_model(framework, {"empty": np.zeros((0, 4)), "w": np.ones(3)})
    set_grads(framework, model, {"w": np.full(3, 0.1)})
    out = path(model).step(0)
    assert out["Model/Total_Parameters"] == 3 and out["model/w/grad_norm"] > 0


@pytest.mark.parametrize("rows", [3, 30_000])  # batched small tensors, and large ones
def test_non_finite_values_are_counted_and_propagate_like_numpy(framework: str, path, rows: int) -> None:
    weight = np.arange(rows * 4, dtype=np.float64).reshape(rows, 4)
    weight[1, 2] = np.inf
    grad = np.ones((rows, 4))
    grad[0, 0] = np.nan
    grad[2, 3] = -np.inf
    model = build_model(framework, {"a.weight": np.ones(4), "b.weight": weight})
    set_grads(framework, model, {"a.weight": np.ones(4), "b.weight": grad})
    w = path(model)
    with pytest.warns(RuntimeWarning, match="nan"):
        out = w.step(0)
    assert out["Model/Nonfinite_Weights"] == 1
    assert out["train/gradient/nonfinite"] == 2
    assert out["model/b.weight/weight_max"] == np.inf == out["model/b.weight/weight_mean"]
    assert math.isnan(out["model/b.weight/weight_std"])  # as numpy: inf - inf in the deviations
    assert math.isnan(out["model/b.weight/grad_min"]) and math.isnan(out["model/b.weight/grad_max"])
    assert math.isnan(out["model/b.weight/grad_mean"]) and math.isnan(out["model/b.weight/grad_norm"])
    assert math.isnan(out["train/gradient/total_norm"])
    assert out["model/a.weight/grad_norm"] == 2.0
    assert w.health.verdict is dualwatch.Verdict.NAN
    assert w.health.first_nonfinite == "b.weight"


def test_group_norms_and_shares_match_numpy(framework: str, path) -> None:
    rng = np.random.default_rng(3)
    grads = {
        name: rng.standard_normal(50) for name in ("clip.proj", "bi_encoder.gate", "backbone.conv", "head.fc")
    }
    model = build_model(framework, {name: rng.standard_normal(50) for name in grads})
    set_grads(framework, model, grads)
    groups = {"clip": "clip.*", "bifusion": "bi_encoder.*", "backbone": "backbone"}
    out = path(model, groups=groups).step(0)
    sq = {name: float((g.astype(np.float32).astype(np.float64) ** 2).sum()) for name, g in grads.items()}
    total = sum(sq.values())
    expected = {
        "clip": "clip.proj",
        "bifusion": "bi_encoder.gate",
        "backbone": "backbone.conv",
        "other": "head.fc",
    }
    for group, name in expected.items():
        assert math.isclose(out[f"train/gradient/{group}/norm"], math.sqrt(sq[name]), rel_tol=RTOL)
        assert math.isclose(out[f"train/gradient/{group}/share"], sq[name] / total, rel_tol=RTOL)
    assert math.isclose(sum(out[f"train/gradient/{g}/share"] for g in expected), 1.0, rel_tol=1e-12)


def test_std_is_the_frameworks_own_default_std(framework: str, path) -> None:
    """``weight_std``/``grad_std`` equal ``torch.std``/``paddle.std`` with their defaults (ddof=1),
    what the StableSR edge monitor's ``param.data.std()`` logs, on a small and a large tensor."""
    rng = np.random.default_rng(9)
    weights = {"small": rng.standard_normal(7) + 3.0, "large": rng.standard_normal(200_000) * 0.02}
    model = build_model(framework, weights)
    set_grads(framework, model, {name: rng.standard_normal(a.shape) for name, a in weights.items()})
    out = path(model).step(0)
    for name, param in params_of(framework, model).items():
        if framework == "torch":
            want = (float(param.detach().std()), float(param.grad.std()))
        else:
            want = (float(paddle.std(param)), float(paddle.std(param.grad)))
        assert math.isclose(out[f"model/{name}/weight_std"], want[0], rel_tol=RTOL), name
        assert math.isclose(out[f"model/{name}/grad_std"], want[1], rel_tol=RTOL), name


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_kernel_counts_nan_and_inf_apart_in_every_block_and_chunk_on_one_thread_or_two(
    dtype: str,
) -> None:
    """NaNs are counted by a second look at a block holding a non-finite value: a block with only
    Inf, one with only NaN, one with both, and the tail all count right, on one thread or two."""
    x = np.arange(3 * host.CHUNK + 777, dtype=dtype)
    x[[5, 2048 * 3 + 1, 2048 * 3 + 2, host.CHUNK + 1, x.size - 1]] = np.nan
    x[[2048 * 7, 2048 * 3 + 9, 2 * host.CHUNK - 1, x.size - 2]] = [np.inf, -np.inf, np.inf, -np.inf]
    prev = np.zeros_like(x)
    for threads in (1, 2):
        out = host.FusedReducer(threads).stats([x, x], [prev.copy(), None])
        assert out["nonfinite"].tolist() == [9.0, 9.0]
        assert np.isnan(out["sum"]).all() and np.isnan(out["min"]).all()
    finite = np.where(np.isfinite(x), x, 0)
    out = host.FusedReducer(2).stats([finite], [np.zeros_like(finite)])
    exact = finite.astype(np.float64)
    np.testing.assert_allclose(out["absdiff"], [np.abs(exact).sum()], rtol=RTOL)
    np.testing.assert_allclose(out["m2"], [((exact - exact.mean()) ** 2).sum()], rtol=RTOL)
