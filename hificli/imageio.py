"""Reading images into 8-bit RGB by hific's documented policy, and writing decoded images.

Policy (README "Image policy" and FORMAT.md):
- EXIF orientation is applied before encoding; no EXIF is stored, the decoded image is upright.
- Grayscale inputs (1, L, I, I;16, F) are encoded as RGB with equal channels and decode to grayscale.
- 16-bit and 32-bit integer samples are scaled to 8 bits (v * 255 / 65535, rounded); float ("F")
  samples are taken as 0..255 and clipped.
- Alpha: a fully opaque alpha channel is dropped; real transparency is composited onto white (the
  caller receives a warning to print). HiFiC has no alpha channel.
- Palette images are expanded; CMYK, YCbCr and LAB are converted to RGB (their ICC profile is dropped).
- An ICC profile of an RGB or grayscale source (sRGB ones included) is carried in the .hfc file as it is
  and attached on decode; its bytes count in the file size (a typical sRGB profile: 0.6-3 KB).
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from hificli.errors import BadImageError, HificError

#: Largest image hific accepts (pixels); the container's side limit is 2**20.
MAX_PIXELS = 1 << 30
Image.MAX_IMAGE_PIXELS = MAX_PIXELS

_GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"}
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}

#: Output formats by file extension (decode); anything else is an error.
OUTPUT_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
    ".ppm": "PPM",
}


@dataclass
class SourceImage:
    """An input image after the policy: ``pixels`` is uint8 (H, W, 3)."""

    pixels: np.ndarray
    channels: int  # 3 = colour, 1 = grayscale source
    icc_profile: bytes | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])


def open_image(source: str | Path | bytes | BinaryIO) -> Image.Image:
    """Open and fully load an image with Pillow; any failure is a BadImageError (message without the
    file name: callers add it)."""
    try:
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        image = Image.open(stream)
        image.load()
        return image
    except FileNotFoundError:
        raise BadImageError("no such file") from None
    except IsADirectoryError:
        raise BadImageError("is a directory") from None
    except UnidentifiedImageError:
        raise BadImageError(
            "not an image Pillow can read", "supported inputs: PNG, JPEG, WebP, TIFF, BMP, ..."
        ) from None
    except Image.DecompressionBombError as exc:
        raise BadImageError(f"image too large ({exc})") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise BadImageError(f"cannot decode image ({exc})") from None


def to_source_image(image: Image.Image) -> SourceImage:
    """Apply the policy above to an opened Pillow image."""
    # A broken EXIF block must not stop the encode; the orientation is then taken as stored.
    with contextlib.suppress(Exception):
        image = ImageOps.exif_transpose(image) or image
    warnings: list[str] = []
    icc = image.info.get("icc_profile") or None
    mode = image.mode
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
    channels = 1 if mode in _GRAY_MODES else 3
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        icc = None
    if mode in _ALPHA_MODES:
        image, warning = _flatten_alpha(image)
        if warning:
            warnings.append(warning)
        mode = image.mode
    if mode.startswith("I") or mode == "F":
        gray = _to_uint8_gray(image)
        pixels = np.repeat(gray[:, :, None], 3, axis=2)
    else:
        pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    if pixels.shape[0] < 1 or pixels.shape[1] < 1:
        raise BadImageError("image has no pixels")
    return SourceImage(np.ascontiguousarray(pixels), channels, icc, warnings)


def read_image(source: str | Path | bytes | BinaryIO) -> SourceImage:
    """Open an image file (or bytes) and apply the policy."""
    return to_source_image(open_image(source))


def _flatten_alpha(image: Image.Image) -> tuple[Image.Image, str | None]:
    rgba = image.convert("LA" if image.mode in ("LA", "La") else "RGBA")
    alpha = np.asarray(rgba.getchannel("A"))
    base = rgba.convert("L" if rgba.mode == "LA" else "RGB")
    if alpha.min() == 255:
        return base, None
    background = Image.new(base.mode, base.size, 255)
    background.paste(base, mask=rgba.getchannel("A"))
    return background, "transparency flattened onto white (hific stores no alpha channel)"


def _to_uint8_gray(image: Image.Image) -> np.ndarray:
    if image.mode == "F":
        values = np.asarray(image, dtype=np.float64)
        return np.clip(np.rint(np.nan_to_num(values)), 0, 255).astype(np.uint8)
    values = np.asarray(image).astype(np.int64)
    values = np.clip(values, 0, 65535)
    return ((values * 255 + 32767) // 65535).astype(np.uint8)


def output_format(path: str | Path) -> str:
    """The Pillow format for an output path, chosen by its extension (PNG for stdout)."""
    if str(path) == "-":
        return "PNG"
    suffix = Path(path).suffix.lower()
    try:
        return OUTPUT_FORMATS[suffix]
    except KeyError:
        raise HificError(
            f"cannot write images with extension {suffix or '(none)'!r}",
            f"use one of {', '.join(sorted(OUTPUT_FORMATS))}",
        ) from None


def encode_image(image: Image.Image, fmt: str, icc_profile: bytes | None = None) -> bytes:
    """Serialise a decoded image (PNG lossless; JPEG/WebP at quality 95, 4:4:4)."""
    options: dict[str, object] = {}
    if icc_profile and fmt in ("PNG", "JPEG", "WEBP", "TIFF"):
        options["icc_profile"] = icc_profile
    if fmt == "JPEG":
        options.update(quality=95, subsampling=0, optimize=True)
    elif fmt == "WEBP":
        options.update(quality=95, method=4)
    elif fmt == "TIFF":
        options.update(compression="tiff_deflate")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
