"""The accelerator path's batches against numpy, where a batched layout could go wrong.

Tensors of up to a million elements are reduced together in rows of ``ROW`` elements packed into
slices (:mod:`dualwatch._device`); a tensor's last row is padded. These tests run that path on CPU
tensors (the reducer's host paths off) with what the layout must get right: tensors spread over
several slices, sizes at and around the row length, NaN/Inf at the edges of rows and tensors (next
to padding), several dtypes in one model (one batch each), and shapes that change between checks.
Every statistic is compared with numpy float64 over the values the framework holds, to 1e-5.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from conftest import _import, add_in_place, build_model, grad_of, params_of, set_grads, to_numpy
from test_stats_reference import LOOSE, _assert_close, _reference

import dualwatch
from dualwatch._device import LARGE, ROW, SLICE, Layout


def _accelerator(model: Any) -> dualwatch.Watcher:
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False, thresholds=LOOSE)
    w._reducer.host_paths = False  # every tensor through the accelerator path, batched
    return w


def _assert_statistics(framework: str, model: Any, out: dict[str, float], before: dict | None) -> None:
    """Every per-parameter statistic of ``out`` against numpy; ``weight_change`` against ``before``."""
    for name, param in params_of(framework, model).items():
        w, g = to_numpy(framework, param), grad_of(framework, param)
        scale = float(np.abs(w).mean())
        for stat, want in _reference(w).items():
            if stat != "norm":
                _assert_close(out[f"model/{name}/weight_{stat}"], want, scale, f"{name} weight_{stat}")
        for stat, want in _reference(g).items():
            _assert_close(
                out[f"model/{name}/grad_{stat}"], want, float(np.abs(g).mean()), f"{name} grad_{stat}"
            )
        if before is not None:
            want = np.abs(w - before[name]).mean()
            _assert_close(out[f"model/{name}/weight_change"], want, scale, f"{name} weight_change")


def _two_checks(framework: str, model: Any, grads: dict[str, np.ndarray]) -> None:
    """A first check, an update of every weight, a second check: each against numpy."""
    set_grads(framework, model, grads)
    w = _accelerator(model)
    _assert_statistics(framework, model, w.step(0), None)
    before = {name: to_numpy(framework, p) for name, p in params_of(framework, model).items()}
    rng = np.random.default_rng(5)
    for name, array in before.items():
        add_in_place(framework, model, name, rng.standard_normal(array.shape) * 1e-2)
    _assert_statistics(framework, model, w.step(1), before)


def test_tensors_spread_over_several_slices_match_numpy(framework: str) -> None:
    """Five tensors of a million elements (more than one slice holds) among ones of 1, ROW - 1,
    ROW, ROW + 1 elements, each around its own offset, with a spike where a row starts."""
    sizes = [1_000_000] * 5 + [1, ROW - 1, ROW, ROW + 1, 3000]
    assert len(Layout(sizes).slices) > 1 and max(sizes) <= LARGE < SLICE
    rng = np.random.default_rng(11)
    weights, grads = {}, {}
    for i, n in enumerate(sizes):
        weights[f"t{i}.weight"] = rng.standard_normal(n) + 100.0 * i
        grads[f"t{i}.weight"] = rng.standard_normal(n) * 10.0 ** (i % 4 - 2)
        if n > ROW:
            weights[f"t{i}.weight"][ROW] = 1e4  # the first element of the second row
    _two_checks(framework, build_model(framework, weights), grads)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_every_dtype_matches_numpy_on_the_batched_path(framework: str, dtype: str) -> None:
    rng = np.random.default_rng(12)
    weights = {f"l{i}.weight": rng.standard_normal(n) * 3 + 1 for i, n in enumerate([7, ROW, 5000])}
    grads = {name: rng.standard_normal(a.shape) for name, a in weights.items()}
    _two_checks(framework, build_model(framework, weights, dtype), grads)


def test_several_dtypes_in_one_model_are_batched_apart_and_match_numpy(framework: str) -> None:
    fw = _import(framework)
    rng = np.random.default_rng(13)
    root = fw.nn.Module() if framework == "torch" else fw.nn.Layer()
    grads = {}
    for dtype in ("float32", "float64", "bfloat16"):
        weights = {"a.weight": rng.standard_normal(300) - 4.0, "b.weight": rng.standard_normal((40, 30))}
        setattr(root, dtype, build_model(framework, weights, dtype))
        grads.update({f"{dtype}.{name}": rng.standard_normal(a.shape) for name, a in weights.items()})
    _two_checks(framework, root, grads)


def test_nonfinite_values_beside_the_padding_are_counted_and_propagate_like_numpy(framework: str) -> None:
    """Inf as the last value of a full row, NaN as the first of the next, -Inf as a tensor's last
    value (the rest of its row is padding), NaN as the first value of a one-row tensor."""
    a = np.arange(2 * ROW + 5, dtype=np.float64)
    a[ROW - 1], a[ROW], a[-1] = np.inf, np.nan, -np.inf
    b = np.ones(10)
    b[0] = np.nan
    c = np.full(ROW, 2.0)
    c[-1] = np.inf
    model = build_model(framework, {"a": a, "b": b, "c": c})
    set_grads(framework, model, {"a": np.ones_like(a), "b": np.ones_like(b), "c": np.ones_like(c)})
    with pytest.warns(RuntimeWarning, match="nan"):
        out = _accelerator(model).step(0)
    assert out["Model/Nonfinite_Weights"] == 5
    assert math.isnan(out["model/a/weight_min"]) and math.isnan(out["model/a/weight_mean"])
    assert math.isnan(out["model/b/weight_max"]) and math.isnan(out["model/b/weight_std"])
    assert out["model/c/weight_max"] == np.inf == out["model/c/weight_mean"]
    assert out["model/c/weight_min"] == 2.0 and math.isnan(out["model/c/weight_std"])  # as numpy
    for name, array in (("a", a), ("b", b), ("c", c)):
        assert out[f"model/{name}/grad_norm"] == pytest.approx(math.sqrt(array.size), rel=1e-6)


def test_a_change_of_shapes_starts_the_batch_afresh() -> None:
    """A parameter given data of another shape (torch's ``param.data = ...``): that check reports no
    weight_change (there is nothing of that layout to compare with) and correct statistics; the
    next check reports it again."""
    import torch

    rng = np.random.default_rng(14)
    weights = {"keep.weight": rng.standard_normal(50), "swap.weight": rng.standard_normal(20)}
    model = build_model("torch", weights)
    set_grads("torch", model, {name: np.ones(a.shape) for name, a in weights.items()})
    w = _accelerator(model)
    w.step(0)
    model.swap.weight.data = torch.tensor(rng.standard_normal(33), dtype=torch.float32)
    model.zero_grad(set_to_none=True)
    set_grads("torch", model, {"keep.weight": np.ones(50), "swap.weight": np.full(33, 2.0)})
    out = w.step(1)
    assert not any(key.endswith("weight_change") for key in out)
    _assert_statistics("torch", model, out, None)
    before = {name: to_numpy("torch", p) for name, p in params_of("torch", model).items()}
    add_in_place("torch", model, "swap.weight", np.full(33, 0.5))
    _assert_statistics("torch", model, w.step(2), before)
