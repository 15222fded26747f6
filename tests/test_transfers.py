"""One device-to-host transfer per check, counted at torch's transfer points."""

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


def test_a_check_makes_exactly_one_host_transfer_whatever_the_parameter_count(transfers: list[str]) -> None:
    model = _model(96)
    model(torch.randn(4, 16)).square().mean().backward()
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False, groups={"first": "0"})
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
