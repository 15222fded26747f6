"""A third framework, written in this file only, watched and logged through dualwatch's backend contract.

``dualwatch/backends/<framework>.py`` is meant to be the only place that knows a framework. This
file proves it from the outside: a tiny framework whose tensors wrap numpy arrays and whose
models hold named parameters and child modules (a two-layer perceptron with a hand-written
backward pass) plugs in with :func:`dualwatch.backends.register` and nothing else. Then
``Watcher``, ``Writer.add_histogram``, ``add_image`` and ``add_scalar`` work on it, and every
number they write is checked against numpy computed here, independently, to 1e-5 relative.

Tensors carry a device label. ``"cpu"`` tensors give the reducer numpy views (small ones are
batched, the large one goes through the C kernel), as torch CPU tensors do; ``"accel"`` tensors
give none, as on an accelerator, so the reducer takes the per-tensor path (``full_stats``,
``light_stats``, ``snapshot``, ``to_host``, ``count_nonfinite``). The arithmetic is numpy either
way; nothing is mocked.
"""

from __future__ import annotations

import glob
import io
import math
import os
from typing import Any, Iterator

import numpy as np
import pytest
from conftest import read_metrics
from PIL import Image as PILImage
from tensorboard.backend.event_processing import event_accumulator as ea

import dualwatch
from dualwatch import backends
from dualwatch.backends import Backend, Framework, ParamInfo

RTOL = 1e-5

# -- the framework: tensors, modules, a perceptron ------------------------------------------------


class Tensor:
    """A numpy array, the device it lives on, and a gradient slot."""

    def __init__(self, data: Any, *, requires_grad: bool = False, device: str = "cpu") -> None:
        self.data = np.asarray(data)
        self.requires_grad = requires_grad
        self.device = device
        self.grad: Tensor | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype


class Module:
    """Named parameters and named child modules; names nest as ``encoder.0.weight``."""

    def __init__(self) -> None:
        self.params: dict[str, Tensor] = {}
        self.children: dict[str, Module] = {}

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, child in self.children.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def named_parameters(self) -> Iterator[tuple[str, Tensor]]:
        for path, module in self.named_modules():
            for name, param in module.params.items():
                yield (f"{path}.{name}" if path else name), param

    def to(self, device: str) -> Module:
        for _, param in self.named_parameters():
            param.device = device
        return self


class Linear(Module):
    def __init__(self, n_in: int, n_out: int, rng: np.random.Generator) -> None:
        super().__init__()
        bound = 1 / math.sqrt(n_in)
        for name, shape in (("weight", (n_out, n_in)), ("bias", (n_out,))):
            values = rng.uniform(-bound, bound, shape).astype(np.float32)
            self.params[name] = Tensor(values, requires_grad=True)


class Perceptron(Module):
    """``scale * head(encoder.1(tanh(encoder.0(x))))``; ``scale`` is frozen.

    ``encoder.0.weight`` has 320 * 256 elements, more than the reducer batches on the host,
    so on the CPU it goes through the C kernel.
    """

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__()
        self.params["scale"] = Tensor(np.array([0.5], np.float32))
        encoder = Module()
        encoder.children["0"] = Linear(256, 320, rng)
        encoder.children["1"] = Linear(320, 16, rng)
        self.children["encoder"] = encoder
        self.children["head"] = Linear(16, 1, rng)

    def backward(self, x: np.ndarray, target: np.ndarray) -> float:
        """Mean squared error of one batch; sets every trainable parameter's ``grad``."""
        first, second = self.children["encoder"].children.values()
        head, scale = self.children["head"], self.params["scale"].data
        w0, b0 = first.params["weight"].data, first.params["bias"].data
        w1, b1 = second.params["weight"].data, second.params["bias"].data
        w2, b2 = head.params["weight"].data, head.params["bias"].data
        h = np.tanh(x @ w0.T + b0)
        z = h @ w1.T + b1
        diff = scale * (z @ w2.T + b2) - target
        d_out = scale * 2 * diff / diff.size
        d_z = d_out @ w2
        d_h = (d_z @ w1) * (1 - h * h)
        grads = {
            "head": (d_out.T @ z, d_out.sum(0)),
            "encoder.1": (d_z.T @ h, d_z.sum(0)),
            "encoder.0": (d_h.T @ x, d_h.sum(0)),
        }
        modules = dict(self.named_modules())
        for path, (d_weight, d_bias) in grads.items():
            for name, grad in (("weight", d_weight), ("bias", d_bias)):
                param = modules[path].params[name]
                param.grad = Tensor(grad.astype(np.float32), device=param.device)
        return float((diff * diff).mean())

    def sgd(self, lr: float) -> None:
        for _, param in self.named_parameters():
            if param.grad is not None:
                param.data -= lr * param.grad.data  # in place, as an optimizer updates


