"""Canny edge maps and an edge loss for torch and paddle, fast and honest about gradients.

The StableSR edge loss ran Canny one image at a time under ``no_grad`` and added the MSE
between two edge maps to the loss: a term with no gradient at all, at ~35 images/s.
Here the parts are kept apart by what they can do:

* :class:`EdgeMapGenerator` gives Canny edge maps (1 on edges, 0 elsewhere; ``map_range=(-1, 1)``
  gives the StableSR generator's -1 elsewhere). Canny is a threshold, so the maps carry
  **no gradient**; they are data: a weight or a metric.
* :func:`edge_weighted_mse` ``mean((pred - gt)^2 * (edge_gt + base))`` is native
  framework arithmetic and **carries gradient** to ``pred``: errors on ground-truth edges
  cost ``(1 + base) / base`` times more than elsewhere.
* :func:`edge_map_mse` (Canny of pred against Canny of gt) is a **metric**: it has no
  gradient by nature, so adding it to a loss changes the logged number, never the training.
* :func:`sobel_edge_l1` is the optional differentiable edge term: L1 between Sobel
  magnitudes ``sqrt(gx^2 + gy^2 + eps)``; the ``eps`` keeps gradients finite on flat images.

Speed: the floor is OpenCV's blur + Canny on ready uint8 grey images (~0.35 ms per 512x512
image on one core of a 2-core x86 VM); everything else is kept to two passes around it. CPU
tensors are read through a zero-copy numpy view; per image, one C loop (``_edgehost.c``) reads
the float channels once and writes the uint8 grey (BT.601, clamp, round: the bytes of the
OpenCV calls it replaced, which took five to seven passes), OpenCV blurs and runs Canny, and a
second C loop writes the float map (a large one with streaming stores, which skip reading the
target's cache lines first). Every step releases the GIL; the threads take images from a
shared counter and write into arrays each thread keeps from one image to the next: a fresh
megabyte-sized array is mapped and page-faulted in by the kernel on every allocation, which cost
more than the arithmetic (the same pipeline allocating its temporaries ran at half the speed).
What is left above the floor is reading the float image once (12 bytes a pixel for RGB float32:
memory bandwidth) and writing the float map. Installs built without a C compiler use OpenCV and
numpy calls for both passes (the same maps, ~1.1x the time). Tensors on an accelerator are
converted to uint8 grey on their device and cross to the host once, as a quarter of the float
data. The maps come back in one host-to-device copy.

The few operations torch and paddle spell differently come from the images' framework
(:mod:`dualwatch.backends`); this module imports neither. OpenCV
(``opencv-python-headless``) is needed for the Canny maps only.
"""

from __future__ import annotations

import math
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

from dualwatch import _log
from dualwatch._threads import Workers
from dualwatch.backends import Framework, framework_of, frameworks

try:
    from dualwatch import _edgehost
except ImportError:  # installed without a C compiler: OpenCV and numpy calls give the same maps
    _edgehost = None

BT601 = (0.299, 0.587, 0.114)  # RGB -> grey luma weights (ITU-R BT.601), as OpenCV's RGB2GRAY
SEPARATOR = 0.5  # grey level of the 2-pixel gap between the pred and gt maps of log_edge_maps
MAP_RANGE = (0.0, 1.0)  # (off-edge, edge) values of the maps by default


# -- the images' framework -----------------------------------------------------------------


def _framework_of(x: Any, name: str = "images") -> Framework:
    """The framework of tensor ``x``, or a TypeError that says what is accepted."""
    framework = framework_of(x)
    if framework is None:
        raise TypeError(
            f"{name} must be a torch or paddle tensor of shape [N, C, H, W], got {type(x).__module__}."
            f"{type(x).__qualname__}: convert it with torch.as_tensor(...) or paddle.to_tensor(...)"
        )
    return framework


def _check_images(x: Any, name: str) -> Framework:
    """Validates an NCHW float batch with 1 or 3 channels; returns its framework."""
    fw = _framework_of(x, name)
    shape = tuple(x.shape)
    if len(shape) != 4:
        raise ValueError(
            f"{name} must be 4-D [N, C, H, W], got shape {list(shape)}: "
            "add the batch dimension with x[None] (or x.unsqueeze(0))"
        )
    if shape[1] not in (1, 3):
        raise ValueError(
            f"{name} must have 1 (grey) or 3 (RGB) channels in dimension 1 (NCHW), got shape {list(shape)}: "
            "move channels first (NHWC -> NCHW) or drop the alpha channel"
        )
    if not fw.is_float(x):
        raise TypeError(
            f"{name} must be floating point (float16/32/64) in value_range, got {x.dtype}: "
            "cast with x.float() / x.astype('float32') and scale to the value range"
        )
    if shape[2] == 0 or shape[3] == 0:
        raise ValueError(
            f"{name} has no pixels (shape {list(shape)}, H x W = {shape[2]} x {shape[3]}): an edge map "
            "or loss of an empty image is undefined; check the crop or resize that made it"
        )
    return fw


