"""The ``.hfc`` container, format 1.2: a small header, the coded streams, a CRC32 trailer.

Layout and rules are specified in FORMAT.md; the constants below are the single source of truth it
quotes. Stdlib only (no torch, no numpy): ``hific info`` reads files through this module.

Reading is strict and allocation-safe: the checksum is verified before any field is interpreted, every
field is bounds-checked against the format limits and the bytes actually present before anything is
sliced, and every failure is a :class:`~hificli.errors.CorruptFileError` (or its subclass
:class:`~hificli.errors.UnsupportedVersionError`) whose message names the field and the value.
"""

from __future__ import annotations

import operator
import os
import re
import stat
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from hificli.errors import CorruptFileError, InvalidInputError, UnsupportedVersionError

MAGIC = b"\x89HFC"
FORMAT_VERSION = (1, 2)  #: the newest version this hific reads; each file is written in the oldest that holds it
RATE_FIELD_MINOR = 1  #: minor version that defined FLAG_RATE and the rate field
CONTEXT_MINOR = 2  #: minor version that defined FLAG_CONTEXT

FLAG_ICC = 0x01  #: flags bit 0: an ICC profile block follows the header
FLAG_RATE = 0x02  #: flags bit 1 (format 1.1): a rate field (the quality code) follows the stream entries
#: flags bit 2 (format 1.2): the latents are coded in the two checkerboard streams "ya" and "yb"
FLAG_CONTEXT = 0x04
KNOWN_FLAGS = FLAG_ICC | FLAG_RATE | FLAG_CONTEXT

CHANNEL_CHOICES = (1, 3)  #: 1 = grayscale source (decoded as grayscale), 3 = RGB
CODER_ANS = 1  #: constriction AnsCoder, 32-bit words, little-endian
CODER_NAMES = {CODER_ANS: "constriction-ans32"}
CODER_VERSION = (0, 5)  #: constriction 0.5.x wrote the streams

MAX_SIDE = 1 << 20  #: width and height are 1..MAX_SIDE
PAD_MULTIPLE = 16  #: padded sides are multiples of this
MAX_PADDING = 4096  #: padded side - side < MAX_PADDING
MAX_MODEL_ID = 64  #: model id length 1..MAX_MODEL_ID
FINGERPRINT_SIZE = 8
MAX_STREAMS = 64  #: stream count 1..MAX_STREAMS
MAX_STREAM_NAME = 32  #: stream name length 1..MAX_STREAM_NAME
MAX_NDIM = 4  #: stream shape rank 1..MAX_NDIM
MAX_DIM = 1 << 24  #: each stream dimension 1..MAX_DIM
MAX_ELEMENTS = 1 << 31  #: product of a stream's dimensions
MAX_STREAM_BYTES = 1 << 31  #: byte length of one stream 0..MAX_STREAM_BYTES
MAX_ICC_BYTES = 1 << 24  #: ICC profile length 1..MAX_ICC_BYTES
MAX_FILE_BYTES = 1 << 31  #: read_file refuses larger files before reading them
MAX_VARINT_BYTES = 5  #: unsigned LEB128, value < 2**32, minimal encoding only
QUALITY_SCALE = 100  #: the rate field stores quality (0-100) in hundredths
MAX_QUALITY_CODE = 100 * QUALITY_SCALE

_MAX_PADDED = MAX_SIDE + MAX_PADDING - 1
_PREFIX = struct.Struct("<4sBBHBB")  # magic, major, minor, header_size, flags, channels
PREFIX_SIZE = _PREFIX.size  #: the fixed part of the header (10 bytes)
TRAILER_SIZE = 4  #: CRC32 of every byte before it, little-endian u32
MIN_FILE_SIZE = PREFIX_SIZE + TRAILER_SIZE

_MODEL_ID_RE = re.compile(rb"[a-z0-9][a-z0-9._-]*")
_STREAM_NAME_RE = re.compile(rb"[a-z0-9._-]+")