# -- the framework as dualwatch sees it: the two classes of the contract -----------------------


class NumpyFramework(Framework):
    name = "numpy-tensors"

    def is_tensor(self, x: Any) -> bool:
        return isinstance(x, Tensor)

    def is_model(self, obj: Any) -> bool:
        return isinstance(obj, Module)

    def backend(self, model: Any) -> NumpyBackend:
        return NumpyBackend(model, self)

    def on_host(self, x: Any) -> bool:
        return x.device == "cpu"

    def to_numpy(self, x: Any) -> np.ndarray:
        return x.data


class NumpyBackend(Backend):
    def parameters(self) -> list[tuple[str, Any]]:
        return list(self.model.named_parameters())

    def module_names(self) -> list[str]:
        return [name for name, _ in self.model.named_modules()]

    def info(self, name: str, param: Any) -> ParamInfo:
        return ParamInfo(
            name=name,
            shape=param.shape,
            numel=param.data.size,
            trainable=param.requires_grad,
            dtype=self.framework.dtype_name(param),
        )

    def weight(self, param: Any) -> Any:
        return param

    def grad(self, param: Any) -> Any | None:
        return param.grad

    def host_array(self, x: Any) -> np.ndarray | None:
        if x.device != "cpu":
            return None
        return x.data if x.dtype in (np.float32, np.float64) else x.data.astype(np.float32)

    def full_stats(self, x: Any, prev: Any | None, count_nonfinite: bool) -> dict[str, Any]:
        a = _float64(x)
        with np.errstate(invalid="ignore", over="ignore"):
            stats = {
                "sum": a.sum(),
                "sumsq": (a * a).sum(),
                "m2": ((a - a.mean()) ** 2).sum(),
                "min": a.min(),
                "max": a.max(),
            }
            if prev is not None:
                stats["absdiff"] = np.abs(a - _float64(prev)).sum()
        if count_nonfinite:
            stats["nonfinite"] = (~np.isfinite(a)).sum()
        return {key: Tensor(value, device=x.device) for key, value in stats.items()}

    def light_stats(self, x: Any) -> dict[str, Any]:
        a = _float64(x)
        with np.errstate(over="ignore"):
            stats = {"sumsq": (a * a).sum(), "min": a.min(), "max": a.max()}
        return {key: Tensor(value, device=x.device) for key, value in stats.items()}

    def snapshot(self, x: Any, prev: Any | None) -> Any:
        if prev is None:
            return Tensor(x.data.copy(), device=x.device)
        np.copyto(prev.data, x.data)
        return prev

    def count_nonfinite(self, x: Any) -> int:
        return int((~np.isfinite(x.data)).sum())

    def counts_on_device(self, x: Any) -> bool:
        return x.device != "cpu"

    def to_host(self, scalars: list[Any]) -> np.ndarray:
        return np.array([s.data for s in scalars], dtype=np.float64)


def _float64(x: Tensor) -> np.ndarray:
    """Reductions accumulate in float64."""
    return x.data.reshape(-1).astype(np.float64)


@pytest.fixture(autouse=True)
def registered() -> Iterator[NumpyFramework]:
    """The framework is known to dualwatch for one test, and forgotten after it."""
    framework = NumpyFramework()
    backends.register(framework)
    yield framework
    backends.unregister(framework)


@pytest.fixture(params=["cpu", "accel"])
def device(request: pytest.FixtureRequest) -> str:
    """``cpu``: the reducer reads host views; ``accel``: no host view, one tensor at a time."""
    return request.param


# -- numpy references ----------------------------------------------------------------------------

#: the verdict of a global gradient norm, and its code in ``train/gradient/health``
VERDICT_CODES = {"healthy": 0, "exploding": 1, "vanishing": 2, "nan": 3}


def _verdict(global_norm: float) -> str:
    if not math.isfinite(global_norm):
        return "nan"
    return "exploding" if global_norm > 10.0 else "vanishing" if global_norm < 1e-6 else "healthy"


def _copies(model: Perceptron) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """Every parameter's weight and gradient as float64 copies, as they are now."""
    return {
        name: (p.data.astype(np.float64), None if p.grad is None else p.grad.data.astype(np.float64))
        for name, p in model.named_parameters()
    }


def _reference(
    now: dict[str, tuple[np.ndarray, np.ndarray | None]],
    before: dict[str, tuple[np.ndarray, np.ndarray | None]] | None,
    selected: list[str],
) -> dict[str, tuple[float, float]]:
    """``tag: (value, magnitude of the tensor it comes from)`` for the per-parameter tags."""
    out = {}
    with np.errstate(invalid="ignore", over="ignore"):
        for name in selected:
            weight, grad = now[name]
            scale = float(np.nanmax(np.abs(weight)))
            stats = {
                "mean": weight.mean(),
                "std": weight.std(ddof=1) if weight.size > 1 else 0.0,
                "min": weight.min(),
                "max": weight.max(),
            }
            out.update({f"model/{name}/weight_{k}": (v, scale) for k, v in stats.items()})
            if before is not None:
                out[f"model/{name}/weight_change"] = (np.abs(weight - before[name][0]).mean(), scale)
            if grad is not None:
                scale = float(np.nanmax(np.abs(grad)))
                stats = {
                    "mean": grad.mean(),
                    "std": grad.std(ddof=1) if grad.size > 1 else 0.0,
                    "min": grad.min(),
                    "max": grad.max(),
                }
                stats["norm"] = math.sqrt((grad * grad).sum())
                out.update({f"model/{name}/grad_{k}": (v, scale) for k, v in stats.items()})
    return out


def _assert_close(got: Any, want: float, scale: float, what: str) -> None:
    """1e-5 relative, or relative to the tensor's magnitude where the value is ~0 (a mean of +-x).

    ``got`` is read from ``metrics.jsonl``, where NaN is the string ``"NaN"``.
    """
    got = float(got)
    if math.isnan(want):
        assert math.isnan(got), f"{what}: {got} != NaN"
        return
    assert math.isclose(got, want, rel_tol=RTOL, abs_tol=RTOL * 1e-2 * scale), f"{what}: {got} != {want}"


def _checks(run_dir: str) -> list[dict[str, Any]]:
    """The scalar records of a run's ``metrics.jsonl`` (one per check)."""
    return [record for record in read_metrics(run_dir) if "kind" not in record]


def _only(run_dir: str, mark: str) -> str:
    (path,) = glob.glob(os.path.join(run_dir, f"*{mark}*"))
    return path


# -- the contract: dispatch ----------------------------------------------------------------------


def test_backend_for_and_framework_of_find_the_registered_framework(registered: NumpyFramework) -> None:
    model = Perceptron(np.random.default_rng(0))
    backend = backends.backend_for(model)
    assert isinstance(backend, NumpyBackend)
    assert (backend.model, backend.framework) == (model, registered)
    assert backend.module_names() == ["", "encoder", "encoder.0", "encoder.1", "head"]
    assert [name for name, _ in backend.parameters()][:3] == ["scale", "encoder.0.weight", "encoder.0.bias"]
    assert backends.framework_of(Tensor(np.zeros(3))) is registered
    assert backends.framework_of(np.zeros(3)) is None
    with pytest.raises(TypeError, match="dualwatch needs"):
        backends.backend_for(object())
    with pytest.raises(TypeError, match="pass the model itself"):
        backends.backend_for(list(model.named_parameters()))


def test_a_registered_framework_is_forgotten_after_its_test() -> None:
    """The fixture's teardown leaves the registry as it found it (no other test sees this framework)."""
    assert sum(isinstance(f, NumpyFramework) for f in backends.frameworks()) == 1


