"""Images as uint8 HWC copies (the caller's array is never changed) and PNG bytes.

VisualDL's own ``add_image`` multiplies a float input by 255 in place; here every path
produces a new array. PNG encoding uses OpenCV when installed, else Pillow (a VisualDL
dependency). Batches become one grid image and matplotlib figures an RGB array, as torch's
``SummaryWriter`` draws them.
"""

from __future__ import annotations

import math
import struct
import sys
from typing import Any, Sequence

import numpy as np

from dualwatch.backends import framework_of

LAYOUTS = ("HWC", "CHW", "HW")
BATCH_LAYOUTS = ("NCHW", "NHWC", "NHW")
GRID_COLUMNS = 8  # torch's make_grid
_CHANNELS = (1, 3, 4)
_PNG = b"\x89PNG\r\n\x1a\n"
#: PNG colour type -> channels (grey, RGB, palette, grey + alpha, RGBA)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def layout_of(image: Any, chw_first: bool) -> str:
    """``HW``, ``CHW`` or ``HWC`` read from the shape; a shape that fits both 3-D layouts (or
    none) is ``CHW`` when ``chw_first``, else ``HWC``."""
    shape = _shape(image)
    if len(shape) == 2:
        return "HW"
    first, last = len(shape) == 3 and shape[0] in _CHANNELS, len(shape) == 3 and shape[-1] in _CHANNELS
    if first != last:
        return "CHW" if first else "HWC"
    return "CHW" if chw_first else "HWC"


def to_uint8_hwc(image: Any, dataformats: str = "HWC") -> np.ndarray:
    """A new ``[H, W, C]`` uint8 array, C in 1, 3, 4; floats are read as [0, 1]."""
    if dataformats not in LAYOUTS:
        raise ValueError(f"dataformats= is one of {LAYOUTS}, got {dataformats!r}")
    array = _numpy(image)
    if array.ndim != len(dataformats):
        raise ValueError(
            f"an image in {dataformats} layout has {len(dataformats)} dimensions, got shape {array.shape}"
        )
    if dataformats == "HW":
        array = array[:, :, None]
    elif dataformats == "CHW":
        array = array.transpose(1, 2, 0)
    if array.shape[2] not in _CHANNELS:
        raise ValueError(f"an image has 1, 3 or 4 channels, got shape {array.shape} in {dataformats} layout")
    if array.size == 0:
        raise ValueError(
            f"an image has at least one pixel, got {array.shape[0]}x{array.shape[1]} pixels "
            f"(shape {_shape(image)} in {dataformats} layout); skip the call for an empty image"
        )
    return _uint8(array)


def grid(images: Any, dataformats: str | None, columns: int) -> np.ndarray:
    """A batch of images as one ``[H, W, C]`` uint8 grid, ``columns`` per row (torch's
    ``add_images`` puts 8). Without ``dataformats`` the layout is read from the shape (``NCHW`` when
    both fit)."""
    array = _numpy(images)
    if dataformats is None:
        shape = array.shape
        nhwc = array.ndim == 4 and shape[-1] in _CHANNELS and shape[1] not in _CHANNELS
        dataformats = "NHW" if array.ndim == 3 else "NHWC" if nhwc else "NCHW"
    if dataformats not in BATCH_LAYOUTS:
        raise ValueError(f"dataformats= of a batch is one of {BATCH_LAYOUTS}, got {dataformats!r}")
    if array.ndim != len(dataformats) or array.shape[0] == 0:
        raise ValueError(
            f"a batch in {dataformats} layout has {len(dataformats)} dimensions, got {array.shape}"
        )
    if dataformats == "NHW":
        array = array[..., None]
    elif dataformats == "NCHW":
        array = array.transpose(0, 2, 3, 1)
    count, height, width, channels = array.shape
    if channels not in _CHANNELS:
        raise ValueError(f"images have 1, 3 or 4 channels, got shape {array.shape} in NHWC order")
    if array.size == 0:
        raise ValueError(
            f"images have at least one pixel, got {height}x{width} pixels (shape {array.shape} in NHWC "
            "order); skip the call for empty images"
        )
    columns = min(count, columns)
    rows = math.ceil(count / columns)
    canvas = np.zeros((rows * height, columns * width, channels), np.uint8)
    for i, pixels in enumerate(_uint8(array)):
        row, column = divmod(i, columns)
        canvas[row * height : (row + 1) * height, column * width : (column + 1) * width] = pixels
    return canvas


def draw_figure(figure: Any) -> np.ndarray:
    """A matplotlib figure drawn by Agg as ``[H, W, 3]`` uint8 (torch's ``figure_to_image``)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def close_figures(figures: Sequence[Any]) -> None:
    """Lets pyplot forget ``figures`` (they stay drawable); nothing to do if pyplot is not in use."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        for figure in figures:
            pyplot.close(figure)


def _shape(image: Any) -> tuple[int, ...]:
    shape = getattr(image, "shape", None)
    return tuple(shape) if shape is not None else np.shape(image)


def _numpy(image: Any) -> np.ndarray:
    """The pixels as a numpy array of real numbers, checked on the caller's thread: complex or
    object pixels would otherwise fail (or lose their imaginary part) on the writer thread."""
    framework = framework_of(image)
    array = framework.to_numpy(image) if framework is not None else np.asarray(image)
    if array.dtype.kind not in "biuf":
        hint = "np.abs(img) or img.real" if array.dtype.kind == "c" else "np.asarray(img, dtype=np.float32)"
        raise TypeError(
            f"an image is an array of real numbers (floats in [0, 1] or integers in [0, 255]), got dtype "
            f"{array.dtype} of shape {array.shape}; pass {hint}"
        )
    return array


def _uint8(array: np.ndarray) -> np.ndarray:
    """A new uint8 array: floats read as [0, 1] (NaN as 0), integers clipped to [0, 255]."""
    if array.dtype == np.uint8:
        return array.copy()
    if np.issubdtype(array.dtype, np.floating):
        scaled = np.nan_to_num(array.astype(np.float64) * 255.0, nan=0.0)
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    return np.clip(array, 0, 255).astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    try:
        import cv2
    except ImportError:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).save(buffer, format="PNG")
        return buffer.getvalue()
    order = {1: None, 3: cv2.COLOR_RGB2BGR, 4: cv2.COLOR_RGBA2BGRA}[pixels.shape[2]]
    ok, png = cv2.imencode(".png", pixels if order is None else cv2.cvtColor(pixels, order))
    if not ok:
        raise ValueError(f"OpenCV could not encode an image of shape {pixels.shape}")
    return png.tobytes()


def png_shape(png: bytes) -> tuple[int, int, int]:
    """``(height, width, channels)`` from a PNG header; zeros for any other encoding."""
    if len(png) < 26 or not png.startswith(_PNG):
        return 0, 0, 0
    width, height = struct.unpack(">II", png[16:24])
    return height, width, _PNG_CHANNELS.get(png[25], 0)