# The earlier PyTorch port's files: 11 uint16 shapes, then this marker at offset 22.
_PORT_MARKER, _PORT_MARKER_OFFSET = b"\x46\xe2\x84\x92", 22
_PORT_NOTE = "looks like a file from the earlier PyTorch HiFiC port, which hific cannot read"
_OTHER_SIGNATURES = {b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image", b"GIF8": "a GIF image"}


@dataclass(frozen=True)
class StreamInfo:
    """One coded stream: its name, the shape of the symbol array it holds, and its byte length."""

    name: str
    shape: tuple[int, ...]
    length: int


@dataclass(frozen=True)
class Header:
    """Everything a .hfc file says besides the stream bytes."""

    model_id: str
    fingerprint: bytes
    width: int
    height: int
    padded_width: int
    padded_height: int
    channels: int
    streams: tuple[StreamInfo, ...]
    icc_profile: bytes | None = None
    coder_id: int = CODER_ANS
    coder_version: tuple[int, int] = CODER_VERSION
    #: the file's format version; None (new headers): the version ``pack`` writes (see written_version)
    version: tuple[int, int] | None = None
    #: variable-rate models: the quality the file was coded at, in hundredths (0..MAX_QUALITY_CODE);
    #: None for fixed-rate models (such files are written as format 1.0)
    quality_code: int | None = None
    #: True when the latents are coded with a spatial context (streams "ya", "yb"; format 1.2)
    spatial_context: bool = False

    def __post_init__(self) -> None:
        if self.version is None:
            object.__setattr__(self, "version", written_version(self))

    @property
    def quality(self) -> float | None:
        """The quality (0-100) of a variable-rate file, None for a fixed-rate one."""
        return None if self.quality_code is None else self.quality_code / QUALITY_SCALE

    def stream_info(self, name: str) -> StreamInfo:
        """The stream called ``name``; a missing stream means the file is unusable (CorruptFileError)."""
        for info in self.streams:
            if info.name == name:
                return info
        raise CorruptFileError(f"bad .hfc file: no stream named {name!r}")


@dataclass(frozen=True)
class HfcFile:
    """A parsed file: header, the streams' bytes (in header order) and the total file size."""

    header: Header
    payloads: tuple[bytes, ...]
    size: int

    def stream(self, name: str) -> bytes:
        """Bytes of the stream called ``name`` (CorruptFileError if the file has no such stream)."""
        info = self.header.stream_info(name)
        return self.payloads[self.header.streams.index(info)]

    @property
    def payload_bytes(self) -> int:
        return sum(len(p) for p in self.payloads)

    @property
    def header_bytes(self) -> int:
        """Bytes before the payload: header fields plus the ICC block, if any."""
        return self.size - TRAILER_SIZE - self.payload_bytes


class _Invalid(ValueError):
    """A field outside the format; pack/unpack turn it into the right HificError."""


# ---------------------------------------------------------------------------------------------- checks
# Shared by pack and unpack, so that pack never writes what unpack rejects.


def _check_range(field: str, value: int, lo: int, hi: int) -> int:
    try:
        value = operator.index(value)
    except TypeError:
        raise _Invalid(f"{field} {value!r} is not an integer") from None
    if not lo <= value <= hi:
        raise _Invalid(f"{field} {value} is outside {lo}..{hi}")
    return value


def _check_geometry(width: int, height: int, padded_width: int, padded_height: int) -> None:
    for side, value, padded in (("width", width, padded_width), ("height", height, padded_height)):
        if padded < value or padded - value >= MAX_PADDING:
            hi = value + MAX_PADDING - 1
            raise _Invalid(f"padded_{side} {padded} is outside {value}..{hi} ({side} is {value})")
        if padded % PAD_MULTIPLE:
            raise _Invalid(f"padded_{side} {padded} is not a multiple of {PAD_MULTIPLE}")


def _check_ident(field: str, raw: bytes, pattern: re.Pattern[bytes], max_len: int) -> str:
    if not 1 <= len(raw) <= max_len:
        raise _Invalid(f"{field} length {len(raw)} is outside 1..{max_len}")
    if not pattern.fullmatch(raw):
        raise _Invalid(f"{field} {raw!r} has characters outside {pattern.pattern.decode()}")
    return raw.decode("ascii")


def _check_shape(field: str, shape: Sequence[int]) -> tuple[int, ...]:
    _check_range(f"{field} ndim", len(shape), 1, MAX_NDIM)
    dims = tuple(_check_range(f"{field} dim {i}", d, 1, MAX_DIM) for i, d in enumerate(shape))
    n = 1
    for d in dims:
        n *= d
    if n > MAX_ELEMENTS:
        raise _Invalid(f"{field} shape {dims} has {n} elements, more than {MAX_ELEMENTS}")
    return dims


# ---------------------------------------------------------------------------------------------- writing


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 of ``0 <= value < 2**32`` (minimal: 1..5 bytes)."""
    value = _check_range("varint", value, 0, (1 << 32) - 1)
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _ident_bytes(field: str, text: str, pattern: re.Pattern[bytes], max_len: int) -> bytes:
    raw = text.encode("ascii", errors="replace") if isinstance(text, str) else b""
    _check_ident(field, raw, pattern, max_len)
    return bytes([len(raw)]) + raw


def written_version(h: Header) -> tuple[int, int]:
    """The format version a header is written in: 1.2 with a spatial context, else 1.1 when it carries a
    quality, else 1.0."""
    if h.spatial_context:
        return (FORMAT_VERSION[0], CONTEXT_MINOR)
    return (FORMAT_VERSION[0], RATE_FIELD_MINOR if h.quality_code is not None else 0)


def _encode_header(h: Header) -> bytes:
    """The header fields (prefix included, ICC block excluded), validated against the limits."""
    if tuple(h.version) != written_version(h):
        raise _Invalid(f"format version {h.version} cannot be written ({written_version(h)} for this header)")
    if h.channels not in CHANNEL_CHOICES:
        raise _Invalid(f"channels {h.channels} is not one of {CHANNEL_CHOICES}")
    sizes = [_check_range(f, getattr(h, f), 1, MAX_SIDE) for f in ("width", "height")]
    pads = [_check_range(f, getattr(h, f), 1, _MAX_PADDED) for f in ("padded_width", "padded_height")]
    _check_geometry(*sizes, *pads)
    if not isinstance(h.fingerprint, bytes) or len(h.fingerprint) != FINGERPRINT_SIZE:
        raise _Invalid(f"fingerprint must be {FINGERPRINT_SIZE} bytes, got {h.fingerprint!r}")
    if h.icc_profile is not None:
        _check_range("ICC profile length", len(h.icc_profile), 1, MAX_ICC_BYTES)
    out = bytearray(b"".join(encode_varint(v) for v in (*sizes, *pads)))
    out += _ident_bytes("model id", h.model_id, _MODEL_ID_RE, MAX_MODEL_ID)
    out += h.fingerprint
    out.append(_check_range("coder id", h.coder_id, 1, 255))
    if len(h.coder_version) != 2:
        raise _Invalid(f"coder version {h.coder_version} must be (major, minor)")
    out += bytes(_check_range("coder version", v, 0, 255) for v in h.coder_version)
    out.append(_check_range("stream count", len(h.streams), 1, MAX_STREAMS))
    seen: set[str] = set()
    for i, s in enumerate(h.streams):
        field = f"stream {i} ({s.name!r})"
        out += _ident_bytes(f"{field} name", s.name, _STREAM_NAME_RE, MAX_STREAM_NAME)
        if s.name in seen:
            raise _Invalid(f"{field} name is used twice")
        seen.add(s.name)
        dims = _check_shape(field, s.shape)
        out.append(len(dims))
        out += b"".join(encode_varint(d) for d in dims)
        out += encode_varint(_check_range(f"{field} length", s.length, 0, MAX_STREAM_BYTES))
    flags = FLAG_ICC if h.icc_profile is not None else 0
    if h.quality_code is not None:
        out += encode_varint(_check_range("quality", h.quality_code, 0, MAX_QUALITY_CODE))
        flags |= FLAG_RATE
    if h.spatial_context:
        flags |= FLAG_CONTEXT
    header_size = _check_range("header size", PREFIX_SIZE + len(out), PREFIX_SIZE, 0xFFFF)
    return _PREFIX.pack(MAGIC, *written_version(h), header_size, flags, h.channels) + bytes(out)


def header_bytes_size(header: Header) -> int:
    """Size of the header fields ``pack`` writes for ``header`` (without ICC block, payload, trailer)."""
    try:
        return len(_encode_header(header))
    except _Invalid as exc:
        raise InvalidInputError(f"cannot write .hfc: {exc}") from None


def pack(header: Header, payloads: Sequence[bytes]) -> bytes:
    """A complete .hfc file. Values outside the format's limits raise InvalidInputError naming the field;
    payloads that do not match ``header.streams`` (count or lengths) are a programming error (ValueError)."""
    payloads = [bytes(p) for p in payloads]
    if len(payloads) != len(header.streams):
        raise ValueError(f"{len(header.streams)} streams in the header but {len(payloads)} payloads")
    for info, payload in zip(header.streams, payloads, strict=True):
        if info.length != len(payload):
            raise ValueError(f"stream {info.name!r}: header says {info.length} bytes, got {len(payload)}")
    try:
        head = _encode_header(header)
    except _Invalid as exc:
        raise InvalidInputError(f"cannot write .hfc: {exc}") from None
    icc = b"" if header.icc_profile is None else encode_varint(len(header.icc_profile)) + header.icc_profile
    body = b"".join((head, icc, *payloads))
    return body + struct.pack("<I", zlib.crc32(body))


# ---------------------------------------------------------------------------------------------- reading


class _Reader:
    """A cursor over ``data[pos:end]`` that checks every read against ``end`` before slicing."""

    def __init__(self, data: bytes, pos: int, end: int, region: str) -> None:
        self.data, self.pos, self.end, self.region = data, pos, end, region

    def take(self, n: int, field: str) -> bytes:
        left = self.end - self.pos
        if n > left:
            raise _Invalid(f"{field} needs {n} bytes but the {self.region} has only {left} left")
        self.pos += n
        return self.data[self.pos - n : self.pos]

    def u8(self, field: str) -> int:
        return self.take(1, field)[0]

    def ident(self, field: str, pattern: re.Pattern[bytes], max_len: int) -> str:
        """A u8 length (checked first) and that many ASCII bytes matching ``pattern``."""
        n = _check_range(f"{field} length", self.u8(f"{field} length"), 1, max_len)
        return _check_ident(field, self.take(n, field), pattern, max_len)

    def varint(self, field: str, lo: int, hi: int) -> int:
        value = 0
        for i in range(MAX_VARINT_BYTES):
            byte = self.u8(field)
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                if i and not byte:
                    raise _Invalid(f"{field} is an overlong varint ({i + 1} bytes for {value})")
                if value >> 32:
                    raise _Invalid(f"{field} varint value {value} does not fit in 32 bits")
                return _check_range(field, value, lo, hi)
        raise _Invalid(f"{field} varint is longer than {MAX_VARINT_BYTES} bytes")


def _not_hfc(data: bytes) -> CorruptFileError:
    if data[_PORT_MARKER_OFFSET : _PORT_MARKER_OFFSET + 4] == _PORT_MARKER:
        return CorruptFileError(f"not a .hfc file: {_PORT_NOTE}", "encode the original image with hific")
    for signature, what in _OTHER_SIGNATURES.items():
        if data.startswith(signature):
            return CorruptFileError(f"not a .hfc file: this is {what}", "to compress it, use 'hific encode'")
    return CorruptFileError(f"not a .hfc file (starts with {data[:4].hex(' ')}, expected {MAGIC.hex(' ')})")


def _check_start(data: bytes) -> tuple[int, int, int, int, int]:
    """Size, magic, major version and checksum, in that order; returns the fixed prefix fields."""
    size = len(data)
    if not data:
        raise CorruptFileError("not a .hfc file: the file is empty")
    if not data.startswith(MAGIC) and not MAGIC.startswith(data):
        raise _not_hfc(data)
    if size < MIN_FILE_SIZE:
        raise CorruptFileError(f"truncated .hfc file: {size} bytes, a .hfc file has at least {MIN_FILE_SIZE}")
    _, major, minor, header_size, flags, channels = _PREFIX.unpack_from(data)
    stored = int.from_bytes(data[-TRAILER_SIZE:], "little")
    crc_ok = zlib.crc32(memoryview(data)[: size - TRAILER_SIZE]) == stored
    if major != FORMAT_VERSION[0]:
        if major < FORMAT_VERSION[0]:
            raise CorruptFileError(f"bad .hfc file: format version {major}.{minor} does not exist")
        hint = "upgrade hific" if crc_ok else "its checksum does not match either: the file may be damaged"
        raise UnsupportedVersionError(f"made by a newer hific (format {major}.{minor}); upgrade hific", hint)
    if not crc_ok:
        raise CorruptFileError(_damage(data, minor, header_size, flags, channels))
    if flags & ~KNOWN_FLAGS:
        raise UnsupportedVersionError(
            f"unknown flag bits 0x{flags & ~KNOWN_FLAGS:02x} (format {major}.{minor}): made by a newer hific",
            "upgrade hific",
        )
    return minor, header_size, flags, channels, size


def unpack(data: bytes) -> HfcFile:
    """Parse and validate a whole .hfc file held in memory."""
    data = data if isinstance(data, bytes) else bytes(data)
    minor, header_size, flags, channels, size = _check_start(data)
    try:
        return _parse(data, minor, header_size, flags, channels, size)
    except _Invalid as exc:
        raise CorruptFileError(f"bad .hfc file: {exc}") from None


def _damage(data: bytes, minor: int, header_size: int, flags: int, channels: int) -> str:
    """What a file whose checksum fails looks like: when its header (read without trusting it) describes
    another size, ``truncated .hfc file: N of M bytes`` (or the extra bytes); else a checksum mismatch."""
    if header_size + TRAILER_SIZE > len(data):
        return f"truncated .hfc file: {len(data)} of at least {header_size + TRAILER_SIZE} bytes (the header is cut)"
    try:
        described = _parse(data, minor, header_size, flags, channels, len(data), exact=False).size
    except _Invalid:
        described = len(data)
    if described > len(data):
        return f"truncated .hfc file: {len(data)} of {described} bytes (the end is missing)"
    if described < len(data):
        return f"damaged .hfc file: {len(data)} bytes where the header describes {described}"
    return "checksum mismatch (file damaged)"


def _parse(
    data: bytes, minor: int, header_size: int, flags: int, channels: int, size: int, *, exact: bool = True
) -> HfcFile:
    """The file's fields and streams. ``exact=False`` (diagnosis only) skips the size rule and returns
    the size the header describes as ``HfcFile.size``; its payloads may then be short."""
    end = size - TRAILER_SIZE if exact else size  # a cut file has no trailer
    _check_range("header_size", header_size, PREFIX_SIZE, end)
    if channels not in CHANNEL_CHOICES:
        raise _Invalid(f"channels {channels} is not one of {CHANNEL_CHOICES}")
    r = _Reader(data, PREFIX_SIZE, header_size, f"header (header_size {header_size})")
    width, height = r.varint("width", 1, MAX_SIDE), r.varint("height", 1, MAX_SIDE)
    padded = [r.varint(f, 1, _MAX_PADDED) for f in ("padded_width", "padded_height")]
    _check_geometry(width, height, *padded)
    model_id = r.ident("model id", _MODEL_ID_RE, MAX_MODEL_ID)
    fingerprint = r.take(FINGERPRINT_SIZE, "fingerprint")
    coder_id = _check_range("coder id", r.u8("coder id"), 1, 255)
    coder_version = (r.u8("coder major version"), r.u8("coder minor version"))
    streams: list[StreamInfo] = []
    total = 0
    for i in range(_check_range("stream count", r.u8("stream count"), 1, MAX_STREAMS)):
        field = f"stream {i}"
        name = r.ident(f"{field} name", _STREAM_NAME_RE, MAX_STREAM_NAME)
        field = f"stream {i} ({name!r})"
        if any(s.name == name for s in streams):
            raise _Invalid(f"{field} name is used twice")
        ndim = _check_range(f"{field} ndim", r.u8(f"{field} ndim"), 1, MAX_NDIM)
        shape = _check_shape(field, [r.varint(f"{field} dim {k}", 1, MAX_DIM) for k in range(ndim)])
        length = r.varint(f"{field} length", 0, MAX_STREAM_BYTES)
        total += length
        if exact and total > end - r.pos:
            raise _Invalid(f"{field} length {length} runs past the end of the file ({size} bytes)")
        streams.append(StreamInfo(name, shape, length))
    quality_code = None
    if flags & FLAG_RATE:
        if minor < RATE_FIELD_MINOR:
            raise _Invalid(f"flag bit 1 (rate field) needs format 1.{RATE_FIELD_MINOR}, the file says 1.{minor}")
        quality_code = r.varint("quality", 0, MAX_QUALITY_CODE)
    if flags & FLAG_CONTEXT and minor < CONTEXT_MINOR:
        raise _Invalid(f"flag bit 2 (spatial context) needs format 1.{CONTEXT_MINOR}, the file says 1.{minor}")
    if (1, minor) <= FORMAT_VERSION and r.pos != header_size:
        raise _Invalid(f"header_size {header_size} does not match the header fields ({r.pos} bytes)")
    body = _Reader(data, header_size, end, "file")
    icc = None
    if flags & FLAG_ICC:
        icc = body.take(body.varint("ICC profile length", 1, MAX_ICC_BYTES), "ICC profile")
    expected = body.pos + total + TRAILER_SIZE
    if exact and size != expected:
        what = "trailing bytes" if size > expected else "streams run past the end"
        raise _Invalid(f"{what}: the header describes a {expected}-byte file, the file has {size} bytes")
    payloads, pos = [], body.pos
    for s in streams:
        payloads.append(data[pos : pos + s.length])
        pos += s.length
    header = Header(
        model_id, fingerprint, width, height, padded[0], padded[1], channels, tuple(streams), icc,
        coder_id, coder_version, (FORMAT_VERSION[0], minor), quality_code, bool(flags & FLAG_CONTEXT),
    )
    return HfcFile(header, tuple(payloads), size if exact else expected)


def declared_size(head: bytes) -> int:
    """The size of the .hfc file that starts with ``head`` (its first ``min(size, HEAD_BYTES)`` bytes),
    as its header declares it: header_size + ICC block + stream lengths + trailer. Nothing is verified
    (no checksum yet; :func:`unpack` does that): a reader of a pipe uses it to read exactly one file.
    When ``head`` has no readable header, ``len(head)``: those bytes already show what is wrong."""
    try:
        return _declared_size(head)
    except (_Invalid, struct.error):
        return len(head)


def _declared_size(head: bytes) -> int:
    if not head.startswith(MAGIC):
        raise _Invalid("no magic")
    _, major, _, header_size, flags, _ = _PREFIX.unpack_from(head)
    if major != FORMAT_VERSION[0]:
        raise _Invalid(f"format {major}")
    r = _Reader(head, PREFIX_SIZE, min(header_size, len(head)), "header")
    for field in ("width", "height", "padded_width", "padded_height"):
        r.varint(field, 0, (1 << 32) - 1)
    r.ident("model id", _MODEL_ID_RE, MAX_MODEL_ID)
    r.take(FINGERPRINT_SIZE + 3, "fingerprint and coder")
    total = 0
    for i in range(r.u8("stream count")):
        r.ident(f"stream {i} name", _STREAM_NAME_RE, MAX_STREAM_NAME)
        for k in range(r.u8(f"stream {i} ndim")):
            r.varint(f"stream {i} dim {k}", 0, (1 << 32) - 1)
        total += r.varint(f"stream {i} length", 0, MAX_STREAM_BYTES)
    icc = 0
    if flags & FLAG_ICC:
        body = _Reader(head, header_size, len(head), "file")
        icc = body.varint("ICC profile length", 1, MAX_ICC_BYTES)
        icc += body.pos - header_size
    return header_size + icc + total + TRAILER_SIZE


def read_file(path: str | os.PathLike[str], *, max_bytes: int = MAX_FILE_BYTES) -> HfcFile:
    """Read and parse a .hfc file; OS errors become InvalidInputError with the OS message.

    Reads only what the file holds: a regular file by its size (refused above ``max_bytes`` before
    reading), a pipe or device up to the size its header declares (see :func:`read_stream`)."""
    name = os.fspath(path)
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                return read_stream(f, name, max_bytes=max_bytes)
            if info.st_size > max_bytes:
                raise CorruptFileError(f"not a .hfc file: {info.st_size} bytes is over the {max_bytes} limit")
            return unpack(f.read(info.st_size + 1))
    except OSError as exc:
        raise InvalidInputError(f"cannot read {name}: {exc.strerror or exc}") from None


def read_stream(f: BinaryIO, name: str = "<stream>", *, max_bytes: int = MAX_FILE_BYTES) -> HfcFile:
    """Read one .hfc file from a binary stream (stdin, a pipe, a device): the header first, then the
    bytes it declares (and one more, to see trailing data), never more than ``max_bytes``; a stream
    that is not a .hfc file stops at its first bytes (``hific info /dev/zero`` returns at once)."""
    from hificli.fileio import read_bounded

    try:
        data = read_bounded(f, max_bytes, size_of=declared_size)
    except OSError as exc:
        raise InvalidInputError(f"cannot read {name}: {exc.strerror or exc}") from None
    return unpack(data)


def is_model_id(text: object) -> bool:
    """True for a model id a header can hold (``[a-z0-9][a-z0-9._-]*``, 1..MAX_MODEL_ID characters)."""
    if not isinstance(text, str) or not 0 < len(text) <= MAX_MODEL_ID:
        return False
    return _MODEL_ID_RE.fullmatch(text.encode("ascii", "replace")) is not None


def coder_name(coder_id: int) -> str:
    """Human name of a coder id (``unknown-N`` for ids this hific does not know)."""
    return CODER_NAMES.get(coder_id, f"unknown-{coder_id}")
