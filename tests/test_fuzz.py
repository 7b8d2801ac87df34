"""Fuzzing the decoder with mutated real .hfc files: every case ends in a clean HificError (or a valid
decode), quickly, with bounded allocation.

Seed files are real encodes made with the tiny test model. Mutations: truncations, bit flips (the CRC
catches those), byte edits and bit flips with the CRC recomputed (so they reach the parser and the
entropy decoder), header fields set to extremes, consistent geometry changes (a file claiming another
image size, shapes and CRC matching) and payload splices. The decoder runs under a memory limit
(``FUZZ_LIMIT``): a claim beyond it must be refused at once, before allocating (tiling.check_fits), so
no case decodes more than ``MAX_CLAIM_PIXELS``, and time and traced allocation are bounded by
``TIME_LIMIT`` and ``ALLOC_BASE + ALLOC_PER_PIXEL * claimed pixels``.

The same machinery runs 10,000 cases in ``scripts/fuzz_long.py``.
"""

from __future__ import annotations

import random
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pytest
from hfc_samples import raw_stream, reseal, varint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from model_fixtures import make_tiny_weights, sample_image

from hificli import container, tiling
from hificli.codec import decode_file, encode_source, padded_size
from hificli.errors import HificError
from hificli.imageio import to_source_image

MAX_CLAIM_PIXELS = 1536 * 1536  #: padded pixels the fuzz memory limit still admits (tiny model)
TIME_LIMIT = 10.0  #: seconds per case, whatever the mutation
ALLOC_BASE = 32 * 1024**2  #: traced bytes any case may allocate...
ALLOC_PER_PIXEL = 16  #: ...plus this per claimed padded pixel (output image, latents, coder arrays)
KINDS = ("truncate", "flip", "flip_resealed", "bytes_resealed", "field", "geometry", "splice")


# ---------------------------------------------------------------------------------------------- seeds


def make_seeds(model) -> dict[str, bytes]:
    """Valid files of different shapes: colour, grayscale, one pixel, a wide strip, with an ICC block."""
    seeds = {}
    for name, (w, h, mode) in {
        "rgb": (150, 100, "RGB"), "gray": (70, 130, "L"), "pixel": (1, 1, "RGB"), "strip": (300, 20, "RGB"),
    }.items():
        seeds[name] = encode_source(to_source_image(sample_image(w, h, seed=len(name), mode=mode)), model)
    source = to_source_image(sample_image(64, 48, seed=9))
    source.icc_profile = b"not really an ICC profile " * 8
    seeds["icc"] = encode_source(source, model)
    return seeds


def fuzz_model(weights: Path):
    """The tiny model under the fuzz memory limit (claims above MAX_CLAIM_PIXELS are refused)."""
    from hificli.api import load_model

    model = load_model(weights)
    side = int(MAX_CLAIM_PIXELS**0.5)
    model.tiling = tiling.Tiling(max_memory=tiling.required_bytes(model.size, side, side))
    return model


# ---------------------------------------------------------------------------------------------- raw files


@dataclass
class Raw:
    """Every field of a .hfc file, free to hold values the format forbids."""

    major: int
    minor: int
    flags: int
    channels: int
    sizes: list[int]  # width, height, padded width, padded height
    model_id: bytes
    fingerprint: bytes
    coder: bytes  # id, major, minor
    streams: list[tuple[bytes, list[int], int]]  # name, shape, byte length
    payload: bytes
    icc: bytes | None = None
    count: int | None = None  # stream count byte, when it must lie
    ndims: dict[int, int] = field(default_factory=dict)  # stream index -> ndim byte, when it must lie
    overlong: dict[int, int] = field(default_factory=dict)  # size index -> redundant varint bytes
    header_size: int | None = None
    extra: bytes = b""  # header bytes after the streams (a newer minor version may have them)


def parse(data: bytes) -> Raw:
    hfc = container.unpack(data)
    h = hfc.header
    return Raw(
        major=h.version[0], minor=h.version[1], flags=container.FLAG_ICC if h.icc_profile else 0,
        channels=h.channels, sizes=[h.width, h.height, h.padded_width, h.padded_height],
        model_id=h.model_id.encode(), fingerprint=h.fingerprint, coder=bytes([h.coder_id, *h.coder_version]),
        streams=[(s.name.encode(), list(s.shape), s.length) for s in h.streams],
        payload=b"".join(hfc.payloads), icc=h.icc_profile,
    )