def _check_same(a: Any, b: Any, names: str) -> None:
    if type(a) is not type(b):
        raise TypeError(
            f"{names} must come from the same framework, got {type(a).__module__} and {type(b).__module__}"
        )
    if tuple(a.shape) != tuple(b.shape):
        raise ValueError(f"{names} must have the same shape, got {list(a.shape)} and {list(b.shape)}")


def _grey(x: Any) -> Any:
    """``[N, 1, H, W]`` BT.601 luma of an RGB batch (a grey batch as it is); keeps the graph."""
    if x.shape[1] == 1:
        return x
    r, g, b = BT601
    return x[:, 0:1] * r + x[:, 1:2] * g + x[:, 2:3] * b


def _is_number(value: Any) -> bool:
    """A real number: Python's or numpy's (``np.float32(0.1)``), never a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_)
    )


def _real(value: Any, name: str, example: str) -> float:
    """``value`` as a finite float, else a TypeError (not a number) or ValueError (NaN, Inf)."""
    if not _is_number(value):
        raise TypeError(
            f"{name} must be a number, got {type(value).__name__} {value!r}: e.g. {name}={example}"
        )
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}: e.g. {name}={example}")
    return float(value)


def _check_range(value_range: Any, name: str, ends: str = "low, high") -> tuple[float, float]:
    """``(low, high)`` as floats, finite with low < high, else a ValueError saying so."""
    first, second = ends.split(", ")
    pair = (
        list(value_range)
        if isinstance(value_range, (tuple, list))
        or (isinstance(value_range, np.ndarray) and value_range.ndim == 1)
        else None
    )
    if pair is None or len(pair) != 2 or not all(map(_is_number, pair)):
        raise ValueError(f"{name} must be two numbers ({ends}), got {value_range!r}: e.g. (-1, 1) or (0, 1)")
    low, high = float(pair[0]), float(pair[1])
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise ValueError(
            f"{name} must be finite ({ends}) with {first} < {second}, got {value_range!r}: "
            "e.g. (-1, 1) or (0, 1)"
        )
    return low, high


def _normalised(maps: Any, map_range: tuple[float, float]) -> Any:
    """Maps in ``map_range`` brought to [0, 1]: ``(m - low) / (high - low)``, the edge loss
    document's ``(edge + 1) / 2`` for [-1, 1]; maps already in [0, 1] are returned as they are."""
    low, high = _check_range(map_range, "map_range", "off-edge, edge")
    return maps if (low, high) == MAP_RANGE else (maps - low) * (1.0 / (high - low))


# -- where the maps go ------------------------------------------------------------------------------

_DEVICE = re.compile(r"(cpu|cuda|gpu)(?::(\d+))?")


