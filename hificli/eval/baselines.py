"""Classical codecs to compare against, through Python libraries (no shell tools).

Each :class:`Baseline` encodes a uint8 (H, W, 3) image at one setting of its quality knob and decodes
the bytes back; bpp always comes from the length of the whole file the library writes (container
included). Settings follow the project's measured recommendations (shared/reference/ANCHORS.md, C1):

=========  ================================================================  =====================
key        library call                                                       knob (sweep)
=========  ================================================================  =====================
jpeg       Pillow JPEG, optimize=True, 4:2:0                                 quality 1..100
jpeg444    Pillow JPEG, optimize=True, 4:4:4                                 quality 1..100
webp       Pillow WebP (lossy), method=6                                     quality 0..100
avif       Pillow AVIF (libavif, aom), speed=6, 4:4:4                        quality 0..100
jxl        imagecodecs.jpegxl_encode(distance=d, effort=7)                   distance 25..0.1
jpeg2000   Pillow JPEG 2000, quality_mode="rates", irreversible 9/7, mct=1   ratio 1000..4
heic       pillow-heif HEVC intra (x265), chroma 4:4:4, preset slow, psy-rd, quality 0..100
           psy-rdoq and aq-mode off (what x265's tune=psnr sets; BPG stand-in)
=========  ================================================================  =====================

JPEG XL needs ``imagecodecs`` and HEIC needs ``pillow-heif`` (both in the ``eval`` extra): when one is
absent, :func:`unavailable_reason` says so and the codec is skipped. WebP goes through Pillow, never
``imagecodecs.webp_encode`` (lossless unless told otherwise).

:func:`match_bpp` finds, by bisection over the knob, the setting whose file size is closest to a
target bpp (the side-by-side comparison at hific's rate).
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

_HEIF_PARAMS = {"preset": "slow", "x265:psy-rd": "0", "x265:psy-rdoq": "0", "x265:aq-mode": "0"}
_FLOAT_STEPS = 4096  # a float knob is searched over this many log-spaced values


@dataclass(frozen=True)
class Baseline:
    """One classical codec: how to encode/decode, and its quality knob.

    ``sweep`` lists the settings of the rate-distortion curve; ``lo``..``hi`` is the range searched by
    :func:`match_bpp`; ``more_bits_up`` says whether a larger knob value spends more bits.
    """

    key: str
    name: str
    settings: str
    knob: str
    sweep: tuple[float, ...]
    lo: float
    hi: float
    integer: bool
    more_bits_up: bool
    encoder: Callable[[np.ndarray, float], bytes]
    decoder: Callable[[bytes], np.ndarray]
    module: str | None = None  # the optional module it needs
    package: str | None = None  # the pip package that provides it

    def encode(self, pixels: np.ndarray, value: float) -> bytes:
        """uint8 (H, W, 3) -> the bytes of a complete file at knob ``value``."""
        return self.encoder(pixels, int(value) if self.integer else float(value))

    def decode(self, data: bytes) -> np.ndarray:
        """File bytes -> uint8 (H, W, 3)."""
        pixels = np.asarray(self.decoder(data))
        if pixels.ndim == 2:
            pixels = np.repeat(pixels[:, :, None], 3, axis=2)
        return np.ascontiguousarray(pixels[:, :, :3], dtype=np.uint8)

    def candidates(self) -> list[float]:
        """Every knob value :func:`match_bpp` may pick, ordered from fewest to most bits."""
        if self.integer:
            values = [float(v) for v in range(int(self.lo), int(self.hi) + 1)]
        else:
            logs = np.linspace(math.log(self.lo), math.log(self.hi), _FLOAT_STEPS + 1)
            values = sorted({float(f"{math.exp(v):.4g}") for v in logs})
        return values if self.more_bits_up else values[::-1]


# --- library calls -----------------------------------------------------------------------------------


def _pillow_encode(pixels: np.ndarray, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    try:
        Image.fromarray(pixels, "RGB").save(buffer, format=fmt, **options)
    except OSError:
        if not options.get("optimize"):
            raise
        # Pillow's optimized-Huffman JPEG writer overflows its buffer on some images at quality ~100
        # ("broken data stream"): such a file is then written with the standard tables.
        return _pillow_encode(pixels, fmt, **{**options, "optimize": False})
    return buffer.getvalue()


def _pillow_decode(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"))


def _jpeg420(pixels: np.ndarray, quality: float) -> bytes:
    return _pillow_encode(pixels, "JPEG", quality=int(quality), optimize=True, subsampling=2)


def _jpeg444(pixels: np.ndarray, quality: float) -> bytes:
    return _pillow_encode(pixels, "JPEG", quality=int(quality), optimize=True, subsampling=0)


def _webp(pixels: np.ndarray, quality: float) -> bytes:
    return _pillow_encode(pixels, "WEBP", quality=int(quality), method=6, lossless=False)


def _avif(pixels: np.ndarray, quality: float) -> bytes:
    return _pillow_encode(pixels, "AVIF", quality=int(quality), speed=6, subsampling="4:4:4")


def _jpeg2000(pixels: np.ndarray, ratio: float) -> bytes:
    return _pillow_encode(
        pixels, "JPEG2000", quality_mode="rates", quality_layers=[ratio], irreversible=True, mct=1
    )


def _jxl_encode(pixels: np.ndarray, distance: float) -> bytes:
    import imagecodecs

    return bytes(imagecodecs.jpegxl_encode(pixels, distance=distance, effort=7))


def _jxl_decode(data: bytes) -> np.ndarray:
    import imagecodecs

    return imagecodecs.jpegxl_decode(data)


def _heif_register() -> None:
    import pillow_heif

    if not getattr(_heif_register, "done", False):
        pillow_heif.register_heif_opener()
        _heif_register.done = True  # type: ignore[attr-defined]


def _heic_encode(pixels: np.ndarray, quality: float) -> bytes:
    _heif_register()
    return _pillow_encode(pixels, "HEIF", quality=int(quality), chroma=444, enc_params=dict(_HEIF_PARAMS))


def _heic_decode(data: bytes) -> np.ndarray:
    _heif_register()
    return _pillow_decode(data)


# --- the registry ------------------------------------------------------------------------------------

_Q100 = {"knob": "quality", "lo": 0, "hi": 100, "integer": True, "more_bits_up": True}
_Q1_100 = {**_Q100, "lo": 1}

BASELINES: dict[str, Baseline] = {
    b.key: b
    for b in (
        Baseline(
            "jpeg", "JPEG 4:2:0", "Pillow, optimize=True, subsampling 4:2:0",
            sweep=(5, 10, 20, 30, 50, 70, 85, 95), encoder=_jpeg420, decoder=_pillow_decode, **_Q1_100,
        ),
        Baseline(
            "jpeg444", "JPEG 4:4:4", "Pillow, optimize=True, subsampling 4:4:4",
            sweep=(5, 10, 20, 30, 50, 70, 85, 95), encoder=_jpeg444, decoder=_pillow_decode, **_Q1_100,
        ),
        Baseline(
            "webp", "WebP", "Pillow, lossy, method=6",
            sweep=(0, 10, 25, 40, 60, 75, 85, 95), encoder=_webp, decoder=_pillow_decode, **_Q100,
        ),
        Baseline(
            "avif", "AVIF 4:4:4", "Pillow (libavif, aom), speed=6, subsampling 4:4:4",
            sweep=(10, 20, 30, 40, 50, 60, 70, 85), encoder=_avif, decoder=_pillow_decode, **_Q100,
        ),
        Baseline(
            "jxl", "JPEG XL", "imagecodecs.jpegxl_encode, effort=7",
            knob="distance", sweep=(15, 10, 7, 5, 3.5, 2.5, 1.5, 1.0), lo=0.1, hi=25.0, integer=False,
            more_bits_up=False, encoder=_jxl_encode, decoder=_jxl_decode, module="imagecodecs",
            package="imagecodecs",
        ),
        Baseline(
            "jpeg2000", "JPEG 2000", "Pillow (OpenJPEG), quality_mode=rates, irreversible 9/7, mct=1, JP2",
            knob="ratio", sweep=(240, 160, 100, 64, 40, 24, 16, 12), lo=4.0, hi=1000.0, integer=False,
            more_bits_up=False, encoder=_jpeg2000, decoder=_pillow_decode,
        ),
        Baseline(
            "heic", "HEIC 4:4:4 (HEVC intra)",
            "pillow-heif (x265), chroma 4:4:4, preset slow, psy-rd/psy-rdoq/aq-mode off",
            sweep=(5, 12, 20, 30, 40, 50, 60, 70), encoder=_heic_encode, decoder=_heic_decode,
            module="pillow_heif", package="pillow-heif", **_Q100,
        ),
    )
}

_PILLOW_FEATURES = {"jpeg": "jpg", "jpeg444": "jpg", "webp": "webp", "avif": "avif", "jpeg2000": "jpg_2000"}


def get(key: str) -> Baseline:
    """The baseline called ``key``; a ValueError lists the choices."""
    try:
        return BASELINES[key]
    except KeyError:
        raise ValueError(f"unknown baseline {key!r}; choose from {', '.join(BASELINES)}") from None


def unavailable_reason(key: str) -> str | None:
    """None when the codec can run here, else why not (missing optional package or Pillow feature)."""
    from PIL import features

    baseline = get(key)
    if baseline.module is not None:
        import importlib

        try:
            importlib.import_module(baseline.module)
        except ImportError:
            return f"{baseline.package} is not installed (pip install {baseline.package}, or hific[eval])"
    feature = _PILLOW_FEATURES.get(key)
    if feature is not None and not features.check(feature):
        return f"this Pillow was built without {feature} support"
    return None


def library_version(key: str) -> str:
    """The library and codec versions that produce ``key``'s files, for the report."""
    import PIL
    from PIL import features

    if key == "jxl":
        import imagecodecs

        return f"imagecodecs {imagecodecs.__version__}, {imagecodecs.jpegxl_version()}"
    if key == "heic":
        import pillow_heif

        encoder = pillow_heif.libheif_info().get("HEIF", "")
        return f"pillow-heif {pillow_heif.__version__}, libheif {pillow_heif.libheif_version()}, {encoder}"
    codec = {
        "jpeg": ("libjpeg-turbo", "libjpeg_turbo"),
        "jpeg444": ("libjpeg-turbo", "libjpeg_turbo"),
        "webp": ("libwebp", "webp"),
        "avif": ("libavif", "avif"),
        "jpeg2000": ("OpenJPEG", "jpg_2000"),
    }[key]
    lookup = features.version_feature if codec[1] == "libjpeg_turbo" else features.version
    version = lookup(codec[1])
    return f"Pillow {PIL.__version__}, {codec[0]} {version}"


