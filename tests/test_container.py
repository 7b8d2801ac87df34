"""The .hfc container: round trips, limits shared by pack and unpack, hostile and damaged files."""

from __future__ import annotations

import re
import struct
import tracemalloc
import zlib

import pytest
from hfc_samples import (
    FINGERPRINT,
    raw_fields,
    raw_file,
    raw_stream,
    reseal,
    sample_file,
    sample_parts,
    small_file,
    varint,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hificli import container as c
from hificli.container import Header, StreamInfo, pack, unpack
from hificli.errors import CorruptFileError, InvalidInputError, UnsupportedVersionError

NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789._-"


# ------------------------------------------------------------------------------------------ strategies


@st.composite
def shapes(draw) -> tuple[int, ...]:
    """1..4 dims in 1..MAX_DIM whose product stays within MAX_ELEMENTS."""
    dims, product = [], 1
    for _ in range(draw(st.integers(1, c.MAX_NDIM))):
        hi = min(c.MAX_DIM, c.MAX_ELEMENTS // product)
        dims.append(draw(st.one_of(st.integers(1, min(hi, 400)), st.integers(1, hi))))
        product *= dims[-1]
    return tuple(dims)


@st.composite
def sides(draw) -> tuple[int, int]:
    """(side, padded side) within the geometry rules."""
    side = draw(st.one_of(st.integers(1, 5000), st.integers(1, c.MAX_SIDE)))
    first = -(-side // c.PAD_MULTIPLE) * c.PAD_MULTIPLE
    extra = draw(st.integers(0, (c.MAX_PADDING - 1 - (first - side)) // c.PAD_MULTIPLE))
    return side, first + extra * c.PAD_MULTIPLE


@st.composite
def headers(draw) -> tuple[Header, list[bytes]]:
    names = draw(st.lists(st.text(NAME_CHARS, min_size=1, max_size=c.MAX_STREAM_NAME), min_size=1,
                          max_size=c.MAX_STREAMS, unique=True))
    payloads = [draw(st.binary(max_size=40)) for _ in names]
    streams = tuple(StreamInfo(n, draw(shapes()), len(p)) for n, p in zip(names, payloads, strict=True))
    (w, pw), (h, ph) = draw(sides()), draw(sides())
    header = Header(
        model_id=draw(st.from_regex(r"[a-z0-9][a-z0-9._-]{0,63}", fullmatch=True)),
        fingerprint=draw(st.binary(min_size=8, max_size=8)),
        width=w, height=h, padded_width=pw, padded_height=ph,
        channels=draw(st.sampled_from(c.CHANNEL_CHOICES)),
        streams=streams,
        icc_profile=draw(st.none() | st.binary(min_size=1, max_size=300)),
        coder_id=draw(st.integers(1, 255)),
        coder_version=(draw(st.integers(0, 255)), draw(st.integers(0, 255))),
    )
    return header, payloads


# ------------------------------------------------------------------------------------------ round trips


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(headers())
def test_round_trip_random_valid_headers(case: tuple[Header, list[bytes]]) -> None:
    header, payloads = case
    data = pack(header, payloads)
    parsed = unpack(data)
    assert parsed.header == header
    assert parsed.payloads == tuple(payloads)
    assert parsed.size == len(data)
    assert parsed.header_bytes == len(data) - 4 - sum(map(len, payloads))
    for info, payload in zip(header.streams, payloads, strict=True):
        assert parsed.stream(info.name) == payload


@settings(max_examples=150, deadline=None)
@given(
    width=st.integers(-2, c.MAX_SIDE + 2),
    padded=st.integers(-2, c.MAX_SIDE + c.MAX_PADDING + 2),
    model_id=st.text(max_size=70),
    name=st.text(max_size=34),
    shape=st.lists(st.integers(-1, c.MAX_DIM + 1), max_size=5),
    channels=st.integers(0, 4),
    icc=st.none() | st.binary(max_size=3),
)
def test_pack_never_writes_what_unpack_rejects(width, padded, model_id, name, shape, channels, icc) -> None:
    stream = StreamInfo(name, tuple(shape), 2)
    header = Header(model_id, FINGERPRINT, width, 24, padded, 32, channels, (stream,), icc)
    try:
        data = pack(header, [b"ab"])
    except InvalidInputError as exc:
        assert exc.message.startswith("cannot write .hfc: ")
        return
    assert unpack(data).header == header


def test_typical_header_is_at_most_64_bytes() -> None:
    for model_id, cz, cy in (("hific-small", 96, 96), ("hific-med", 320, 220)):
        header, payloads = sample_parts(768, 512, model_id=model_id, z_channels=cz, y_channels=cy)
        data = pack(header, payloads)
        assert c.header_bytes_size(header) == unpack(data).header_bytes <= 64
        assert len(data) - sum(map(len, payloads)) <= 64 + 4


def test_small_file_layout_matches_format_md() -> None:
    # The hand-written layout of hfc_samples.raw_file (FORMAT.md) and pack agree byte for byte.
    header, payloads = sample_parts(40, 24, model_id="test-tiny", z_channels=5, y_channels=6, z_bytes=4,
                                    y_bytes=8)
    assert pack(header, payloads) == raw_file(tail=b"".join(payloads))
    data = pack(header, payloads)
    assert data[:4] == b"\x89HFC" and data[4:6] == b"\x01\x00"
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])


def test_icc_profile_and_grayscale_round_trip() -> None:
    data = small_file(icc=b"\x00icc" * 50, channels=1)
    parsed = unpack(data)
    assert parsed.header.icc_profile == b"\x00icc" * 50 and parsed.header.channels == 1
    assert data[8] == c.FLAG_ICC


def test_stream_lookup() -> None:
    parsed = unpack(small_file())
    assert parsed.header.stream_info("y").shape == (6, 4, 4)
    assert len(parsed.stream("z")) == 4
    with pytest.raises(CorruptFileError, match="no stream named 'w'"):
        parsed.stream("w")


def test_newer_minor_version_with_appended_header_fields_is_read() -> None:
    extra = b"\x07future"
    data = raw_file(raw_fields() + extra, minor=3)
    parsed = unpack(data)
    assert parsed.header.version == (1, 3)
    assert parsed.header_bytes == 10 + len(raw_fields()) + len(extra)
    # The same appended bytes in a 1.0 file are an error: 1.0 has no such field.
    with pytest.raises(CorruptFileError, match="header_size .* does not match"):
        unpack(raw_file(raw_fields() + extra, minor=0))


# ------------------------------------------------------------------------------------------ pack checks


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"width": 0}, "width 0 is outside"),
        ({"width": 1.5}, "width 1.5 is not an integer"),
        ({"width": c.MAX_SIDE + 1}, "width 1048577 is outside"),
        ({"padded_width": 72}, "padded_width 72 is not a multiple of 16"),
        ({"padded_height": 16}, "padded_height 16 is outside 24.."),
        ({"padded_width": 40 + 4096 + 8}, "padded_width 4144 is outside 40..4135"),
        ({"model_id": "Hific"}, "model id b'Hific' has characters outside"),
        ({"model_id": "x" * 65}, "model id length 65 is outside 1..64"),
        ({"model_id": "h\u00e9"}, "model id"),
        ({"fingerprint": b"1234"}, "fingerprint must be 8 bytes"),
        ({"channels": 4}, "channels 4 is not one of"),
        ({"icc_profile": b""}, "ICC profile length 0 is outside"),
        ({"coder_id": 0}, "coder id 0 is outside"),
        ({"version": (1, 1)}, "format version .* cannot be written"),
        ({"streams": ()}, "stream count 0 is outside 1..64"),
        ({"streams": (StreamInfo("z", (1,), 0),) * 2}, "name is used twice"),
        ({"streams": (StreamInfo("Z", (1,), 0),)}, "name b'Z' has characters"),
        ({"streams": (StreamInfo("z", (), 0),)}, "ndim 0 is outside 1..4"),
        ({"streams": (StreamInfo("z", (1,) * 5, 0),)}, "ndim 5 is outside 1..4"),
        ({"streams": (StreamInfo("z", (2**24, 2**24), 0),)}, "more than 2147483648"),
        ({"streams": (StreamInfo("z", (1,), 2**31 + 1),)}, "length 2147483649 is outside"),
    ],
)
def test_pack_rejects_values_outside_the_format(change: dict, match: str) -> None:
    base = Header("test-tiny", FINGERPRINT, 40, 24, 48, 32, 3, (StreamInfo("z", (1, 2), 0),))
    header = Header(**{**base.__dict__, **change})
    payloads = [b"\0" * s.length if s.length < 100 else b"" for s in header.streams]
    if any(s.length >= 100 for s in header.streams):  # do not allocate 2 GiB: the length check comes first
        with pytest.raises(InvalidInputError, match=match):
            c.header_bytes_size(header)
        return
    with pytest.raises(InvalidInputError, match=match):
        pack(header, payloads)


