"""Images as uint8 HWC copies (the caller's array is never changed) and PNG bytes.

VisualDL's own ``add_image`` multiplies a float input by 255 in place; here every path
produces a new array. PNG encoding uses OpenCV when installed, else Pillow (a VisualDL
dependency).
"""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from dualwatch.backends import framework_of

LAYOUTS = ("HWC", "CHW", "HW")
_PNG = b"\x89PNG\r\n\x1a\n"
#: PNG colour type -> channels (grey, RGB, palette, grey + alpha, RGBA)
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}


def to_uint8_hwc(image: Any, dataformats: str = "HWC") -> np.ndarray:
    """A new ``[H, W, C]`` uint8 array, C in 1, 3, 4; floats are read as [0, 1]."""
    if dataformats not in LAYOUTS:
        raise ValueError(f"dataformats= is one of {LAYOUTS}, got {dataformats!r}")
    framework = framework_of(image)
    array = framework.to_numpy(image) if framework is not None else np.asarray(image)
    if array.ndim != len(dataformats):
        raise ValueError(
            f"an image in {dataformats} layout has {len(dataformats)} dimensions, got shape {array.shape}"
        )
    if dataformats == "HW":
        array = array[:, :, None]
    elif dataformats == "CHW":
        array = array.transpose(1, 2, 0)
    if array.shape[2] not in (1, 3, 4):
        raise ValueError(f"an image has 1, 3 or 4 channels, got shape {array.shape} in {dataformats} layout")
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
