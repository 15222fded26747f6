"""One device-to-host transfer per check, counted at torch's transfer points.

On an accelerator every tensor goes through the device path, which these tests
force on the CPU by denying the backend host views; on the CPU small tensors are
read through zero-copy numpy views, which is no transfer at all.
"""

from __future__ import annotations

import pytest
import torch

import dualwatch

TRANSFER_POINTS = ("numpy", "item", "tolist", "cpu", "__float__", "__int__", "__bool__", "__index__")


@pytest.fixture
def transfers(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    for point in TRANSFER_POINTS:
        original = getattr(torch.Tensor, point)

        def counted(self, *args, _point=point, _original=original, **kwargs):
            calls.append(_point)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, point, counted)
    return calls


def _model(tensors: int) -> torch.nn.Module:
    return torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(tensors // 2)])


def _device_path(w: dualwatch.Watcher, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reduce every tensor as on an accelerator: no host views."""
    monkeypatch.setattr(w.backend, "host_array", lambda x: None)


def test_a_check_makes_exactly_one_host_transfer_whatever_the_parameter_count(
    transfers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = _model(96)
    model(torch.randn(4, 16)).square().mean().backward()
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False, groups={"first": "0"})
    _device_path(w, monkeypatch)
    for step in range(3):
        transfers.clear()
        out = w.step(step)
        assert len(out) >= 96 * 9  # nine statistics per parameter, ten from the second check
        assert transfers == ["cpu", "numpy"], transfers  # .cpu() then .numpy(): one copy of one tensor


def test_skipped_steps_make_no_transfer(transfers: list[str]) -> None:
    model = _model(4)
    model(torch.randn(2, 16)).sum().backward()
    w = dualwatch.Watcher(model, every=10, logdir=None, console=False)
    transfers.clear()
    assert [w.step(s) for s in range(1, 10)] == [{}] * 9
    assert transfers == []


def test_with_counts_on_device_a_check_finding_nan_still_makes_one_transfer(
    transfers: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accelerator path (forced here on the CPU): NaN/Inf counts ride in the same single copy."""
    model = _model(4)
    model(torch.randn(2, 16)).sum().backward()
    with torch.no_grad():
        model[0].weight[0, :3] = float("nan")
        model[1].bias.grad[0] = float("inf")
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    _device_path(w, monkeypatch)
    monkeypatch.setattr(w.backend, "counts_on_device", lambda x: True)
    transfers.clear()
    with pytest.warns(RuntimeWarning, match="nan"):
        out = w.step(0)
    assert transfers == ["cpu", "numpy"]
    assert out["Model/Nonfinite_Weights"] == 3 and out["train/gradient/nonfinite"] >= 1
    assert w.health.first_nonfinite == "0.weight"


def test_on_the_cpu_small_tensors_are_read_in_place_without_any_copy_call(transfers: list[str]) -> None:
    model = _model(96)
    model(torch.randn(4, 16)).square().mean().backward()
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    w.step(0)
    transfers.clear()
    assert len(w.step(1)) >= 96 * 10
    assert set(transfers) == {"numpy"}  # zero-copy views of host memory
