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
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from hificli.container import MAX_SIDE
from hificli.errors import BadImageError, HificError
from hificli.tiling import DEFAULT_MAX_MEMORY

#: Bytes per pixel to budget for reading an image: Pillow's decoded image, a converted copy and the
#: uint8 RGB array (RGBA and 16-bit sources are the costly ones). Also sets Pillow's bomb limit.
READ_BYTES_PER_PIXEL = 24
#: Pixels the format allows (MAX_SIDE per side); Pillow's bomb limit never goes above it.
MAX_PIXELS = MAX_SIDE * MAX_SIDE
#: Formats whose pixels the decoder must all write: an image whose data ends before its last rows is
#: truncated (see _missing_pixels). GIF frames may legitimately cover part of the canvas.
_FULL_FRAME_FORMATS = {"PNG", "TIFF", "BMP", "PPM"}
_SENTINELS = (90, 165)  # two fill values: a pixel the decoder never wrote shows the fill in both

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


def pixel_limit(max_memory: int) -> int:
    """Pixels an image may have to be read within ``max_memory`` bytes (never more than the format's)."""
    return max(1, min(MAX_PIXELS, max_memory // READ_BYTES_PER_PIXEL))


def header_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image file from its header only (no pixel decoded), after the format's
    side limit; BadImageError if it is no image or too large for the format."""
    with open(path, "rb") as f:
        image = _open_checked(f, MAX_PIXELS, None)
        size = image.size
        image.close()
    return size


def image_signature(head: bytes) -> None:
    """Refuse, from the first bytes of a long input (fileio.read_input's ``size_of``), a stream that no
    image format recognises, so that ``hific encode /dev/zero`` stops at once instead of reading
    gigabytes. Formats without a signature are tried on ``head`` itself. Returns None: read on."""
    Image.init()
    if any(accept is not None and accept(head[:16]) for _factory, accept in Image.OPEN.values()):
        return None
    try:
        with _pixel_limit(MAX_PIXELS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Image.open(io.BytesIO(head))
    except UnidentifiedImageError:
        raise BadImageError(
            "not an image Pillow can read", "supported inputs: PNG, JPEG, WebP, TIFF, BMP, ..."
        ) from None
    except Exception:  # a format recognised it and wants more bytes
        return None
    return None


def open_image(
    source: str | Path | bytes | BinaryIO,
    *,
    max_pixels: int = MAX_PIXELS,
    check_size: Callable[[int, int], None] | None = None,
    allow_truncated: bool = False,
    notes: list[str] | None = None,
) -> Image.Image:
    """Open and fully load an image with Pillow; any failure is a BadImageError (message without the
    file name: callers add it).

    The size is checked from the header, before any pixel is decoded: against the format's side limit,
    Pillow's bomb limit (``max_pixels``) and ``check_size(width, height)`` (the caller's memory budget).
    A truncated image is refused unless ``allow_truncated``; a multi-frame image keeps its first frame.
    Notes for the user (frames, truncation) are appended to ``notes``.
    """
    notes = notes if notes is not None else []
    image = _open_checked(source, max_pixels, check_size)
    frames = _frame_count(image)
    if frames > 1:
        notes.append(f"encoding frame 1 of {frames} (hific codes a single image)")
    try:
        if image.format in _FULL_FRAME_FORMATS:
            return _load_complete(image, source, max_pixels, allow_truncated, notes)
        image.load()
        return image
    except OSError as exc:
        if not allow_truncated or "truncated" not in str(exc):
            raise _load_error(exc) from None
    notes.append("image data ends early: the missing pixels are black (--allow-truncated)")
    image = _open_checked(source, max_pixels, check_size)
    with _truncated_images_allowed():
        try:
            image.load()
        except (OSError, ValueError, SyntaxError) as exc:
            raise _load_error(exc) from None
    return image


def _open_checked(
    source: str | Path | bytes | BinaryIO, max_pixels: int, check_size: Callable[[int, int], None] | None
) -> Image.Image:
    """Image.open (header only) under Pillow's bomb limit ``max_pixels``, then the size checks."""
    try:
        if hasattr(source, "seek"):
            source.seek(0)
        stream = io.BytesIO(source) if isinstance(source, bytes) else source
        with _pixel_limit(max_pixels):
            image = Image.open(stream)
    except FileNotFoundError:
        raise BadImageError("no such file") from None
    except IsADirectoryError:
        raise BadImageError("is a directory") from None
    except UnidentifiedImageError:
        raise BadImageError(
            "not an image Pillow can read", "supported inputs: PNG, JPEG, WebP, TIFF, BMP, ..."
        ) from None
    except Image.DecompressionBombError as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{found.group(1)} pixels" if found else "too many pixels"
        raise BadImageError(f"image has {size}, over the limit of {max_pixels}", "raise --max-memory") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise _load_error(exc) from None
    width, height = image.size
    if width > MAX_SIDE or height > MAX_SIDE:
        raise BadImageError(
            f"image is {width}x{height}: the .hfc format holds at most {MAX_SIDE} pixels a side",
            "crop or scale the image first",
        )
    if check_size is not None:
        check_size(width, height)
    if width * height > max_pixels:
        raise BadImageError(
            f"image is {width}x{height} ({width * height} pixels), over the limit of {max_pixels}",
            "raise --max-memory",
        )
    return image


def _load_error(exc: BaseException) -> BadImageError:
    hint = "--allow-truncated encodes what is there" if "truncated" in str(exc) else None
    return BadImageError(f"cannot decode image ({exc})", hint)


def _frame_count(image: Image.Image) -> int:
    """Frames (animation) or pages (TIFF) of an opened image; 1 when Pillow cannot tell."""
    try:
        return max(1, int(getattr(image, "n_frames", 1)))
    except Exception:  # counting walks the file: a damaged later frame must not stop the first one
        return 1
    finally:
        with contextlib.suppress(Exception):
            image.seek(0)


def _load_complete(
    image: Image.Image, source: str | Path | bytes | BinaryIO, max_pixels: int, allow_truncated: bool,
    notes: list[str],
) -> Image.Image:
    """Load ``image`` and refuse it if the decoder left pixels unwritten: its compressed data ended
    (a complete zlib stream of fewer rows, say) before the image did. Pillow accepts such a PNG without
    a word; the buffer is pre-filled so that unwritten pixels show. The last two rows are checked:
    sequential formats write them last, and so does interlaced PNG (odd rows come in the last pass).
    Returns the loaded image (with ``allow_truncated``, a fresh load whose missing pixels are black)."""
    suspects = _missing_pixels(image, _SENTINELS[0])
    if suspects is None or not suspects.any():
        return image
    again = _open_checked(source, max_pixels, None)
    missing = _missing_pixels(again, _SENTINELS[1])
    if missing is None or not (missing & suspects).any():
        return image
    if not allow_truncated:
        raise BadImageError(
            "image data ends before the image does (truncated file)", "--allow-truncated encodes what is there"
        )
    notes.append("image data ends early: the missing pixels are black (--allow-truncated)")
    image = _open_checked(source, max_pixels, None)
    image.load()
    return image


def _missing_pixels(image: Image.Image, value: int) -> np.ndarray | None:
    """Load ``image`` into a buffer filled with ``value``; mask of its last two rows' pixels that still
    hold it (None when the mode's pixels cannot be compared)."""
    fill = (value if image.mode != "1" else value & 1,) * len(image.getbands())
    image.im = Image.core.fill(image.mode, image.size, fill if len(fill) > 1 else fill[0])
    image.load()
    width, height = image.size
    tail = image.crop((0, max(0, height - 2), width, height))
    pixel = Image.new(tail.mode, (1, 1), fill if len(fill) > 1 else fill[0])
    if tail.mode == "1":
        tail, pixel = tail.convert("L"), pixel.convert("L")
    try:
        data = np.frombuffer(tail.tobytes(), np.uint8).reshape(-1, len(pixel.tobytes()))
    except ValueError:
        return None
    return (data == np.frombuffer(pixel.tobytes(), np.uint8)).all(axis=1)


@contextlib.contextmanager
def _pixel_limit(max_pixels: int) -> Iterator[None]:
    """Pillow's decompression-bomb limit for one open (it warns above it and refuses above twice it)."""
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


@contextlib.contextmanager
def _truncated_images_allowed() -> Iterator[None]:
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = True
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


@contextlib.contextmanager
def pillow_warnings(notes: list[str]) -> Iterator[None]:
    """Collect Pillow's warnings (e.g. "Corrupt EXIF data") as one-line notes instead of letting
    them reach stderr in Python's multi-line form."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        if issubclass(warning.category, Image.DecompressionBombWarning):
            continue  # the size was checked against the memory budget already
        text = "image decoder: " + " ".join(str(warning.message).split())
        if text not in notes:
            notes.append(text)


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


def read_image(
    source: str | Path | bytes | BinaryIO,
    *,
    max_pixels: int | None = None,
    check_size: Callable[[int, int], None] | None = None,
    allow_truncated: bool = False,
) -> SourceImage:
    """Open an image file (or bytes) and apply the policy; see :func:`open_image` for the checks.
    ``max_pixels`` defaults to what the default --max-memory allows. Its notes and Pillow's warnings
    come first in the result's ``warnings``."""
    notes: list[str] = []
    max_pixels = pixel_limit(DEFAULT_MAX_MEMORY) if max_pixels is None else max_pixels
    with pillow_warnings(notes):
        image = open_image(
            source, max_pixels=max_pixels, check_size=check_size, allow_truncated=allow_truncated, notes=notes
        )
        result = to_source_image(image)
    result.warnings[:0] = notes
    return result


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
    # (v * 255 + 32767) // 65535 in place on uint32 (exact: 65535 * 255 + 32767 < 2**32), so a 16-bit
    # image costs 4 bytes a pixel here, not the 24 of int64 temporaries.
    values = np.asarray(image)
    values = np.clip(values, 0, 65535).astype(np.uint32) if values.dtype.kind == "i" else values.astype(np.uint32)
    values *= 255
    values += 32767
    values //= 65535
    return values.astype(np.uint8)


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