def test_pack_rejects_payloads_that_disagree_with_the_header() -> None:
    header, payloads = sample_parts(64, 64)
    with pytest.raises(ValueError, match="2 streams in the header but 1 payloads"):
        pack(header, payloads[:1])
    with pytest.raises(ValueError, match="header says 9000 bytes, got 8999"):
        pack(header, [payloads[0], payloads[1][:-1]])


# ------------------------------------------------------------------------------------------ hostile files


def _peak_unpack(data: bytes) -> tuple[BaseException, int]:
    tracemalloc.start()
    try:
        unpack(data)
    except Exception as exc:  # noqa: BLE001 - returned for the caller to check
        error = exc
    else:
        error = AssertionError("accepted")
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return error, peak


Y = (6, 4, 4)
Z = raw_stream(b"z", (5, 1, 1), 4)
BAD = CorruptFileError
NEWER = UnsupportedVersionError


def streams(*entries: bytes) -> dict:
    return {"fields": raw_fields(streams=list(entries))}


def fields(**kwargs) -> dict:
    return {"fields": raw_fields(**kwargs)}


HOSTILE = {
    "width 0": (fields(sizes=(0, 24, 64, 64)), BAD, "width 0 is outside"),
    "huge width": (fields(sizes=(2**32 - 1, 24, 64, 64)), BAD, "width 4294967295 is outside 1..1048576"),
    "padded < width": (fields(sizes=(40, 24, 32, 64)), BAD, "padded_width 32 is outside 40..4135"),
    "padded odd": (fields(sizes=(40, 24, 56, 64)), BAD, "padded_width 56 is not a multiple of 16"),
    "huge padding": (fields(sizes=(40, 24, 40 + 4104, 64)), BAD, "padded_width 4144 is outside"),
    "huge dim": (streams(Z, raw_stream(b"y", (2**24 + 1, 4), 8)), BAD,
                 r"stream 1 \('y'\) dim 0 16777217 is outside 1..16777216"),
    "huge product": (streams(raw_stream(b"y", (2**24,) * 4, 12)), BAD, "elements, more than 2147483648"),
    "huge length": (streams(Z, raw_stream(b"y", Y, 2**31 + 1)), BAD, "length 2147483649 is outside"),
    "length past end": (streams(Z, raw_stream(b"y", Y, 2**31)), BAD,
                        r"stream 1 \('y'\) length 2147483648 runs past the end"),
    "length 1 past end": (streams(Z, raw_stream(b"y", Y, 9)), BAD, "length 9 runs past the end"),
    "short payload": ({"tail": bytes(11)}, BAD, "length 8 runs past the end"),
    "trailing bytes": ({"tail": bytes(13)}, BAD, "trailing bytes: the header describes a 66-byte file"),
    "stream count 255": (fields(count=255), BAD, "stream count 255 is outside 1..64"),
    "stream count 0": (fields(count=0), BAD, "stream count 0 is outside"),
    "stream count 3 of 2": (fields(count=3), BAD, "stream 2 name length needs 1 bytes but the header"),
    "ndim 0": (streams(raw_stream(b"y", (), 12)), BAD, "ndim 0 is outside 1..4"),
    "ndim 9": (streams(raw_stream(b"y", Y, 12, ndim=9)), BAD, "ndim 9 is outside 1..4"),
    "upper-case name": (streams(raw_stream(b"Y", Y, 12)), BAD, "stream 0 name b'Y' has characters outside"),
    "non-ascii name": (streams(raw_stream(b"\xff\xfe", Y, 12)), BAD, r"name b'\\xff\\xfe'"),
    "empty name": (streams(raw_stream(b"", Y, 12)), BAD, "stream 0 name length 0 is outside 1..32"),
    "stream name length 255": (streams(b"\xffy"), BAD, "stream 0 name length 255 is outside 1..32"),
    "long name": (streams(raw_stream(b"a" * 33, Y, 12)), BAD, "name length 33 is outside 1..32"),
    "name past header": (streams(b"\x20y"), BAD, "stream 0 name needs 32 bytes but the header"),
    "duplicate name": (streams(raw_stream(b"y", Y, 4), raw_stream(b"y", Y, 8)), BAD,
                       r"stream 1 \('y'\) name is used twice"),
    "bad model id": (fields(model_id=b"-abc"), BAD, "model id b'-abc'"),
    "empty model id": (fields(model_id=b""), BAD, "model id length 0"),
    "long model id": (fields(model_id=b"a" * 65), BAD, "model id length 65"),
    "coder 0": (fields(coder=b"\x00\x00\x05"), BAD, "coder id 0 is outside"),
    "overlong width": ({"fields": varint(40, overlong=1) + raw_fields()[1:]}, BAD, "width is an overlong"),
    "overlong length": (streams(Z, raw_stream(b"y", Y, 8)[:-1] + varint(8, overlong=3)), BAD,
                        r"stream 1 \('y'\) length is an overlong varint"),
    "6-byte varint": ({"fields": b"\x80" * 5 + b"\x01" + raw_fields()[1:]}, BAD,
                      "width varint is longer than 5 bytes"),
    "33-bit varint": ({"fields": b"\xff\xff\xff\xff\x1f" + raw_fields()[1:]}, BAD,
                      "width varint value 8589934591 does not fit in 32 bits"),
    "channels 2": ({"channels": 2}, BAD, "channels 2 is not one of"),
    "header_size small": ({"header_size": 20}, BAD, r"needs .* bytes but the header \(header_size 20\)"),
    "header_size 9": ({"header_size": 9}, BAD, "header_size 9 is outside 10.."),
    "header_size past end": ({"header_size": 60000}, BAD, "header_size 60000 is outside"),
    "header_size large": ({"header_size": 54}, BAD, "header_size 54 does not match"),
    "no fields": ({"fields": b"", "tail": b""}, BAD, "width needs 1 bytes but the header"),
    "ICC huge": ({"flags": 1, "tail": varint(2**24) + bytes(12)}, BAD,
                 "ICC profile needs 16777216 bytes but the file has only 12 left"),
    "ICC too big": ({"flags": 1, "tail": varint(2**24 + 1) + bytes(12)}, BAD,
                    "ICC profile length 16777217 is outside"),
    "ICC empty": ({"flags": 1, "tail": b"\x00" + bytes(12)}, BAD, "ICC profile length 0 is outside"),
    "unknown flag": ({"flags": 8}, NEWER, "unknown flag bits 0x08"),
    "context flag in 1.0": ({"flags": 4}, BAD, r"flag bit 2 \(spatial context\) needs format 1.2"),
    "flag bit 7": ({"flags": 0x81}, NEWER, "unknown flag bits 0x80"),
    "major 2": ({"major": 2}, NEWER, r"made by a newer hific \(format 2.0\); upgrade hific"),
    "major 255": ({"major": 255, "minor": 7}, NEWER, r"newer hific \(format 255.7\)"),
    "major 0": ({"major": 0}, BAD, "format version 0.0 does not exist"),
}