def serialize(raw: Raw) -> bytes:
    """The bytes of ``raw`` with a correct CRC (whatever else is wrong)."""
    fields = b"".join(varint(v & (2**64 - 1), raw.overlong.get(i, 0)) for i, v in enumerate(raw.sizes))
    fields += bytes([len(raw.model_id) & 255]) + raw.model_id + raw.fingerprint + raw.coder
    fields += bytes([(len(raw.streams) if raw.count is None else raw.count) & 255])
    for i, (name, shape, length) in enumerate(raw.streams):
        fields += raw_stream(name, [d & (2**64 - 1) for d in shape], length & (2**64 - 1), raw.ndims.get(i))
    fields += raw.extra
    size = 10 + len(fields) if raw.header_size is None else raw.header_size
    icc = b"" if raw.icc is None else varint(len(raw.icc)) + raw.icc
    version = bytes([raw.major & 255, raw.minor & 255])
    prefix = container.MAGIC + version + (size & 0xFFFF).to_bytes(2, "little")
    body = prefix + bytes([raw.flags & 255, raw.channels & 255]) + fields + icc + raw.payload
    return reseal(body + bytes(4))


# ---------------------------------------------------------------------------------------------- mutations


def extreme(rnd: random.Random, current: int, limit: int) -> int:
    """A value at or beyond a field's limits, near the current one, or anything."""
    return rnd.choice([
        0, 1, 2, current - 1, current + 1, current * 2, current * 16, limit - 1, limit, limit + 1,
        2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, rnd.randrange(2**32),
    ])


def mutate_field(raw: Raw, rnd: random.Random, others: list[Raw]) -> Raw:
    raw = replace(raw, sizes=list(raw.sizes), streams=list(raw.streams), ndims={}, overlong={})
    what = rnd.choice([
        "size", "size", "overlong", "model_id", "fingerprint", "coder", "channels", "flags", "version",
        "count", "stream_name", "stream_ndim", "stream_dim", "stream_dim", "stream_length", "header_size",
        "extra", "icc", "drop_stream", "add_stream", "swap_streams", "model_of_other",
    ])
    limits = [container.MAX_SIDE] * 2 + [container.MAX_SIDE + container.MAX_PADDING] * 2
    if not raw.streams:  # an earlier edit dropped them all
        raw.streams.append((b"y", [1], 0))
    i = rnd.randrange(len(raw.streams))
    name, shape, length = raw.streams[i]
    if what == "size":
        k = rnd.randrange(4)
        raw.sizes[k] = extreme(rnd, raw.sizes[k], limits[k])
    elif what == "overlong":
        raw.overlong[rnd.randrange(4)] = rnd.randint(1, 5)
    elif what == "model_id":
        raw.model_id = rnd.choice([b"", b"x" * 64, b"x" * 65, b"Test-Tiny", b"test tiny", b"-x", b"hific-med",
                                   bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 10)))])
    elif what == "fingerprint":
        raw.fingerprint = rnd.randbytes(8) if rnd.random() < 0.8 else raw.fingerprint[:7]
    elif what == "coder":
        raw.coder = rnd.choice([b"\x00\x00\x05", b"\x02\x00\x05", b"\xff\x00\x05", b"\x01\x00\x06",
                                b"\x01\x01\x00", b"\x01\xff\xff", b"\x01\x00\x04", rnd.randbytes(3)])
    elif what == "channels":
        raw.channels = rnd.choice([0, 1, 2, 4, 255])
    elif what == "flags":
        raw.flags = rnd.choice([raw.flags ^ 1, 2, 0x80, 0xFF])
    elif what == "version":
        raw.major, raw.minor = rnd.choice([(0, 0), (0, 9), (1, 1), (1, 255), (2, 0), (255, 255)])
    elif what == "count":
        raw.count = rnd.choice([0, 1, 3, 64, 65, 255])
    elif what == "stream_name":
        new = rnd.choice([b"", b"Z", b"zz", b"y" if name == b"z" else b"z", b"a" * 33, b"x/y"])
        raw.streams[i] = (new, shape, length)
    elif what == "stream_ndim":
        raw.ndims[i] = rnd.choice([0, 1, 2, 4, 5, 255])
    elif what == "stream_dim":
        dims = list(shape)
        k = rnd.randrange(len(dims))
        dims[k] = extreme(rnd, dims[k], container.MAX_DIM)
        raw.streams[i] = (name, dims, length)
    elif what == "stream_length":
        raw.streams[i] = (name, shape, extreme(rnd, length, container.MAX_STREAM_BYTES))
    elif what == "header_size":
        raw.header_size = rnd.choice([0, 9, 10, 11, 0xFFFF, rnd.randrange(0x10000)])
    elif what == "extra":
        raw.extra = rnd.randbytes(rnd.randrange(1, 20))
        if rnd.random() < 0.5:
            raw.minor = 1  # a newer minor version may append fields: these must be skipped
    elif what == "icc":
        raw.icc = rnd.choice([None, b"", rnd.randbytes(rnd.randrange(1, 300))])
        raw.flags = rnd.choice([raw.flags, raw.flags ^ 1])
    elif what == "drop_stream":
        del raw.streams[i]
    elif what == "add_stream":
        raw.streams.append((rnd.choice([b"w", b"z2", name]), [rnd.randrange(1, 9)], 0))
    elif what == "swap_streams":
        raw.streams.reverse()
    else:
        other = rnd.choice(others)
        raw.model_id, raw.fingerprint = other.model_id, other.fingerprint[::-1]
    return raw