def device_spelling(device: Any) -> str:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``: the spelling both torch's and paddle's ``Tensor.to``
    take (paddle reads ``cuda`` as its ``gpu``), from a string (``"gpu:0"`` too), a
    ``torch.device`` or a paddle place (which prints as ``Place(gpu:0)``)."""
    text = device if isinstance(device, str) else str(device)
    place = re.fullmatch(r"Place\((.*)\)", text)
    match = _DEVICE.fullmatch((place.group(1) if place else text).strip().lower())
    if match is None:
        raise ValueError(
            f"device must be 'cpu', 'cuda', 'cuda:N', 'gpu' or 'gpu:N' (or a torch.device / paddle "
            f"place of those), got {device!r}: e.g. device='cuda' if torch.cuda.is_available() else "
            "'cpu', or leave device unset so the maps stay on the images' device"
        )
    kind, index = match.groups()
    if kind == "cpu":
        return "cpu"
    return "cuda" if index is None else f"cuda:{index}"


def _cuda_devices() -> dict[str, int]:
    """CUDA devices each already imported framework sees (none is imported for this)."""
    return {framework.name: framework.cuda_device_count() for framework in frameworks()}


def _cuda_fix(device: str) -> str:
    return (
        f"pass device='cuda' if torch.cuda.is_available() else 'cpu' (paddle: 'gpu' if "
        "paddle.device.cuda.device_count() else 'cpu'), or leave device unset so the maps stay on "
        f"the images' device; got device={device!r}"
    )


# -- Canny on the host ------------------------------------------------------------------------


def _cv2() -> Any:
    global _CV2
    if _CV2 is None:
        try:
            import cv2
        except ImportError as err:  # pragma: no cover - opencv is installed wherever edges are tested
            raise ImportError("edge maps need OpenCV: pip install opencv-python-headless") from err
        _CV2 = cv2
    return _CV2


_CV2: Any = None  # OpenCV once imported: an import statement per image call is measurable


def median_grey(image: np.ndarray) -> float:
    """``np.median`` of a uint8 image from its 256-bin histogram (several times faster)."""
    counts = np.cumsum(np.bincount(image.ravel(), minlength=256))
    n = int(counts[-1])
    upper = int(np.searchsorted(counts, n // 2, side="right"))
    if n % 2:
        return float(upper)
    return (int(np.searchsorted(counts, n // 2 - 1, side="right")) + upper) / 2.0


def adaptive_thresholds(image: np.ndarray) -> tuple[float, float]:
    """Canny thresholds 0.7x and 1.3x the median grey level, within [0, 255] (StableSR's rule)."""
    median = median_grey(image)
    return max(0.0, 0.7 * median), min(255.0, 1.3 * median)


@dataclass(frozen=True)
class _Canny:
    """Blur + Canny of one uint8 grey image; the per-image half of :class:`EdgeMapGenerator`."""

    low: float
    high: float
    blur_kernel: int
    sigma: float
    adaptive: bool

    def __call__(self, grey: np.ndarray, work: _Work | None = None) -> np.ndarray:
        """``{0, 255}`` uint8 edges of an ``[H, W]`` uint8 image, written into ``work``'s arrays
        when given (the same values as ``cv2.Canny(cv2.GaussianBlur(grey, ...), low, high)``)."""
        cv2 = _cv2()
        if self.blur_kernel > 1:
            k = self.blur_kernel
            grey = cv2.GaussianBlur(grey, (k, k), self.sigma, dst=None if work is None else work.blurred)
        low, high = adaptive_thresholds(grey) if self.adaptive else (self.low, self.high)
        return cv2.Canny(grey, low, high, edges=None if work is None else work.edges)


class _Work:
    """One thread's arrays for one image of ``shape`` (float grey in ``dtype``, uint8 grey, blurred,
    edges, 0/1 flags), reused from one image to the next: see the module's note on speed."""

    def __init__(self, shape: tuple[int, int], dtype: np.dtype) -> None:
        self.key = (shape, dtype)
        self.grey = np.empty(shape, dtype)
        self.grey_uint8, self.blurred, self.edges, self.flags = (np.empty(shape, np.uint8) for _ in range(4))


_THREAD = threading.local()  # each thread's _Work, for the last image shape and dtype it saw


def _work(shape: tuple[int, int], dtype: np.dtype) -> _Work:
    """This thread's :class:`_Work` for ``shape`` and ``dtype`` (a new one when either changed)."""
    work = getattr(_THREAD, "work", None)
    if work is None or work.key != (shape, dtype):
        work = _THREAD.work = _Work(shape, dtype)
    return work


class _GreyScale(NamedTuple):
    """The numbers that take one image's channels to uint8 grey, the same for both host paths:
    ``grey = R * wr + G + B * wb`` (the BT.601 weights divided by green's, which ``alpha`` holds),
    clamped to ``[low, high]`` (the value range in those units), ``|grey * alpha + beta|`` rounded."""

    wr: float
    wb: float
    low: float
    high: float
    alpha: float
    beta: float

    @classmethod
    def of(cls, channels: int, black: float, white: float) -> _GreyScale:
        scale = 255.0 / (white - black)
        if channels == 1:
            return cls(0.0, 0.0, black, white, scale, -black * scale)
        r, g, b = BT601
        return cls(r / g, b / g, black / g, white / g, scale * g, -black * scale)


def _grey_uint8_opencv(image: np.ndarray, scale: _GreyScale, index: int | None, work: _Work) -> np.ndarray:
    """:func:`_edgehost.grey_uint8` in OpenCV and numpy calls, for installs built without a C
    compiler (and the reference the C loop is checked against): BT.601 grey, NaN check, min/max,
    clamp where needed, scale + round to uint8, five to seven passes into ``work``'s arrays.

    The grey is summed as ``g * (R * r/g + G + B * b/g)``: two ``cv2.scaleAdd`` passes, with the
    factor ``g`` folded into the final scaling (``cv2.addWeighted(R, r, G, g, 0)``, the obvious
    first pass, measured about 4x slower than ``scaleAdd`` on a 2-core x86 VM).
    """
    cv2 = _cv2()
    grey = image[0]
    if image.shape[0] == 3:
        grey = cv2.scaleAdd(image[0], scale.wr, image[1], dst=work.grey)
        cv2.scaleAdd(image[2], scale.wb, grey, dst=grey)
    if np.isnan(grey).any():
        raise ValueError(_nan_message(index))
    darkest, brightest = cv2.minMaxLoc(grey)[:2]  # one pass; the clamp below is two
    if darkest < scale.low or brightest > scale.high:  # Inf too: convertScaleAbs would wrap it to 0
        grey = np.clip(grey, scale.low, scale.high, out=work.grey)
    # >= 0 in range (up to rounding), so convertScaleAbs's abs changes nothing: a rounding,
    # saturating cast
    return cv2.convertScaleAbs(grey, dst=work.grey_uint8, alpha=scale.alpha, beta=scale.beta)


# Smaller images stay on the OpenCV path: below its vector width (16 to 32 pixels) OpenCV's
# convertScaleAbs rounds in scalar code, which the C loop does not copy. They cost nothing.
ONE_PASS_MIN_PIXELS = 64
_ONE_PASS: bool | None = None  # whether the C loop gives OpenCV's bytes here (checked once)


def _one_pass_agrees() -> bool:
    """Whether :mod:`dualwatch._edgehost` is built and gives the OpenCV path's bytes on this CPU.

    OpenCV fuses its multiply-adds where the CPU has FMA (x86 since 2013, ARM), as the C loop
    does; an OpenCV build or CPU without FMA rounds a few pixels in ten thousand of a natural
    image the other way. So the first call converts both ways images whose grey sits next to the
    uint8 rounding boundaries, where unfused arithmetic gives other bytes in 5-8% of the pixels
    (1 and 3 channels, float32 and float64; about a millisecond, once), and keeps the OpenCV
    path if any byte differs.
    """
    global _ONE_PASS
    if _ONE_PASS is None and _edgehost is not None:
        agrees = True  # set once the check is done: another thread may call meanwhile
        for image in _boundary_images((64, 64)):
            scale = _GreyScale.of(len(image), -1.0, 1.0)
            opencv = _grey_uint8_opencv(image, scale, None, _Work(image.shape[1:], image.dtype))
            agrees = agrees and np.array_equal(opencv, _c_grey(image, scale))
        _ONE_PASS = agrees
        if not agrees:
            _log.debug("edge maps: the C grey loop rounds unlike OpenCV on this CPU; OpenCV makes the grey")
    return bool(_ONE_PASS) and _edgehost is not None


def _c_grey(image: np.ndarray, scale: _GreyScale) -> np.ndarray:
    """``image``'s uint8 grey from the C loop, in a new array."""
    out = np.empty(image.shape[1:], np.uint8)
    if _edgehost.grey_uint8(image, out, *scale) >= 0:
        raise ValueError(_nan_message(None))
    return out


def _boundary_images(shape: tuple[int, int]) -> list[np.ndarray]:
    """Images in [-1, 1] whose grey lands within a few float ulps of ``k + 0.5`` after scaling to
    0..255, the values whose rounding depends on whether multiply-adds are fused; 1 and 3 channels
    (random colours whose grey is the level), float32 and float64."""
    rng = np.random.default_rng(0)
    level = (rng.integers(0, 255, shape) + 0.5) / 127.5 - 1.0
    grey = (level + rng.normal(0, 1e-7, shape))[None]
    r, g, b = BT601
    red, blue = rng.uniform(-1, 1, (2, *shape))
    rgb = np.stack([red, (grey[0] - r * red - b * blue) / g, blue])
    return [image.astype(dtype) for image in (grey, rgb) for dtype in (np.float32, np.float64)]


class EdgeMapGenerator:
    """Canny edge maps of a batch of images, in the images' framework and dtype, on their device
    (or on ``device``).

    Args:
        low, high: Canny's hysteresis thresholds in OpenCV units (L1 gradient of 0..255 grey;
            kornia's thresholds use other units: cv2 100/200 is about kornia 0.39/0.78).
        blur_kernel, sigma: Gaussian blur before Canny (``blur_kernel`` odd; 0 or 1 turns it off).
        adaptive: per image, use 0.7x and 1.3x the median grey level of the blurred image
            instead of ``low`` and ``high``.
        value_range: the images' black and white levels, e.g. ``(-1, 1)`` or ``(0, 1)``. Values
            outside are clamped before the uint8 cast (never wrapped around); NaN raises.
        map_range: the maps' ``(off-edge, edge)`` values. Default ``(0, 1)``: 1 on edges, 0
            elsewhere. ``(-1, 1)`` gives 1 on edges and -1 elsewhere, the maps the StableSR edge
            loss normalises with ``(edge + 1) / 2``; pass the same ``map_range`` to
            :func:`edge_map_mse`, :func:`edge_weighted_mse` and :func:`log_edge_maps`, which
            normalise the same way (:class:`EdgeLossBase` reads it from its generator).
        device: where the maps go: ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"gpu"``, ``"gpu:N"``, a
            ``torch.device`` or a paddle place, as in the StableSR edge loss's
            ``EdgeMapGenerator(device='cuda' if torch.cuda.is_available() else 'cpu')``. Default:
            the images' device. An unknown name raises here, and so does a CUDA device that no
            imported framework has.
        threads: images processed at once by OpenCV on the host. Default: half the CPUs, at
            most 8; the training loop needs the rest (on 2 shared cores one thread measured
            ~15% faster than two).

    ``generator(images)`` takes ``[N, C, H, W]`` float tensors, C = 1 (grey) or 3 (RGB, to grey
    with BT.601 weights), and returns ``[N, 1, H, W]`` maps, ``map_range[1]`` on edges and
    ``map_range[0]`` elsewhere. The maps carry no gradient: Canny is a threshold, there is
    nothing to differentiate.
    """

    def __init__(
        self,
        low: float = 100,
        high: float = 200,
        blur_kernel: int = 5,
        sigma: float = 1.4,
        adaptive: bool = False,
        value_range: tuple[float, float] = (-1, 1),
        threads: int | None = None,
        map_range: tuple[float, float] = MAP_RANGE,
        device: Any = None,
    ) -> None:
        low, high = _real(low, "low", "100"), _real(high, "high", "200")
        if not 0 <= low <= high:
            raise ValueError(f"Canny thresholds need 0 <= low <= high, got low={low}, high={high}")
        if isinstance(blur_kernel, (bool, np.bool_)) or not isinstance(blur_kernel, (int, np.integer)):
            raise TypeError(
                f"blur_kernel must be an int (an odd kernel size, or 0 for no blur), got "
                f"{type(blur_kernel).__name__} {blur_kernel!r}: e.g. blur_kernel=5"
            )
        if blur_kernel < 0 or (blur_kernel > 1 and blur_kernel % 2 == 0):
            raise ValueError(f"blur_kernel must be odd (or 0 for no blur), got {blur_kernel}: e.g. 3 or 5")
        sigma = _real(sigma, "sigma", "1.4")
        if blur_kernel > 1 and not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        black, white = _check_range(value_range, "value_range", "black, white")
        if threads is not None and (
            isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 1
        ):
            raise ValueError(f"threads must be an int >= 1 (or None: half the CPUs), got {threads!r}")
        self.map_range = _check_range(map_range, "map_range", "off-edge, edge")
        self.device = None if device is None else device_spelling(device)
        if self.device is not None and self.device != "cpu":
            index = int(self.device.partition(":")[2] or 0)
            counts = _cuda_devices()
            if counts and all(count <= index for count in counts.values()):
                seen = ", ".join(f"{name} sees {count}" for name, count in counts.items())
                raise ValueError(f"no CUDA device {self.device!r} here ({seen}): {_cuda_fix(device)}")
        self.canny = _Canny(low, high, int(blur_kernel), sigma, bool(adaptive))
        self.value_range = (black, white)
        self._grey_scales = {channels: _GreyScale.of(channels, black, white) for channels in (1, 3)}
        # off-edge value at 0 and edge value at 255: Canny's uint8 {0, 255} maps to the range exactly
        self._levels = np.full(256, self.map_range[0], np.float32)
        self._levels[255] = self.map_range[1]
        self._workers = Workers(
            int(threads) if threads else max(1, min(8, (os.cpu_count() or 1) // 2)), "dualwatch-edge"
        )

    def __call__(self, images: Any) -> Any:
        fw = _check_images(images, "images")
        n, _, h, w = images.shape
        out = np.empty((n, 1, h, w), np.float32)
        if fw.on_host(images):
            host = fw.host_view(fw.host_float(images))

            def one(i: int) -> None:
                work = _work((h, w), host.dtype)
                self._edge_map(self._grey_uint8_host(host[i], i, work), out[i, 0], work)
        else:
            greys = self.grey_uint8_on_device(images, fw)

            def one(i: int) -> None:
                self._edge_map(greys[i], out[i, 0], _work((h, w), np.dtype(np.float32)))

        self._map(one, n)
        maps = fw.from_numpy(out, images)
        if self.device is None:
            return maps
        try:
            return maps.to(self.device)  # no copy when the maps are there already
        except Exception as err:  # the framework's own words (not compiled with CUDA...) plus the fix
            raise ValueError(
                f"{fw.name} cannot put the edge maps on {self.device!r} ({err}): {_cuda_fix(self.device)}"
            ) from err

    def grey_uint8(self, images: Any) -> np.ndarray:
        """The ``[N, H, W]`` uint8 grey images Canny sees (for tests and inspection)."""
        fw = _check_images(images, "images")
        if not fw.on_host(images):
            return self.grey_uint8_on_device(images, fw)
        host = fw.host_view(fw.host_float(images))
        work = _work(host.shape[2:], host.dtype)
        return np.stack([self._grey_uint8_host(host[i], i, work).copy() for i in range(host.shape[0])])

    def _grey_uint8_host(self, image: np.ndarray, index: int, work: _Work) -> np.ndarray:
        """One ``[C, H, W]`` float image -> ``[H, W]`` uint8 grey in ``work.grey_uint8``: one pass of
        the C loop where it is built (:mod:`dualwatch._edgehost`, the same bytes), else OpenCV calls."""
        scale = self._grey_scales[image.shape[0]]
        if image.shape[1] * image.shape[2] >= ONE_PASS_MIN_PIXELS and _one_pass_agrees():
            if _edgehost.grey_uint8(image, work.grey_uint8, *scale) >= 0:
                raise ValueError(_nan_message(index))
            return work.grey_uint8
        return _grey_uint8_opencv(image, scale, index, work)

    def grey_uint8_on_device(self, images: Any, fw: Framework) -> np.ndarray:
        """Grey, clamp and uint8 on the images' device, then one copy of N*H*W bytes to the host."""
        grey = _grey(images.detach())[:, 0]
        nan = grey.isnan().any()
        black, white = self.value_range
        scaled = ((grey.clip(black, white) - black) * (255.0 / (white - black))).round()
        host, nan = fw.host_view(fw.to_uint8(scaled)), bool(nan)
        if nan:
            raise ValueError(_nan_message(None))
        return host

    def _edge_map(self, grey: np.ndarray, target: np.ndarray, work: _Work) -> None:
        """Canny edges of one uint8 grey image written to ``target`` as ``map_range`` floats.

        One pass of the C loop where it is built (:func:`_edgehost.edge_map`). Without it, the
        default (0, 1) maps are a threshold to 0/1 and a uint8 -> float copy, two cheap passes;
        other ranges go through a 256-entry table (``cv2.LUT``), exact for any pair of values.
        """
        cv2 = _cv2()
        edges = self.canny(grey, work)
        if _edgehost is not None:
            _edgehost.edge_map(edges, target, *self.map_range)
        elif self.map_range != MAP_RANGE:
            cv2.LUT(edges, self._levels, dst=target)
        else:
            flags = cv2.threshold(edges, 127, 1, cv2.THRESH_BINARY, dst=work.flags)[1]
            np.copyto(target, flags, casting="unsafe")

    def _map(self, work: Callable[[int], None], n: int) -> None:
        """Runs ``work(i)`` for each image, on this thread and ``threads - 1`` pool threads
        (:class:`~dualwatch._threads.Workers`), with OpenCV's own threads off meanwhile.

        OpenCV's per-call threads and ours would compete for the same cores (measured: ~30%
        slower than either alone), so its setting is lowered to 1 for the call and restored.
        """
        if min(self.threads, n) == 1:
            self._workers.run(work, n)
            return
        cv2 = _cv2()
        before = cv2.getNumThreads()
        cv2.setNumThreads(1)
        try:
            self._workers.run(work, n)
        finally:
            cv2.setNumThreads(before)

    @property
    def threads(self) -> int:
        """Images processed at once on the host."""
        return self._workers.threads


def _nan_message(index: int | None) -> str:
    where = f"image {index} holds" if index is not None else "the images hold"
    return (
        f"{where} NaN: an edge map of NaN pixels is undefined. Find where the NaN comes from "
        "(dualwatch.Watcher reports non-finite weights and gradients) or replace it with nan_to_num first"
    )


# -- losses: native framework arithmetic, so autograd works in both -----------------------------


def edge_weighted_mse(
    pred: Any, gt: Any, edge_gt: Any, base: float = 0.1, map_range: tuple[float, float] = MAP_RANGE
) -> Any:
    """``mean((pred - gt)^2 * (edge_gt + base))``: the part of the edge loss that carries gradient.

    ``edge_gt`` is ``[N, 1, H, W]`` (broadcast over channels) or ``pred``'s shape, usually
    ``EdgeMapGenerator()(gt)``; ``base`` keeps off-edge pixels in the loss. The mean runs over
    every element of the weighted error, so with ``edge_gt = 0`` this is ``base * mse(pred, gt)``.
    ``map_range`` is the maps' ``(off-edge, edge)`` values: maps in ``(-1, 1)`` are brought to
    [0, 1] first (``(edge + 1) / 2``), so off-edge pixels never get a negative weight.
    """
    _check_images(pred, "pred")
    _check_images(gt, "gt")
    _check_same(pred, gt, "pred and gt")
    _framework_of(edge_gt, "edge_gt")
    n, c, h, w = pred.shape
    if tuple(edge_gt.shape) not in ((n, 1, h, w), (n, c, h, w)):
        raise ValueError(
            f"edge_gt must be [N, 1, H, W] = {[n, 1, h, w]} (or pred's shape), got {list(edge_gt.shape)}: "
            "pass EdgeMapGenerator()(gt)"
        )
    if _real(base, "base", "0.1") < 0:
        raise ValueError(f"base must be >= 0 (the weight of off-edge pixels), got {base}")
    return ((pred - gt) ** 2 * (_normalised(edge_gt, map_range) + base)).mean()


def edge_map_mse(edge_pred: Any, edge_gt: Any, map_range: tuple[float, float] = MAP_RANGE) -> Any:
    """``mean((edge_pred - edge_gt)^2)`` between two edge maps in [0, 1]: a metric, not a loss.

    Maps in another ``map_range`` (the generator's) are brought to [0, 1] first, as the StableSR
    edge loss does with ``(edge + 1) / 2`` for [-1, 1] maps, so the value does not depend on the range.
    Canny maps carry no gradient, so neither does this: added to a loss it changes the
    number you log and nothing the optimizer sees. Log it to watch edge quality.
    """
    _framework_of(edge_pred, "edge_pred")
    _check_same(edge_pred, edge_gt, "edge_pred and edge_gt")
    return ((_normalised(edge_pred, map_range) - _normalised(edge_gt, map_range)) ** 2).mean()


def sobel_magnitude(images: Any, eps: float = 1e-6) -> Any:
    """``[N, 1, H-2, W-2]`` Sobel gradient magnitude ``sqrt(gx^2 + gy^2 + eps)`` of the grey images.

    Differentiable. Plain ``sqrt(gx^2 + gy^2)`` (or ``hypot``) has an infinite derivative
    where the image is flat and gives NaN gradients; ``eps`` keeps them finite. Computed
    with slices rather than a convolution: on CPUs, oneDNN's 3x3 one-channel convolution is
    several times slower than this arithmetic.
    """
    _check_images(images, "images")
    if not _real(eps, "eps", "1e-6") > 0:
        raise ValueError(f"eps must be > 0 (it keeps the gradient of a flat image finite), got {eps}")
    if images.shape[2] < 3 or images.shape[3] < 3:
        raise ValueError(f"Sobel needs images of at least 3x3 pixels, got shape {list(images.shape)}")
    g = _grey(images)
    left, mid, right = g[:, :, :, :-2], g[:, :, :, 1:-1], g[:, :, :, 2:]
    smooth_x = left + mid * 2 + right  # [1, 2, 1] across, then differences down the rows
    diff_x = right - left  # [-1, 0, 1] across, then [1, 2, 1] down the rows
    gx = diff_x[:, :, :-2] + diff_x[:, :, 1:-1] * 2 + diff_x[:, :, 2:]
    gy = smooth_x[:, :, 2:] - smooth_x[:, :, :-2]
    return (gx * gx + gy * gy + eps).sqrt()


def sobel_edge_l1(pred: Any, gt: Any, eps: float = 1e-6) -> Any:
    """``mean(|sobel(pred) - sobel(gt)|)``: an edge term with gradients, for those who want them."""
    _check_same(pred, gt, "pred and gt")
    return (sobel_magnitude(pred, eps) - sobel_magnitude(gt, eps).detach()).abs().mean()


class EdgeLossBase:
    """The edge loss shared by :class:`dualwatch.TorchEdgeLoss` (a ``torch.nn.Module``) and
    :class:`dualwatch.PaddleEdgeLoss` (a ``paddle.nn.Layer``); use those.

    ``loss, parts = edge_loss(pred, gt)`` returns ``weight * loss_edge`` with
    ``loss_edge = edge_weighted_mse + edge_map_mse [+ sobel_weight * sobel_l1]`` (the StableSR
    terms), and ``parts`` with each term detached for logging plus ``no_grad_share``, the
    share of ``loss_edge`` that no gradient flows from (the ``edge_map_mse`` metric). Only
    ``edge_weighted_mse`` (and ``sobel_l1``) move the weights.

    In eval mode, or with ``weight == 0``, nothing is computed: it returns ``(0.0, {})``. Built
    with ``weight > 0``, it logs ``Edge loss enabled with weight: <weight>`` (the StableSR edge
    loss's start-up line, the check that the configuration reached the model) on the
    ``dualwatch`` logger.

    Args:
        weight: the StableSR edge loss's ``edge_loss_weight``; 0 turns the loss off.
        base: weight of off-edge pixels in :func:`edge_weighted_mse`.
        sobel_weight: weight of the differentiable :func:`sobel_edge_l1` term (0: not computed).
        edges: the :class:`EdgeMapGenerator` (thresholds, value and map ranges, device); default
            Canny 100/200 on images in [-1, 1], maps in [0, 1]. Its ``map_range`` is the range of
            ``edge_gt`` too; both losses normalise it to [0, 1].
        watcher: a :class:`dualwatch.Watcher` (or :class:`dualwatch.Writer`) to log
            ``train/loss_edge``, ``train/edge_weighted_mse`` and ``train/edge_map_mse`` to.
        prefix: head of the logged tags.

    ``forward(pred, gt, edge_gt=None, step=None)``: pass ``edge_gt`` when the ground-truth maps
    are computed once per sample (in the data loader) rather than every step; ``step`` is the
    logged step (default: the count of training calls).
    """

    def __init__(
        self,
        weight: float = 0.1,
        base: float = 0.1,
        sobel_weight: float = 0.0,
        edges: EdgeMapGenerator | None = None,
        watcher: Any = None,
        prefix: str = "train/",
    ) -> None:
        super().__init__()
        for name, value in (("weight", weight), ("base", base), ("sobel_weight", sobel_weight)):
            if not _is_number(value):
                raise TypeError(
                    f"{name} must be a number (Python's or numpy's), got {type(value).__name__} {value!r}: "
                    f"e.g. {name}=0.1 (0 turns that term off)"
                )
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(
                    f"{name} must be a finite number >= 0 (0 turns that term off), got {value!r}"
                )
        if edges is not None and not isinstance(edges, EdgeMapGenerator):
            raise TypeError(
                f"edges= takes a dualwatch.EdgeMapGenerator, got {type(edges).__name__}: "
                "e.g. edges=EdgeMapGenerator(low=100, high=200)"
            )
        writer = getattr(watcher, "writer", watcher)
        if writer is not None and not callable(getattr(writer, "log", None)):
            raise TypeError(f"watcher= takes a dualwatch.Watcher or Writer, got {type(watcher).__name__}")
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a string (the head of the logged tags), got {prefix!r}")
        self.weight = float(weight)
        self.base = float(base)
        self.sobel_weight = float(sobel_weight)
        self.edges = edges or EdgeMapGenerator()
        self.writer = writer
        self.prefix = prefix
        self._calls = 0
        if self.weight > 0:
            _log.info(f"Edge loss enabled with weight: {weight}")

    def forward(
        self, pred: Any, gt: Any, edge_gt: Any = None, step: int | None = None
    ) -> tuple[Any, dict[str, Any]]:
        if not self.training or self.weight == 0:  # type: ignore[attr-defined]
            return 0.0, {}
        _check_images(pred, "pred")
        _check_same(pred, gt, "pred and gt")
        if edge_gt is None:
            edge_gt = self.edges(gt)
        map_range = self.edges.map_range
        weighted = edge_weighted_mse(pred, gt, edge_gt, self.base, map_range)
        metric = edge_map_mse(self.edges(pred), edge_gt, map_range)
        loss_edge = weighted + metric
        parts = {"edge_weighted_mse": weighted.detach(), "edge_map_mse": metric}
        if self.sobel_weight:
            sobel = sobel_edge_l1(pred, gt)
            loss_edge = loss_edge + sobel * self.sobel_weight
            parts["sobel_l1"] = sobel.detach()
        parts = {
            "loss_edge": loss_edge.detach(),
            **parts,
            "no_grad_share": metric / loss_edge.detach().clip(min=1e-30),
        }
        step = self._calls if step is None else step
        self._calls += 1
        if self.writer is not None:
            names = ("loss_edge", "edge_weighted_mse", "edge_map_mse", "sobel_l1")
            self.writer.log(step, {self.prefix + k: parts[k] for k in names if k in parts})
        return loss_edge * self.weight, parts


# -- edge maps as images --------------------------------------------------------------------------


def log_edge_maps(
    target: Any,
    edge_pred: Any,
    edge_gt: Any,
    step: int,
    tag: str = "train/edge_maps",
    index: int = 0,
    map_range: tuple[float, float] = MAP_RANGE,
) -> None:
    """Logs image ``index``'s predicted and ground-truth edge maps side by side (pred left).

    ``target`` is a :class:`dualwatch.Watcher` or a :class:`dualwatch.Writer`; the maps are
    ``[N, 1, H, W]`` as :class:`EdgeMapGenerator` returns them, in ``map_range`` (the generator's),
    shown with edges white and the rest black. A 2-pixel grey gap separates them.
    """
    fw = _framework_of(edge_pred, "edge_pred")
    _check_same(edge_pred, edge_gt, "edge_pred and edge_gt")
    if len(edge_pred.shape) != 4 or edge_pred.shape[1] != 1:
        raise ValueError(f"edge maps are [N, 1, H, W], got shape {list(edge_pred.shape)}")
    n = edge_pred.shape[0]
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -n <= index < n:
        raise IndexError(f"index must be an int picking one of the {n} images (0..{n - 1}), got {index!r}")
    pred, gt = (
        fw.host_view(fw.host_float(_normalised(m[index, 0], map_range))) for m in (edge_pred, edge_gt)
    )
    gap = np.full((pred.shape[0], 2), SEPARATOR, np.float32)
    writer = getattr(target, "writer", target)
    writer.add_image(tag, np.concatenate([pred, gap, gt], axis=1), step, dataformats="HW")
