"""Walking a layer's output, whatever its nesting: a bare tensor, tuples (torch ``MultiheadAttention``
gives ``(out, weights)`` or ``(out, None)``), named tuples (paddle's attention cache), lists and dicts.

Capture copies through it, the file store and the statistics visit its tensors one by one, and
``output_shape`` mirrors it, so every part sees the same structure.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Mapping


def map_tensors(fn: Callable[[Any], Any], obj: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """``obj`` with ``fn`` applied to every tensor, tuples/named tuples/lists/dicts rebuilt."""
    if is_tensor(obj):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple: type(obj)(gen) would fail
        return type(obj)._make(map_tensors(fn, item, is_tensor) for item in obj)
    if isinstance(obj, (list, tuple)):
        return (
            type(obj)(map_tensors(fn, item, is_tensor) for item in obj)
            if type(obj) in (list, tuple)
            else [map_tensors(fn, item, is_tensor) for item in obj]
        )
    if isinstance(obj, Mapping):
        items = {key: map_tensors(fn, value, is_tensor) for key, value in obj.items()}
        try:
            return type(obj)(items)
        except TypeError:
            return items
    return obj


def leaves(obj: Any, is_tensor: Callable[[Any], bool], path: str = "") -> Iterable[tuple[str, Any]]:
    """``(path, tensor)`` for each tensor: ``""`` for a bare tensor, ``".0"``, ``".1.k"`` inside."""
    if is_tensor(obj):
        yield path, obj
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from leaves(item, is_tensor, f"{path}.{i}")
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from leaves(value, is_tensor, f"{path}.{key}")


def shape(obj: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """The layer-output Monitor script's ``output_shape``: a list of ints for a tensor, a list of
    shapes for a tuple."""
    if is_tensor(obj):
        return [int(d) for d in obj.shape]
    if isinstance(obj, (list, tuple)):
        return [shape(item, is_tensor) for item in obj]
    if isinstance(obj, Mapping):
        return {str(key): shape(value, is_tensor) for key, value in obj.items()}
    return None