def claim_size(rnd: random.Random) -> tuple[int, int]:
    """Another image size: mostly small, sometimes at the format's extremes."""
    def side() -> int:
        return rnd.choice([
            rnd.randrange(1, 400), rnd.randrange(1, 400), rnd.randrange(1, 2000), 2 ** rnd.randrange(21),
            container.MAX_SIDE,
        ])
    return side(), side()


def mutate_geometry(raw: Raw, rnd: random.Random) -> Raw:
    """Claim another image size with everything consistent (padding, shapes, CRC): reaches the entropy
    decoder with a stream of the wrong length, or the memory limit."""
    width, height = claim_size(rnd)
    pw, ph = padded_size(width, height)
    streams = []
    for name, shape, length in raw.streams:
        grid = 64 if name == b"z" else 16
        streams.append((name, [shape[0], ph // grid, pw // grid], length))
    return replace(raw, sizes=[width, height, pw, ph], streams=streams)


def mutate_splice(raw: Raw, rnd: random.Random, others: list[Raw]) -> Raw:
    """Payload surgery with consistent lengths: another file's stream, swapped, shortened or grown."""
    lengths = [s[2] for s in raw.streams]
    parts = [raw.payload[sum(lengths[:k]) : sum(lengths[: k + 1])] for k in range(len(lengths))]
    k = rnd.randrange(len(parts))
    how = rnd.choice(["other", "swap", "shorten", "grow", "zero", "empty"])
    if how == "other":
        other = rnd.choice(others)
        o_lengths = [s[2] for s in other.streams]
        j = rnd.randrange(len(o_lengths))
        parts[k] = other.payload[sum(o_lengths[:j]) : sum(o_lengths[: j + 1])]
    elif how == "swap":
        parts.reverse()
    elif how == "shorten":
        parts[k] = parts[k][: max(0, len(parts[k]) - rnd.choice([1, 4, 8]))]
    elif how == "grow":
        parts[k] = parts[k] + rnd.randbytes(rnd.choice([1, 4, 8, 64]))
    elif how == "zero":
        parts[k] = bytes(len(parts[k]))
    else:
        parts[k] = b""
    streams = [(s[0], s[1], len(p)) for s, p in zip(raw.streams, parts, strict=True)]
    return replace(raw, streams=streams, payload=b"".join(parts))


def mutate(data: bytes, rnd: random.Random, kind: str, others: list[bytes]) -> bytes:
    """One mutation of a valid file ``data`` (``others``: further valid files to splice from)."""
    if kind == "truncate":
        return data[: rnd.randrange(len(data))]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rnd.randint(1, 8)):
            out[rnd.randrange(len(out))] ^= 1 << rnd.randrange(8)
        return bytes(out)
    if kind in ("flip_resealed", "bytes_resealed"):
        out = bytearray(data)
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(len(out) - 4)
            out[pos] = out[pos] ^ (1 << rnd.randrange(8)) if kind == "flip_resealed" else rnd.randrange(256)
        return reseal(bytes(out))
    raw = parse(data)
    parsed_others = [parse(o) for o in others]
    if kind == "field":
        for _ in range(rnd.choice([1, 1, 1, 2, 3])):
            raw = mutate_field(raw, rnd, parsed_others)
    elif kind == "geometry":
        raw = mutate_geometry(raw, rnd)
    elif kind == "splice":
        raw = mutate_splice(raw, rnd, parsed_others)
    else:
        raise ValueError(f"unknown mutation {kind!r}")
    return serialize(raw)


# ---------------------------------------------------------------------------------------------- oracle


@dataclass
class Outcome:
    result: str  # "decoded" or the HificError class name
    message: str
    seconds: float
    traced_peak: int  # bytes (numpy and Python allocations; tracemalloc must be running)
    claimed_pixels: int  # padded pixels the header claims (0 if it does not parse)


def claimed_pixels(data: bytes) -> int:
    try:
        h = container.unpack(data).header
    except HificError:
        return 0
    return h.padded_width * h.padded_height


def run_case(data: bytes, model) -> Outcome:
    """Decode ``data``; only HificError may come out. Raises AssertionError on any broken bound."""
    tracemalloc.reset_peak()
    start = time.perf_counter()
    try:
        pixels, header = decode_file(data, model)
        result, message = "decoded", ""
        assert pixels.shape == (header.height, header.width, 3) and pixels.dtype == np.uint8
    except HificError as exc:
        result, message = type(exc).__name__, exc.message
        assert message and "\n" not in message
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    claim = claimed_pixels(data)
    outcome = Outcome(result, message, seconds, peak, claim)
    assert seconds < TIME_LIMIT, outcome
    assert peak < ALLOC_BASE + ALLOC_PER_PIXEL * min(claim, MAX_CLAIM_PIXELS), outcome
    if result == "decoded":
        assert claim <= MAX_CLAIM_PIXELS, outcome
    return outcome


def checked(fn: Callable[[], Outcome]) -> Outcome:
    """Run with tracemalloc on (started once; stopped by the caller)."""
    if not tracemalloc.is_tracing():
        tracemalloc.start()
    return fn()


# ---------------------------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def fuzz(weights: Path):
    model = fuzz_model(weights)
    seeds = make_seeds(model)
    tracemalloc.start()
    yield model, seeds
    tracemalloc.stop()


def test_seeds_decode(fuzz) -> None:
    model, seeds = fuzz
    for name, data in seeds.items():
        outcome = run_case(data, model)
        assert outcome.result == "decoded", (name, outcome)
        assert serialize(parse(data)) == data  # the raw writer reproduces real files byte for byte


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(KINDS), seed=st.sampled_from(["rgb", "gray", "pixel", "strip", "icc"]),
       rnd=st.randoms(use_true_random=False))
def test_mutated_files_fail_cleanly(fuzz, kind: str, seed: str, rnd: random.Random) -> None:
    model, seeds = fuzz
    data = seeds[seed]
    mutated = mutate(data, rnd, kind, [v for k, v in seeds.items() if k != seed])
    outcome = run_case(mutated, model)
    if kind == "flip" and mutated != data:
        assert outcome.result in ("CorruptFileError", "UnsupportedVersionError"), outcome  # the CRC's job
    if kind == "truncate":
        assert outcome.result != "decoded", outcome


def test_claims_beyond_the_limit_are_refused_without_work(fuzz) -> None:
    model, seeds = fuzz
    raw = parse(seeds["rgb"])
    sizes = [(container.MAX_SIDE, container.MAX_SIDE), (container.MAX_SIDE, 1), (1, 65536), (1600, 1600)]
    for width, height in sizes:
        pw, ph = padded_size(width, height)
        streams = [(b"z", [5, ph // 64, pw // 64], raw.streams[0][2]),
                   (b"y", [6, ph // 16, pw // 16], raw.streams[1][2])]
        claim = replace(raw, sizes=[width, height, pw, ph], streams=streams)
        data = serialize(claim)
        if (pw // 16) * (ph // 16) * 6 > container.MAX_ELEMENTS:
            assert run_case(data, model).result == "CorruptFileError"  # the container's element limit
            continue
        outcome = run_case(data, model)
        assert outcome.result == "InvalidInputError" and "memory limit" in outcome.message, outcome
        assert outcome.seconds < 0.5 and outcome.traced_peak < 4 * 1024**2, outcome


def test_cli_reports_mutated_files_one_by_one(fuzz, weights: Path, tmp_path: Path) -> None:
    """A batch of mutated files through `hific decode`: one error line per bad file, no traceback,
    the exit code of an invalid input, and outputs only for the files that decoded."""
    model, seeds = fuzz
    rnd = random.Random(1234)
    names, decodable = [], set()
    for i in range(16):
        kind = KINDS[i % len(KINDS)]
        data = mutate(seeds["rgb"], rnd, kind, [seeds["gray"], seeds["strip"]])
        name = f"case{i:02d}-{kind}.hfc"
        (tmp_path / name).write_bytes(data)
        names.append(name)
        if run_case(data, model).result == "decoded":
            decodable.add(name)
    assert len(decodable) < len(names)
    side = int(MAX_CLAIM_PIXELS**0.5)
    limit = tiling.required_bytes(model.size, side, side)
    (tmp_path / "out").mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "hificli", "decode", *names, "-m", str(weights), "-o", "out",
         "--max-memory", str(limit)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode in (3, 4), result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    failed = {line.split(":")[1].strip() for line in lines if line.startswith("error: case")}
    assert failed == set(names) - decodable, result.stderr
    written = {p.name for p in (tmp_path / "out").iterdir()}
    assert written == {Path(n).with_suffix(".png").name for n in decodable}