@pytest.mark.parametrize("case", list(HOSTILE), ids=list(HOSTILE))
def test_hostile_headers_with_valid_crc_are_rejected_cheaply(case: str) -> None:
    kwargs, kind, match = HOSTILE[case]
    data = raw_file(**kwargs)
    assert zlib.crc32(data[:-4]) == struct.unpack("<I", data[-4:])[0]
    error, peak = _peak_unpack(data)
    assert type(error) is kind, error
    assert error.exit_code == 3
    assert re.search(match, error.message), error.message
    assert peak < 256 * 1024, f"parsing a {len(data)}-byte file allocated {peak} bytes"


def test_major_version_bump_on_damaged_file_says_it_may_be_damaged() -> None:
    data = bytearray(small_file())
    data[4] = 2  # no reseal: the checksum no longer matches
    with pytest.raises(UnsupportedVersionError) as info:
        unpack(bytes(data))
    assert "may be damaged" in info.value.hint
    with pytest.raises(UnsupportedVersionError) as info:
        unpack(reseal(bytes(data)))
    assert info.value.hint == "upgrade hific"


def test_not_hfc_files_are_recognised() -> None:
    port = struct.pack("<11H", 1, 1, 24, 40, 320, 1, 1, 220, 1, 1, 1) + b"\x46\xe2\x84\x92" + bytes(30)
    with pytest.raises(CorruptFileError, match="earlier PyTorch HiFiC port, which hific cannot read"):
        unpack(port)
    with pytest.raises(CorruptFileError, match="this is a PNG image"):
        unpack(b"\x89PNG\r\n\x1a\n" + bytes(40))
    with pytest.raises(CorruptFileError, match="not a .hfc file \\(starts with 68 65 6c 6c"):
        unpack(b"hello world, this is text")
    with pytest.raises(CorruptFileError, match="the file is empty"):
        unpack(b"")
    with pytest.raises(CorruptFileError, match="truncated .hfc file: 6 bytes"):
        unpack(small_file()[:6])