def test_module_selection_uses_the_backends_module_names() -> None:
    model = Perceptron(np.random.default_rng(0))
    model.backward(np.ones((2, 256), np.float32), np.zeros((2, 1), np.float32))
    w = dualwatch.Watcher(model, module="encoder", logdir=None, console=False)
    tags = {tag.split("/")[1] for tag in w.check(0) if tag.startswith("encoder/")}
    assert tags == {"0.weight", "0.bias", "1.weight", "1.bias"}
    with pytest.raises(ValueError, match="Close matches: encoder"):
        dualwatch.Watcher(model, module="encoders", logdir=None, console=False)


# -- Watcher, end to end -------------------------------------------------------------------------


def test_watcher_writes_statistics_that_match_numpy(tmp_path: Any, device: str) -> None:
    """Three SGD steps; every check's scalars, read back from metrics.jsonl, against numpy.

    ``head`` is left out of ``include``: its rows get only the light reductions (on the
    accelerator, ``light_stats``), which the model totals still count.
    """
    rng = np.random.default_rng(0)
    model = Perceptron(rng).to(device)
    x = rng.standard_normal((8, 256)).astype(np.float32)
    target = rng.standard_normal((8, 1)).astype(np.float32)
    selected = ["scale", "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias"]
    w = dualwatch.Watcher(
        model,
        every=1,
        logdir=tmp_path,
        run="r",
        console=False,
        include=["scale", "encoder.*"],
        groups={"encoder": "encoder"},
    )
    seen = []
    for step in range(3):
        model.backward(x, target)
        seen.append(_copies(model))
        w.step(step)
        model.sgd(0.05)
    w.close()
    run_dir = str(tmp_path / "r")
    records = _checks(run_dir)
    assert [r["step"] for r in records] == [0, 1, 2]
    assert _only(run_dir, "vdlrecords") and _only(run_dir, "tfevents")

    for step, (record, now) in enumerate(zip(records, seen)):
        expected = _reference(now, seen[step - 1] if step else None, selected)
        assert {tag for tag in record if tag.startswith("model/")} == set(expected)
        for tag, (want, scale) in expected.items():
            _assert_close(record[tag], want, scale, f"step {step} {tag}")

        grads = {name: g for name, (_, g) in now.items() if g is not None}
        squares = {name: float((g * g).sum()) for name, g in grads.items()}
        total = sum(squares.values())
        encoder = sum(sq for name, sq in squares.items() if name.startswith("encoder."))
        weights = [weight for weight, _ in now.values()]
        model_level = {
            "train/gradient/total_norm": math.sqrt(total),
            "Model/Gradient_Norm": math.sqrt(total),
            "train/gradient/max_grad": max(float(np.abs(g).max()) for g in grads.values()),
            "train/gradient/encoder/norm": math.sqrt(encoder),
            "train/gradient/encoder/share": encoder / total,
            "train/gradient/other/share": (total - encoder) / total,
            "Model/Parameter_Norm": math.sqrt(sum(float((a * a).sum()) for a in weights)),
        }
        for tag, want in model_level.items():
            _assert_close(record[tag], want, want, f"step {step} {tag}")
        numel = sum(a.size for a in weights)
        assert numel == 1 + 320 * 257 + 16 * 321 + 17
        assert record["Model/Total_Parameters"] == numel
        assert record["Model/Trainable_Parameters"] == record["Model/Total_Parameters"] - 1
        assert record["Model/Nonfinite_Weights"] == record["train/gradient/nonfinite"] == 0
        verdict = _verdict(math.sqrt(total))
        assert verdict == "healthy"  # this data trains healthily; the nan verdict is tested below
        assert record["train/gradient/health"] == VERDICT_CODES[verdict]
    assert w.health.verdict.value == verdict
    assert (w.health.first_nonfinite, w.health.not_updating, w.health.no_grad) == (None, (), ())


