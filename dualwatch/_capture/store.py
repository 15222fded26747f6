"""The files on disk: one ``.npz`` (or the framework's native file) per layer, epoch and kind, and one
``manifest.json`` that says which key of which file holds which epoch, batch and call.

``.npz``, ``.npy`` and JSON are read by numpy and any framework without pickle: nothing here writes
a pickle unless the user asks for the framework's own ``.pt`` / ``.pdtensor`` file.

Every file is written whole (a temporary file renamed over it), so a reader never sees half of
one; a failing write warns and returns None, because saving captures must never stop training.
Files are created only inside ``output_dir``, through descriptors opened without following
symbolic links (``O_NOFOLLOW``, new files with ``O_EXCL``): a link planted at
``output_dir/<alias>`` (or at a file's name) cannot send a capture anywhere else.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import secrets
from pathlib import Path
from typing import IO, Any, Callable, Mapping

import numpy as np

from dualwatch._capture.outputs import leaves, map_tensors, shape
from dualwatch._capture.spec import MonitoredLayer, check_file_name
from dualwatch._warn import warn
from dualwatch.backends import Framework

Write = Callable[[IO[bytes]], Any]


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
        if file_format == "npz":
            arrays = {
                item["key"] + leaf: fw.to_numpy(t)
                for item, output in zip(manifest, items.values())
                for leaf, t in leaves(output, fw.is_tensor)
            }
            write: Write = lambda f: _savez(f, arrays)  # noqa: E731
        else:
            records = [
                {k: item[k] for k in ("epoch", "batch_idx", "layer", "alias", "output_shape")}
                | {"output": output}
                for item, output in zip(manifest, items.values())
            ]
            write = _native(fw, records)
        safe_write(output_dir, (entry.alias, path.name), write)
        _update_manifest(output_dir, manifest)
    except Exception as err:  # a full disk must not stop training
        warn(f"saving {entry.alias!r} to {path} failed ({err!r}); training goes on without this file")
        return None
    return path


def _update_manifest(output_dir: Path, entries: list[dict[str, Any]]) -> None:
    old = json.loads(_read_inside(output_dir, "manifest.json") or b"[]")
    replaced = {(e["file"], e["key"]) for e in entries}
    kept = [e for e in old if (e["file"], e["key"]) not in replaced]
    data = json.dumps(kept + entries, indent=1).encode("utf-8")
    safe_write(output_dir, ("manifest.json",), lambda f: f.write(data))


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)


def _open_dir(name: str, parent: int | None) -> int:
    """A descriptor of folder ``name`` (in folder ``parent``), refusing a symbolic link or a file there."""
    try:
        return os.open(name, os.O_RDONLY | _DIRECTORY | _NOFOLLOW | _CLOEXEC, dir_fd=parent)
    except OSError as err:
        if parent is None:
            raise
        raise OSError(
            err.errno,
            f"{name!r} in output_dir is a symbolic link or not a folder; captures are never written "
            "through links (they could lead outside output_dir): remove it or choose another alias",
        ) from None


def safe_write(output_dir: Path, parts: tuple[str, ...], write: Write) -> None:
    """``write(file)`` into ``output_dir / parts...`` (folders created as needed), whole or not at all.

    Every folder below ``output_dir`` is opened with ``O_NOFOLLOW``, the temporary file is created
    with ``O_EXCL | O_NOFOLLOW`` and renamed over the name (a rename replaces a link there, never
    its target), all relative to folder descriptors: nothing written can land outside
    ``output_dir``, whatever links someone plants there, even while this runs.
    """
    *folders, name = parts
    fd = _open_dir(str(output_dir), None)
    try:
        for folder in folders:
            with contextlib.suppress(FileExistsError):
                os.mkdir(folder, dir_fd=fd)
            inner = _open_dir(folder, fd)
            os.close(fd)
            fd = inner
        tmp = f".{secrets.token_hex(8)}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC | getattr(os, "O_BINARY", 0)
        file = os.fdopen(os.open(tmp, flags, 0o666, dir_fd=fd), "wb")
        try:
            with file:
                write(file)
            os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
        except BaseException:
            os.unlink(tmp, dir_fd=fd)
            raise
    finally:
        os.close(fd)


def _read_inside(output_dir: Path, name: str) -> bytes | None:
    """The bytes of ``output_dir / name`` (None when there is none), never read through a link."""
    fd = _open_dir(str(output_dir), None)
    try:
        file = os.open(name, os.O_RDONLY | _NOFOLLOW | _CLOEXEC, dir_fd=fd)
    except FileNotFoundError:
        return None
    except OSError as err:
        raise OSError(
            err.errno, f"{name!r} in output_dir is a symbolic link or unreadable ({err.strerror}): remove it"
        ) from None
    finally:
        os.close(fd)
    with os.fdopen(file, "rb") as f:
        return f.read()


def _native(fw: Framework, obj: Any) -> Write:
    """The framework's own serialiser, through memory: paddle.save takes a path or a BytesIO, not a file."""

    def write(file: IO[bytes]) -> None:
        buffer = io.BytesIO()
        fw.save(obj, buffer)
        file.write(buffer.getbuffer())

    return write


