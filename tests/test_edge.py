"""Edge maps, edge losses and their logging, on real torch and paddle tensors."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from conftest import _import, build_model
from PIL import Image as PILImage

import dualwatch
from dualwatch import Watcher, Writer, _edge
from dualwatch._edge import (
    SEPARATOR,
    EdgeMapGenerator,
    device_spelling,
    edge_map_mse,
    edge_weighted_mse,
    log_edge_maps,
    median_grey,
    sobel_edge_l1,
    sobel_magnitude,
)

ROOT = Path(__file__).resolve().parents[1]


def _tensor(framework: str, array: np.ndarray, dtype: str = "float32", grad: bool = False) -> Any:
    fw = _import(framework)
    if framework == "torch":
        return fw.tensor(array).to(getattr(fw, dtype)).requires_grad_(grad)
    tensor = fw.to_tensor(array).astype(dtype)
    tensor.stop_gradient = not grad
    return tensor


def _numpy(tensor: Any) -> np.ndarray:
    if hasattr(tensor, "place"):
        return tensor.astype("float64").numpy()
    return tensor.detach().double().numpy()


def _loss_class(framework: str) -> Any:
    if framework == "torch":
        return dualwatch.TorchEdgeLoss
    return dualwatch.PaddleEdgeLoss


def _scenes(n: int, h: int = 96, w: int = 128, seed: int = 0) -> np.ndarray:
    """``[n, h, w]`` uint8 grey scenes: a ramp, filled shapes and noise, so Canny has real work."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, h, w), np.uint8)
    for i in range(n):
        img = np.tile(np.linspace(30, 90, w), (h, 1))
        for _ in range(4):
            x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
            level = float(rng.integers(0, 256))
            if rng.random() < 0.5:
                cv2.rectangle(
                    img, (x, y), (x + int(rng.integers(8, 40)), y + int(rng.integers(8, 40))), level, -1
                )
            else:
                cv2.circle(img, (x, y), int(rng.integers(5, 25)), level, -1)
        out[i] = np.clip(img + rng.normal(0, 4, (h, w)), 0, 255).astype(np.uint8)
    return out


def _in_range(grey: np.ndarray, value_range: tuple[float, float], rgb: bool) -> np.ndarray:
    """uint8 grey -> ``[N, C, H, W]`` float images in ``value_range`` that round back to the same grey."""
    black, white = value_range
    x = (grey.astype(np.float64) / 255.0 * (white - black) + black)[:, None]
    return np.repeat(x, 3, axis=1) if rgb else x


def _cv2_edges(grey: np.ndarray, low: float = 100, high: float = 200, adaptive: bool = False) -> np.ndarray:
    maps = []
    for g in grey:
        blurred = cv2.GaussianBlur(g, (5, 5), 1.4)
        if adaptive:
            median = float(np.median(blurred))
            low, high = max(0.0, 0.7 * median), min(255.0, 1.3 * median)
        maps.append(cv2.Canny(blurred, low, high) / 255.0)
    return np.stack(maps)[:, None]


# -- edge maps ---------------------------------------------------------------------------------