def test_nan_and_inf_gradients_are_counted_and_named(tmp_path: Any, device: str) -> None:
    """One NaN in a selected gradient (counted in the main pass on the accelerator), a NaN and an
    Inf in a gradient of a parameter outside ``include`` (its light reduction sees them, and
    ``count_nonfinite`` recounts)."""
    rng = np.random.default_rng(1)
    model = Perceptron(rng).to(device)
    model.backward(rng.standard_normal((4, 256)).astype(np.float32), np.zeros((4, 1), np.float32))
    modules = dict(model.named_modules())
    modules["encoder.1"].params["weight"].grad.data[3, 7] = np.nan
    modules["head"].params["weight"].grad.data[0, :2] = [np.nan, np.inf]
    now = _copies(model)
    w = dualwatch.Watcher(
        model, every=1, logdir=tmp_path, run="r", console=False, include=["scale", "encoder.*"]
    )
    with pytest.warns(RuntimeWarning, match=r"gradients are nan \(first at encoder.1.weight\)"):
        w.step(0)
    w.close()
    (record,) = _checks(str(tmp_path / "r"))

    assert record["train/gradient/nonfinite"] == 3
    assert record["Model/Nonfinite_Weights"] == 0
    assert record["train/gradient/total_norm"] == "NaN"
    assert record["train/gradient/health"] == VERDICT_CODES["nan"]
    assert (w.health.verdict.value, w.health.first_nonfinite) == ("nan", "encoder.1.weight")
    selected = ["scale", "encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias"]
    expected = _reference(now, None, selected)
    assert {tag for tag in record if tag.startswith("model/")} == set(expected)
    for stat in ("mean", "std", "min", "max", "norm"):
        assert record[f"model/encoder.1.weight/grad_{stat}"] == "NaN"
    for tag, (want, scale) in expected.items():
        _assert_close(record[tag], want, scale, tag)


# -- Writer: histograms, images, scalars ---------------------------------------------------------


def test_add_histogram_of_a_tensor_matches_numpy_histogram(tmp_path: Any, device: str) -> None:
    rng = np.random.default_rng(2)
    values = np.concatenate([rng.standard_normal(997) * 3 + 1, [np.nan, np.inf, -np.inf]]).astype(np.float32)
    rng.shuffle(values)
    with dualwatch.Writer(tmp_path, run="r") as w:
        w.add_histogram("weights", Tensor(values, device=device), 5, bins=20)
    (line,) = [o for o in read_metrics(str(tmp_path / "r")) if o.get("kind") == "histogram"]

    finite = values[np.isfinite(values)].astype(np.float64)
    counts, edges = np.histogram(finite, bins=20)
    assert (line["tag"], line["step"]) == ("weights", 5)
    assert line["counts"] == counts.tolist()
    np.testing.assert_allclose(line["edges"], edges, rtol=RTOL)
    assert (line["num"], line["nonfinite"]) == (997, 3)
    assert line["sum"] == pytest.approx(finite.sum(), rel=RTOL)
    assert line["sum_squares"] == pytest.approx((finite * finite).sum(), rel=RTOL)


@pytest.mark.parametrize("layout", ["HW", "HWC"])
def test_add_image_of_a_tensor_writes_a_png_with_its_pixels(tmp_path: Any, layout: str) -> None:
    shape = (5, 7) if layout == "HW" else (4, 6, 3)
    levels = np.random.default_rng(3).integers(0, 256, size=shape)
    image = Tensor((levels / 255.0).astype(np.float32))  # floats are read as [0, 1]
    with dualwatch.Writer(tmp_path, run="r") as w:
        w.add_image("img", image, 2, dataformats=layout)
    events = ea.EventAccumulator(str(tmp_path / "r"), size_guidance={ea.IMAGES: 0})
    events.Reload()
    (event,) = events.Images("img")
    with PILImage.open(io.BytesIO(event.encoded_image_string)) as png:
        pixels = np.asarray(png)
    assert event.step == 2
    np.testing.assert_array_equal(pixels, levels.astype(np.uint8))


def test_add_scalar_takes_a_one_element_tensor(tmp_path: Any, device: str) -> None:
    with dualwatch.Writer(tmp_path, run="r") as w:
        w.add_scalar("loss", Tensor(np.array([1 / 3], np.float32), device=device), 4)
    (record,) = _checks(str(tmp_path / "r"))
    assert record["step"] == 4
    assert record["loss"] == pytest.approx(1 / 3, rel=RTOL)
