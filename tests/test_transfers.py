"""One device-to-host transfer per check, counted at every tensor call torch makes.

On an accelerator every tensor goes through the device path (in batches, or one at
a time), which these tests force on the CPU with the reducer's switches; on the CPU
small tensors are read through zero-copy numpy views, which is no transfer at all.

The count is taken by a ``TorchFunctionMode``: torch routes every tensor method and
function called from Python through it, so a transfer made any way (``.cpu()``,
``.to("cpu")``, ``.item()``, ``float()``, ``np.asarray``, ``.tolist()``, printing) is
seen, not only the ones a list of patched methods happens to name (on the calling
thread, which is where a check reduces on the device path). A ``.numpy()`` of
the tensor a ``.cpu()`` just returned reads that host copy and is not a second
transfer; any other ``.numpy()`` would be one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

import dualwatch

# Calls that bring tensor data to the host. On an accelerator each is a device-to-host copy
# (or a failure, for .numpy()); `to` and `copy_` only when their destination is the host.
READS_TO_HOST = {
    "cpu",
    "numpy",
    "item",
    "tolist",
    "__array__",
    "__float__",
    "__int__",
    "__bool__",
    "__index__",
    "__complex__",
    "__repr__",
    "__str__",
    "__format__",
}


def _to_host(name: str, args: tuple, kwargs: dict) -> bool:
    """``.to(...)`` naming the CPU as its device, or ``copy_`` into a CPU tensor from another device.

    A ``copy_`` between two tensors on one device (the weight snapshot kept for weight_change)
    stays on the accelerator, so it is not a transfer."""
    if name == "to":
        targets = [*args[1:], kwargs.get("device")]
        return any(isinstance(t, (str, torch.device)) and torch.device(t).type == "cpu" for t in targets)
    if name == "copy_":
        return args[0].device.type == "cpu" and args[1].device.type != "cpu"
    return name in READS_TO_HOST


class Transfers(TorchFunctionMode):
    """Records each call that reads tensor data to the host, as on an accelerator."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.copies: list[torch.Tensor] = []  # the tensors .cpu() returned, kept alive
        self.copied: list[torch.Tensor] = []  # what each .cpu() was called on

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        if _to_host(name, args, kwargs) and not (name == "numpy" and any(args[0] is c for c in self.copies)):
            self.calls.append(name)
            if name in ("cpu", "to"):
                self.copied.append(args[0])
                self.copies.append(result)
        return result

    def clear(self) -> None:
        self.calls.clear()
        self.copies.clear()
        self.copied.clear()


@pytest.fixture
def transfers() -> Iterator[Transfers]:
    with Transfers() as mode:
        yield mode


def _model(tensors: int) -> torch.nn.Module:
    return torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(tensors // 2)])


def _device_path(w: dualwatch.Watcher, batched: bool = True) -> None:
    """Reduce every tensor as on an accelerator: in batches, or one at a time (a framework without
    batches, and tensors of over a million elements)."""
    w._reducer.host_paths = False
    w._reducer.batched = batched


def _stats_per_parameter(out: dict[str, float], model: torch.nn.Module) -> dict[str, int]:
    return {
        name: sum(key.startswith(f"model/{name}/") for key in out) for name, _ in model.named_parameters()
    }


def test_the_transfer_count_sees_every_way_of_reading_a_tensor_to_the_host(transfers: Transfers) -> None:
    """The counter itself: each of these is one host read, even those a list of patched methods missed."""
    x = torch.arange(4.0)
    x.cpu().numpy()  # one copy, then a read of that copy
    x[0].item()
    float(x[1])
    np.asarray(x)
    x.to("cpu")
    x.to(device="cpu", dtype=torch.float64)
    x.tolist()
    torch.empty(4).copy_(x)  # not a transfer: both on one device
    repr(x)
    x.to(torch.float64)  # not a transfer: a dtype change on the same device
    x.mul(2).sum()  # not a transfer
    assert transfers.calls == ["cpu", "item", "__float__", "__array__", "to", "to", "tolist", "__repr__"]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one-at-a-time"])
def test_a_check_makes_exactly_one_host_transfer_whatever_the_parameter_count(
    transfers: Transfers, batched: bool
) -> None:
    model = _model(96)
    model(torch.randn(4, 16)).square().mean().backward()
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False, groups={"first": "0"})
    _device_path(w, batched)
    for step in range(3):
        transfers.clear()
        out = w.step(step)
        # nine statistics per parameter, ten (weight_change) from the second check: all of them came home
        assert set(_stats_per_parameter(out, model).values()) == {9 if step == 0 else 10}
        assert transfers.calls == ["cpu"], transfers.calls  # .cpu() once, then .numpy() of that copy
        (copied,) = transfers.copied
        assert copied.dim() == 1 and copied.dtype == torch.float64  # one flat tensor carrying every scalar


def test_skipped_steps_make_no_transfer(transfers: Transfers) -> None:
    model = _model(4)
    model(torch.randn(2, 16)).sum().backward()
    w = dualwatch.Watcher(model, every=10, logdir=None, console=False)
    transfers.clear()
    assert [w.step(s) for s in range(1, 10)] == [{}] * 9
    assert transfers.calls == []


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "one-at-a-time"])
def test_with_counts_on_device_a_check_finding_nan_still_makes_one_transfer(
    transfers: Transfers, monkeypatch: pytest.MonkeyPatch, batched: bool
) -> None:
    """The accelerator path (forced here on the CPU): NaN/Inf counts ride in the same single copy."""
    model = _model(4)
    model(torch.randn(2, 16)).sum().backward()
    with torch.no_grad():
        model[0].weight[0, :3] = float("nan")
        model[1].bias.grad[0] = float("inf")
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    _device_path(w, batched)
    monkeypatch.setattr(w.backend, "counts_on_device", lambda x: True)  # as on an accelerator
    transfers.clear()
    with pytest.warns(RuntimeWarning, match="nan"):
        out = w.step(0)
    assert transfers.calls == ["cpu"]
    assert out["Model/Nonfinite_Weights"] == 3 and out["train/gradient/nonfinite"] == 1
    assert w.health.first_nonfinite == "0.weight"


def test_on_the_cpu_small_tensors_are_read_in_place_without_any_copy_call(
    transfers: Transfers, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(96)
    model(torch.randn(4, 16)).square().mean().backward()
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    w.step(0)
    transfers.clear()
    out = w.step(1)
    assert set(_stats_per_parameter(out, model).values()) == {10}
    assert set(transfers.calls) == {"numpy"}  # zero-copy views of host memory
    assert transfers.copied == []
