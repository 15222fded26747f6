"""Monitor (seed 002) on real torch and paddle models: the seed's API, its usage patterns, and its traps."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import _import

from dualwatch import Monitor, MonitoredTrainer, Writer
from dualwatch.records import Scalars

Pair = collections.namedtuple("Pair", ["k", "v"])


def _net(framework: str, in_place: bool = True) -> Any:
    """``transformer.encoder.layers.0.{self_attn, ffn, act}`` plus extra heads, same names in both."""
    fw = _import(framework)
    nn = fw.nn
    base = nn.Module if framework == "torch" else nn.Layer
    if framework == "torch":
        attn = nn.MultiheadAttention(8, 2, batch_first=True)
        relu = fw.relu_ if in_place else fw.relu
    else:
        attn = nn.MultiHeadAttention(8, 2, need_weights=True)
        relu = fw.nn.functional.relu_ if in_place else fw.nn.functional.relu

    class Layer(base):
        def __init__(self) -> None:
            super().__init__()
            self.self_attn = attn
            self.ffn = nn.Linear(8, 8)

        def forward(self, x: Any) -> Any:
            x = self.self_attn(x, x, x)[0]
            return relu(self.ffn(x))  # in place on the ffn output: the capture must not change

    class Pairs(base):
        def forward(self, x: Any) -> Any:
            return {"pair": Pair(x * 2, None), "view": x[:, :1]}

    class Net(base):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = base()
            self.transformer.encoder = base()
            self.transformer.encoder.layers = (nn.ModuleList if framework == "torch" else nn.LayerList)(
                [Layer()]
            )
            self.pairs = Pairs()

        def forward(self, x: Any) -> Any:
            y = self.transformer.encoder.layers[0](x)
            return y.sum() + self.pairs(y)["view"].sum()

    return Net()


def _x(framework: str, seed: int = 0) -> Any:
    fw = _import(framework)
    data = np.random.default_rng(seed).standard_normal((2, 3, 8)).astype(np.float32)
    return fw.to_tensor(data) if framework == "paddle" else fw.from_numpy(data)


def _np(t: Any) -> np.ndarray:
    return t.detach().numpy()


def _copy(value: Any) -> Any:
    """Numpy copies of an output's tensors, its structure kept (tuple, named tuple, dict, None)."""
    if value is None:
        return None
    if isinstance(value, tuple):
        items = [_copy(v) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, dict):
        return {key: _copy(v) for key, v in value.items()}
    return np.array(_np(value), copy=True)


class RealOutputs:
    """Each output of one layer, copied by a forward hook this test registers itself (the framework's
    own hook API, not the Monitor's): the reference every capture is compared with."""

    def __init__(self, framework: str, model: Any, layer: str) -> None:
        if framework == "torch":
            register = dict(model.named_modules())[layer].register_forward_hook
        else:
            register = dict(model.named_sublayers(include_self=True))[layer].register_forward_post_hook
        self.outputs: list[Any] = []
        self._handle = register(lambda module, inputs, output: self.outputs.append(_copy(output)))

    def remove(self) -> None:
        self._handle.remove()


def assert_same(captured: Any, real: Any) -> None:
    """A capture holds exactly the layer's output: the same structure, the same values."""
    if real is None:
        assert captured is None
    elif isinstance(real, tuple):
        assert type(captured) is type(real) and len(captured) == len(real)
        for c, r in zip(captured, real):
            assert_same(c, r)
    elif isinstance(real, dict):
        assert isinstance(captured, dict) and captured.keys() == real.keys()
        for key in real:
            assert_same(captured[key], real[key])
    else:
        np.testing.assert_array_equal(_np(captured), real)


ATTN, FFN = "transformer.encoder.layers.0.self_attn", "transformer.encoder.layers.0.ffn"
MIXED = {
    ATTN: {"alias": "attention_weights", "record_type": "single"},
    FFN: {"alias": "ffn_epoch_stats", "record_type": "epoch_full"},
}


def _train(framework: str, model: Any, monitor: Monitor, epochs: int = 3, batches: int = 4) -> None:
    for epoch in range(1, epochs + 1):
        monitor.set_epoch(epoch)
        for batch in range(batches):
            monitor.set_batch_idx(batch)
            model(_x(framework, batch)).backward()
        monitor.get_single_data()
        monitor.save_single_outputs()
        monitor.save_epoch_outputs()
        monitor.clear_current_epoch_data()


# -- configuration and errors ------------------------------------------------------------------------


def test_list_form_records_single_batches_keyed_by_epoch_and_batch(framework: str, tmp_path: Path) -> None:
    model = _net(framework, in_place=False)
    with Monitor(model, [FFN], [2], tmp_path, batch_indices=[1, 3]) as monitor:
        real = RealOutputs(framework, model, FFN)
        for epoch in (1, 2):
            monitor.set_epoch(epoch)
            for batch in range(4):
                monitor.set_batch_idx(batch)
                model(_x(framework, 10 * epoch + batch))
        data = monitor.get_single_data()
    assert list(data) == [FFN]
    assert data[FFN]["layer"] == FFN and data[FFN]["alias"] == FFN
    assert list(data[FFN]["data"]) == [(2, 1), (2, 3)]
    assert data[FFN]["output_shape"] == [2, 3, 8]
    assert_same(data[FFN]["data"][(2, 1)], real.outputs[4 + 1])  # epoch 2's batches are calls 4..7
    assert_same(data[FFN]["data"][(2, 3)], real.outputs[4 + 3])


