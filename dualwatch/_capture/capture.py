"""Capture chosen layers' outputs during training through forward hooks: :class:`ActivationCapture`,
also named ``Monitor`` as in the layer-output Monitor script.

The model and the training loop stay as they are: :class:`ActivationCapture` hooks the named layers
of a ``torch.nn.Module`` or a ``paddle.nn.Layer`` (same names in both: ``named_modules()`` and
``named_sublayers(include_self=True)`` agree) and keeps their outputs for the epochs and batches
asked for. What it does differently from the layer-output Monitor script, and why:

* **Copies, never aliases.** ``detach().cpu()`` returns the same memory on the CPU in both
  frameworks, so a later in-place op (``ReLU(inplace=True)``) would rewrite the capture. Every
  tensor is detached and copied; nothing keeps the autograd graph alive, and a view is stored as
  its own data, not its base storage.
* **The record-or-not decision is made once per batch** in :meth:`ActivationCapture.set_batch_idx`;
  the hook only reads a bool. Comparing a changing batch number inside the hook made
  ``torch.compile`` recompile every batch. Hooks registered before ``torch.compile`` keep capturing.
* **No hook while not recording.** A hook, even one that only reads a bool, moves every call of
  its layer off the framework's hook-free fast path; so a layer's hook is registered only while
  its record type records (from the :meth:`~ActivationCapture.set_batch_idx` that starts
  recording to the one that stops it) and a batch that records nothing runs the model exactly as
  if no monitor existed. The exception is a compiled model (``torch.compile``, Paddle's static
  graph): a compiled graph keeps the hooks it was traced with and never sees hooks added later,
  so all hooks stay from construction until :meth:`~ActivationCapture.remove_hooks`. Which of the
  two a model is, the hooks' first call tells: they are all registered until then.
* **Structure is kept**: tuples (torch ``MultiheadAttention`` gives ``(out, weights)`` or
  ``(out, None)``), named tuples (paddle's attention cache), lists and dicts; ``output_shape``
  mirrors the structure (a list for tuples and lists, a dict for dicts, ``None`` for ``None``).
* **Files both frameworks read without pickle**: ``.npz`` per layer and epoch plus
  ``manifest.json``; ``file_format="native"`` writes the script's ``.pt`` / ``.pdtensor`` items.
  Writes are atomic (temp file + rename); aliases can never name a path outside ``output_dir``,
  and files are created without following links, so a link planted there cannot lead elsewhere.
* **Bounded memory**: ``epoch_full`` data past ``max_bytes`` is spilled to disk with a warning; an
  ``epoch_full`` layer's statistics are running totals (:mod:`dualwatch._capture.stats`), not the
  epoch's data.
* **A filter without rewriting the hook**: where the script says to edit ``_hook_fn`` to add
  conditions, override :meth:`ActivationCapture.should_record`.
* **Never breaks training**: bad configuration raises before training with the fix in the
  message; a failing save or capture only warns.

Frameworks are recognised as in :mod:`dualwatch.backends` (``sys.modules``); this module imports
neither.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from dualwatch._capture.outputs import leaves, map_tensors, shape
from dualwatch._capture.spec import (
    FILE_FORMATS,
    LayerSpec,
    MonitoredLayer,
    check_indices,
    missing_layers_message,
    parse_layers,
)
from dualwatch._capture.stats import Moments, add_moments, log_moments, moments
from dualwatch._capture.store import save_custom, write_captures
from dualwatch._selection import close_matches
from dualwatch._warn import warn
from dualwatch.backends import backend_for


class ActivationCapture:
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
            ``"native"`` (the layer-output Monitor script's ``.pt`` / ``.pdtensor`` files of item dicts).
        max_bytes: memory cap of the captures held; ``epoch_full`` captures past it are written
            to disk at once (a warning says where) instead of kept. ``None``: no cap.
        writer: a :class:`dualwatch.Writer`; each recorded tensor's mean, std, min and max are
            logged as ``capture/<alias><leaf>/<stat>``: a ``'single'`` capture at the step counted
            by :meth:`set_batch_idx`; an ``'epoch_full'`` layer once per epoch, when the epoch ends
            (the next :meth:`set_epoch` or :meth:`remove_hooks`), at the epoch's last step, with the
            statistics of all its batches concatenated (spilled ones included).
        autosave: save what is not saved yet when the epoch ends: the next :meth:`set_epoch` saves
            the finished epoch's ``'single'`` and ``'epoch_full'`` captures (then drops them, as
            always), :meth:`remove_hooks` saves the last epoch's (and keeps them readable): the
            script's automatic saving. Without it, captures neither saved nor read are dropped
            with a warning. Captures you saved yourself are not written twice.

    Captured outputs are detached CPU copies. A layer that runs several times in one batch keeps
    its first output under ``(epoch, batch_idx)`` and the ``n``-th under ``(epoch, batch_idx, n)``.

    **Custom filters.** The layer-output Monitor script is extended by editing ``_hook_fn`` to add
    conditions such as ``self._custom_condition(output)``. Here, subclass and override
    :meth:`should_record`; it is asked only for outputs the epoch and batch settings record, before
    anything is copied::

        class LargeOnly(Monitor):
            def should_record(self, layer, output):
                return float(output.abs().max()) > 10.0

    ``Monitor`` is the same class, under the name the layer-output Monitor script uses.
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
        autosave: bool = False,
    ) -> None:
        backend = backend_for(model)  # TypeError for anything but a torch / paddle model
        self._framework = backend.framework
        self.model = backend.model
        self.layers = parse_layers(layers_to_monitor)
        available = backend.module_names()
        missing = [entry.layer for entry in self.layers if entry.layer not in available]
        if missing:
            raise ValueError(missing_layers_message(missing, available))
        self.epochs_to_record = set(check_indices(epochs_to_record, "epochs_to_record"))
        if not self.epochs_to_record:
            raise ValueError("epochs_to_record must not be empty: list the epochs to record, e.g. [1, 5, 10]")
        if batch_indices is not None:
            batch_indices = check_indices(batch_indices, "batch_indices")
        singles = [e.layer for e in self.layers if e.record_type == "single"]
        if singles and not batch_indices:
            raise ValueError(
                f"batch_indices must be given and non-empty: layers {singles} have record_type 'single', "
                "which records the batches in batch_indices (or set their record_type to 'epoch_full')"
            )
        self.batch_indices = set(batch_indices or ())
        if file_format not in FILE_FORMATS:
            raise ValueError(f"file_format must be one of {list(FILE_FORMATS)}, got {file_format!r}")
        max_bytes = _check_max_bytes(max_bytes)
        if writer is not None and not callable(getattr(writer, "log", None)):
            raise TypeError(
                f"writer= takes a dualwatch.Writer (anything with its log(step, scalars) method), "
                f"got {type(writer).__name__}: pass watcher.writer or dualwatch.Writer(logdir)"
            )
        self.file_format, self.max_bytes, self.writer = file_format, max_bytes, writer
        self.autosave = bool(autosave)
        self.output_dir = _output_dir(output_dir, [entry.alias for entry in self.layers])

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
        self._not_written: set[str] = set()  # aliases holding captures no save has written (autosave)
        self._epoch_moments: dict[str, dict[str, Moments]] = {}  # 'epoch_full' statistics so far
        self._warned: set[str] = set()
        self._backend = backend
        self._hooks = {entry.alias: self._make_hook(entry) for entry in self.layers}
        self._compiled: bool | None = None  # None until a hook's first call says eager or compiled
        self._closed = False  # remove_hooks() was called: no hook is registered again
        self._sync_hooks()  # all of them, until the first call

    @classmethod
    def from_config(
        cls,
        model: Any,
        config: Mapping[str, Any] | str | os.PathLike[str],
        output_dir: str | os.PathLike[str],
        batch_indices: Sequence[int] | None = None,
        **options: Any,
    ) -> ActivationCapture:
        """A monitor from the layer-output Monitor script's ``config.json`` keys ``monitor_layers`` and
        ``monitor_epochs`` (a dict or the JSON file's path); ``monitor_batch_indices`` is read when
        present."""
        if not isinstance(config, Mapping):
            with open(config, encoding="utf-8") as f:
                config = json.load(f)
        absent = [key for key in ("monitor_layers", "monitor_epochs") if key not in config]
        if absent:
            raise KeyError(
                f"config has no {absent}: add them as in the layer-output Monitor script's config.json"
            )
        indices = config.get("monitor_batch_indices") if batch_indices is None else batch_indices
        return cls(model, config["monitor_layers"], config["monitor_epochs"], output_dir, indices, **options)

    # -- the per-batch decision and the hook ------------------------------------------------------

    def set_epoch(self, epoch: int) -> None:
        """Sets the current epoch; data of an earlier epoch is dropped from memory (save it first,
        or pass ``autosave=True``). A change of epoch ends the previous one (see ``writer=``)."""
        (epoch,) = check_indices([epoch], "epoch")
        if self.current_epoch is not None and epoch != self.current_epoch:
            self._end_epoch()
            if self._unsaved and not self.autosave:
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
        (batch_idx,) = check_indices([batch_idx], "batch_idx")
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
        self._sync_hooks()

    def _sync_hooks(self) -> None:
        """Registers the hooks of the record types that record now and removes the others; keeps
        them all while the model may be compiled (not known yet, or known to be): see the module's
        note on hooks."""
        if self._closed:
            return
        keep_all = self._compiled is not False
        for entry in self.layers:
            wanted = keep_all or self._recording[entry.record_type]
            if wanted and entry.handle is None:
                entry.handle = self._backend.register_forward_hook(entry.layer, self._hooks[entry.alias])
            elif not wanted and entry.handle is not None:
                entry.handle.remove()
                entry.handle = None

    def _end_epoch(self) -> None:
        """Logs the ``'epoch_full'`` statistics of the epoch that ends and, with ``autosave``,
        writes the captures no save has written yet."""
        if self._epoch_moments:
            finished, self._epoch_moments = self._epoch_moments, {}
            try:
                for alias, found in finished.items():
                    log_moments(self.writer, self.step, alias, found)
            except Exception as err:  # a closed writer must not stop training
                self._warn_once("epochstats", f"logging epoch statistics failed ({err!r}); skipped")
        if self.autosave and self._not_written:
            pending = self._not_written
            self.save_single_outputs([a for a in self.single_data if a in pending])
            self.save_epoch_outputs([a for a in self.epoch_data if a in pending])

    def should_record(self, layer: str, output: Any) -> bool:
        """Whether to keep this output of ``layer`` (its name in ``named_modules()``); ``True``.

        The override point for custom filters (the layer-output Monitor script's "edit
        ``_hook_fn``"): it is called only for outputs the epoch and batch settings record,
        with the layer's raw output (on its device, still in the graph: read it, do not change
        it), before anything is copied. Returning ``False`` skips the output: it is not stored,
        saved or counted in the statistics; a later call of the layer in the same batch keeps its
        own key ``(epoch, batch_idx, n)``. An exception here warns once and skips the output.
        """
        return True

    def _make_hook(self, entry: MonitoredLayer) -> Callable[..., None]:
        kind = entry.record_type

        def hook(module: Any, inputs: Any, output: Any) -> None:
            if self._compiled is None:  # the first call: eager, or traced by a compiler?
                self._compiled = self._framework.compiling()
            if self._recording[kind]:  # the only work on a compiled model's batch that is not recorded
                self._capture(entry, output)

        return hook

    def _capture(self, entry: MonitoredLayer, output: Any) -> None:
        """Stores a detached CPU copy of ``output``; a failure warns and training goes on."""
        try:
            fw = self._framework
            calls = self._calls[entry.alias] = self._calls.get(entry.alias, 0) + 1
            if not self.should_record(entry.layer, output):
                return
            data = map_tensors(fw.host_copy, output, fw.is_tensor)
            key = (self.current_epoch, self.current_batch_idx) + ((calls,) if calls > 1 else ())
            size = sum(fw.nbytes(t) for _, t in leaves(data, fw.is_tensor))
            store = self.single_data if entry.record_type == "single" else self.epoch_data
            record = store[entry.alias]
            record["output_shape"] = shape(data, fw.is_tensor)
            if self.writer is not None:
                found = moments(data, fw)
                if entry.record_type == "single":
                    log_moments(self.writer, self.step, entry.alias, found)
                else:
                    add_moments(self._epoch_moments.setdefault(entry.alias, {}), found)
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
            self._not_written.add(entry.alias)
        except Exception as err:  # monitoring must never stop training
            self._warn_once(f"capture{entry.alias}", f"capturing {entry.alias!r} failed ({err!r}); skipped")

    def _spill(self, entry: MonitoredLayer, key: tuple[int, ...], data: Any) -> None:
        write_captures(self._framework, self.output_dir, self.file_format, entry, "spill", {key: data})
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
        ``'single'`` layers. A deep copy, as in the layer-output Monitor script; ``copy=False`` returns
        the stored tensors (no extra memory; do not modify them in place)."""
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
            self._not_written.discard(alias)
            by_epoch: dict[int, dict[tuple[int, ...], Any]] = {}
            for key, output in store[alias]["data"].items():
                by_epoch.setdefault(key[0], {})[key] = output
            for items in by_epoch.values():
                path = write_captures(
                    self._framework, self.output_dir, self.file_format, entries[alias], kind, items
                )
                if path is not None:
                    written.append(path)
        self._unsaved = False
        return written

    def save_custom_output(self, obj: Any, filename: str) -> Path | None:
        """Saves your own result under ``output_dir``: ``.npz`` (a dict of arrays or tensors),
        ``.npy`` (one array), ``.json``, or the framework's ``.pt`` / ``.pdtensor`` / ``.pdparams``.

        Only the framework's own files may hold pickles: data that is not an array goes to
        ``.json`` (asked as ``.npy``, it is written to the ``.json`` file of the same name, with a
        warning; the path returned says which), and data neither numpy nor JSON can hold raises
        ``TypeError`` here. A failing write warns and returns None."""
        return save_custom(self._framework, self.output_dir, obj, filename)

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
        self._not_written.clear()

    def clear_epoch_data(self) -> None:
        """Drops the ``'epoch_full'`` captures only (after :meth:`get_epoch_buffers`)."""
        self._not_written -= set(self.epoch_data)
        for record in self.epoch_data.values():
            self._bytes -= sum(
                self._framework.nbytes(t)
                for output in record["data"].values()
                for _, t in leaves(output, self._framework.is_tensor)
            )
            record["data"] = {}

    def remove_hooks(self) -> None:
        """Removes every hook this monitor registered and ends the epoch (statistics, ``autosave``);
        the captures stay readable. Safe to call more than once."""
        self._end_epoch()
        self._closed = True
        for entry in self.layers:
            if entry.handle is not None:
                entry.handle.remove()
                entry.handle = None

    def __enter__(self) -> ActivationCapture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove_hooks()


def _check_max_bytes(max_bytes: Any) -> int | None:
    """``max_bytes`` as an int >= 0, or None: a NaN cap would never be reached (nothing spilled)."""
    if max_bytes is None:
        return None
    number = isinstance(max_bytes, (int, float, np.integer, np.floating)) and not isinstance(max_bytes, bool)
    if not number or not math.isfinite(max_bytes) or max_bytes < 0 or max_bytes != int(max_bytes):
        raise ValueError(
            f"max_bytes must be a whole number of bytes >= 0, or None (no cap), got {max_bytes!r}: "
            "e.g. max_bytes=2 << 30 for 2 GiB"
        )
    return int(max_bytes)


def _output_dir(output_dir: Any, aliases: list[str]) -> Path:
    """``output_dir`` resolved and created, and each alias's folder in it usable: checked now, as every
    save would fail (or, through a link, write elsewhere) later."""
    if not isinstance(output_dir, (str, os.PathLike)):
        raise TypeError(f"output_dir must be a path, got {type(output_dir).__name__} {output_dir!r}")
    path = Path(output_dir).resolve()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise ValueError(
            f"output_dir {str(output_dir)!r} cannot be a folder: {existing} is a file; "
            "pass the path of a folder (it is created if missing)"
        )
    path.mkdir(parents=True, exist_ok=True)
    for alias in aliases:
        place = path / alias
        if place.is_symlink() or (place.exists() and not place.is_dir()):
            what = "a symbolic link" if place.is_symlink() else "a file"
            raise ValueError(
                f"{place} is {what}, where alias {alias!r} keeps its captures; they are never written "
                "through links or over files: remove it or choose another alias / output_dir"
            )
    return path


#: The name the layer-output Monitor script uses; the same class.
Monitor = ActivationCapture