def test_every_truncation_and_bit_flip_is_a_corrupt_file_error() -> None:
    data = small_file()
    for n in range(len(data)):
        with pytest.raises(CorruptFileError):
            unpack(data[:n])
    for bit in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptFileError):
            unpack(bytes(flipped))


# ------------------------------------------------------------------------------------------ files


def test_read_file(tmp_path) -> None:
    path = tmp_path / "a.hfc"
    path.write_bytes(sample_file(64, 48))
    assert c.read_file(path).header.width == 64
    with pytest.raises(InvalidInputError, match="cannot read .*missing.hfc: No such file") as info:
        c.read_file(tmp_path / "missing.hfc")
    assert type(info.value) is InvalidInputError
    with pytest.raises(InvalidInputError, match="cannot read"):
        c.read_file(tmp_path)


def test_read_file_refuses_huge_files_before_reading(tmp_path) -> None:
    path = tmp_path / "huge.hfc"
    with open(path, "wb") as f:
        f.truncate(c.MAX_FILE_BYTES + 1)  # sparse: no disk space used
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError, match="2147483649 bytes is over the 2147483648 limit"):
            c.read_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_varint_encoding_is_minimal_leb128() -> None:
    assert c.encode_varint(0) == b"\x00"
    assert c.encode_varint(127) == b"\x7f"
    assert c.encode_varint(128) == b"\x80\x01"
    assert c.encode_varint(2**32 - 1) == b"\xff\xff\xff\xff\x0f"
    with pytest.raises(ValueError, match="varint 4294967296 is outside"):
        c.encode_varint(2**32)