def test_mixed_record_types_from_the_seed_example(framework: str, tmp_path: Path) -> None:
    model = _net(framework, in_place=False)
    monitor = Monitor(model, MIXED, [1, 2], tmp_path, batch_indices=[0])
    attn, ffn = RealOutputs(framework, model, ATTN), RealOutputs(framework, model, FFN)
    monitor.set_epoch(2)
    for batch in range(3):
        monitor.set_batch_idx(batch)
        model(_x(framework, batch))
    single, full = monitor.get_single_data(), monitor.get_epoch_data()
    assert list(single["attention_weights"]["data"]) == [(2, 0)]
    assert list(full["ffn_epoch_stats"]["data"]) == [(2, 0), (2, 1), (2, 2)]
    assert_same(single["attention_weights"]["data"][(2, 0)], attn.outputs[0])  # (output, weights)
    for batch in range(3):
        assert_same(full["ffn_epoch_stats"]["data"][(2, batch)], ffn.outputs[batch])
    weights = [2, 3, 3] if framework == "torch" else [2, 2, 3, 3]  # torch averages heads, paddle keeps them
    assert single["attention_weights"]["output_shape"] == [[2, 3, 8], weights]
    assert monitor.get_single_data(layers=[ATTN]).keys() == {"attention_weights"}  # layer name or alias
    with pytest.raises(ValueError, match="close matches"):
        monitor.get_epoch_data(layers=["ffn_epoch_stat"])
    monitor.remove_hooks()


def test_unknown_layer_lists_available_names_and_closest_matches(framework: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        Monitor(_net(framework), ["transformer.encoder.layers.0.fnn"], [1], tmp_path, [0])
    text = str(err.value)
    assert text.startswith(
        "The following layers specified in 'layers_to_monitor' do not exist in the model: "
        "['transformer.encoder.layers.0.fnn']"
    )
    assert f"Closest matches: 'transformer.encoder.layers.0.fnn': ['{FFN}'" in text
    assert "Available layers: ['', 'transformer'," in text


@pytest.mark.parametrize(
    ("layers", "epochs", "batches", "error", "match"),
    [
        (
            {ATTN: {"alias": "a"}, FFN: {"alias": "a"}},
            [1],
            [0],
            ValueError,
            "Duplicate alias 'a' in layers_to_monitor.",
        ),
        ([FFN], [], [0], ValueError, "epochs_to_record must not be empty"),
        ([FFN], [1], None, ValueError, "batch_indices must be given and non-empty"),
        ({FFN: {"record_type": "single"}}, [1], [], ValueError, "batch_indices must be given"),
        ({FFN: {"alias": "../evil"}}, [1], [0], ValueError, "without path separators"),
        ({FFN: {"alias": "a\\b"}}, [1], [0], ValueError, "without path separators"),
        ({FFN: {"record_type": "epoch_ful"}}, [1], [0], ValueError, "did you mean 'epoch_full'"),
        ([FFN], [1], [-1], ValueError, "integers >= 0"),
        ([FFN], [-2], [0], ValueError, "integers >= 0"),
        ([FFN], 1, [0], TypeError, "must be a list of integers"),
        (FFN, [1], [0], TypeError, "list of layer names"),
        ([], [1], [0], ValueError, "layers_to_monitor is empty"),
        ({FFN: {"alais": "x"}}, [1], [0], ValueError, "unknown keys"),
    ],
)
def test_bad_configuration_raises_before_training(
    framework: str, tmp_path: Path, layers: Any, epochs: Any, batches: Any, error: type, match: str
) -> None:
    model = _net(framework)
    with pytest.raises(error, match=match.replace("(", r"\(").replace(".", r"\.")):
        Monitor(model, layers, epochs, tmp_path, batches)
    assert not any(tmp_path.iterdir())


def test_non_model_object_is_rejected(framework: str, tmp_path: Path) -> None:
    model = _net(framework)
    with pytest.raises(TypeError, match=r"torch\.nn\.Module or a paddle\.nn\.Layer"):
        Monitor(model.parameters(), [FFN], [1], tmp_path, [0])


def test_monitor_is_the_activation_capture_class() -> None:
    import dualwatch

    assert dualwatch.Monitor is dualwatch.ActivationCapture
    with pytest.raises(TypeError, match="needs an ActivationCapture"):
        MonitoredTrainer(object())


def test_from_config_json_uses_monitor_layers_and_monitor_epochs(framework: str, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"monitor_layers": MIXED, "monitor_epochs": [1, 5], "lr": 0.1}))
    monitor = Monitor.from_config(_net(framework), str(config), tmp_path / "out", batch_indices=[0])
    assert monitor.epochs_to_record == {1, 5}
    assert set(monitor.single_data) == {"attention_weights"} and set(monitor.epoch_data) == {
        "ffn_epoch_stats"
    }
    with pytest.raises(KeyError, match="monitor_epochs"):
        Monitor.from_config(_net(framework), {"monitor_layers": MIXED}, tmp_path)
    monitor.remove_hooks()


# -- captures are copies of the right structure -------------------------------------------------------