@pytest.fixture(params=["one-pass", "opencv"])
def host_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The host path through the C loops (:mod:`dualwatch._edgehost`, built in the test
    environment), or through the OpenCV and numpy calls of an install built without a C compiler."""
    assert _edge._edgehost is not None, "the C loops should be built in the test environment"
    assert _edge._one_pass_agrees(), "the C grey loop should give OpenCV's bytes on this CPU"
    if request.param == "opencv":
        monkeypatch.setattr(_edge, "_edgehost", None)
    return request.param


@pytest.mark.parametrize("rgb", [True, False], ids=["rgb", "grey"])
@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0), (0.0, 255.0)])
def test_edge_maps_match_cv2_canny_pixel_for_pixel(
    framework: str, host_path: str, rgb: bool, value_range: tuple[float, float]
) -> None:
    grey = _scenes(6)
    images = _tensor(framework, _in_range(grey, value_range, rgb))
    maps = EdgeMapGenerator(value_range=value_range)(images)
    expected = _cv2_edges(grey)
    assert expected.sum() > 100  # the scenes do have edges
    np.testing.assert_array_equal(_numpy(maps), expected)


@pytest.mark.parametrize("map_range", [(0.0, 1.0), (-1.0, 1.0)])
def test_map_range_gives_edges_one_and_the_rest_its_low_value(
    framework: str, host_path: str, map_range: tuple[float, float]
) -> None:
    grey = _scenes(3, seed=4)
    maps = EdgeMapGenerator(map_range=map_range)(_tensor(framework, _in_range(grey, (-1, 1), rgb=True)))
    canny = _cv2_edges(grey)  # {0, 1}
    low, high = map_range
    np.testing.assert_array_equal(_numpy(maps), np.where(canny == 1, high, low))
    assert set(np.unique(_numpy(maps))) == {low, high}


def test_adaptive_thresholds_are_0_7_and_1_3_of_the_median_grey_level(framework: str) -> None:
    grey = _scenes(4, seed=3)
    maps = EdgeMapGenerator(adaptive=True)(_tensor(framework, _in_range(grey, (-1, 1), rgb=True)))
    np.testing.assert_array_equal(_numpy(maps), _cv2_edges(grey, adaptive=True))


@pytest.mark.parametrize("shape", [(7, 5), (8, 6), (1, 1), (64, 64)])
def test_median_from_the_histogram_equals_numpy_median(shape: tuple[int, int]) -> None:
    image = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
    assert median_grey(image) == np.median(image)


def test_grey_conversion_uses_bt601_weights_and_clamps_instead_of_wrapping(
    framework: str, host_path: str
) -> None:
    rgb = np.zeros((1, 3, 1, 5), np.float32)
    rgb[0, :, 0, 0] = [1.0, 0.0, 0.0]  # pure red in [0, 1]
    rgb[0, :, 0, 1] = [0.0, 1.0, 0.0]
    rgb[0, :, 0, 2] = [0.0, 0.0, 1.0]
    rgb[0, :, 0, 3] = [1.2, 1.5, 300.0]  # above white: 255, not 256 -> 0
    rgb[0, :, 0, 4] = [-3.0, -0.2, -1e9]  # below black: 0, not 253
    grey = EdgeMapGenerator(value_range=(0, 1)).grey_uint8(_tensor(framework, rgb))
    np.testing.assert_array_equal(grey[0, 0], [76, 150, 29, 255, 0])  # 255 x (0.299, 0.587, 0.114), rounded


def test_out_of_range_images_give_the_edges_of_their_clamped_version(framework: str) -> None:
    grey = _scenes(2, seed=5)
    images = _in_range(grey, (-1, 1), rgb=True) * 1.7  # decoder output overshooting [-1, 1]
    clamped = np.clip(images, -1, 1)
    generator = EdgeMapGenerator()
    over = generator(_tensor(framework, images))
    np.testing.assert_array_equal(_numpy(over), _numpy(generator(_tensor(framework, clamped))))


def test_flat_images_have_no_edges(framework: str) -> None:
    for level in (-1.0, 0.0, 0.3, 1.0, 5.0):
        maps = EdgeMapGenerator()(_tensor(framework, np.full((2, 3, 32, 32), level, np.float32)))
        assert _numpy(maps).sum() == 0


def test_a_vertical_step_gives_one_vertical_edge_line(framework: str) -> None:
    step = np.full((1, 1, 40, 40), -1.0, np.float32)
    step[..., 20:] = 1.0
    maps = _numpy(EdgeMapGenerator()(_tensor(framework, step)))[0, 0]
    columns = np.flatnonzero(maps.sum(axis=0))
    assert len(columns) == 1 and columns[0] in (19, 20)
    assert maps[:, columns[0]].sum() == 40  # the whole height, one pixel wide
    np.testing.assert_array_equal(
        maps, _cv2_edges(np.where(step[0, 0] > 0, 255, 0).astype(np.uint8)[None])[0, 0]
    )


def test_nan_pixels_raise_a_clear_error(framework: str, host_path: str) -> None:
    images = np.zeros((3, 3, 16, 16), np.float32)
    images[2, 1, 4, 4] = np.nan
    with pytest.raises(ValueError, match=r"image 2 holds NaN.*nan_to_num"):
        EdgeMapGenerator()(_tensor(framework, images))


def test_infinite_pixels_are_clamped_like_other_out_of_range_values(framework: str, host_path: str) -> None:
    images = np.zeros((1, 1, 16, 16), np.float32)
    images[..., 8:] = np.inf
    maps = _numpy(EdgeMapGenerator()(_tensor(framework, images)))
    finite = _numpy(EdgeMapGenerator()(_tensor(framework, np.clip(images, -1, 1))))
    np.testing.assert_array_equal(maps, finite)
    assert maps.sum() > 0


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_maps_come_back_in_the_input_framework_dtype_without_gradient(framework: str, dtype: str) -> None:
    grey = _scenes(2)
    images = _tensor(framework, _in_range(grey, (-1, 1), rgb=True), dtype, grad=True)
    maps = EdgeMapGenerator(threads=1)(images)
    assert type(maps) is type(images)
    assert str(maps.dtype) == str(images.dtype)
    assert list(maps.shape) == [2, 1, 96, 128]
    assert maps.stop_gradient if framework == "paddle" else not maps.requires_grad
    np.testing.assert_array_equal(_numpy(maps), _cv2_edges(grey))


def test_thread_pool_gives_the_same_maps_and_restores_opencv_threads(framework: str, host_path: str) -> None:
    images = _tensor(framework, _in_range(_scenes(5), (-1, 1), rgb=True))
    before = cv2.getNumThreads()
    pooled = EdgeMapGenerator(threads=3)(images)
    assert cv2.getNumThreads() == before
    np.testing.assert_array_equal(_numpy(pooled), _numpy(EdgeMapGenerator(threads=1)(images)))


def _grey_reference(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """``[N, H, W]`` uint8 grey in float64 numpy: BT.601, clamp to the range, scale, round half to even."""
    images = images.astype(np.float64)
    grey = images[:, 0] if images.shape[1] == 1 else np.tensordot([0.299, 0.587, 0.114], images, (0, 1))
    black, white = value_range
    return np.rint((np.clip(grey, black, white) - black) * (255.0 / (white - black))).astype(np.uint8)


@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_maps_are_cv2_canny_of_the_grey_images_pixel_for_pixel_on_noisy_overshooting_images(
    framework: str, host_path: str, channels: int, dtype: str, threads: int
) -> None:
    """Noise, out-of-range values and infinities: every map is exactly OpenCV's blur + Canny of the
    grey image the generator made, and that grey is numpy's float64 grey up to rounding ties."""
    rng = np.random.default_rng(7)
    rgb = _in_range(_scenes(4, seed=8), (-1, 1), rgb=channels == 3)
    images = rgb * 1.2 + rng.normal(0, 0.05, rgb.shape)  # overshoots [-1, 1] here and there
    images[1, :, 5, :7] = np.inf
    images[2, :, 9:12, 3] = -np.inf
    images = images.astype(dtype)
    generator = EdgeMapGenerator(threads=threads)
    tensor = _tensor(framework, images, dtype)
    maps, grey = _numpy(generator(tensor)), generator.grey_uint8(tensor)
    expected = np.stack([cv2.Canny(cv2.GaussianBlur(g, (5, 5), 1.4), 100, 200) / 255.0 for g in grey])
    assert expected.sum() > 100
    np.testing.assert_array_equal(maps, expected[:, None])
    reference = _grey_reference(images, (-1, 1))
    differ = grey != reference
    assert np.abs(grey.astype(int) - reference).max() <= 1 and differ.mean() < 1e-3  # ties only


