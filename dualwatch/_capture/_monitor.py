"""Capture chosen layers' outputs during training through forward hooks (seed 002's ``Monitor``).

The model and the training loop stay as they are: :class:`Monitor` hooks the named layers of a
``torch.nn.Module`` or a ``paddle.nn.Layer`` (same names in both: ``named_modules()`` and
``named_sublayers(include_self=True)`` agree) and keeps their outputs for the epochs and batches
asked for. What it does differently from the seed, and why:

* **Copies, never aliases.** ``detach().cpu()`` returns the same memory on the CPU in both
  frameworks, so a later in-place op (``ReLU(inplace=True)``) would rewrite the capture. Every
  tensor is detached and copied; nothing keeps the autograd graph alive, and a view is stored as
  its own data, not its base storage.
* **The record-or-not decision is made once per batch** in :meth:`Monitor.set_batch_idx`; the hook
  only reads a bool. Comparing a changing batch number inside the hook made ``torch.compile``
  recompile every batch. Hooks registered before ``torch.compile`` keep capturing.
* **Structure is kept**: tuples (torch ``MultiheadAttention`` gives ``(out, weights)`` or
  ``(out, None)``), named tuples (paddle's attention cache), lists and dicts; ``output_shape``
  mirrors the structure (a list for tuples and lists, a dict for dicts, ``None`` for ``None``).
* **Files both frameworks read without pickle**: ``.npz`` per layer and epoch plus
  ``manifest.json``; ``file_format="native"`` writes the seed's ``.pt`` / ``.pdtensor`` items.
  Writes are atomic (temp file + rename); aliases can never name a path outside ``output_dir``.
* **Bounded memory**: ``epoch_full`` data past ``max_bytes`` is spilled to disk with a warning.
* **Never breaks training**: bad configuration raises before training with the fix in the
  message; a failing save or capture only warns.

Frameworks are recognised as in :mod:`dualwatch.backends` (``sys.modules``); this module imports
neither.
"""

from __future__ import annotations

import copy
import functools
import inspect
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

import numpy as np

from dualwatch._files import atomic_write
from dualwatch._selection import close_matches
from dualwatch._warn import warn
from dualwatch.backends import backend_for

RECORD_TYPES = ("single", "epoch_full")
FILE_FORMATS = ("npz", "native")
LayerSpec = Union[Sequence[str], Mapping[str, Union[Mapping[str, Any], None]]]


# -- walking nested outputs ------------------------------------------------------------------------