def test_in_place_op_after_the_layer_does_not_change_the_capture(framework: str, tmp_path: Path) -> None:
    model = _net(framework, in_place=True)
    with Monitor(model, [FFN], [0], tmp_path, [0]) as monitor:
        attn = RealOutputs(framework, model, ATTN)
        monitor.set_epoch(0)
        monitor.set_batch_idx(0)
        model(_x(framework))
        captured = _np(monitor.get_single_data(copy=False)[FFN]["data"][(0, 0)])
    assert captured.min() < 0  # the ReLU applied in place afterwards did not reach the copy
    # the ffn's output as computed from its input (the attention output), independently of any hook on it
    ffn = model.transformer.encoder.layers[0].ffn
    weight, bias = _np(ffn.weight), _np(ffn.bias)
    expected = attn.outputs[0][0] @ (weight.T if framework == "torch" else weight) + bias
    np.testing.assert_allclose(captured, expected, rtol=1e-5, atol=1e-6)


_MEMORY_CHILD = """
import os, sys, tempfile, warnings
import numpy as np
warnings.filterwarnings("ignore")
framework = sys.argv[1]
if framework == "torch":
    import torch as fw
else:
    import paddle as fw
from dualwatch import Monitor
nn = fw.nn
big = nn.Sequential(nn.Linear(256, 2048), nn.ReLU(), nn.Linear(2048, 4))  # ~2 MiB of graph a batch
data = np.random.default_rng(0).standard_normal((128, 256)).astype(np.float32)
x = fw.to_tensor(data) if framework == "paddle" else fw.from_numpy(data)
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
monitor = Monitor(big, {"2": {"record_type": "epoch_full"}}, [0], tempfile.mkdtemp())
monitor.set_epoch(0)
for batch in range(110):  # forward without backward: a graph-attached capture would keep it all alive
    if batch == 10:
        start = rss()
    monitor.set_batch_idx(batch)
    big(x)
outputs = list(monitor.get_epoch_data(copy=False)["2"]["data"].values())
grad = [o.requires_grad or o.grad_fn is not None for o in outputs] if framework == "torch" else [
    not o.stop_gradient for o in outputs]
print(len(outputs), any(grad), rss() - start)
"""


def test_captures_hold_no_graph_and_memory_stays_flat_over_100_recorded_batches(framework: str) -> None:
    # In a child whose allocator returns large blocks at once (glibc's mmap threshold fixed at
    # 64 KiB): otherwise heap fragmentation alone grows RSS by ~1 MiB a batch, monitor or not.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "PYTHONPATH": str(Path(__file__).parents[1])}
    result = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, framework], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    count, grad, grown = result.stdout.split()[-3:]
    assert (count, grad) == ("110", "False")
    assert int(grown) < 24 * 2**20, f"RSS grew {int(grown) / 2**20:.0f} MiB for 0.2 MiB of captures"


def test_tuple_named_tuple_dict_and_none_outputs_keep_their_structure(framework: str, tmp_path: Path) -> None:
    model = _net(framework, in_place=False)
    with Monitor(model, [ATTN, "pairs"], [0], tmp_path, [0]) as monitor:
        real_attn, real_pairs = RealOutputs(framework, model, ATTN), RealOutputs(framework, model, "pairs")
        monitor.set_epoch(0)
        monitor.set_batch_idx(0)
        model(_x(framework))
        data = monitor.get_single_data()
        paths = monitor.save_single_outputs()
    attn = data[ATTN]["data"][(0, 0)]
    assert isinstance(attn, tuple) and len(attn) == 2
    assert_same(attn, real_attn.outputs[0])
    pairs = data["pairs"]["data"][(0, 0)]
    assert isinstance(pairs["pair"], Pair) and pairs["pair"].v is None
    assert_same(pairs, real_pairs.outputs[0])
    assert data["pairs"]["output_shape"] == {"pair": [[2, 3, 8], None], "view": [2, 1, 8]}
    with np.load(next(p for p in paths if "pairs" in str(p)), allow_pickle=False) as z:
        assert sorted(z.files) == ["b0.pair.0", "b0.view"]
        np.testing.assert_array_equal(z["b0.pair.0"], real_pairs.outputs[0]["pair"].k)
        np.testing.assert_array_equal(z["b0.view"], real_pairs.outputs[0]["view"])


def test_a_view_is_saved_as_its_own_data_not_its_base_storage(framework: str, tmp_path: Path) -> None:
    model = _net(framework)
    with Monitor(model, ["pairs"], [0], tmp_path, [0]) as monitor:
        monitor.set_epoch(0)
        monitor.set_batch_idx(0)
        model(_x(framework))
        view = monitor.get_single_data(copy=False)["pairs"]["data"][(0, 0)]["view"]
        (path,) = monitor.save_single_outputs()
    if framework == "torch":
        assert view.untyped_storage().nbytes() == view.numel() * 4
    y = _np(model.transformer.encoder.layers[0](_x(framework)))  # the input "pairs" got, computed again
    with np.load(path) as z:
        assert z["b0.view"].shape == (2, 1, 8) and z["b0.pair.0"].shape == (2, 3, 8)
        np.testing.assert_allclose(z["b0.view"], y[:, :1], rtol=1e-6)
        np.testing.assert_allclose(z["b0.pair.0"], y * 2, rtol=1e-6)