# -- the C loops against the OpenCV calls they replace -------------------------------------------


def _grey_both_ways(image: np.ndarray, value_range: tuple[float, float]) -> tuple[Any, Any]:
    """``image``'s uint8 grey from the C loop and from the OpenCV calls (an error, where one raises)."""
    scale = _edge._GreyScale.of(len(image), *value_range)
    out = np.empty(image.shape[1:], np.uint8)
    nan = _edge._edgehost.grey_uint8(image, out, *scale)
    try:
        opencv = _edge._grey_uint8_opencv(image, scale, 0, _edge._Work(image.shape[1:], image.dtype)).copy()
    except ValueError as err:
        opencv = err
    return (out if nan < 0 else nan), opencv


def _hard_images(channels: int, shape: tuple[int, int], value_range: tuple[float, float], seed: int) -> dict:
    """Named ``[C, H, W]`` float64 images that stress the conversion (cast to the dtype under test)."""
    rng = np.random.default_rng(seed)
    black, white = value_range
    span = white - black
    levels = (rng.integers(0, 256, shape) + 0.5) / 255 * span + black  # grey at k + 0.5 after scaling
    ties = np.repeat(levels[None], channels, 0) + rng.normal(0, 1e-7 * span, (channels, *shape))
    infinite = rng.uniform(black - span, white + span, (channels, *shape))
    infinite[:, ::3, ::2] = np.inf
    infinite[:, 1::3, 1::2] = -np.inf
    infinite[0, -1, 1] = np.inf  # a lone infinity in one channel of a pixel
    return {
        "random overshooting": rng.uniform(black - 0.3 * span, white + 0.3 * span, (channels, *shape)),
        "rounding ties": ties,
        "constant": np.full((channels, *shape), black + 0.37 * span),
        "constant below black": np.full((channels, *shape), black - 5.0),
        "constant above white": np.full((channels, *shape), white + 1e6),
        "infinite": infinite,
        "huge": rng.choice([-3e38, 3e38, 1e30, -1e-30, 0.0], (channels, *shape)),
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("value_range", [(-1.0, 1.0), (0.0, 1.0), (0.0, 255.0), (-0.3, 2.7)])
@pytest.mark.parametrize("shape", [(64, 64), (67, 45), (1, 64), (513, 3)])
def test_the_one_pass_grey_loop_gives_the_opencv_calls_bytes(
    dtype: str, channels: int, value_range: tuple[float, float], shape: tuple[int, int]
) -> None:
    """Same weights, clamp, fused multiply-adds and round half to even as ``cv2.scaleAdd``,
    ``np.clip`` and ``cv2.convertScaleAbs``: byte for byte, on ties, infinities and huge values."""
    for case, image in _hard_images(channels, shape, value_range, seed=sum(shape) + channels).items():
        with np.errstate(over="ignore"):  # float32 holds neither 3e38 / 0.587 nor its square
            one_pass, opencv = _grey_both_ways(image.astype(dtype), value_range)
        np.testing.assert_array_equal(one_pass, opencv, err_msg=case)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels", [1, 3])
def test_the_one_pass_grey_loop_finds_nan_where_the_opencv_calls_raise(dtype: str, channels: int) -> None:
    """A NaN pixel, and in colour an Inf minus an Inf (red +Inf, blue -Inf: the grey is NaN)."""
    image = np.zeros((channels, 40, 40))
    image[channels - 1, 30, 7] = np.nan
    index, opencv = _grey_both_ways(image.astype(dtype), (-1, 1))
    assert index == 30 * 40 + 7 and isinstance(opencv, ValueError)
    if channels == 3:
        image = np.zeros((3, 40, 40))
        image[0, 3, 4], image[2, 3, 4] = np.inf, -np.inf
        index, opencv = _grey_both_ways(image.astype(dtype), (-1, 1))
        assert index == 3 * 40 + 4 and isinstance(opencv, ValueError)


def test_the_agreement_check_tells_fused_from_unfused_rounding() -> None:
    """The images the one-time check converts both ways round differently in many pixels when the
    multiply-adds are not fused (as in an OpenCV built or run without FMA): the check would see it."""
    for image in _edge._boundary_images((64, 64)):
        scale = _edge._GreyScale.of(len(image), -1.0, 1.0)
        one_pass, opencv = _grey_both_ways(image, (-1.0, 1.0))
        np.testing.assert_array_equal(one_pass, opencv)
        t = image.dtype.type
        grey = image[0] if len(image) == 1 else image[2] * t(scale.wb) + (image[0] * t(scale.wr) + image[1])
        grey = np.clip(grey, scale.low, scale.high).astype(np.float32)
        f = np.float32
        unfused = np.rint(np.abs(grey * f(scale.alpha) + f(scale.beta))).astype(np.uint8)
        assert (unfused != one_pass).mean() > 0.02, image.dtype


@pytest.mark.parametrize("shape", [(7, 9), (96, 128), (256, 256), (512, 515)])
@pytest.mark.parametrize("map_range", [(0.0, 1.0), (-1.0, 1.0), (0.25, -3.5)])
def test_the_map_loop_writes_the_edge_value_on_edges_and_the_other_elsewhere(
    shape: tuple[int, int], map_range: tuple[float, float]
) -> None:
    """Small maps and large ones (streamed past the cache), into targets at any float offset."""
    edges = np.where(np.random.default_rng(sum(shape)).random(shape) < 0.1, 255, 0).astype(np.uint8)
    off, on = map_range
    expected = np.where(edges == 255, np.float32(on), np.float32(off))
    for offset in (0, 1, 5):
        target = np.full(edges.size + 8, 7.0, np.float32)
        _edge._edgehost.edge_map(edges, target[offset : offset + edges.size], off, on)
        np.testing.assert_array_equal(target[offset : offset + edges.size].reshape(shape), expected)
        assert (target[:offset] == 7).all() and (target[offset + edges.size :] == 7).all()


def test_the_c_loops_refuse_buffers_of_the_wrong_type_or_size() -> None:
    out = np.empty((8, 8), np.uint8)
    for image in (np.zeros((3, 8, 8), np.float16), np.zeros((2, 8, 8), np.float32), np.zeros((3, 8, 9))):
        with pytest.raises(ValueError, match="float32/float64"):
            _edge._edgehost.grey_uint8(image, out, 1, 1, 0, 1, 1, 0)
    with pytest.raises(ValueError, match="float32 target"):
        _edge._edgehost.edge_map(out, np.empty((8, 8)), 0.0, 1.0)


def test_an_error_on_a_pool_thread_reaches_the_caller_and_the_pool_still_works(
    framework: str, host_path: str
) -> None:
    images = np.zeros((6, 3, 32, 32), np.float32)
    images[4, 0, 1, 1] = np.nan
    generator = EdgeMapGenerator(threads=2)
    with pytest.raises(ValueError, match="image 4 holds NaN"):
        generator(_tensor(framework, images))
    clean = _tensor(framework, _in_range(_scenes(5), (-1, 1), rgb=True))
    np.testing.assert_array_equal(_numpy(generator(clean)), _cv2_edges(_scenes(5)))


def test_the_images_are_never_written_to(framework: str) -> None:
    rng = np.random.default_rng(3)
    for channels in (1, 3):
        images = rng.uniform(-1.5, 1.5, (2, channels, 24, 24)).astype(np.float32)
        tensor = _tensor(framework, images)
        EdgeMapGenerator()(tensor)
        np.testing.assert_array_equal(_numpy(tensor), images)


def test_maps_of_one_call_are_not_changed_by_the_next_call_on_the_same_thread(framework: str) -> None:
    """Each thread reuses its work arrays from image to image; the maps returned are the caller's own."""
    generator = EdgeMapGenerator(threads=1)
    first_images = _tensor(framework, _in_range(_scenes(2, seed=1), (-1, 1), rgb=True))
    first = generator(first_images)
    kept = _numpy(first).copy()
    generator(_tensor(framework, _in_range(_scenes(2, seed=2), (-1, 1), rgb=True)))
    generator(_tensor(framework, _in_range(_scenes(3, 40, 56, seed=3), (-1, 1), rgb=False)))
    np.testing.assert_array_equal(_numpy(first), kept)
    np.testing.assert_array_equal(_numpy(generator(first_images)), kept)
    np.testing.assert_array_equal(kept, _cv2_edges(_scenes(2, seed=1)))


def test_device_conversion_path_matches_the_host_path(framework: str) -> None:
    """The accelerator path (framework ops, one uint8 copy) agrees with the OpenCV host path.

    No accelerator here: the device path runs on CPU tensors, which is what it would do on a GPU.
    """
    from dualwatch.backends import framework_of

    generator = EdgeMapGenerator()
    exact = _tensor(framework, _in_range(_scenes(3), (-1, 1), rgb=True))
    np.testing.assert_array_equal(
        generator.grey_uint8_on_device(exact, framework_of(exact)), generator.grey_uint8(exact)
    )
    noisy = _tensor(framework, np.random.default_rng(2).uniform(-1.3, 1.3, (2, 3, 32, 32)).astype(np.float32))
    device = generator.grey_uint8_on_device(noisy, framework_of(noisy)).astype(int)
    assert np.abs(device - generator.grey_uint8(noisy).astype(int)).max() <= 1  # float rounding ties only


# -- where the maps go ---------------------------------------------------------------------------


def _cpu_device(framework: str, spelling: str) -> Any:
    fw = _import(framework)
    if spelling == "object":
        return fw.device("cpu") if framework == "torch" else fw.CPUPlace()
    return spelling


@pytest.mark.parametrize("spelling", ["document", "cpu", "CPU", "object"])
def test_device_from_the_edge_loss_document_puts_the_maps_there(framework: str, spelling: str) -> None:
    torch = _import("torch")
    # the StableSR edge loss's own constructor call (on this CPU-only machine: 'cpu')
    device = "cuda" if torch.cuda.is_available() else "cpu"
    generator = EdgeMapGenerator(
        device=device if spelling == "document" else _cpu_device(framework, spelling)
    )
    grey = _scenes(2)
    maps = generator(_tensor(framework, _in_range(grey, (-1, 1), rgb=True)))
    assert generator.device == device
    if framework == "torch":
        assert maps.device == torch.device(device)
    else:
        assert maps.place.is_cpu_place() == (device == "cpu")
    np.testing.assert_array_equal(_numpy(maps), _cv2_edges(grey))


@pytest.mark.parametrize(
    ("given", "spelled"),
    [
        ("cpu", "cpu"),
        ("cuda", "cuda"),
        ("cuda:1", "cuda:1"),
        ("gpu", "cuda"),
        ("gpu:0", "cuda:0"),
        (" GPU:2 ", "cuda:2"),
        ("Place(gpu:3)", "cuda:3"),
    ],
)
def test_device_names_of_both_frameworks_become_one_spelling_both_accept(given: str, spelled: str) -> None:
    assert device_spelling(given) == spelled


def test_framework_device_objects_are_read_as_their_names() -> None:
    torch, paddle = _import("torch"), _import("paddle")
    assert device_spelling(torch.device("cuda", 1)) == "cuda:1"
    assert device_spelling(torch.device("cpu")) == "cpu"
    assert device_spelling(paddle.CPUPlace()) == "cpu"


@pytest.mark.parametrize("device", ["cdua", "tpu", "cuda:x", "mps", "", 3])
def test_unknown_device_raises_at_construction_naming_the_fix(device: Any) -> None:
    with pytest.raises(ValueError, match=r"device must be 'cpu', 'cuda'.*torch\.cuda\.is_available\(\)"):
        EdgeMapGenerator(device=device)


def test_a_cuda_device_no_imported_framework_has_raises_at_construction(framework: str) -> None:
    fw = _import(framework)
    count = fw.cuda.device_count() if framework == "torch" else fw.device.cuda.device_count()
    with pytest.raises(ValueError, match=rf"no CUDA device 'cuda:{count}' here .*{framework} sees {count}"):
        EdgeMapGenerator(device=f"gpu:{count}")
    if count == 0:
        with pytest.raises(ValueError, match=r"leave device unset"):
            EdgeMapGenerator(device="cuda")


# -- losses and gradients ------------------------------------------------------------------------


def _pair(
    seed: int = 0, shape: tuple[int, ...] = (2, 3, 12, 10)
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred = rng.uniform(-1, 1, shape)
    gt = rng.uniform(-1, 1, shape)
    edge = (rng.random((shape[0], 1, *shape[2:])) < 0.2).astype(np.float64)
    return pred, gt, edge


def test_edge_weighted_mse_and_its_gradient_match_a_hand_written_reference(framework: str) -> None:
    pred, gt, edge = _pair()
    p = _tensor(framework, pred, "float64", grad=True)
    loss = edge_weighted_mse(
        p, _tensor(framework, gt, "float64"), _tensor(framework, edge, "float64"), base=0.1
    )
    loss.backward()
    reference = np.mean((pred - gt) ** 2 * (edge + 0.1))
    reference_grad = 2 * (pred - gt) * (edge + 0.1) / pred.size
    np.testing.assert_allclose(float(_numpy(loss)), reference, rtol=1e-12)
    np.testing.assert_allclose(_numpy(p.grad), reference_grad, rtol=1e-12)


def test_edge_weighted_mse_gradient_matches_finite_differences(framework: str) -> None:
    pred, gt, edge = _pair(1, (1, 3, 5, 4))
    args = [_tensor(framework, a, "float64") for a in (gt, edge)]
    p = _tensor(framework, pred, "float64", grad=True)
    edge_weighted_mse(p, *args).backward()
    analytic = _numpy(p.grad)
    h = 1e-6
    numeric = np.empty_like(pred)
    for index in np.ndindex(pred.shape):
        plus, minus = pred.copy(), pred.copy()
        plus[index] += h
        minus[index] -= h
        up = float(_numpy(edge_weighted_mse(_tensor(framework, plus, "float64"), *args)))
        down = float(_numpy(edge_weighted_mse(_tensor(framework, minus, "float64"), *args)))
        numeric[index] = (up - down) / (2 * h)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-10)


def test_sobel_term_gradient_matches_finite_differences_and_is_finite_on_flat_images(framework: str) -> None:
    pred, _, _ = _pair(2, (1, 3, 5, 5))
    p = _tensor(framework, pred, "float64", grad=True)
    sobel_magnitude(p).sum().backward()
    h = 1e-6
    for index in [(0, 0, 0, 0), (0, 1, 2, 2), (0, 2, 4, 3)]:
        plus, minus = pred.copy(), pred.copy()
        plus[index] += h
        minus[index] -= h
        numeric = (
            _numpy(sobel_magnitude(_tensor(framework, plus, "float64"))).sum()
            - _numpy(sobel_magnitude(_tensor(framework, minus, "float64"))).sum()
        ) / (2 * h)
        assert _numpy(p.grad)[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8)
    flat = _tensor(framework, np.zeros((1, 3, 6, 6)), "float64", grad=True)
    sobel_edge_l1(flat, _tensor(framework, np.ones((1, 3, 6, 6)), "float64")).backward()
    assert np.isfinite(_numpy(flat.grad)).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("channels", [3, 1], ids=["rgb", "grey"])
def test_sobel_magnitude_equals_opencv_sobel_on_the_bt601_grey_image(
    framework: str, channels: int, dtype: str
) -> None:
    """The reference is OpenCV's: ``cvtColor`` for the luma, ``cv2.Sobel`` (3x3) for each direction
    and ``cv2.magnitude``, on the pixels whose 3x3 neighbourhood lies inside the image."""
    images = np.stack([_scenes(2, 24, 32, seed=c) for c in range(channels)], axis=1) / 255.0  # [2, C, 24, 32]
    got = _numpy(sobel_magnitude(_tensor(framework, images, dtype), eps=1e-12))
    assert got.shape == (2, 1, 22, 30)
    for n in range(2):
        if channels == 3:
            grey = cv2.cvtColor(
                np.ascontiguousarray(images[n].transpose(1, 2, 0), np.float32), cv2.COLOR_RGB2GRAY
            )
        else:
            grey = images[n, 0]
        grey = grey.astype(np.float64)
        gx = cv2.Sobel(grey, cv2.CV_64F, 1, 0, ksize=3)[1:-1, 1:-1]
        gy = cv2.Sobel(grey, cv2.CV_64F, 0, 1, ksize=3)[1:-1, 1:-1]
        expected = cv2.magnitude(gx, gy)
        assert expected.max() > 1  # real edges, not only noise
        # float32 luma (cvtColor's) and float32 inputs: 1e-5 of the largest gradient
        np.testing.assert_allclose(got[n, 0], expected, rtol=1e-5, atol=1e-5 * expected.max())
        with_eps = _numpy(sobel_magnitude(_tensor(framework, images[n : n + 1], dtype)))[0, 0]
        np.testing.assert_allclose(
            with_eps, np.sqrt(gx * gx + gy * gy + 1e-6), rtol=1e-5, atol=1e-5 * expected.max()
        )


def test_edge_map_mse_is_a_metric_without_gradient(framework: str) -> None:
    grey = _scenes(2)
    gt = _tensor(framework, _in_range(grey, (-1, 1), rgb=True))
    pred = _tensor(framework, _in_range(_scenes(2, seed=9), (-1, 1), rgb=True), grad=True)
    generator = EdgeMapGenerator()
    metric = edge_map_mse(generator(pred), generator(gt))
    assert metric.stop_gradient if framework == "paddle" else not metric.requires_grad
    assert float(_numpy(metric)) > 0


def test_edge_map_mse_of_minus_one_to_one_maps_normalises_as_the_document_does(framework: str) -> None:
    grey_pred, grey_gt = _scenes(2, seed=12), _scenes(2, seed=13)
    pred = _tensor(framework, _in_range(grey_pred, (-1, 1), rgb=True))
    gt = _tensor(framework, _in_range(grey_gt, (-1, 1), rgb=True))
    signed = EdgeMapGenerator(map_range=(-1, 1))
    metric = edge_map_mse(signed(pred), signed(gt), map_range=(-1, 1))
    # the document: pred_edge_norm = (pred_edge + 1) / 2, with pred_edge in [-1, 1] from cv2's Canny
    pred_edge, gt_edge = _cv2_edges(grey_pred) * 2 - 1, _cv2_edges(grey_gt) * 2 - 1
    reference = np.mean(((pred_edge + 1) / 2 - (gt_edge + 1) / 2) ** 2)
    assert reference > 0
    assert float(_numpy(metric)) == pytest.approx(reference, rel=1e-6)
    plain = EdgeMapGenerator()
    assert float(_numpy(edge_map_mse(plain(pred), plain(gt)))) == pytest.approx(reference, rel=1e-6)


def test_edge_weighted_mse_weights_minus_one_to_one_maps_as_zero_to_one(framework: str) -> None:
    pred, gt, edge = _pair(5)
    signed = edge * 2 - 1  # 1 on edges, -1 elsewhere: without normalising, off-edge weights would be -0.9
    args = [_tensor(framework, a, "float64") for a in (pred, gt, signed)]
    loss = edge_weighted_mse(*args, base=0.1, map_range=(-1, 1))
    reference = np.mean((pred - gt) ** 2 * ((signed + 1) / 2 + 0.1))
    np.testing.assert_allclose(float(_numpy(loss)), reference, rtol=1e-12)


def test_edge_loss_gives_the_same_values_with_either_map_range(framework: str) -> None:
    grey = _scenes(2, seed=14)
    gt_np = _in_range(grey, (-1, 1), rgb=True)
    pred_np = np.clip(gt_np + np.random.default_rng(6).normal(0, 0.1, gt_np.shape), -1, 1)
    results = []
    for map_range in ((0, 1), (-1, 1)):
        p = _tensor(framework, pred_np, "float64", grad=True)
        loss_fn = _loss_class(framework)(weight=0.5, edges=EdgeMapGenerator(map_range=map_range))
        loss, parts = loss_fn(p, _tensor(framework, gt_np, "float64"))
        loss.backward()
        results.append((float(_numpy(loss)), _numpy(p.grad), {k: float(_numpy(v)) for k, v in parts.items()}))
    (loss01, grad01, parts01), (loss11, grad11, parts11) = results
    edge_gt = _cv2_edges(grey)
    grey_pred = np.stack([_cv2_edges(g[None])[0] for g in _grey_uint8_reference(pred_np)])
    weighted = np.mean((pred_np - gt_np) ** 2 * (edge_gt + 0.1))
    metric = np.mean((grey_pred - edge_gt) ** 2)
    assert parts11 == pytest.approx(parts01, rel=1e-9)
    assert parts01["edge_weighted_mse"] == pytest.approx(weighted, rel=1e-9)
    assert parts01["edge_map_mse"] == pytest.approx(metric, rel=1e-9)
    assert loss11 == pytest.approx(loss01, rel=1e-9) and loss01 == pytest.approx(0.5 * (weighted + metric))
    np.testing.assert_allclose(grad11, grad01, rtol=1e-9)


def _grey_uint8_reference(images: np.ndarray) -> np.ndarray:
    """``[N, H, W]`` uint8 of RGB images in [-1, 1] as OpenCV would make them (BT.601, clamp, round)."""
    grey = images[:, 0] * 0.299 + images[:, 1] * 0.587 + images[:, 2] * 0.114
    return np.rint((np.clip(grey, -1, 1) + 1) * 127.5).astype(np.uint8)


def test_edge_loss_built_with_a_weight_logs_the_documents_start_up_line_once(
    framework: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="dualwatch"):
        loss_fn = _loss_class(framework)(weight=0.1)
        loss_fn(_tensor(framework, np.zeros((1, 3, 8, 8))), _tensor(framework, np.ones((1, 3, 8, 8))))
        _loss_class(framework)(weight=0)
    lines = [r.getMessage() for r in caplog.records if r.name == "dualwatch"]
    assert lines == ["Edge loss enabled with weight: 0.1"]


def test_edge_loss_gradient_comes_from_the_weighted_term_only(framework: str) -> None:
    pred, gt, _ = _pair(3, (2, 3, 24, 24))
    p = _tensor(framework, pred, "float64", grad=True)
    g = _tensor(framework, gt, "float64")
    loss, parts = _loss_class(framework)(weight=0.5)(p, g)
    loss.backward()
    edge_gt = EdgeMapGenerator()(g)
    q = _tensor(framework, pred, "float64", grad=True)
    (edge_weighted_mse(q, g, edge_gt) * 0.5).backward()
    np.testing.assert_allclose(_numpy(p.grad), _numpy(q.grad), rtol=1e-12)
    total = float(_numpy(parts["loss_edge"]))
    assert total == pytest.approx(float(_numpy(parts["edge_weighted_mse"] + parts["edge_map_mse"])))
    assert float(_numpy(loss)) == pytest.approx(0.5 * total)
    assert float(_numpy(parts["no_grad_share"])) == pytest.approx(
        float(_numpy(parts["edge_map_mse"])) / total
    )


def test_torch_and_paddle_give_the_same_loss_and_gradients() -> None:
    grey = _scenes(2, seed=11)
    gt = _in_range(grey, (-1, 1), rgb=True).astype(np.float32)
    pred = np.clip(gt + np.random.default_rng(4).normal(0, 0.05, gt.shape), -1, 1).astype(np.float32)
    results = {}
    for framework in ("torch", "paddle"):
        p = _tensor(framework, pred, grad=True)
        loss, parts = _loss_class(framework)(weight=0.1, sobel_weight=0.2)(p, _tensor(framework, gt))
        loss.backward()
        results[framework] = (
            float(_numpy(loss)),
            _numpy(p.grad),
            {k: float(_numpy(v)) for k, v in parts.items()},
        )
    (t_loss, t_grad, t_parts), (p_loss, p_grad, p_parts) = results["torch"], results["paddle"]
    assert p_loss == pytest.approx(t_loss, rel=1e-5)
    assert p_parts == pytest.approx(t_parts, rel=1e-5)
    np.testing.assert_allclose(p_grad, t_grad, rtol=1e-5, atol=1e-5 * np.abs(t_grad).max())


def test_eval_mode_and_zero_weight_compute_nothing(framework: str) -> None:
    class Counting(EdgeMapGenerator):
        calls = 0

        def __call__(self, images: Any) -> Any:
            Counting.calls += 1
            return super().__call__(images)

    pred = _tensor(framework, np.zeros((1, 3, 8, 8), np.float32), grad=True)
    gt = _tensor(framework, np.ones((1, 3, 8, 8), np.float32))
    loss_fn = _loss_class(framework)(edges=Counting())
    loss_fn.eval()
    assert loss_fn(pred, gt) == (0.0, {})
    assert _loss_class(framework)(weight=0, edges=Counting())(pred, gt) == (0.0, {})
    assert Counting.calls == 0
    loss_fn.train()
    _, parts = loss_fn(pred, gt)
    assert Counting.calls == 2 and "loss_edge" in parts


def test_edge_loss_is_a_real_module_of_its_framework(framework: str) -> None:
    fw = _import(framework)
    loss_fn = _loss_class(framework)()
    assert isinstance(loss_fn, fw.nn.Module if framework == "torch" else fw.nn.Layer)
    assert getattr(dualwatch, f"{framework.capitalize()}EdgeLoss") is _loss_class(framework)


# -- bad input ---------------------------------------------------------------------------------------


def _bad_cases(framework: str) -> list[tuple[str, Any, type, str]]:
    def t(shape: tuple[int, ...], dtype: str = "float32") -> Any:
        return _tensor(framework, np.zeros(shape, np.float32), dtype)

    loss = _loss_class(framework)()
    return [
        ("mismatched shapes", lambda: loss(t((2, 3, 8, 8)), t((2, 3, 8, 9))), ValueError, "same shape"),
        ("3-D input", lambda: loss(t((3, 8, 8)), t((3, 8, 8))), ValueError, r"4-D.*x\[None\]"),
        (
            "integer dtype",
            lambda: loss(t((1, 3, 8, 8), "int32"), t((1, 3, 8, 8), "int32")),
            TypeError,
            "float",
        ),
        (
            "4 channels",
            lambda: loss(t((1, 4, 8, 8)), t((1, 4, 8, 8))),
            ValueError,
            "1 \\(grey\\) or 3 \\(RGB\\)",
        ),
        ("2 channels in maps", lambda: EdgeMapGenerator()(t((1, 2, 8, 8))), ValueError, "NCHW"),
        ("numpy input", lambda: EdgeMapGenerator()(np.zeros((1, 3, 8, 8))), TypeError, "to_tensor"),
        (
            "edge map shape",
            lambda: edge_weighted_mse(t((1, 3, 8, 8)), t((1, 3, 8, 8)), t((1, 2, 8, 8))),
            ValueError,
            "EdgeMapGenerator",
        ),
        ("weight < 0", lambda: _loss_class(framework)(weight=-0.1), ValueError, "weight must be .*>= 0"),
        ("NaN weight", lambda: _loss_class(framework)(weight=float("nan")), ValueError, "weight"),
        ("thresholds", lambda: EdgeMapGenerator(low=200, high=100), ValueError, "low <= high"),
        ("even kernel", lambda: EdgeMapGenerator(blur_kernel=4), ValueError, "odd"),
        ("value range", lambda: EdgeMapGenerator(value_range=(1, -1)), ValueError, "black < white"),
        ("map range", lambda: EdgeMapGenerator(map_range=(1, 1)), ValueError, "off-edge < edge"),
        ("map range size", lambda: EdgeMapGenerator(map_range=(0, 1, 2)), ValueError, r"e\.g\. \(-1, 1\)"),
        (
            "loss map range",
            lambda: edge_map_mse(t((1, 1, 8, 8)), t((1, 1, 8, 8)), map_range=(0, float("nan"))),
            ValueError,
            "map_range",
        ),
    ]


def test_bad_input_raises_a_clear_error(framework: str) -> None:
    for name, call, error, message in _bad_cases(framework):
        with pytest.raises(error, match=message):
            call()
            pytest.fail(f"{name}: no error")


def test_mixing_frameworks_is_refused() -> None:
    a = _tensor("torch", np.zeros((1, 3, 8, 8), np.float32))
    b = _tensor("paddle", np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(TypeError, match="same framework"):
        edge_weighted_mse(a, b, a[:, :1])


# -- logging ---------------------------------------------------------------------------------------


def test_watcher_logs_train_loss_edge_to_metrics_jsonl(framework: str, tmp_path: Path) -> None:
    model = build_model(framework, {"head.weight": np.ones((2, 2), np.float32)})
    grey = _scenes(2)
    gt = _tensor(framework, _in_range(grey, (-1, 1), rgb=True))
    pred = _tensor(framework, _in_range(_scenes(2, seed=7), (-1, 1), rgb=True), grad=True)
    with Watcher(model, logdir=tmp_path, run="r", formats=("jsonl",), console=False) as watcher:
        loss_fn = _loss_class(framework)(watcher=watcher)
        _, parts = loss_fn(pred, gt, step=7)
    with open(tmp_path / "r" / "metrics.jsonl", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if "train/loss_edge" in line]
    assert [row["step"] for row in rows] == [7]
    assert rows[0]["train/loss_edge"] == pytest.approx(float(_numpy(parts["loss_edge"])), rel=1e-6)
    assert rows[0]["train/edge_map_mse"] == pytest.approx(float(_numpy(parts["edge_map_mse"])), rel=1e-6)


def test_edge_maps_are_logged_side_by_side_as_a_readable_image(framework: str, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing import event_accumulator

    generator = EdgeMapGenerator()
    pred = generator(_tensor(framework, _in_range(_scenes(2, seed=1), (-1, 1), rgb=True)))
    gt = generator(_tensor(framework, _in_range(_scenes(2, seed=2), (-1, 1), rgb=True)))
    with Writer(tmp_path, "r", formats=("tensorboard",)) as writer:
        log_edge_maps(writer, pred, gt, step=3, index=1)
    events = event_accumulator.EventAccumulator(str(tmp_path / "r"), size_guidance={"images": 0})
    events.Reload()
    (event,) = events.Images("train/edge_maps")
    assert event.step == 3
    with PILImage.open(io.BytesIO(event.encoded_image_string)) as image:
        pixels = np.asarray(image)
    pixels = pixels if pixels.ndim == 2 else pixels[..., 0]
    w = pred.shape[3]
    np.testing.assert_array_equal(pixels[:, :w], _numpy(pred)[1, 0] * 255)
    assert (pixels[:, w : w + 2] == round(SEPARATOR * 255)).all()
    np.testing.assert_array_equal(pixels[:, w + 2 :], _numpy(gt)[1, 0] * 255)


# -- import cost and the example ---------------------------------------------------------------------


def test_minus_one_to_one_maps_are_logged_as_the_same_image(framework: str, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing import event_accumulator

    images = [_tensor(framework, _in_range(_scenes(1, seed=s), (-1, 1), rgb=True)) for s in (3, 4)]
    with Writer(tmp_path, "r", formats=("tensorboard",)) as writer:
        for step, map_range in enumerate([(0, 1), (-1, 1)]):
            generator = EdgeMapGenerator(map_range=map_range)
            log_edge_maps(writer, generator(images[0]), generator(images[1]), step, map_range=map_range)
    events = event_accumulator.EventAccumulator(str(tmp_path / "r"), size_guidance={"images": 0})
    events.Reload()
    plain, signed = (e.encoded_image_string for e in events.Images("train/edge_maps"))
    assert plain == signed


def test_import_dualwatch_and_its_edge_module_import_neither_framework() -> None:
    code = (
        "import sys, dualwatch; "
        "dualwatch.EdgeMapGenerator; print(sorted({'torch', 'paddle'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("backend", ["torch", "paddle"])
def test_edge_loss_example_trains_a_few_steps(backend: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "edge_loss_train.py"),
            "--backend",
            backend,
            "--steps",
            "3",
            "--logdir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    (metrics,) = tmp_path.glob("*/metrics.jsonl")
    steps = [
        json.loads(line)["step"] for line in metrics.read_text().splitlines() if "train/loss_edge" in line
    ]
    assert steps == [0, 1, 2]