def bpp_of(data: bytes, pixels: np.ndarray) -> float:
    """Bits per pixel of a file for an image of this size."""
    return 8.0 * len(data) / (pixels.shape[0] * pixels.shape[1])


def match_bpp(baseline: Baseline, pixels: np.ndarray, target_bpp: float) -> tuple[float, bytes]:
    """The knob value (and its file) whose bpp is closest to ``target_bpp`` (in log ratio).

    Bisection over :meth:`Baseline.candidates`, assuming size grows with the knob (true up to small
    wiggles); about log2(len(candidates)) encodes. Outside the codec's range the nearest end is returned.
    """
    values = baseline.candidates()
    cache: dict[int, bytes] = {}

    def encoded(i: int) -> bytes:
        if i not in cache:
            cache[i] = baseline.encode(pixels, values[i])
        return cache[i]

    def bpp(i: int) -> float:
        return bpp_of(encoded(i), pixels)

    lo, hi = 0, len(values) - 1
    if bpp(lo) >= target_bpp:
        best = lo
    elif bpp(hi) <= target_bpp:
        best = hi
    else:
        while hi - lo > 1:  # invariant: bpp(lo) < target < bpp(hi)
            mid = (lo + hi) // 2
            if bpp(mid) <= target_bpp:
                lo = mid
            else:
                hi = mid
        best = min((lo, hi), key=lambda i: abs(math.log(bpp(i) / target_bpp)))
    return values[best], encoded(best)