def test_torch_attention_without_weights_gives_none_and_paddle_cache_a_named_tuple(
    framework: str, tmp_path: Path
) -> None:
    fw = _import(framework)
    x = _x(framework)
    if framework == "torch":
        attn = fw.nn.MultiheadAttention(8, 2, batch_first=True)
        call = lambda: attn(x, x, x, need_weights=False)  # noqa: E731
    else:
        attn = fw.nn.MultiHeadAttention(8, 2, need_weights=True)
        cache = attn.gen_cache(x)
        call = lambda: attn(x, x, x, cache=cache)  # noqa: E731
    with Monitor(attn, [""], [0], tmp_path, [0]) as monitor:
        monitor.set_epoch(0)
        monitor.set_batch_idx(0)
        call()
        out = monitor.get_single_data()["model"]
        monitor.save_single_outputs()
    value = out["data"][(0, 0)]
    if framework == "torch":
        assert value[1] is None and out["output_shape"] == [[2, 3, 8], None]
    else:
        assert len(value) == 3 and type(value[2]).__name__ == "Cache" and value[2]._fields == ("k", "v")
    again = call()  # the same call once more, without hooks: the layer's real output
    np.testing.assert_allclose(_np(value[0]), _np(again[0]), rtol=1e-6)
    if framework == "paddle":
        np.testing.assert_allclose(_np(value[1]), _np(again[1]), rtol=1e-6)  # attention weights
        np.testing.assert_allclose(_np(value[2].k), _np(again[2].k), rtol=1e-6)


def test_a_layer_called_twice_per_batch_keeps_both_outputs(framework: str, tmp_path: Path) -> None:
    fw = _import(framework)
    layer = fw.nn.Linear(8, 8)
    with Monitor(layer, {"": {"alias": "lin"}}, [0], tmp_path, [0]) as monitor:
        monitor.set_epoch(0)
        monitor.set_batch_idx(0)
        layer(layer(_x(framework)))
        data = monitor.get_single_data()["lin"]["data"]
        assert list(data) == [(0, 0), (0, 0, 2)]
    once = layer(_x(framework))  # the hooks are gone: the layer's real outputs, computed again
    np.testing.assert_allclose(_np(data[(0, 0)]), _np(once), rtol=1e-6)
    np.testing.assert_allclose(_np(data[(0, 0, 2)]), _np(layer(once)), rtol=1e-6)


def test_get_data_returns_copies(framework: str, tmp_path: Path) -> None:
    model = _net(framework, in_place=False)
    with Monitor(model, [FFN], [0], tmp_path, [0]) as monitor:
        monitor.set_epoch(0)
        monitor.set_batch_idx(0)
        model(_x(framework))
        copy = monitor.get_single_data()[FFN]["data"][(0, 0)]
        copy *= 0
        assert np.abs(_np(monitor.get_single_data()[FFN]["data"][(0, 0)])).sum() > 0


# -- hooks ---------------------------------------------------------------------------------------


def test_remove_hooks_leaves_outputs_and_hook_dicts_exactly_as_before(framework: str, tmp_path: Path) -> None:
    model = _net(framework)

    def hook_dicts() -> list[Any]:
        if framework == "paddle":
            return [dict(m._forward_post_hooks) for m in model.sublayers(include_self=True)]
        names = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")
        return [dict(getattr(m, n)) for m in model.modules() for n in names]

    before, out_before = hook_dicts(), _np(model(_x(framework)))
    monitor = Monitor(model, MIXED, [0], tmp_path, [0])
    assert hook_dicts() != before
    monitor.remove_hooks()
    monitor.remove_hooks()  # idempotent
    assert hook_dicts() == before
    np.testing.assert_array_equal(_np(model(_x(framework))), out_before)
    with Monitor(model, MIXED, [0], tmp_path, [0]):
        pass
    assert hook_dicts() == before


def _hook_dicts(framework: str, model: Any) -> list[Any]:
    """Every forward-hook table of every layer of ``model``, as the framework keeps them."""
    if framework == "paddle":
        return [dict(m._forward_post_hooks) for m in model.sublayers(include_self=True)]
    names = ("_forward_hooks", "_forward_hooks_with_kwargs", "_forward_hooks_always_called")
    return [dict(getattr(m, n)) for m in model.modules() for n in names]


def test_no_hook_is_registered_while_nothing_records_and_recorded_batches_still_match(
    framework: str, tmp_path: Path
) -> None:
    model = _net(framework, in_place=False)
    attn, ffn = RealOutputs(framework, model, ATTN), RealOutputs(framework, model, FFN)
    bare = _hook_dicts(framework, model)  # the reference hooks only
    monitor = Monitor(model, MIXED, [1], tmp_path, [1])
    assert _hook_dicts(framework, model) != bare  # all registered until the first call says "eager"
    monitor.set_epoch(0)
    monitor.set_batch_idx(0)
    model(_x(framework))  # the first call: eager, so hooks now come and go with recording
    hooked: dict[tuple[int, int], list[str]] = {}
    for epoch in (0, 1, 2):
        monitor.set_epoch(epoch)
        for batch in range(3):
            monitor.set_batch_idx(batch)
            hooked[epoch, batch] = sorted(e.alias for e in monitor.layers if e.handle is not None)
            if not hooked[epoch, batch]:
                assert _hook_dicts(framework, model) == bare  # not one hook of the monitor's
            model(_x(framework, 10 * epoch + batch))
        if epoch == 1:
            single, full = monitor.get_single_data(), monitor.get_epoch_data()
    assert hooked == {
        (epoch, batch): ((["attention_weights"] if batch == 1 else []) + ["ffn_epoch_stats"])
        if epoch == 1
        else []
        for epoch in (0, 1, 2)
        for batch in range(3)
    }
    # epoch 1 is calls 5, 6, 7 of the layers (call 1: the first forward, then epoch 0's three)
    assert list(single["attention_weights"]["data"]) == [(1, 1)]
    assert_same(single["attention_weights"]["data"][(1, 1)], attn.outputs[5])
    assert list(full["ffn_epoch_stats"]["data"]) == [(1, 0), (1, 1), (1, 2)]
    for batch in range(3):
        assert_same(full["ffn_epoch_stats"]["data"][(1, batch)], ffn.outputs[4 + batch])
    monitor.remove_hooks()
    monitor.set_epoch(1)
    monitor.set_batch_idx(1)  # recording settings after remove_hooks(): still no hook
    assert _hook_dicts(framework, model) == bare


