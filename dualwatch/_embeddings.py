"""Embeddings for both projectors: inputs checked and copied on the caller's thread; the label
images' sprite is drawn on the writer's.

Metadata comes in the caller's layout and leaves as rows (one list of strs per point). torch's
``add_embedding`` takes one label per point, or with ``metadata_header`` one row of columns per
point; VisualDL's ``add_embeddings`` takes one label per point, or a list of columns, each one
label per point (then headed ``label_0``, ``label_1``... when no header is given, as VisualDL does).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Sequence

import numpy as np

from dualwatch import _images
from dualwatch.backends import framework_of
from dualwatch.records import Embedding


class EmbeddingInputs(NamedTuple):
    mat: np.ndarray
    rows: list[list[str]] | None
    header: list[str] | None
    images: np.ndarray | None


def inputs(
    mat: Any, metadata: Any, header: Sequence[Any] | None, label_img: Any, columns_first: bool
) -> EmbeddingInputs:
    """Checks and copies what ``add_embedding(s)`` were given; wrong input raises on the caller's thread."""
    if mat is None:
        raise TypeError("mat= is required: the [points, dimensions] matrix of the embedding")
    points = _host(mat).astype(np.float32)
    if points.ndim != 2 or not points.size:
        raise ValueError(
            f"mat is a [points, dimensions] matrix with at least one value, got shape {points.shape}"
        )
    rows = _rows(metadata, columns_first)
    if rows is not None:
        if len(rows) != len(points):
            raise ValueError(
                f"metadata has {len(rows)} labels for {len(points)} points (rows of mat); give one per point"
            )
        width = len(rows[0])
        if any(len(row) != width for row in rows):
            raise ValueError("metadata rows have different numbers of columns; give each point every column")
        if header is None and width > 1:
            header = [f"label_{i}" for i in range(width)]
        if header is not None and len(header) != width:
            raise ValueError(
                f"metadata_header names {len(header)} columns, metadata has {width}; name each once"
            )
    images = None
    if label_img is not None:
        images = _host(label_img)
        if images.ndim != 4 or len(images) != len(points) or images.shape[1] not in (1, 3, 4):
            raise ValueError(
                f"label_img is [points, channels (1, 3 or 4), height, width] with {len(points)} points, "
                f"got shape {images.shape}"
            )
    return EmbeddingInputs(points, rows, None if header is None else [str(h) for h in header], images)


def _host(value: Any) -> np.ndarray:
    framework = framework_of(value)
    return np.array(framework.to_numpy(value) if framework is not None else value)


def _rows(metadata: Any, columns_first: bool) -> list[list[str]] | None:
    if metadata is None:
        return None
    framework = framework_of(metadata)
    if framework is not None:
        metadata = framework.to_numpy(metadata)
    items = metadata.tolist() if isinstance(metadata, np.ndarray) else list(metadata)
    if not items:
        raise ValueError("metadata is empty; give one label per point, or None")
    if not isinstance(items[0], (list, tuple)):
        return [[str(item)] for item in items]
    if columns_first:
        if any(len(column) != len(items[0]) for column in items):
            raise ValueError("metadata columns have different lengths; give each column one label per point")
        items = list(zip(*items))
    return [[str(cell) for cell in row] for row in items]


def record(tag: str, step: int, wall_ms: int, given: EmbeddingInputs) -> Embedding:
    sprite, size = _sprite(given.images) if given.images is not None else (None, None)
    return Embedding(tag, step, wall_ms, given.mat, given.rows, given.header, sprite, size)


def _sprite(images: np.ndarray) -> tuple[bytes, tuple[int, int]]:
    """The projector's sprite: the images in a square grid, row by row; ``(width, height)`` of one."""
    count, _, height, width = images.shape
    side = math.ceil(math.sqrt(count))
    tiles = [_images.to_uint8_hwc(image, "CHW") for image in images]
    grid = np.zeros((side * height, side * width, tiles[0].shape[2]), np.uint8)
    for i, tile in enumerate(tiles):
        row, column = divmod(i, side)
        grid[row * height : (row + 1) * height, column * width : (column + 1) * width] = tile
    return _images.encode_png(grid), (width, height)
