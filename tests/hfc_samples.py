"""Valid sample .hfc files for tests, plus a raw byte builder for hostile ones.

``sample_parts``/``sample_file`` go through ``hificli.container.pack`` with fake (seeded random) stream
bytes. ``raw_file`` assembles bytes by hand from the layout in FORMAT.md, independently of the module,
so tests can write any value (overlong varints, bad counts) with a valid CRC.

``python tests/hfc_samples.py`` prints the hex dump quoted in FORMAT.md.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import Sequence

from hificli.container import Header, StreamInfo, pack

FINGERPRINT = bytes.fromhex("0123456789abcdef")


def padded(side: int, multiple: int = 64) -> int:
    """``side`` rounded up to a multiple (HiFiC pads to the hyperprior stride, 64)."""
    return -(-side // multiple) * multiple


def sample_parts(
    width: int = 768,
    height: int = 512,
    *,
    model_id: str = "hific-med",
    z_channels: int = 320,
    y_channels: int = 220,
    z_bytes: int = 300,
    y_bytes: int = 9000,
    channels: int = 3,
    icc: bytes | None = None,
    seed: int = 0,
) -> tuple[Header, list[bytes]]:
    """A header with streams "z" (C_z, H/64, W/64) and "y" (C_y, H/16, W/16) and random payloads."""
    pw, ph = padded(width), padded(height)
    streams = (
        StreamInfo("z", (z_channels, ph // 64, pw // 64), z_bytes),
        StreamInfo("y", (y_channels, ph // 16, pw // 16), y_bytes),
    )
    header = Header(model_id, FINGERPRINT, width, height, pw, ph, channels, streams, icc)
    return header, fake_payloads(streams, seed)


def fake_payloads(streams: Sequence[StreamInfo], seed: int = 0) -> list[bytes]:
    """Seeded random bytes of each stream's length (stand-ins for coder output)."""
    rng = random.Random(seed)
    return [rng.randbytes(s.length) for s in streams]


def sample_file(width: int = 768, height: int = 512, **kwargs) -> bytes:
    """A complete valid .hfc file (see :func:`sample_parts` for the options)."""
    return pack(*sample_parts(width, height, **kwargs))


def small_file(**kwargs) -> bytes:
    """A tiny valid file (40x24 image, 'tiny'-like channel counts, a few payload bytes)."""
    options = dict(model_id="test-tiny", z_channels=5, y_channels=6, z_bytes=4, y_bytes=8)
    return sample_file(40, 24, **{**options, **kwargs})


# ---------------------------------------------------------------------------------- raw, hand-made files


def varint(value: int, overlong: int = 0) -> bytes:
    """LEB128 of ``value``, optionally padded with ``overlong`` redundant bytes (invalid on purpose)."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    if overlong:
        out += bytes([value | 0x80]) + b"\x80" * (overlong - 1) + b"\x00"
    else:
        out.append(value)
    return bytes(out)


def raw_stream(name: bytes, dims: Sequence[int], length: int, ndim: int | None = None) -> bytes:
    """One stream entry: name length + name, ndim, dims, byte length."""
    ndim = len(dims) if ndim is None else ndim
    return bytes([len(name)]) + name + bytes([ndim]) + b"".join(map(varint, dims)) + varint(length)


def raw_fields(
    *,
    sizes: Sequence[int] = (40, 24, 64, 64),
    model_id: bytes = b"test-tiny",
    coder: bytes = b"\x01\x00\x05",
    streams: Sequence[bytes] = (),
    count: int | None = None,
) -> bytes:
    """Header fields after the fixed prefix (sizes = width, height, padded width, padded height)."""
    streams = list(streams) or [raw_stream(b"z", (5, 1, 1), 4), raw_stream(b"y", (6, 4, 4), 8)]
    count = len(streams) if count is None else count
    ident = bytes([len(model_id)]) + model_id
    return b"".join(map(varint, sizes)) + ident + FINGERPRINT + coder + bytes([count]) + b"".join(streams)


def raw_file(
    fields: bytes | None = None,
    *,
    tail: bytes = bytes(12),
    major: int = 1,
    minor: int = 0,
    flags: int = 0,
    channels: int = 3,
    header_size: int | None = None,
    magic: bytes = b"\x89HFC",
) -> bytes:
    """Prefix + ``fields`` + ``tail`` (ICC block, payload, anything) + a valid CRC32 trailer.

    The default fields and 12-byte tail make a valid file (streams of 4 and 8 bytes)."""
    fields = raw_fields() if fields is None else fields
    size = 10 + len(fields) if header_size is None else header_size
    body = struct.pack("<4sBBHBB", magic, major, minor, size, flags, channels) + fields + tail
    return reseal(body + bytes(4))


def reseal(data: bytes) -> bytes:
    """``data`` with its last four bytes replaced by the CRC32 of the rest (a 'valid' edited file)."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def hexdump(data: bytes) -> str:
    """Offset, 16 hex bytes and ASCII per line, like ``xxd -g1``."""
    lines = []
    for off in range(0, len(data), 16):
        chunk = data[off : off + 16]
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{off:08x}: {chunk.hex(' '):<47}  {text}")
    return "\n".join(lines)


if __name__ == "__main__":
    example = small_file(seed=1)
    print(f"# {len(example)} bytes: small_file(seed=1) from tests/hfc_samples.py")
    print(hexdump(example))