def test_a_compiled_model_keeps_its_hooks_on_batches_that_record_nothing(tmp_path: Path) -> None:
    """A compiled graph keeps the hooks it was traced with: removing them would lose later captures."""
    torch = _import("torch")
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    monitor = Monitor(model, {"0": {"alias": "fc", "record_type": "single"}}, [0], tmp_path, [3])
    compiled = torch.compile(model, backend="eager")
    monitor.set_epoch(0)
    for batch in range(5):
        monitor.set_batch_idx(batch)
        assert monitor.layers[0].handle is not None
        compiled(torch.randn(4, 8))
    assert list(monitor.get_single_data()["fc"]["data"]) == [(0, 3)]
    monitor.remove_hooks()
    torch._dynamo.reset()


def test_hooks_registered_before_torch_compile_still_capture_without_recompiling(tmp_path: Path) -> None:
    torch = _import("torch")
    torch._dynamo.reset()
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    graphs = []

    def backend(gm: Any, inputs: Any) -> Any:
        graphs.append(gm)
        return gm.forward

    monitor = Monitor(model, {"0": {"alias": "fc", "record_type": "single"}}, [0], tmp_path, [2, 5])
    compiled = torch.compile(model, backend=backend)
    monitor.set_epoch(0)
    eager = {}
    for batch in range(8):
        x = torch.randn(4, 8)
        monitor.set_batch_idx(batch)
        compiled(x)
        eager[batch] = torch.nn.functional.linear(x, model[0].weight, model[0].bias).detach()
    data = monitor.get_single_data()["fc"]["data"]
    assert list(data) == [(0, 2), (0, 5)]
    for key, value in data.items():
        torch.testing.assert_close(value, eager[key[1]])
    assert len(graphs) <= 6  # a per-batch decision inside the hook recompiled every batch
    monitor.remove_hooks()
    torch._dynamo.reset()


# -- files ---------------------------------------------------------------------------------------


def test_default_files_are_npz_with_a_json_manifest_readable_without_pickle(
    framework: str, tmp_path: Path
) -> None:
    model = _net(framework)
    monitor = Monitor(model, MIXED, [1], tmp_path, [0])
    _train(framework, model, monitor, epochs=1, batches=2)
    monitor.remove_hooks()
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert {(e["alias"], e["epoch"], e["batch_idx"]) for e in manifest} == {
        ("attention_weights", 1, 0),
        ("ffn_epoch_stats", 1, 0),
        ("ffn_epoch_stats", 1, 1),
    }
    for entry in manifest:
        assert entry["layer"] in (ATTN, FFN) and entry["output_shape"]
        with np.load(tmp_path / entry["file"], allow_pickle=False) as z:
            for key in entry["leaves"]:
                assert key in z.files
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]  # atomic: no temporaries left


def test_native_format_writes_the_seed_items_as_pt_or_pdtensor(framework: str, tmp_path: Path) -> None:
    fw = _import(framework)
    model = _net(framework)
    with Monitor(model, [ATTN], [0], tmp_path, [0], file_format="native") as monitor:
        monitor.set_epoch(0)
        monitor.set_batch_idx(0)
        model(_x(framework))
        (path,) = monitor.save_single_outputs()
    assert path.suffix == (".pt" if framework == "torch" else ".pdtensor")
    items = fw.load(str(path)) if framework == "paddle" else fw.load(path, weights_only=True)
    assert items[0]["epoch"] == 0 and items[0]["alias"] == ATTN and len(items[0]["output"]) == 2


def test_a_failing_save_warns_and_training_goes_on(framework: str, tmp_path: Path) -> None:
    model = _net(framework)
    monitor = Monitor(model, {FFN: {"alias": "ffn"}}, [0], tmp_path, [0])
    (tmp_path / "ffn").write_text("a file where the folder should be")
    monitor.set_epoch(0)
    monitor.set_batch_idx(0)
    model(_x(framework))
    with pytest.warns(RuntimeWarning, match="training goes on"):
        assert monitor.save_single_outputs() == []
    monitor.remove_hooks()


