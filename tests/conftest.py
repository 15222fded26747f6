"""Builds real torch and paddle models whose weights and gradients are chosen numpy arrays.

Gradients are produced by a real backward pass of ``sum(param * G)``, whose gradient
with respect to ``param`` is exactly ``G``; nothing stands in for either framework.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from typing import Any

import numpy as np
import pytest

FRAMEWORKS = ["torch", "paddle"]
#: ``python -c`` code running the CLI as user nobody, to meet a permission error as root: the
#: modules the command needs are imported first (the interpreter lives under /root here)
CLI_AS_NOBODY = (
    "import os, sys\n"
    "import dualwatch._cli, dualwatch._report, dualwatch._view, dualwatch.readers\n"
    "if os.geteuid() == 0: os.setgid(65534); os.setuid(65534)\n"
    "dualwatch._cli.main()"
)


@pytest.fixture(autouse=True)
def _dualwatch_logger_as_new() -> Any:
    """Each test starts with the ``dualwatch`` logger unconfigured: an application path
    (``dualwatch demo``) installs its stdout handler and would hide later tests' records from caplog."""
    yield
    logger = logging.getLogger("dualwatch")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True
    logger.setLevel(logging.NOTSET)


def _import(framework: str) -> Any:
    if framework == "torch":
        import torch

        return torch
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No ccache found")
        import paddle

    return paddle


@pytest.fixture(params=FRAMEWORKS)
def framework(request: pytest.FixtureRequest) -> str:
    return request.param


def build_model(framework: str, weights: dict[str, np.ndarray], dtype: str = "float32") -> Any:
    """A model whose parameter ``a.b.weight`` is ``weights["a.b.weight"]`` (nested submodules)."""
    fw = _import(framework)
    root = fw.nn.Module() if framework == "torch" else fw.nn.Layer()
    for name, array in weights.items():
        *path, leaf = name.split(".")
        owner = root
        for part in path:
            if not hasattr(owner, part):
                setattr(owner, part, fw.nn.Module() if framework == "torch" else fw.nn.Layer())
            owner = getattr(owner, part)
        if framework == "torch":
            tensor = fw.tensor(array, dtype=fw.float32).to(getattr(fw, dtype))
            setattr(owner, leaf, fw.nn.Parameter(tensor))
        else:
            param = owner.create_parameter(list(array.shape), dtype=dtype)
            param.set_value(fw.to_tensor(array, dtype="float32").astype(dtype))
            setattr(owner, leaf, param)
    return root


def params_of(framework: str, model: Any) -> dict[str, Any]:
    return dict(model.named_parameters())


def set_grads(framework: str, model: Any, grads: dict[str, np.ndarray]) -> None:
    """Give each named parameter exactly the gradient ``grads[name]`` through a backward pass."""
    fw = _import(framework)
    params = params_of(framework, model)
    terms = []
    for name, g in grads.items():
        p = params[name]
        # In float32: paddle has no float16 multiply on CPU; the cast's backward gives G in p's dtype.
        if framework == "torch":
            terms.append((p.float() * fw.tensor(g, dtype=fw.float32)).sum())
        else:
            terms.append((p.astype("float32") * fw.to_tensor(g, dtype="float32")).sum())
    sum(terms[1:], terms[0]).backward()


def clear_grads(framework: str, model: Any) -> None:
    if framework == "torch":
        model.zero_grad(set_to_none=True)
    else:
        model.clear_gradients(set_to_zero=False)


def to_numpy(framework: str, tensor: Any) -> np.ndarray:
    """float64 values of a tensor exactly as the framework holds them (half precision widened)."""
    if framework == "torch":
        return tensor.detach().float().double().numpy() if tensor.dtype.is_floating_point else tensor.numpy()
    return tensor.astype("float32").numpy().astype(np.float64)


def grad_of(framework: str, param: Any) -> np.ndarray:
    return to_numpy(framework, param.grad)


def add_in_place(framework: str, model: Any, name: str, delta: np.ndarray) -> None:
    """An optimizer-like in-place update of one parameter."""
    fw = _import(framework)
    p = params_of(framework, model)[name]
    if framework == "torch":
        with fw.no_grad():
            p.add_(fw.tensor(delta, dtype=fw.float32).to(p.dtype))
    else:
        with fw.no_grad():
            p.set_value((p.astype("float32") + fw.to_tensor(delta, dtype="float32")).astype(p.dtype))


def read_metrics(run_dir: Any) -> list[dict[str, Any]]:
    """Every line of a run's ``metrics.jsonl``, parsed as strict JSON (bare NaN/Infinity fail)."""
    with open(os.path.join(run_dir, "metrics.jsonl"), encoding="utf-8") as f:
        text = f.read()
    assert text == "" or text.endswith("\n")
    return [json.loads(line, parse_constant=_reject_constant) for line in text.splitlines()]


def _tb(run_dir: str) -> Any:
    """TensorBoard's legacy ``EventAccumulator`` over a run, everything kept (no sampling)."""
    from tensorboard.backend.event_processing import event_accumulator as ea

    accumulator = ea.EventAccumulator(run_dir, size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
    accumulator.Reload()
    return accumulator


def _tb_plugins(run_dir: str) -> Any:
    """The plugin ``EventAccumulator`` TensorBoard's server runs (tensors, purges), everything kept."""
    from tensorboard.backend.event_processing import event_accumulator as ea
    from tensorboard.backend.event_processing import plugin_event_accumulator as pea

    accumulator = pea.EventAccumulator(run_dir, size_guidance={k: 0 for k in ea.DEFAULT_SIZE_GUIDANCE})
    accumulator.Reload()
    return accumulator


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not strict JSON")
