"""What the user asks for, checked before training starts: the layers and their options, the epochs
and batches, the file format and the names that become files.

Every mistake raises here with the fix in the message, so a bad configuration never gets as far as a
hook or a half-written ``output_dir``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence, Union

import numpy as np

from dualwatch._selection import close_matches

RECORD_TYPES = ("single", "epoch_full")
FILE_FORMATS = ("npz", "native")
LayerSpec = Union[Sequence[str], Mapping[str, Union[Mapping[str, Any], None]]]


#: the longest file or folder name (in bytes) Linux, macOS and Windows file systems all take
NAME_MAX = 255


def check_file_name(name: str, what: str) -> str:
    """``name`` if it is one plain path component that every save can create (it becomes a file or
    folder name): checked here so that a name the file system refuses fails before training, not
    at every save."""
    bad = [sep for sep in ("/", "\\", os.sep, os.altsep, "\0") if sep and sep in name]
    if not name or name in (".", "..") or bad:
        raise ValueError(
            f"{what} {name!r} cannot be used as a file name inside output_dir "
            f"(it is empty, '.', '..' or contains {bad or 'nothing usable'}): "
            "choose a name without path separators"
        )
    control = sorted({c for c in name if ord(c) < 32 or ord(c) == 127})
    if control:
        raise ValueError(
            f"{what} {name!r} holds control characters {control}, which make file names that listings "
            "and shells garble: choose a name of printable characters"
        )
    try:
        size = len(os.fsencode(name))
    except UnicodeError:
        raise ValueError(
            f"{what} {name!r} cannot be encoded as a file name (it holds a lone surrogate or a "
            "character the file system's encoding lacks): choose a name of plain characters"
        ) from None
    if size > NAME_MAX:
        raise ValueError(
            f"{what} is {size} bytes long ({name[:40]!r}...); file systems take names of at most "
            f"{NAME_MAX} bytes, so every save would fail: choose a shorter name"
        )
    return name


def check_indices(values: Any, name: str) -> list[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{name} must be a list of integers, got {type(values).__name__}: e.g. {name}=[0, 5]")
    values = list(values)
    bad = [v for v in values if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0]
    if bad:
        raise ValueError(
            f"{name} must hold integers >= 0 (epochs and batches are counted from 0 or 1, never negative), "
            f"got {bad}: use the numbers you pass to set_epoch / set_batch_idx"
        )
    return [int(v) for v in values]


@dataclass
class MonitoredLayer:
    """One monitored layer: its name, alias, record type and the hook's handle."""

    layer: str
    alias: str
    record_type: str
    handle: Any = None


def parse_layers(layers_to_monitor: LayerSpec) -> list[MonitoredLayer]:
    """The layer-output Monitor script's list form (``['a', 'b']``) or dict form
    (``{'a': {'alias': .., 'record_type': ..}}``)."""
    if isinstance(layers_to_monitor, str) or not isinstance(layers_to_monitor, (Mapping, Sequence)):
        raise TypeError(
            "layers_to_monitor must be a list of layer names or a dict {name: {'alias': ..., "
            f"'record_type': ...}}, got {type(layers_to_monitor).__name__}: e.g. ['encoder.layers.0']"
        )
    if not isinstance(layers_to_monitor, Mapping):
        layers_to_monitor = {name: None for name in layers_to_monitor}
    if not layers_to_monitor:
        raise ValueError("layers_to_monitor is empty: name at least one layer (see model.named_modules())")
    parsed = []
    for name, options in layers_to_monitor.items():
        if not isinstance(name, str):
            raise TypeError(f"layer names must be strings, got {name!r}")
        options = {} if options is None else options
        if not isinstance(options, Mapping):
            raise TypeError(
                f"layers_to_monitor[{name!r}] must be a dict with 'alias' and/or 'record_type', "
                f"got {type(options).__name__}"
            )
        unknown = set(options) - {"alias", "record_type"}
        if unknown:
            raise ValueError(
                f"layers_to_monitor[{name!r}] has unknown keys {sorted(unknown)}: only 'alias' and "
                "'record_type' are understood"
            )
        record_type = options.get("record_type") or "single"
        if record_type not in RECORD_TYPES:
            hint = close_matches(str(record_type), RECORD_TYPES) or list(RECORD_TYPES)
            raise ValueError(
                f"layers_to_monitor[{name!r}]: record_type {record_type!r} is not one of "
                f"{list(RECORD_TYPES)}; did you mean {hint[0]!r}?"
            )
        alias = options.get("alias")
        if alias is not None and not isinstance(alias, str):
            raise TypeError(f"layers_to_monitor[{name!r}]: alias must be a string or None, got {alias!r}")
        alias = alias if alias is not None else (name or "model")
        parsed.append(
            MonitoredLayer(name, check_file_name(alias, f"layers_to_monitor[{name!r}]: alias"), record_type)
        )
    seen: set[str] = set()
    for entry in parsed:
        if entry.alias in seen:
            raise ValueError(
                f"Duplicate alias '{entry.alias}' in layers_to_monitor. Give each layer its own alias "
                "(an unset alias is the layer name)."
            )
        seen.add(entry.alias)
    return parsed


def missing_layers_message(missing: list[str], available: list[str]) -> str:
    hints = {name: close_matches(name, available) for name in missing}
    hint_text = "; ".join(f"{name!r}: {matches}" for name, matches in hints.items() if matches)
    shown = available if len(available) <= 200 else [*available[:200], f"... {len(available) - 200} more"]
    return (
        "The following layers specified in 'layers_to_monitor' do not exist in the model: "
        f"{missing}. Closest matches: {hint_text or 'none'}. Available layers: {shown}"
    )