def _map(fn: Callable[[Any], Any], obj: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """``obj`` with ``fn`` applied to every tensor, tuples/named tuples/lists/dicts rebuilt."""
    if is_tensor(obj):
        return fn(obj)
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # named tuple: type(obj)(gen) would fail
        return type(obj)._make(_map(fn, item, is_tensor) for item in obj)
    if isinstance(obj, (list, tuple)):
        return (
            type(obj)(_map(fn, item, is_tensor) for item in obj)
            if type(obj) in (list, tuple)
            else [_map(fn, item, is_tensor) for item in obj]
        )
    if isinstance(obj, Mapping):
        items = {key: _map(fn, value, is_tensor) for key, value in obj.items()}
        try:
            return type(obj)(items)
        except TypeError:
            return items
    return obj


def _leaves(obj: Any, is_tensor: Callable[[Any], bool], path: str = "") -> Iterable[tuple[str, Any]]:
    """``(path, tensor)`` for each tensor: ``""`` for a bare tensor, ``".0"``, ``".1.k"`` inside."""
    if is_tensor(obj):
        yield path, obj
    elif isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            yield from _leaves(item, is_tensor, f"{path}.{i}")
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _leaves(value, is_tensor, f"{path}.{key}")


def _shape(obj: Any, is_tensor: Callable[[Any], bool]) -> Any:
    """The seed's ``output_shape``: a list of ints for a tensor, a list of shapes for a tuple."""
    if is_tensor(obj):
        return [int(d) for d in obj.shape]
    if isinstance(obj, (list, tuple)):
        return [_shape(item, is_tensor) for item in obj]
    if isinstance(obj, Mapping):
        return {str(key): _shape(value, is_tensor) for key, value in obj.items()}
    return None


# -- validation ------------------------------------------------------------------------------------


def _check_file_name(name: str, what: str) -> str:
    """``name`` if it is one plain path component (it becomes a file or folder name)."""
    bad = [sep for sep in ("/", "\\", os.sep, os.altsep, "\0") if sep and sep in name]
    if not name or name in (".", "..") or bad:
        raise ValueError(
            f"{what} {name!r} cannot be used as a file name inside output_dir "
            f"(it is empty, '.', '..' or contains {bad or 'nothing usable'}): "
            "choose a name without path separators"
        )
    return name


def _check_indices(values: Any, name: str) -> list[int]:
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
class _Layer:
    """One monitored layer: its name, alias, record type and the hook's handle."""

    layer: str
    alias: str
    record_type: str
    handle: Any = None


def _parse_layers(layers_to_monitor: LayerSpec) -> list[_Layer]:
    """The seed's list form (``['a', 'b']``) or dict form (``{'a': {'alias': .., 'record_type': ..}}``)."""
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
            _Layer(name, _check_file_name(alias, f"layers_to_monitor[{name!r}]: alias"), record_type)
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


def _missing_layers_message(missing: list[str], available: list[str]) -> str:
    hints = {name: close_matches(name, available) for name in missing}
    hint_text = "; ".join(f"{name!r}: {matches}" for name, matches in hints.items() if matches)
    shown = available if len(available) <= 200 else [*available[:200], f"... {len(available) - 200} more"]
    return (
        "The following layers specified in 'layers_to_monitor' do not exist in the model: "
        f"{missing}. Closest matches: {hint_text or 'none'}. Available layers: {shown}"
    )


# -- the monitor -----------------------------------------------------------------------------------


class Monitor:
    """Keeps chosen layers' outputs for chosen epochs and batches, without touching the model.

    Args:
        model: a ``torch.nn.Module`` or ``paddle.nn.Layer`` (a ``torch.compile`` or DataParallel
            wrapper is looked through). Register the monitor before the first compiled call:
            hooks added afterwards are silently skipped by ``torch.compile``.
        layers_to_monitor: layer names as in ``named_modules()``, as a list (alias = name,
            ``record_type='single'``) or a dict ``{name: {'alias': str, 'record_type': ...}}``.
            ``'single'`` keeps the batches in ``batch_indices``; ``'epoch_full'`` keeps every batch
            of the epochs in ``epochs_to_record``.
        epochs_to_record: the epochs (as passed to :meth:`set_epoch`) to record; not empty.
        output_dir: where saves go; created if missing.
        batch_indices: batches (as passed to :meth:`set_batch_idx`) for ``'single'`` layers.
        file_format: ``"npz"`` (default; numpy, no pickle, readable from any framework) or
            ``"native"`` (the seed's ``.pt`` / ``.pdtensor`` files of item dicts).
        max_bytes: memory cap of the captures held; ``epoch_full`` captures past it are written
            to disk at once (a warning says where) instead of kept. ``None``: no cap.
        writer: a :class:`dualwatch.Writer`; each recorded tensor's mean, std, min and max are
            logged as ``capture/<alias><leaf>/<stat>`` at the step counted by :meth:`set_batch_idx`.

    Captured outputs are detached CPU copies. A layer that runs several times in one batch keeps
    its first output under ``(epoch, batch_idx)`` and the ``n``-th under ``(epoch, batch_idx, n)``.
    """

    def __init__(
        self,
        model: Any,
        layers_to_monitor: LayerSpec,
        epochs_to_record: Sequence[int],
        output_dir: str | os.PathLike[str],
        batch_indices: Sequence[int] | None = None,
        *,
        file_format: str = "npz",
        max_bytes: int | None = 1 << 30,
        writer: Any = None,
    ) -> None:
        backend = backend_for(model)  # TypeError for anything but a torch / paddle model
        self._framework = backend.framework
        self._backend = backend
        self.model = backend.model
        self.layers = _parse_layers(layers_to_monitor)
        available = backend.module_names()
        missing = [entry.layer for entry in self.layers if entry.layer not in available]
        if missing:
            raise ValueError(_missing_layers_message(missing, available))
        self.epochs_to_record = set(_check_indices(epochs_to_record, "epochs_to_record"))
        if not self.epochs_to_record:
            raise ValueError("epochs_to_record must not be empty: list the epochs to record, e.g. [1, 5, 10]")
        if batch_indices is not None:
            batch_indices = _check_indices(batch_indices, "batch_indices")
        singles = [e.layer for e in self.layers if e.record_type == "single"]
        if singles and not batch_indices:
            raise ValueError(
                f"batch_indices must be given and non-empty: layers {singles} have record_type 'single', "
                "which records the batches in batch_indices (or set their record_type to 'epoch_full')"
            )
        self.batch_indices = set(batch_indices or ())
        if file_format not in FILE_FORMATS:
            raise ValueError(f"file_format must be one of {list(FILE_FORMATS)}, got {file_format!r}")
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None (no cap), got {max_bytes}")
        self.file_format, self.max_bytes, self.writer = file_format, max_bytes, writer
        self.output_dir = Path(output_dir).resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)

        self.single_data: dict[str, dict[str, Any]] = {}
        self.epoch_data: dict[str, dict[str, Any]] = {}
        for entry in self.layers:
            store = self.single_data if entry.record_type == "single" else self.epoch_data
            store[entry.alias] = {
                "layer": entry.layer,
                "alias": entry.alias,
                "output_shape": None,
                "data": {},
            }
        self.current_epoch: int | None = None
        self.current_batch_idx: int | None = None
        self.step = -1  # batches seen by set_batch_idx: the writer's step
        self._recording = {"single": False, "epoch_full": False}  # the hook reads only this
        self._calls: dict[str, int] = {}  # calls of each alias in the current batch
        self._bytes = 0
        self._unsaved = False
        self._warned: set[str] = set()
        for entry in self.layers:
            hook = self._make_hook(entry)
            entry.handle = backend.register_forward_hook(entry.layer, hook)

    @classmethod
    def from_config(
        cls,
        model: Any,
        config: Mapping[str, Any] | str | os.PathLike[str],
        output_dir: str | os.PathLike[str],
        batch_indices: Sequence[int] | None = None,
        **options: Any,
    ) -> Monitor:
        """A monitor from the seed's ``config.json`` keys ``monitor_layers`` and ``monitor_epochs``
        (a dict or the JSON file's path); ``monitor_batch_indices`` is read when present."""
        if not isinstance(config, Mapping):
            with open(config, encoding="utf-8") as f:
                config = json.load(f)
        absent = [key for key in ("monitor_layers", "monitor_epochs") if key not in config]
        if absent:
            raise KeyError(f"config has no {absent}: add them as in seed 002's config.json example")
        indices = config.get("monitor_batch_indices") if batch_indices is None else batch_indices
        return cls(model, config["monitor_layers"], config["monitor_epochs"], output_dir, indices, **options)

    # -- the per-batch decision and the hook ------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Sets the current epoch; data of an earlier epoch is dropped from memory (save it first)."""
        (epoch,) = _check_indices([epoch], "epoch")
        if self.current_epoch is not None and epoch != self.current_epoch:
            if self._unsaved:
                self._warn_once(
                    f"unsaved{self.current_epoch}",
                    f"epoch {self.current_epoch}'s captures were neither saved nor read before "
                    f"set_epoch({epoch}) dropped them: call save_single_outputs() / save_epoch_outputs() "
                    "at the end of each epoch",
                )
            self.clear_current_epoch_data()
        self.current_epoch, self.current_batch_idx = epoch, None
        self._decide()

    def set_batch_idx(self, batch_idx: int) -> None:
        """Sets the current batch and decides, once for the whole batch, which hooks record."""
        (batch_idx,) = _check_indices([batch_idx], "batch_idx")
        self.current_batch_idx = batch_idx
        self.step += 1
        self._calls.clear()
        self._decide()

    def _decide(self) -> None:
        epoch_on = self.current_epoch in self.epochs_to_record and self.current_batch_idx is not None
        self._recording = {
            "single": epoch_on and self.current_batch_idx in self.batch_indices,
            "epoch_full": epoch_on,
        }

    def _make_hook(self, entry: _Layer) -> Callable[..., None]:
        kind = entry.record_type

        def hook(module: Any, inputs: Any, output: Any) -> None:
            if self._recording[kind]:  # the only work on a batch that is not recorded
                self._capture(entry, output)

        return hook

    def _capture(self, entry: _Layer, output: Any) -> None:
        """Stores a detached CPU copy of ``output``; a failure warns and training goes on."""
        try:
            fw = self._framework
            data = _map(fw.host_copy, output, fw.is_tensor)
            calls = self._calls[entry.alias] = self._calls.get(entry.alias, 0) + 1
            key = (self.current_epoch, self.current_batch_idx) + ((calls,) if calls > 1 else ())
            size = sum(fw.nbytes(t) for _, t in _leaves(data, fw.is_tensor))
            store = self.single_data if entry.record_type == "single" else self.epoch_data
            record = store[entry.alias]
            record["output_shape"] = _shape(data, fw.is_tensor)
            if self.writer is not None:
                self._log_stats(entry.alias, data)
            if (
                entry.record_type == "epoch_full"
                and self.max_bytes is not None
                and self._bytes + size > self.max_bytes
            ):
                self._spill(entry, key, data)
                return
            record["data"][key] = data
            self._bytes += size
            self._unsaved = True
        except Exception as err:  # monitoring must never stop training
            self._warn_once(f"capture{entry.alias}", f"capturing {entry.alias!r} failed ({err!r}); skipped")

    def _log_stats(self, alias: str, data: Any) -> None:
        values = {}
        for path, tensor in _leaves(data, self._framework.is_tensor):
            array = self._framework.to_numpy(tensor).astype(np.float64, copy=False)
            if array.size:
                for stat, fn in (("mean", np.mean), ("std", np.std), ("min", np.min), ("max", np.max)):
                    values[f"capture/{alias}{path}/{stat}"] = float(fn(array))
        self.writer.log(self.step, values)

    def _spill(self, entry: _Layer, key: tuple[int, ...], data: Any) -> None:
        self._write(entry, "spill", {key: data})
        self._warn_once(
            f"spill{entry.alias}{self.current_epoch}",
            f"captures held reached max_bytes={self.max_bytes}: {entry.alias!r} epoch {self.current_epoch} "
            f"batches from {key[1]} on go straight to {self.output_dir / entry.alias} and are not in "
            "get_epoch_data(); raise max_bytes or record fewer layers to keep them in memory",
        )

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            warn(message)

    # -- data access -------------------------------------------------------------------------------

    def _select(self, store: dict[str, dict[str, Any]], layers: Iterable[str] | None) -> list[str]:
        """Aliases of ``store`` named by ``layers`` (aliases or layer names; None: all)."""
        if layers is None:
            return list(store)
        if isinstance(layers, str):
            layers = [layers]
        by_layer = {record["layer"]: alias for alias, record in store.items()}
        chosen = []
        for name in layers:
            alias = name if name in store else by_layer.get(name)
            if alias is None:
                known = list(store) + list(by_layer)
                raise ValueError(
                    f"{name!r} is not a monitored layer or alias of this kind; close matches: "
                    f"{close_matches(name, known) or 'none'}; monitored: {list(store)}"
                )
            chosen.append(alias)
        return chosen

    def _get(self, store: dict[str, dict[str, Any]], layers: Iterable[str] | None, copy_: bool) -> dict:
        self._unsaved = False
        picked = {alias: store[alias] for alias in self._select(store, layers)}
        if not copy_:
            return {alias: {**record, "data": dict(record["data"])} for alias, record in picked.items()}
        return copy.deepcopy(picked)

    def get_single_data(self, layers: Iterable[str] | None = None, *, copy: bool = True) -> dict[str, Any]:
        """``{alias: {'layer', 'alias', 'output_shape', 'data': {(epoch, batch_idx): output}}}`` of
        ``'single'`` layers. A deep copy, as in the seed; ``copy=False`` returns the stored tensors
        (no extra memory; do not modify them in place)."""
        return self._get(self.single_data, layers, copy)

    def get_epoch_data(self, layers: Iterable[str] | None = None, *, copy: bool = True) -> dict[str, Any]:
        """As :meth:`get_single_data`, for ``'epoch_full'`` layers."""
        return self._get(self.epoch_data, layers, copy)

    def get_epoch_buffers(self) -> dict[str, list[Any]]:
        """``{alias: [output of each batch, in order]}`` of ``'epoch_full'`` layers (not copied)."""
        self._unsaved = False
        return {alias: list(record["data"].values()) for alias, record in self.epoch_data.items()}

    def get_single_outputs(self) -> dict[str, list[Any]]:
        """``{alias: [output of each recorded batch]}`` of ``'single'`` layers (not copied)."""
        self._unsaved = False
        return {alias: list(record["data"].values()) for alias, record in self.single_data.items()}

    # -- saving ------------------------------------------------------------------------------------

    def save_single_outputs(self, layers: Iterable[str] | None = None) -> list[Path]:
        """Writes the ``'single'`` captures held; returns the files written."""
        return self._save(self.single_data, "single", layers)

    def save_epoch_outputs(self, layers: Iterable[str] | None = None) -> list[Path]:
        """Writes the ``'epoch_full'`` captures held; returns the files written."""
        return self._save(self.epoch_data, "epoch_full", layers)

    def _save(self, store: dict[str, dict[str, Any]], kind: str, layers: Iterable[str] | None) -> list[Path]:
        entries = {entry.alias: entry for entry in self.layers}
        written = []
        for alias in self._select(store, layers):
            by_epoch: dict[int, dict[tuple[int, ...], Any]] = {}
            for key, output in store[alias]["data"].items():
                by_epoch.setdefault(key[0], {})[key] = output
            for items in by_epoch.values():
                path = self._write(entries[alias], kind, items)
                if path is not None:
                    written.append(path)
        self._unsaved = False
        return written

    def _write(self, entry: _Layer, kind: str, items: dict[tuple[int, ...], Any]) -> Path | None:
        """One file for ``items`` (captures of one layer and epoch) plus its manifest entries."""
        fw = self._framework
        keys = list(items)
        epoch, first, last = keys[0][0], keys[0][1], keys[-1][1]
        ext = ".npz" if self.file_format == "npz" else fw.native_extensions[0]
        path = self.output_dir / entry.alias / f"{kind}_epoch{epoch}_batch{first}-{last}{ext}"
        manifest = []
        for key, output in items.items():
            name = f"b{key[1]}" + (f"c{key[2]}" if len(key) > 2 else "")
            manifest.append(
                {
                    "file": path.relative_to(self.output_dir).as_posix(),
                    "key": name,
                    "epoch": key[0],
                    "batch_idx": key[1],
                    "call": key[2] if len(key) > 2 else 1,
                    "layer": entry.layer,
                    "alias": entry.alias,
                    "record_type": entry.record_type,
                    "output_shape": _shape(output, fw.is_tensor),
                    "leaves": {name + leaf: fw.dtype_name(t) for leaf, t in _leaves(output, fw.is_tensor)},
                }
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if self.file_format == "npz":
                arrays = {
                    item["key"] + leaf: fw.to_numpy(t)
                    for item, output in zip(manifest, items.values())
                    for leaf, t in _leaves(output, fw.is_tensor)
                }
                atomic_write(path, lambda tmp: _savez(tmp, arrays))
            else:
                records = [
                    {k: item[k] for k in ("epoch", "batch_idx", "layer", "alias", "output_shape")}
                    | {"output": output}
                    for item, output in zip(manifest, items.values())
                ]
                atomic_write(path, lambda tmp: fw.save(records, tmp))
            self._update_manifest(manifest)
        except Exception as err:  # a full disk must not stop training
            warn(f"saving {entry.alias!r} to {path} failed ({err!r}); training goes on without this file")
            return None
        return path

    def _update_manifest(self, entries: list[dict[str, Any]]) -> None:
        path = self.output_dir / "manifest.json"
        old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
        replaced = {(e["file"], e["key"]) for e in entries}
        kept = [e for e in old if (e["file"], e["key"]) not in replaced]
        text = json.dumps(kept + entries, indent=1)
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    def save_custom_output(self, obj: Any, filename: str) -> Path | None:
        """Saves your own result under ``output_dir``: ``.npz`` (a dict of arrays or tensors),
        ``.npy``, ``.json``, or the framework's ``.pt`` / ``.pdtensor`` / ``.pdparams``."""
        _check_file_name(filename, "filename")
        ext = os.path.splitext(filename)[1]
        fw = self._framework
        if ext not in (".npz", ".npy", ".json", *fw.native_extensions):
            raise ValueError(
                f"save_custom_output: unsupported extension {ext!r}; use .npz, .npy, .json, "
                f"or {' / '.join(fw.native_extensions)} for {fw.name} objects"
            )
        arrays = _map(fw.to_numpy, obj, fw.is_tensor)
        writers: dict[str, Callable[[str], Any]] = {
            ".npz": lambda tmp: _savez(tmp, arrays),
            ".npy": lambda tmp: _save_npy(tmp, arrays),
            ".json": lambda tmp: Path(tmp).write_text(json.dumps(_jsonable(arrays)), encoding="utf-8"),
        }
        path = self.output_dir / filename
        try:
            atomic_write(path, writers.get(ext, lambda tmp: fw.save(obj, tmp)))
        except Exception as err:
            warn(f"saving {path} failed ({err!r}); training goes on without this file")
            return None
        return path

    # -- callbacks and clean-up -------------------------------------------------------------------

    def create_epoch_callback(self) -> Callable[[int], None]:
        """``callback(epoch)`` for training functions that accept an ``epoch_callback``."""
        return self.set_epoch

    def create_batch_callback(self) -> Callable[[int], None]:
        """``callback(batch_idx)`` for training functions that accept a ``batch_callback``."""
        return self.set_batch_idx

    def clear_current_epoch_data(self) -> None:
        """Drops every capture held (both record types), releasing the memory."""
        for store in (self.single_data, self.epoch_data):
            for record in store.values():
                record["data"] = {}
        self._bytes = 0
        self._unsaved = False

    def clear_epoch_data(self) -> None:
        """Drops the ``'epoch_full'`` captures only (after :meth:`get_epoch_buffers`)."""
        for record in self.epoch_data.values():
            self._bytes -= sum(
                self._framework.nbytes(t)
                for output in record["data"].values()
                for _, t in _leaves(output, self._framework.is_tensor)
            )
            record["data"] = {}

    def remove_hooks(self) -> None:
        """Removes every hook this monitor registered; safe to call more than once."""
        for entry in self.layers:
            if entry.handle is not None:
                entry.handle.remove()
                entry.handle = None

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()


class MonitoredTrainer:
    """Runs a training function that takes ``epoch_callback`` / ``batch_callback`` keywords with a
    monitor: each finished epoch is saved and cleared, and the hooks are removed at the end."""

    def __init__(self, monitor: Monitor) -> None:
        if not isinstance(monitor, Monitor):
            raise TypeError(f"MonitoredTrainer needs a Monitor, got {type(monitor).__name__}")
        self.monitor = monitor

    def wrap_training_function(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` called with the monitor's callbacks; checked now, before any training runs."""
        params = inspect.signature(fn).parameters.values()
        takes = {p.name for p in params} | (
            {"epoch_callback", "batch_callback"} if any(p.kind is p.VAR_KEYWORD for p in params) else set()
        )
        if not {"epoch_callback", "batch_callback"} <= takes:
            raise TypeError(
                f"{getattr(fn, '__name__', fn)!r} must accept epoch_callback and batch_callback keyword "
                "arguments (or **kwargs) and call them at each epoch and batch start"
            )
        monitor = self.monitor

        def on_epoch(epoch: int) -> None:
            self._flush()
            monitor.set_epoch(epoch)

        @functools.wraps(fn)
        def monitored(*args: Any, **kwargs: Any) -> Any:
            kwargs.setdefault("epoch_callback", on_epoch)
            kwargs.setdefault("batch_callback", monitor.create_batch_callback())
            try:
                return fn(*args, **kwargs)
            finally:
                self._flush()
                monitor.remove_hooks()

        return monitored

    def _flush(self) -> None:
        if any(
            record["data"]
            for store in (self.monitor.single_data, self.monitor.epoch_data)
            for record in store.values()
        ):
            self.monitor.save_single_outputs()
            self.monitor.save_epoch_outputs()
            self.monitor.clear_current_epoch_data()


# -- files -----------------------------------------------------------------------------------------


# numpy appends ``.npz`` / ``.npy`` to path names, not to open files: the temporary name stays as is.
def _savez(path: str, arrays: Mapping[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _save_npy(path: str, array: Any) -> None:
    with open(path, "wb") as f:
        np.save(f, array)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj
