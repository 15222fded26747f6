"""Arguments outside the Writer that used to be accepted and fail later, or fail with a confusing
message: the Watcher, the activation-capture Monitor, the edge maps and losses, and the demo.

Each is refused at the call with what was wrong, what was got and the fix; real torch and paddle.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import _import

import dualwatch
from dualwatch import EdgeMapGenerator, Monitor, Thresholds, Watcher, edge_weighted_mse
from dualwatch._cli import main

# -- helpers ---------------------------------------------------------------------------------------


def _tensor(framework: str, array: np.ndarray) -> Any:
    fw = _import(framework)
    return fw.to_tensor(array) if framework == "paddle" else fw.from_numpy(array)


def _np(t: Any) -> np.ndarray:
    return np.asarray(t.detach().numpy(), np.float64)


def _linear_pair(framework: str) -> Any:
    """``empty`` (no input features: a weight of zero values) and ``head`` (3 -> 2), same names in both."""
    fw = _import(framework)
    base = fw.nn.Module if framework == "torch" else fw.nn.Layer

    class Net(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            super().__init__()
            self.empty = fw.nn.Linear(0, 3)
            self.head = fw.nn.Linear(3, 2)

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        return Net()


def _backward(framework: str, net: Any) -> None:
    """A small real loss: gradients of norm ~0.6 (inside the ESAM guide's normal range)."""
    x = _tensor(framework, np.full((4, 3), 0.1, np.float32))
    (0.1 * net.head(x).sum() + 0.1 * net.empty.bias.sum()).backward()


def _optimizer(framework: str, net: Any) -> tuple[Any, Any]:
    """``(step, clear)`` of plain SGD."""
    fw = _import(framework)
    if framework == "torch":
        opt = fw.optim.SGD(net.parameters(), lr=0.1)
        return opt.step, opt.zero_grad
    opt = fw.optimizer.SGD(learning_rate=0.1, parameters=net.parameters())
    return opt.step, opt.clear_grad


def _small(framework: str) -> Any:
    fw = _import(framework)
    return fw.nn.Linear(3, 2)


# -- Watcher ---------------------------------------------------------------------------------------


def test_watcher_thresholds_with_an_unknown_key_are_refused_naming_the_valid_keys(framework: str) -> None:
    with pytest.raises(
        ValueError, match=r"unknown keys \['explodng'\].*'exploding', 'vanishing'.*did you mean 'exploding'"
    ):
        Watcher(_small(framework), thresholds={"explodng": 5}, logdir=None)


def test_watcher_thresholds_given_as_a_dict_set_the_verdict_bounds(framework: str) -> None:
    net = _linear_pair(framework)
    with pytest.warns(UserWarning, match="hold no values"):
        w = Watcher(net, every=1, thresholds={"exploding": 0.5}, logdir=None, console=False)
    assert w.engine.thresholds == Thresholds(exploding=0.5, vanishing=1e-6)
    _backward(framework, net)
    with pytest.warns(RuntimeWarning, match="exploding"):
        scalars = w.step(0)
    assert scalars["train/gradient/total_norm"] > 0.5  # ~0.6: only the lowered bound makes it exploding
    assert w.health.verdict is dualwatch.Verdict.EXPLODING


@pytest.mark.parametrize(
    "thresholds, error, message",
    [
        ({"exploding": "5"}, TypeError, "exploding must be a number"),
        ({"exploding": True}, TypeError, "exploding must be a number"),
        ({"vanishing": float("nan")}, ValueError, "vanishing must be finite"),
        ({"exploding": float("inf")}, ValueError, "exploding must be finite"),
        ([5.0], TypeError, "Thresholds or a dict"),
    ],
)
def test_watcher_thresholds_must_be_finite_numbers(thresholds: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        Watcher(_small("torch"), thresholds=thresholds, logdir=None)


def test_thresholds_accept_numpy_numbers_as_floats() -> None:
    bounds = Thresholds(exploding=np.float32(5.0), vanishing=np.int64(0))
    assert (bounds.exploding, bounds.vanishing) == (5.0, 0.0)
    assert type(bounds.exploding) is float


@pytest.mark.parametrize("step", ["10", 10.0, True, None])
def test_watcher_step_must_be_an_int_and_says_so(framework: str, step: Any) -> None:
    w = Watcher(_small(framework), logdir=None, console=False)
    with pytest.raises(TypeError, match=r"step must be an int .*w\.step\(int\(step\)\)"):
        w.step(step)
    with pytest.raises(TypeError, match="step must be an int"):
        w.check(step)


def test_watcher_step_takes_numpy_integers(framework: str) -> None:
    net = _small(framework)
    w = Watcher(net, every=5, logdir=None, console=False)
    (net(_tensor(framework, np.ones((1, 3), np.float32))).sum()).backward()
    assert w.step(np.int64(3)) == {}
    assert w.step(np.int64(10))["Model/Total_Parameters"] == 8.0


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"log_weights": "no"}, TypeError, "log_weights= must be True or False"),
        ({"log_gradients": 0}, TypeError, "log_gradients= must be True or False"),
        ({"console": "off"}, TypeError, "console= must be True or False"),
        ({"prefix": 5}, ValueError, "prefix= must be a non-empty string"),
        ({"prefix": "model/"}, ValueError, "without a leading or trailing '/'"),
        ({"include": 5}, TypeError, "include= takes glob strings"),
        ({"writer": object()}, TypeError, "writer= takes an open dualwatch.Writer"),
    ],
)
def test_watcher_options_of_the_wrong_kind_are_refused_up_front(
    options: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        Watcher(_small("torch"), logdir=None, **options)


# -- empty parameters ------------------------------------------------------------------------------


def test_an_empty_parameter_adds_zero_to_the_norms_and_logs_no_nan(framework: str, tmp_path: Path) -> None:
    net = _linear_pair(framework)
    step, clear = _optimizer(framework, net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        w = Watcher(net, every=1, logdir=tmp_path, run="r", console=False)
    setup = [str(c.message) for c in caught if "hold no values" in str(c.message)]
    assert setup == [
        "dualwatch: 1 parameter(s) hold no values (empty.weight): they add 0 to the norms and get no "
        "per-parameter statistics (a mean of nothing is undefined); check the layer sizes if that "
        "is not meant"
    ]
    with w, warnings.catch_warnings():
        warnings.simplefilter("error")  # no other warning during the checks
        for i in range(3):
            _backward(framework, net)
            scalars = w.step(i)
            step()
            clear()
            assert all(math.isfinite(v) for v in scalars.values()), scalars
            assert not any(tag.startswith("model/empty.weight/") for tag in scalars)
            assert "model/empty.bias/weight_mean" in scalars
            assert w.health.healthy
            assert w.health.no_grad == ()  # an empty parameter has nothing to get
    assert scalars["Model/Total_Parameters"] == 3 + 6 + 2
    result = CliRunner().invoke(main, ["monitor", "--once", "--json", str(tmp_path / "r")])
    report = json.loads(result.output)
    assert (result.exit_code, report["health"], report["alerts"]) == (0, "healthy", [])


def test_an_empty_parameter_leaves_the_parameter_norm_of_the_others(framework: str) -> None:
    net = _linear_pair(framework)
    with pytest.warns(UserWarning, match="empty.weight"):
        w = Watcher(net, every=1, logdir=None, console=False)
    _backward(framework, net)
    scalars = w.check(0)
    weights = [_np(p) for p in net.parameters()]
    expected = math.sqrt(sum(float((a**2).sum()) for a in weights))
    assert scalars["Model/Parameter_Norm"] == pytest.approx(expected, rel=1e-5)
    grads = [_np(p.grad) for p in net.parameters() if p.grad is not None]
    assert scalars["Model/Gradient_Norm"] == pytest.approx(
        math.sqrt(sum(float((g**2).sum()) for g in grads)), rel=1e-5
    )


# -- activation capture ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "alias, message",
    [
        ("a" * 300, r"300 bytes long .* at most 255 bytes"),
        ("é" * 130, r"260 bytes long"),
        ("bad\nname", "control characters"),
        ("bad\ud800", "cannot be encoded as a file name"),
        ("../up", "path separators"),
    ],
)
def test_a_capture_alias_no_file_system_takes_is_refused_before_training(
    framework: str, tmp_path: Path, alias: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Monitor(_small(framework), {"": {"alias": alias}}, [0], tmp_path, [0])
    assert list(tmp_path.iterdir()) == []


def test_a_custom_output_filename_no_file_system_takes_is_refused(framework: str, tmp_path: Path) -> None:
    with Monitor(_small(framework), [""], [0], tmp_path, [0]) as monitor:
        with pytest.raises(ValueError, match="at most 255 bytes"):
            monitor.save_custom_output(np.zeros(2), "x" * 252 + ".npy")
        with pytest.raises(TypeError, match="filename must be a string"):
            monitor.save_custom_output(np.zeros(2), Path("x.npy"))
        assert monitor.save_custom_output(np.zeros(2), "x" * 251 + ".npy").exists()


@pytest.mark.parametrize("max_bytes", [float("nan"), float("inf"), -1, 1.5, True, "1000"])
def test_capture_max_bytes_must_be_a_whole_number_of_bytes(tmp_path: Path, max_bytes: Any) -> None:
    with pytest.raises(ValueError, match=r"max_bytes must be a whole number of bytes >= 0, or None"):
        Monitor(_small("torch"), [""], [0], tmp_path, [0], max_bytes=max_bytes)


def test_capture_max_bytes_takes_numpy_integers_and_whole_floats(tmp_path: Path) -> None:
    for given, kept in ((np.int64(1000), 1000), (1e9, 10**9), (None, None)):
        with Monitor(_small("torch"), [""], [0], tmp_path, [0], max_bytes=given) as monitor:
            assert monitor.max_bytes == kept and (kept is None or type(monitor.max_bytes) is int)


def test_capture_output_dir_that_is_a_file_is_refused_naming_it(framework: str, tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for output_dir in (afile, afile / "below"):
        with pytest.raises(ValueError, match=rf"{afile} is a file; pass the path of a folder"):
            Monitor(_small(framework), [""], [0], output_dir, [0])


def test_capture_writer_must_be_a_writer(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match=r"writer= takes a dualwatch\.Writer"):
        Monitor(_small("torch"), [""], [0], tmp_path, [0], writer="runs")


def _record_one(framework: str, monitor: Monitor, net: Any) -> None:
    monitor.set_epoch(0)
    monitor.set_batch_idx(0)
    net(_tensor(framework, np.ones((2, 3), np.float32)))


def test_a_symlink_planted_at_an_alias_folder_is_refused_at_setup(framework: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(outside, out / "head")
    with pytest.raises(ValueError, match="is a symbolic link, where alias 'head' keeps its captures"):
        Monitor(_small(framework), {"": {"alias": "head"}}, [0], out, [0])


def test_a_symlink_planted_during_training_never_sends_captures_outside_output_dir(
    framework: str, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text("keep me")
    out = tmp_path / "out"
    net = _small(framework)
    with Monitor(net, {"": {"alias": "head"}}, [0], out, [0]) as monitor:
        _record_one(framework, monitor, net)
        os.symlink(outside, out / "head")  # planted after the checks at setup
        with pytest.warns(RuntimeWarning, match="'head' in output_dir is a symbolic link or not a folder"):
            assert monitor.save_single_outputs() == []
        os.unlink(out / "head")
        os.symlink(secret, out / "manifest.json")
        with pytest.warns(RuntimeWarning, match="'manifest.json' in output_dir is a symbolic link"):
            assert monitor.save_single_outputs() == []
        assert sorted(p.name for p in outside.iterdir()) == ["secret.json"]
        assert secret.read_text() == "keep me"
        os.unlink(out / "manifest.json")
        (path,) = monitor.save_single_outputs()
    assert path.parent == out / "head" and not path.parent.is_symlink()
    assert [e["file"] for e in json.loads((out / "manifest.json").read_text())] == ["head/" + path.name]
    with np.load(path, allow_pickle=False) as z:
        np.testing.assert_allclose(
            z["b0"], _np(net(_tensor(framework, np.ones((2, 3), np.float32)))), rtol=1e-5
        )


def test_a_symlink_at_a_custom_output_name_is_replaced_not_followed(framework: str, tmp_path: Path) -> None:
    target = tmp_path / "target.npy"
    target.write_bytes(b"untouched")
    out = tmp_path / "out"
    with Monitor(_small(framework), [""], [0], out, [0]) as monitor:
        os.symlink(target, out / "x.npy")
        path = monitor.save_custom_output(np.arange(3.0), "x.npy")
    assert target.read_bytes() == b"untouched"
    assert not path.is_symlink()
    np.testing.assert_array_equal(np.load(path, allow_pickle=False), np.arange(3.0))


# -- save_custom_output writes no pickle -----------------------------------------------------------


def test_save_custom_output_writes_non_array_data_as_json_never_a_pickle(
    framework: str, tmp_path: Path
) -> None:
    monitor = Monitor(_small(framework), [""], [0], tmp_path, [0])
    with pytest.warns(UserWarning, match=rf"wrote it as JSON to {tmp_path / 'x.json'}"):
        path = monitor.save_custom_output({"a": 1, "b": [1.5, 2]}, "x.npy")
    assert path == tmp_path / "x.json" and not (tmp_path / "x.npy").exists()
    assert json.loads(path.read_text()) == {"a": 1, "b": [1.5, 2]}


def test_save_custom_output_writes_arrays_and_tensors_loadable_without_pickle(
    framework: str, tmp_path: Path
) -> None:
    data = np.arange(6, dtype=np.float32).reshape(2, 3)
    with Monitor(_small(framework), [""], [0], tmp_path, [0]) as monitor:
        npy = monitor.save_custom_output(_tensor(framework, data), "t.npy")
        listed = monitor.save_custom_output([[1, 2], [3, 4]], "l.npy")
        npz = monitor.save_custom_output({"t": _tensor(framework, data), "n": data * 2}, "d.npz")
    np.testing.assert_array_equal(np.load(npy, allow_pickle=False), data)
    np.testing.assert_array_equal(np.load(listed, allow_pickle=False), [[1, 2], [3, 4]])
    with np.load(npz, allow_pickle=False) as z:
        np.testing.assert_array_equal(z["t"], data)
        np.testing.assert_array_equal(z["n"], data * 2)


@pytest.mark.parametrize(
    "obj, filename, message",
    [
        ({"a": object()}, "x.npy", "neither an array of numbers nor JSON"),
        ({"a": {"b": 1}}, "x.npz", r"\['a'\] are not arrays"),
        ([1, 2], "x.npz", "takes a dict of arrays"),
        (object(), "x.json", "neither an array of numbers nor JSON"),
    ],
)
def test_save_custom_output_refuses_what_only_a_pickle_could_hold(
    tmp_path: Path, obj: Any, filename: str, message: str
) -> None:
    monitor = Monitor(_small("torch"), [""], [0], tmp_path, [0])
    with pytest.raises(TypeError, match=message):
        monitor.save_custom_output(obj, filename)
    assert not [p for p in tmp_path.iterdir() if p.suffix in (".npy", ".npz", ".json", ".tmp")]


# -- edge maps and losses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"blur_kernel": 3.5}, TypeError, r"blur_kernel must be an int .*got float 3\.5"),
        ({"blur_kernel": True}, TypeError, "blur_kernel must be an int"),
        ({"blur_kernel": -3}, ValueError, "blur_kernel must be odd"),
        ({"low": "a"}, TypeError, r"low must be a number, got str 'a': e\.g\. low=100"),
        ({"high": float("nan")}, ValueError, "high must be a finite number"),
        ({"sigma": None}, TypeError, "sigma must be a number"),
        ({"value_range": (0,)}, ValueError, r"value_range must be two numbers \(black, white\), got \(0,\)"),
        ({"value_range": ("0", "1")}, ValueError, "value_range must be two numbers"),
        ({"threads": 1.5}, ValueError, "threads must be an int >= 1"),
    ],
)
def test_edge_map_generator_options_are_checked_naming_the_fix(
    options: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        EdgeMapGenerator(**options)


def test_edge_map_generator_takes_numpy_numbers() -> None:
    generator = EdgeMapGenerator(
        low=np.float32(50), high=np.int64(150), blur_kernel=np.int64(3), threads=np.int64(1)
    )
    assert (generator.canny.low, generator.canny.high, generator.canny.blur_kernel) == (50.0, 150.0, 3)


def test_an_image_without_pixels_is_refused_before_opencv(framework: str) -> None:
    for shape in ((1, 3, 0, 0), (2, 1, 8, 0)):
        empty = _tensor(framework, np.zeros(shape, np.float32))
        with pytest.raises(ValueError, match=r"images has no pixels .*check the crop or resize"):
            EdgeMapGenerator()(empty)
        with pytest.raises(ValueError, match="pred has no pixels"):
            edge_weighted_mse(empty, empty, empty[:, :1])


@pytest.mark.parametrize(
    "base, error", [(float("nan"), ValueError), (float("inf"), ValueError), ("0.1", TypeError)]
)
def test_edge_weighted_mse_base_must_be_a_finite_number(framework: str, base: Any, error: type) -> None:
    x = _tensor(framework, np.zeros((1, 1, 4, 4), np.float32))
    with pytest.raises(error, match="base must be a"):
        edge_weighted_mse(x, x, x, base=base)


def _loss_class(framework: str) -> Any:
    return dualwatch.TorchEdgeLoss if framework == "torch" else dualwatch.PaddleEdgeLoss


def test_edge_loss_takes_numpy_scalars_as_weights(framework: str) -> None:
    rng = np.random.default_rng(0)
    pred_np, gt_np = (rng.uniform(-1, 1, (1, 3, 16, 16)).astype(np.float32) for _ in range(2))
    loss_fn = _loss_class(framework)(weight=np.float32(0.1), base=np.float64(0.2), sobel_weight=np.int64(0))
    assert (loss_fn.weight, loss_fn.base, loss_fn.sobel_weight) == (float(np.float32(0.1)), 0.2, 0.0)
    loss, parts = loss_fn(_tensor(framework, pred_np), _tensor(framework, gt_np))
    expected = float(np.float32(0.1)) * float(_np(parts["loss_edge"]))
    assert float(_np(loss)) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"weight": "0.1"}, TypeError, r"weight must be a number \(Python's or numpy's\), got str '0.1'"),
        ({"base": None}, TypeError, "base must be a number"),
        ({"weight": np.float32("nan")}, ValueError, "weight must be a finite number >= 0"),
        ({"edges": "canny"}, TypeError, "edges= takes a dualwatch.EdgeMapGenerator"),
        ({"watcher": 3}, TypeError, "watcher= takes a dualwatch.Watcher or Writer"),
        ({"prefix": None}, TypeError, "prefix must be a string"),
    ],
)
def test_edge_loss_refuses_non_numbers_with_a_clear_message(
    framework: str, options: dict[str, Any], error: type, message: str
) -> None:
    with pytest.raises(error, match=message):
        _loss_class(framework)(**options)


