"""The frameworks dualwatch knows, and which one a model or a tensor belongs to.

A torch model or tensor can only exist once torch is imported, so a built-in framework's
module here (``dualwatch.backends.torch``, ``.paddle``) is loaded only when its framework is
already in ``sys.modules``: ``import dualwatch`` never imports a framework, and a paddle user
never pays for torch. Other frameworks plug in with :func:`register`.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

from dualwatch._table import Col, ParamInfo
from dualwatch.backends.base import Backend, Framework

__all__ = [
    "FRAMEWORKS",
    "Backend",
    "Col",
    "Framework",
    "ParamInfo",
    "backend_for",
    "framework_of",
    "register",
]

#: the built-in frameworks: the name users give (``dualwatch demo --backend``), which is also the
#: package whose presence in ``sys.modules`` means its tensors may exist, and its module here
FRAMEWORKS = {"torch": "dualwatch.backends.torch", "paddle": "dualwatch.backends.paddle"}

#: engines that lay a built-in framework's parameters out their own way, by the package whose
#: presence in ``sys.modules`` means their models may exist, and their module here: each is asked
#: before the framework, for the models it drives (a DeepSpeed engine and the model it partitions)
ENGINES = {"deepspeed": "dualwatch.backends.torch_deepspeed"}

_registered: list[Framework] = []
_loaded: dict[str, Framework] = {}
_engines: dict[str, Framework] = {}


def register(framework: Framework) -> None:
    """Makes ``framework``'s models watchable and its tensors loggable; it is asked before the built-ins."""
    if not isinstance(framework, Framework):
        raise TypeError(f"register() takes a dualwatch.backends.Framework, got {type(framework).__name__}")
    if framework not in _registered:
        _registered.insert(0, framework)


def unregister(framework: Framework) -> None:
    """Forgets a framework given to :func:`register` (nothing happens if it was not)."""
    if framework in _registered:
        _registered.remove(framework)


def frameworks() -> list[Framework]:
    """The registered frameworks, then the engines and built-in ones whose package is imported."""
    for name, module in FRAMEWORKS.items():
        if name not in _loaded and name in sys.modules:
            _loaded[name] = importlib.import_module(module).FRAMEWORK
    for name, module in ENGINES.items():
        if name not in _engines and name in sys.modules:
            _engines[name] = importlib.import_module(module).FRAMEWORK
    return [*_registered, *_engines.values(), *_loaded.values()]


def framework_of(x: Any) -> Framework | None:
    """The framework whose tensor ``x`` is, or None (numbers, numpy arrays, anything else)."""
    for framework in frameworks():
        if framework.is_tensor(x):
            return framework
    return None


def backend_for(model: Any) -> Backend:
    """The backend for a model of any known framework (``torch.nn.Module``, ``paddle.nn.Layer``...)."""
    for framework in frameworks():
        if framework.is_model(model):
            return framework.backend(model)
    known = ", ".join(f"a {f.name} model" for f in _registered)
    raise TypeError(
        f"dualwatch needs a torch.nn.Module or a paddle.nn.Layer{f' or {known}' if known else ''}, "
        f"got {type(model).__module__}.{type(model).__qualname__}: pass the model itself "
        "(for example Watcher(model)), not its parameters, its state_dict or an optimizer."
    )


def process_rank() -> int | None:
    """The global rank from an initialised process group of any loaded framework, else None."""
    for framework in frameworks():
        rank = framework.process_rank()
        if rank is not None:
            return rank
    return None