def save_custom(fw: Framework, output_dir: Path, obj: Any, filename: str) -> Path | None:
    """``obj`` saved as ``output_dir / filename``, in the format its extension names (see
    :meth:`~dualwatch._capture.capture.ActivationCapture.save_custom_output`).

    What cannot be written without pickle raises here, before anything is written; only the
    framework's own files (the user's explicit choice) may hold pickles.
    """
    if not isinstance(filename, str):
        raise TypeError(f"save_custom_output: filename must be a string, got {type(filename).__name__}")
    check_file_name(filename, "filename")
    stem, ext = os.path.splitext(filename)
    if ext not in (".npz", ".npy", ".json", *fw.native_extensions):
        raise ValueError(
            f"save_custom_output: unsupported extension {ext!r}; use .npz, .npy, .json, "
            f"or {' / '.join(fw.native_extensions)} for {fw.name} objects"
        )
    arrays = map_tensors(fw.to_numpy, obj, fw.is_tensor)
    write: Write
    if ext == ".npz":
        write = _npz_of(arrays, filename)
    elif ext == ".npy" and (array := _plain_array(arrays)) is not None:
        write = lambda f: np.save(f, array, allow_pickle=False)  # noqa: E731
    elif ext in (".npy", ".json"):
        data = _json_of(arrays, filename)
        if ext == ".npy":
            filename = stem + ".json"
            check_file_name(filename, "filename")
            warn(
                f"save_custom_output: {type(obj).__name__} is not an array, and .npy would hold it as a "
                f"pickle (which np.load refuses by default): wrote it as JSON to {output_dir / filename}",
                UserWarning,
            )
        write = lambda f: f.write(data)  # noqa: E731
    else:
        write = _native(fw, obj)
    path = output_dir / filename
    try:
        safe_write(output_dir, (filename,), write)
    except Exception as err:
        warn(f"saving {path} failed ({err!r}); training goes on without this file")
        return None
    return path


def _plain_array(obj: Any) -> np.ndarray | None:
    """``obj`` as an array numpy stores without pickle (numbers, bools, strings), else None."""
    try:
        array = np.asarray(obj)
    except (ValueError, TypeError):  # ragged lists
        return None
    return None if array.dtype.hasobject else array


def _npz_of(arrays: Any, filename: str) -> Write:
    if not isinstance(arrays, Mapping):
        raise TypeError(
            f"save_custom_output: {filename} (.npz) takes a dict of arrays or tensors, got "
            f"{type(arrays).__name__}: pass {{'name': value}}, or use .npy for one array"
        )
    plain = {str(k): _plain_array(v) for k, v in arrays.items()}
    bad = [k for k, v in plain.items() if v is None]
    if bad:
        raise TypeError(
            f"save_custom_output: {filename}: {bad} are not arrays (.npz would hold them as pickles): "
            "save them to a .json file, or turn them into arrays of numbers"
        )
    return lambda f: _savez(f, plain)


def _json_of(arrays: Any, filename: str) -> bytes:
    try:
        return json.dumps(_jsonable(arrays)).encode("utf-8")
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"save_custom_output: {filename}: neither an array of numbers nor JSON ({err}); "
            "dualwatch writes no pickles: convert it to arrays (.npz / .npy) or to plain numbers, "
            "strings, lists and dicts (.json), or use the framework's own file "
            "(.pt / .pdtensor) for framework objects"
        ) from None


# numpy appends ``.npz`` / ``.npy`` to path names, not to open files: files are passed.
def _savez(file: IO[bytes], arrays: Mapping[str, np.ndarray]) -> None:
    np.savez(file, allow_pickle=False, **arrays)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj
