"""The files on disk: one ``.npz`` (or the framework's native file) per layer, epoch and kind, and one
``manifest.json`` that says which key of which file holds which epoch, batch and call.

``.npz`` and JSON are read by numpy and any framework without pickle. Every file is written whole
(:func:`dualwatch._files.atomic_write`), so a reader never sees half of one; a failing write warns
and returns None, because saving captures must never stop training.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from dualwatch._capture.outputs import leaves, map_tensors, shape
from dualwatch._capture.spec import MonitoredLayer, check_file_name
from dualwatch._files import atomic_write
from dualwatch._warn import warn
from dualwatch.backends import Framework


def write_captures(
    fw: Framework,
    output_dir: Path,
    file_format: str,
    entry: MonitoredLayer,
    kind: str,
    items: dict[tuple[int, ...], Any],
) -> Path | None:
    """One file for ``items`` (captures of one layer and epoch) plus its manifest entries."""
    keys = list(items)
    epoch, first, last = keys[0][0], keys[0][1], keys[-1][1]
    ext = ".npz" if file_format == "npz" else fw.native_extensions[0]
    path = output_dir / entry.alias / f"{kind}_epoch{epoch}_batch{first}-{last}{ext}"
    manifest = []
    for key, output in items.items():
        name = f"b{key[1]}" + (f"c{key[2]}" if len(key) > 2 else "")
        manifest.append(
            {
                "file": path.relative_to(output_dir).as_posix(),
                "key": name,
                "epoch": key[0],
                "batch_idx": key[1],
                "call": key[2] if len(key) > 2 else 1,
                "layer": entry.layer,
                "alias": entry.alias,
                "record_type": entry.record_type,
                "output_shape": shape(output, fw.is_tensor),
                "leaves": {name + leaf: fw.dtype_name(t) for leaf, t in leaves(output, fw.is_tensor)},
            }
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if file_format == "npz":
            arrays = {
                item["key"] + leaf: fw.to_numpy(t)
                for item, output in zip(manifest, items.values())
                for leaf, t in leaves(output, fw.is_tensor)
            }
            atomic_write(path, lambda tmp: _savez(tmp, arrays))
        else:
            records = [
                {k: item[k] for k in ("epoch", "batch_idx", "layer", "alias", "output_shape")}
                | {"output": output}
                for item, output in zip(manifest, items.values())
            ]
            atomic_write(path, lambda tmp: fw.save(records, tmp))
        _update_manifest(output_dir, manifest)
    except Exception as err:  # a full disk must not stop training
        warn(f"saving {entry.alias!r} to {path} failed ({err!r}); training goes on without this file")
        return None
    return path


def _update_manifest(output_dir: Path, entries: list[dict[str, Any]]) -> None:
    path = output_dir / "manifest.json"
    old = json.loads(path.read_text(encoding="utf-8")) if path.exists() else []
    replaced = {(e["file"], e["key"]) for e in entries}
    kept = [e for e in old if (e["file"], e["key"]) not in replaced]
    text = json.dumps(kept + entries, indent=1)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_custom(fw: Framework, output_dir: Path, obj: Any, filename: str) -> Path | None:
    """``obj`` saved as ``output_dir / filename``, in the format its extension names (see
    :meth:`~dualwatch._capture.capture.ActivationCapture.save_custom_output`)."""
    check_file_name(filename, "filename")
    ext = os.path.splitext(filename)[1]
    if ext not in (".npz", ".npy", ".json", *fw.native_extensions):
        raise ValueError(
            f"save_custom_output: unsupported extension {ext!r}; use .npz, .npy, .json, "
            f"or {' / '.join(fw.native_extensions)} for {fw.name} objects"
        )
    arrays = map_tensors(fw.to_numpy, obj, fw.is_tensor)
    writers: dict[str, Callable[[str], Any]] = {
        ".npz": lambda tmp: _savez(tmp, arrays),
        ".npy": lambda tmp: _save_npy(tmp, arrays),
        ".json": lambda tmp: Path(tmp).write_text(json.dumps(_jsonable(arrays)), encoding="utf-8"),
    }
    path = output_dir / filename
    try:
        atomic_write(path, writers.get(ext, lambda tmp: fw.save(obj, tmp)))
    except Exception as err:
        warn(f"saving {path} failed ({err!r}); training goes on without this file")
        return None
    return path


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