def test_epoch_full_past_max_bytes_spills_to_disk_with_a_warning(framework: str, tmp_path: Path) -> None:
    model = _net(framework)
    monitor = Monitor(
        model, {FFN: {"alias": "ffn", "record_type": "epoch_full"}}, [0], tmp_path, max_bytes=300
    )
    monitor.set_epoch(0)
    with pytest.warns(RuntimeWarning, match="max_bytes=300"):
        for batch in range(3):
            monitor.set_batch_idx(batch)
            model(_x(framework, batch))
    assert list(monitor.get_epoch_data()["ffn"]["data"]) == [(0, 0)]  # 192 bytes a batch: one fits
    spilled = sorted(p.name for p in (tmp_path / "ffn").iterdir())
    assert spilled == ["spill_epoch0_batch1-1.npz", "spill_epoch0_batch2-2.npz"]
    monitor.remove_hooks()


class Collect:  # a real sink: the writer calls write(records) and close()
    def __init__(self) -> None:
        self.records: list[Any] = []

    def write(self, records: list[Any]) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass

    def scalars(self, prefix: str) -> dict[tuple[int, str], float]:
        """``{(step, tag): value}`` of the logged scalars whose tag starts with ``prefix``."""
        return {
            (r.step, tag): value
            for r in self.records
            if isinstance(r, Scalars)
            for tag, value in r.values.items()
            if tag.startswith(prefix)
        }


def _stats(arrays: list[np.ndarray]) -> dict[str, float]:
    """The reference: numpy's statistics of the arrays concatenated on dimension 0, in float64."""
    whole = np.concatenate([a.astype(np.float64) for a in arrays], axis=0)
    return {"mean": whole.mean(), "std": whole.std(ddof=1), "min": whole.min(), "max": whole.max()}


def test_statistics_of_recorded_outputs_go_to_the_writer(framework: str, tmp_path: Path) -> None:
    sink = Collect()
    model = _net(framework, in_place=False)
    real = RealOutputs(framework, model, FFN)
    with Writer(None, sinks=[sink]) as writer, Monitor(model, [FFN], [0], tmp_path, [1], writer=writer) as m:
        m.set_epoch(0)
        for batch in range(2):
            m.set_batch_idx(batch)
            model(_x(framework, batch))
    expected = _stats([real.outputs[1]])  # the layer's real output at batch 1, not the capture of it
    logged = sink.scalars("capture/")
    assert logged.keys() == {(1, f"capture/{FFN}/{stat}") for stat in expected}
    for stat, value in expected.items():
        assert logged[(1, f"capture/{FFN}/{stat}")] == pytest.approx(value, rel=1e-9)


@pytest.mark.parametrize("max_bytes", [None, 600], ids=["held", "spilled"])
def test_epoch_full_statistics_are_those_of_the_whole_epoch_concatenated(
    framework: str, tmp_path: Path, max_bytes: int | None
) -> None:
    sink = Collect()
    model = _net(framework, in_place=False)
    layers = {
        FFN: {"alias": "ffn", "record_type": "epoch_full"},
        ATTN: {"alias": "attn", "record_type": "epoch_full"},
    }
    expected = {}
    real = {"ffn": RealOutputs(framework, model, FFN), "attn": RealOutputs(framework, model, ATTN)}
    with Writer(None, sinks=[sink]) as writer:
        monitor = Monitor(model, layers, [1, 2], tmp_path, writer=writer, max_bytes=max_bytes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the spill warning
            for epoch in range(1, 4):
                monitor.set_epoch(epoch)
                for batch in range(4):
                    monitor.set_batch_idx(batch)
                    model(_x(framework, 10 * epoch + batch))
                monitor.save_epoch_outputs()
                if epoch in (1, 2):  # the reference: the layers' real outputs of the epoch's four batches
                    ffn, attn = real["ffn"].outputs[-4:], real["attn"].outputs[-4:]
                    outputs = {"ffn": ffn, "attn.0": [a[0] for a in attn], "attn.1": [a[1] for a in attn]}
                    expected[monitor.step] = {name: _stats(arrays) for name, arrays in outputs.items()}
                    # and every batch, held or spilled, is in the files as it was output
                    saved: dict[str, list[np.ndarray]] = {name: [None] * 4 for name in outputs}
                    for path in tmp_path.glob(f"*/*_epoch{epoch}_*.npz"):
                        with np.load(path) as z:
                            for key in z.files:  # b<batch> for a tensor, b<batch>.<i> inside a tuple
                                batch, _, leaf = key[1:].partition(".")
                                saved[path.parent.name + (f".{leaf}" if leaf else "")][int(batch)] = z[key]
                    for name, arrays in outputs.items():
                        for batch in range(4):
                            np.testing.assert_array_equal(saved[name][batch], arrays[batch])
                monitor.clear_current_epoch_data()
            monitor.remove_hooks()
    assert any(tmp_path.glob("*/spill_*.npz")) == (max_bytes is not None)
    logged = sink.scalars("capture/")
    assert {step for step, _ in logged} == set(expected) == {3, 7}  # once per recorded epoch, at its end
    for step, layers_stats in expected.items():
        for name, stats in layers_stats.items():
            for stat, value in stats.items():
                assert logged[(step, f"capture/{name}/{stat}")] == pytest.approx(value, rel=1e-9, abs=1e-12)


# -- the seed's usage patterns and extension helpers ---------------------------------------------------


def test_callback_pattern_encapsulated_training(framework: str, tmp_path: Path) -> None:
    model = _net(framework)
    monitor = Monitor(model, MIXED, [2], tmp_path, [1])
    seen = []

    def encapsulated_train(num_epochs: int, **kwargs: Any) -> None:
        epoch_callback, batch_callback = kwargs.get("epoch_callback"), kwargs.get("batch_callback")
        for epoch in range(1, num_epochs + 1):
            epoch_callback(epoch)
            for batch_idx in range(3):
                batch_callback(batch_idx)
                model(_x(framework, batch_idx)).backward()
            seen.append(
                (
                    len(monitor.get_single_data()["attention_weights"]["data"]),
                    len(monitor.get_epoch_data()["ffn_epoch_stats"]["data"]),
                )
            )
            monitor.save_single_outputs()
            monitor.save_epoch_outputs()
            monitor.clear_current_epoch_data()
        monitor.remove_hooks()

    encapsulated_train(
        2, epoch_callback=monitor.create_epoch_callback(), batch_callback=monitor.create_batch_callback()
    )
    assert seen == [(0, 0), (1, 3)]
    assert (tmp_path / "attention_weights" / "single_epoch2_batch1-1.npz").exists()


def test_wrapper_pattern_saves_each_epoch_and_removes_hooks(framework: str, tmp_path: Path) -> None:
    model = _net(framework)
    monitor = Monitor(model, MIXED, [1, 2], tmp_path, [0])

    def encapsulated_train(num_epochs: int, epoch_callback: Any = None, batch_callback: Any = None) -> str:
        for epoch in range(1, num_epochs + 1):
            epoch_callback(epoch)
            for batch_idx in range(2):
                batch_callback(batch_idx)
                model(_x(framework, batch_idx)).backward()
        return "done"

    assert MonitoredTrainer(monitor).wrap_training_function(encapsulated_train)(2) == "done"
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npz"))
    assert files == [
        "attention_weights/single_epoch1_batch0-0.npz",
        "attention_weights/single_epoch2_batch0-0.npz",
        "ffn_epoch_stats/epoch_full_epoch1_batch0-1.npz",
        "ffn_epoch_stats/epoch_full_epoch2_batch0-1.npz",
    ]
    assert all(entry.handle is None for entry in monitor.layers)
    with pytest.raises(TypeError, match="epoch_callback and batch_callback"):
        MonitoredTrainer(monitor).wrap_training_function(lambda config: None)


def test_direct_loop_pattern_and_unsaved_epoch_warning(framework: str, tmp_path: Path) -> None:
    model = _net(framework)
    monitor = Monitor(model, MIXED, [1, 2, 3], tmp_path, [0])
    try:
        _train(framework, model, monitor, epochs=3, batches=2)
    finally:
        monitor.remove_hooks()
    assert len(list(tmp_path.rglob("*.npz"))) == 6
    monitor = Monitor(model, MIXED, [1], tmp_path, [0])
    monitor.set_epoch(1)
    monitor.set_batch_idx(0)
    model(_x(framework))
    with pytest.warns(RuntimeWarning, match="neither saved nor read"):
        monitor.set_epoch(2)
    assert not monitor.get_single_data()["attention_weights"]["data"]
    monitor.remove_hooks()


def test_extension_helpers_buffers_custom_output_and_clear(framework: str, tmp_path: Path) -> None:
    fw = _import(framework)
    model = _net(framework)
    monitor = Monitor(model, MIXED, [0], tmp_path, [1])
    monitor.set_epoch(0)
    for batch in range(3):
        monitor.set_batch_idx(batch)
        model(_x(framework, batch))
    buffers = monitor.get_epoch_buffers()
    assert [len(v) for v in buffers.values()] == [3]
    assert [len(v) for v in monitor.get_single_outputs().values()] == [1]
    stacked = fw.stack(buffers["ffn_epoch_stats"])
    path = monitor.save_custom_output({"mean": stacked.mean(0)}, "custom_ffn_epoch_stats.npz")
    with np.load(path) as z:
        assert z["mean"].shape == (2, 3, 8)
    native = "custom.pt" if framework == "torch" else "custom.pdtensor"
    assert monitor.save_custom_output(stacked, native).exists()
    with pytest.raises(ValueError, match="path separators"):
        monitor.save_custom_output(stacked, "../outside.npz")
    monitor.clear_epoch_data()
    assert monitor.get_epoch_buffers() == {"ffn_epoch_stats": []}
    assert len(monitor.get_single_outputs()["attention_weights"]) == 1
    monitor.remove_hooks()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model(_x(framework))  # no hooks, no warnings


# -- the script's extension point and automatic saving -------------------------------------------------


class LargeSumOnly(Monitor):
    """The script's "edit _hook_fn to add a condition", as a subclass: keep outputs whose sum is large."""

    def __init__(self, *args: Any, threshold: float, **kwargs: Any) -> None:
        self.threshold, self.asked = threshold, []
        super().__init__(*args, **kwargs)

    def should_record(self, layer: str, output: Any) -> bool:
        self.asked.append(layer)
        return float(output.detach().sum()) > self.threshold  # the threshold lies between two sums


def test_should_record_override_filters_outputs_before_they_are_kept(framework: str, tmp_path: Path) -> None:
    model = _net(framework, in_place=False)
    layers = {FFN: {"alias": "ffn", "record_type": "epoch_full"}}
    real = RealOutputs(framework, model, FFN)  # every output, for the expectation
    for batch in range(8):
        model(_x(framework, batch))
    real.remove()
    everything = {(0, batch): output for batch, output in enumerate(real.outputs)}
    threshold = float(np.median([v.astype(np.float64).sum() for v in everything.values()]))
    kept = {k: v for k, v in everything.items() if v.astype(np.float64).sum() > threshold}
    assert len(kept) == 4  # the filter keeps some and drops some

    sink = Collect()
    with Writer(None, sinks=[sink]) as writer:
        monitor = LargeSumOnly(model, layers, [0], tmp_path / "kept", writer=writer, threshold=threshold)
        for epoch in (0, 1):
            monitor.set_epoch(epoch)
            for batch in range(8):
                monitor.set_batch_idx(batch)
                model(_x(framework, batch))
            if epoch == 0:
                data = monitor.get_epoch_data()["ffn"]["data"]
                assert list(data) == list(kept)
                for key, value in data.items():
                    np.testing.assert_array_equal(_np(value), kept[key])
                (path,) = monitor.save_epoch_outputs()
        monitor.remove_hooks()
    assert monitor.asked == [FFN] * 8  # asked only on recorded batches (epoch 0), with the layer name
    with np.load(path) as z:
        assert sorted(z.files) == sorted(f"b{key[1]}" for key in kept)
    logged = sink.scalars("capture/ffn/")
    for stat, value in _stats(list(kept.values())).items():
        assert logged[(7, f"capture/ffn/{stat}")] == pytest.approx(value, rel=1e-9, abs=1e-12)


def test_a_failing_should_record_warns_once_and_training_goes_on(framework: str, tmp_path: Path) -> None:
    class Broken(Monitor):
        def should_record(self, layer: str, output: Any) -> bool:
            raise RuntimeError("bad filter")

    model = _net(framework)
    with Broken(model, [FFN], [0], tmp_path, [0, 1]) as monitor:
        monitor.set_epoch(0)
        with pytest.warns(RuntimeWarning, match="bad filter") as record:
            for batch in range(2):
                monitor.set_batch_idx(batch)
                model(_x(framework, batch)).backward()
        assert len(record) == 1
        assert monitor.get_single_data()[FFN]["data"] == {}


def _npz_values(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        return {key: z[key] for key in z.files}


def test_autosave_saves_unsaved_captures_when_the_epoch_ends(framework: str, tmp_path: Path) -> None:
    model = _net(framework, in_place=False)
    monitor = Monitor(model, MIXED, [1, 2], tmp_path, [0, 2], autosave=True)
    real = {
        "attention_weights": RealOutputs(framework, model, ATTN),
        "ffn_epoch_stats": RealOutputs(framework, model, FFN),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "neither saved nor read" warning
        for epoch in (1, 2):
            monitor.set_epoch(epoch)
            for batch in range(3):
                monitor.set_batch_idx(batch)
                model(_x(framework, 10 * epoch + batch))
        monitor.remove_hooks()  # the last epoch is saved here and stays readable
    held = {  # the layers' real outputs of the recorded batches: all three of epoch_full, 0 and 2 of single
        (alias, epoch): {
            f"b{batch}": hook.outputs[3 * (epoch - 1) + batch]
            for batch in ((0, 2) if alias == "attention_weights" else (0, 1, 2))
        }
        for alias, hook in real.items()
        for epoch in (1, 2)
    }
    assert list(monitor.get_epoch_data()["ffn_epoch_stats"]["data"]) == [(2, 0), (2, 1), (2, 2)]
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.npz"))
    assert files == [
        "attention_weights/single_epoch1_batch0-2.npz",
        "attention_weights/single_epoch2_batch0-2.npz",
        "ffn_epoch_stats/epoch_full_epoch1_batch0-2.npz",
        "ffn_epoch_stats/epoch_full_epoch2_batch0-2.npz",
    ]
    for (alias, epoch), outputs in held.items():
        kind = "single" if alias == "attention_weights" else "epoch_full"
        saved = _npz_values(tmp_path / alias / f"{kind}_epoch{epoch}_batch0-2.npz")
        expected = {
            key + leaf: t
            for key, output in outputs.items()
            for leaf, t in (
                [(".0", output[0]), (".1", output[1])] if isinstance(output, tuple) else [("", output)]
            )
        }
        assert saved.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_array_equal(saved[key], value)


def test_autosave_does_not_write_again_what_was_saved_and_without_it_nothing_is_written(
    framework: str, tmp_path: Path
) -> None:
    model = _net(framework)
    monitor = Monitor(model, MIXED, [1], tmp_path / "auto", [0], autosave=True)
    monitor.set_epoch(1)
    monitor.set_batch_idx(0)
    model(_x(framework))
    (single,) = monitor.save_single_outputs()
    written = single.stat().st_mtime_ns
    single.write_bytes(b"changed after the save")  # autosave must leave it alone
    monitor.set_epoch(2)
    assert single.read_bytes() == b"changed after the save" and single.stat().st_mtime_ns != written
    assert (tmp_path / "auto" / "ffn_epoch_stats" / "epoch_full_epoch1_batch0-0.npz").exists()
    monitor.remove_hooks()

    monitor = Monitor(model, MIXED, [1], tmp_path / "plain", [0])
    monitor.set_epoch(1)
    monitor.set_batch_idx(0)
    model(_x(framework))
    with pytest.warns(RuntimeWarning, match="neither saved nor read"):
        monitor.set_epoch(2)
    monitor.remove_hooks()
    assert not list((tmp_path / "plain").rglob("*.npz"))