# -- the demo --------------------------------------------------------------------------------------


def test_demo_refuses_a_logdir_that_is_a_file_before_training(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("x")
    for logdir in (afile, afile / "below"):
        started = time.perf_counter()
        result = CliRunner().invoke(main, ["demo", "--steps", "1", "--logdir", str(logdir)])
        assert result.exit_code == 2, result.output
        assert f"{afile} is a file" in result.output and "pass --logdir a folder" in result.output
        assert "epoch" not in result.output and "Traceback" not in result.output
        assert time.perf_counter() - started < 5  # nothing trained
    assert afile.read_text() == "x"


@pytest.mark.parametrize(
    "losses, message",
    [
        ({"edge": "x"}, r"loss named edge must be a number or a one-element tensor, got str 'x'"),
        ([1.0, 2.0], r"losses must map loss names to numbers, got list"),
    ],
)
def test_watcher_loss_breakdown_of_non_numbers_is_refused_naming_the_loss(
    framework: str, losses: Any, message: str
) -> None:
    w = Watcher(_small(framework), logdir=None, console=False)
    with pytest.raises(TypeError, match=message):
        w.report(0, losses)
    with pytest.raises(TypeError, match=message):
        w.log_losses(0, losses)


def test_edge_map_logging_index_and_sobel_eps_are_checked(framework: str) -> None:
    maps = _tensor(framework, np.zeros((2, 1, 4, 4), np.float32))
    w = Watcher(_small(framework), logdir=None, console=False)
    with pytest.raises(
        IndexError, match=r"index must be an int picking one of the 2 images \(0\.\.1\), got 5"
    ):
        dualwatch.log_edge_maps(w, maps, maps, 0, index=5)
    for eps, error in ((0.0, ValueError), (float("nan"), ValueError), ("1e-6", TypeError)):
        with pytest.raises(error, match="eps must be"):
            dualwatch.sobel_edge_l1(maps, maps, eps=eps)


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"every": "10"}, TypeError, "every= must be an int number of steps, got str '10'"),
        ({"check_frequency": 2.5}, TypeError, "check_frequency= must be an int number of steps"),
        ({"every": 0}, ValueError, r"every= must be >= 1 \(check every N steps\), got 0"),
    ],
)
def test_integration_check_frequency_is_checked_where_the_callback_is_built(
    options: dict[str, Any], error: type, message: str
) -> None:
    from dualwatch.integrations.lightning import EdgeMonitorCallback

    with pytest.raises(error, match=message):
        EdgeMonitorCallback(**options)
