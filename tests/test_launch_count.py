"""The accelerator path launches a number of framework ops that does not grow with the tensor count.

On an accelerator every framework op is a kernel launch, so a check that reduced tensors one at a
time cost about fourteen launches per weight/gradient pair. These tests run the accelerator path
on CPU tensors (the reducer's host paths switched off) and count, at the framework's own
dispatcher, the ops one check runs: torch's ``TorchDispatchMode`` sees every ATen op, paddle's
profiler records every op it runs. A model of 10 tensors and one of 500 must run the same ops.

Ops that only describe existing memory differently (views: ``detach``, ``view``, paddle's
``reshape`` of a contiguous tensor) launch no kernel and are counted apart: each parameter is
detached once per check, and paddle, lacking a multi-tensor copy, flattens each tensor (a view)
before its one ``concat``. The check's one device-to-host copy is counted too.
"""

from __future__ import annotations

import collections
import json
from typing import Any

import numpy as np
import pytest
from test_transfers import Transfers

import dualwatch

TENSORS = (10, 500)


def _watcher(model: Any, batched: bool = True) -> dualwatch.Watcher:
    w = dualwatch.Watcher(model, every=1, logdir=None, console=False)
    w._reducer.host_paths = False  # the accelerator path, on CPU tensors
    w._reducer.batched = batched
    return w


# -- torch --------------------------------------------------------------------------------------


def _torch_model(tensors: int) -> Any:
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(*[torch.nn.Linear(16, 16) for _ in range(tensors // 2)])
    sum((p * torch.randn(p.shape)).sum() for p in model.parameters()).backward()  # every gradient set
    return model


def _torch_ops(w: dualwatch.Watcher, step: int) -> tuple[collections.Counter, collections.Counter]:
    """``(kernels, views)``: the ATen ops one check dispatched, by name."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.kernels: collections.Counter = collections.Counter()
            self.views: collections.Counter = collections.Counter()

        def __torch_dispatch__(
            self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
        ) -> Any:
            (self.views if func.is_view else self.kernels)[str(func)] += 1
            return func(*args, **(kwargs or {}))

    with Ops() as ops:
        out = w.step(step)
    assert out, "the check returned nothing"
    return ops.kernels, ops.views


def test_torch_check_runs_the_same_ops_for_10_and_500_tensors() -> None:
    counts = {}
    for tensors in TENSORS:
        w = _watcher(_torch_model(tensors))
        checks = [_torch_ops(w, step) for step in range(3)]  # the first check, then with snapshots
        counts[tensors] = [kernels for kernels, _ in checks]
        views = checks[-1][1]
        assert 2 * tensors <= views["aten.detach.default"] <= 2 * tensors + 5  # each weight and gradient
        assert sum(views.values()) - views["aten.detach.default"] < 50, views  # the rest: per slice
    assert counts[10] == counts[500], (counts[10][-1], counts[500][-1])
    assert counts[500][1] == counts[500][2]  # steady from the second check on
    assert sum(counts[500][-1].values()) < 60, counts[500][-1]


def test_torch_per_tensor_path_grows_with_the_tensor_count_which_the_count_sees() -> None:
    """The counter itself: one tensor at a time (as a framework without batching), the ops grow."""
    totals = {}
    for tensors in TENSORS:
        w = _watcher(_torch_model(tensors), batched=False)
        w.step(0)
        totals[tensors] = sum(_torch_ops(w, 1)[0].values())
    assert totals[500] - totals[10] >= 10 * (500 - 10), totals


@pytest.mark.parametrize("tensors", TENSORS)
def test_torch_check_makes_one_host_copy_whatever_the_tensor_count(tensors: int) -> None:
    w = _watcher(_torch_model(tensors))
    w.step(0)
    with Transfers() as transfers:
        out = w.step(1)
    assert sum(key.endswith("/weight_change") for key in out) == tensors
    assert transfers.calls == ["cpu"], transfers.calls


# -- paddle -------------------------------------------------------------------------------------


def _paddle_model(tensors: int) -> Any:
    import paddle

    paddle.seed(0)
    model = paddle.nn.Sequential(*[paddle.nn.Linear(16, 16) for _ in range(tensors // 2)])
    paddle.add_n([(p * paddle.randn(p.shape)).sum() for p in model.parameters()]).backward()
    return model


# Paddle ops that re-describe memory in place of copying it (stride kernels): no device work.
PADDLE_VIEWS = {"reshape", "flatten", "squeeze", "unsqueeze", "view_shape", "slice", "detach"}


def _paddle_ops(
    w: dualwatch.Watcher, step: int, trace: Any
) -> tuple[collections.Counter, collections.Counter]:
    """``(kernels, views)``: the ops paddle's profiler saw run during one check, by name."""
    import paddle.profiler as profiler

    prof = profiler.Profiler(targets=[profiler.ProfilerTarget.CPU], on_trace_ready=lambda _: None)
    prof.start()
    out = w.step(step)
    prof.stop()
    assert out, "the check returned nothing"
    prof.export(str(trace), format="json")
    events = json.loads(trace.read_text())["traceEvents"]
    names = [e["name"].split(" dygraph")[0] for e in events if e.get("cat") == "Operator"]
    kernels = collections.Counter(n for n in names if n not in PADDLE_VIEWS)
    views = collections.Counter(n for n in names if n in PADDLE_VIEWS)
    return kernels, views


def test_paddle_check_runs_the_same_ops_for_10_and_500_tensors(tmp_path: Any) -> None:
    counts = {}
    for tensors in TENSORS:
        w = _watcher(_paddle_model(tensors))
        w.step(0)
        checks = [_paddle_ops(w, step, tmp_path / f"{tensors}-{step}.json") for step in (1, 2)]
        counts[tensors] = [kernels for kernels, _ in checks]
        views = checks[-1][1]
        assert views["reshape"] >= 2 * tensors  # each weight and gradient flattened for its concat
    assert counts[10] == counts[500], (counts[10][-1], counts[500][-1])
    assert counts[500][0] == counts[500][1]
    assert sum(counts[500][-1].values()) < 60, counts[500][-1]


READS_TO_HOST = ("numpy", "item", "tolist", "__float__", "__int__", "__array__", "cpu", "_copy_to")


@pytest.mark.parametrize("tensors", TENSORS)
def test_paddle_check_makes_one_host_copy_whatever_the_tensor_count(
    tensors: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each paddle method that reads a tensor to the host is wrapped to count its calls."""
    import paddle

    w = _watcher(_paddle_model(tensors))
    w.step(0)
    calls: list[str] = []
    for name in READS_TO_HOST:
        method = getattr(paddle.Tensor, name, None)
        if method is not None:

            def counted(
                self: Any, *args: Any, _name: str = name, _method: Any = method, **kwargs: Any
            ) -> Any:
                calls.append(_name)
                return _method(self, *args, **kwargs)

            monkeypatch.setattr(paddle.Tensor, name, counted)
    out = w.step(1)
    monkeypatch.undo()
    assert sum(key.endswith("/weight_change") for key in out) == tensors
    assert calls == ["numpy"], calls
    assert np.isfinite(out["train/gradient/total_norm"])
