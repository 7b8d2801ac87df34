"""Small crafted hostile inputs for tests/test_hostile_inputs.py (issue #16): image bombs, truncated
images, damaged .hfc streams, checkpoint and weights bombs. Each builder returns bytes or writes a file
of a few kilobytes at most; what they *claim* is what is large."""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib
from pathlib import Path

from hificli import container


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, rows: int | None = None, *, fill: int = 0) -> bytes:
    """An 8-bit RGB PNG declaring ``width`` x ``height`` whose (valid, complete) zlib stream holds only
    ``rows`` rows of the value ``fill`` (all of them by default). Few rows of a large size: a
    decompression bomb of a few hundred bytes."""
    rows = height if rows is None else rows
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    packer = zlib.compressobj(9)
    row = b"\0" + bytes([fill]) * (3 * width)
    idat = b"".join(packer.compress(row) for _ in range(rows)) + packer.flush()
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


def _scanline_ends(width: int, height: int, interlaced: bool) -> list[int]:
    """Byte offsets in an 8-bit RGB PNG's raw data where a scanline ends (Adam7 passes in order)."""
    passes = _ADAM7 if interlaced else ((0, 0, 1, 1),)
    ends, pos = [], 0
    for x0, y0, dx, dy in passes:
        cols, rows = -(-(width - x0) // dx), -(-(height - y0) // dy)
        for _ in range(rows if cols > 0 else 0):
            pos += 1 + 3 * cols
            ends.append(pos)
    return ends


def cut_png_stream(data: bytes, keep: float) -> bytes:
    """An 8-bit RGB PNG whose image data is a *complete* zlib stream of only its first scanlines (about
    ``keep`` of them): no byte is missing from the file, the image just ends early. Pillow loads such
    a file without a word (a stream cut mid-scanline it does call truncated)."""
    chunks, pos = [], 8
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        chunks.append((kind, data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    width, height, _, _, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    raw = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    ends = _scanline_ends(width, height, bool(interlace))
    assert ends[-1] == len(raw)
    idat = zlib.compress(raw[: ends[min(len(ends) - 2, int(len(ends) * keep))]], 9)
    out = [_chunk(kind, body) for kind, body in chunks if kind not in (b"IDAT", b"IEND")]
    return data[:8] + b"".join(out) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_with_exif(exif: bytes) -> bytes:
    """A complete 8x8 PNG carrying ``exif`` in an eXIf chunk."""
    base = png(8, 8)
    return base[:33] + _chunk(b"eXIf", exif) + base[33:]


#: An EXIF block whose IFD claims 3 entries but holds 1: Pillow warns "Corrupt EXIF data".
CORRUPT_EXIF = b"II*\x00" + struct.pack("<IH", 8, 3) + struct.pack("<HHII", 0x0112, 3, 1, 1)


def deflated_zeros(mib: int) -> bytes:
    """A raw deflate stream of ``mib`` MiB of zeros, about 1 KB per MiB, built without compressing it
    all: flushed blocks of zeros only refer back to zeros, so one block repeats."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = packer.compress(bytes(1 << 20)) + packer.flush(zlib.Z_FULL_FLUSH)
    return block * mib + b"\x03\x00"  # the final (empty, fixed-Huffman) block


def zip_bomb(name: str = "archive/data.pkl", mib: int = 3072) -> bytes:
    """A zip (as torch.save writes, but deflated) whose one entry ``name`` inflates to ``mib`` MiB:
    3 MB on disk for 3 GiB inflated. The CRC is not that of the data: nothing should get that far."""
    data, size, raw = deflated_zeros(mib), mib << 20, name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, 0, len(data), size, len(raw), 0) + raw
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, 0, len(data), size, len(raw), 0, 0, 0, 0, 0, 0
    ) + raw
    end = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def stride_zero_checkpoint(path: Path, elements: int = 1 << 27, count: int = 4) -> Path:
    """A port-layout checkpoint of ~2 KB whose tensors are stride-0 views of one float each, claiming
    ``count`` x ``elements`` floats (2 GiB by default, if copied)."""
    import torch

    keys = [f"Encoder.conv_block{i}.1.weight" for i in range(1, count + 1)]
    torch.save({"model_state_dict": {k: torch.zeros(1).expand(elements) for k in keys}}, path)
    return path


def rewrite_weights(src: Path, dst: Path, *, tensors: dict | None = None, **metadata: str) -> Path:
    """A copy of hific weights ``src`` with some metadata fields (and optionally tensors) replaced; the
    fingerprint field is kept as it was, so changed tensors are a tampered file."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(src), "pt") as handle:
        meta = dict(handle.metadata())
    state = load_file(str(src))
    state.update(tensors or {})
    save_file(state, str(dst), metadata={**meta, **metadata})
    return dst


def arch_with(src: Path, **changes: object) -> str:
    """The ``arch`` metadata of weights ``src`` with fields changed (JSON text)."""
    from safetensors import safe_open

    with safe_open(str(src), "pt") as handle:
        arch = json.loads(handle.metadata()["arch"])
    return json.dumps({**arch, **changes})


def nested_json_weights(path: Path, depth: int = 100_000) -> Path:
    """A "safetensors" file whose JSON header nests ``depth`` arrays (Python's json recurses on it)."""
    header = b'{"__metadata__": {"format": "hific-weights"}, "x": ' + b"[" * depth + b"]" * depth + b"}"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    return path


def with_streams(data: bytes, **payloads: bytes) -> bytes:
    """A valid .hfc file ``data`` with some streams' bytes replaced (lengths and CRC made consistent)."""
    hfc = container.unpack(data)
    new = [payloads.get(s.name, hfc.stream(s.name)) for s in hfc.header.streams]
    streams = tuple(dataclasses.replace(s, length=len(p)) for s, p in zip(hfc.header.streams, new, strict=True))
    return container.pack(dataclasses.replace(hfc.header, streams=streams), new)


def empty_streams_file(model_id: str, fingerprint: bytes, hyper: int, latent: int, width: int, height: int) -> bytes:
    """A .hfc header for a ``width`` x ``height`` image made by the given model whose z and y streams are
    empty: 65 bytes that a decoder must refuse, not turn into a garbage image."""
    from hificli.codec import padded_size

    pw, ph = padded_size(width, height)
    streams = (
        container.StreamInfo("z", (hyper, ph // 64, pw // 64), 0),
        container.StreamInfo("y", (latent, ph // 16, pw // 16), 0),
    )
    header = container.Header(model_id, fingerprint, width, height, pw, ph, 3, streams)
    return container.pack(header, [b"", b""])
