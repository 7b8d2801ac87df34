"""Integer tables and the ANS symbol coder: round trips, invariants, validation, corruption, coded size."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import math
import subprocess
import sys

import constriction
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hificli.entropy.coder import decode_symbols, encode_symbols, estimate_bits
from hificli.entropy.tables import (
    PRECISION,
    SCALE_FRAC_BITS,
    CdfTable,
    factorized_tables,
    latent_scale_table,
    latent_tables,
    quantize_pmf,
)
from hificli.errors import CorruptFileError

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


_SMALL: list[CdfTable] = []


def _small() -> CdfTable:
    """Three short rows with different offsets (cheap to build, many escapes in random data)."""
    if not _SMALL:
        freqs = np.zeros((3, 6), dtype=np.uint32)
        for k, p in enumerate(([0.2, 0.5, 0.2, 0.1], [0.9, 0.1], [1, 2, 3, 4, 5, 1])):
            r = quantize_pmf(np.array(p, dtype=np.float64))
            freqs[k, : r.size] = r
        _SMALL.append(CdfTable(freqs, np.array([4, 2, 6]), np.array([-1, 7, -300])))
    return _SMALL[0]


@pytest.fixture(scope="module")
def gauss() -> CdfTable:
    return latent_tables("gaussian")


@pytest.fixture(scope="module")
def small_table() -> CdfTable:
    return _small()


def _sigma_indexes(sigma: np.ndarray, table: CdfTable) -> np.ndarray:
    fixed = np.floor(sigma * 2**SCALE_FRAC_BITS + 0.5).astype(np.int64)
    idx = np.searchsorted(table.scale_thresholds_fixed, fixed, side="left")
    return np.minimum(idx, table.num_rows - 1)


# ---------------------------------------------------------------- round trips


def test_round_trip_latents_with_extreme_outliers(gauss: CdfTable) -> None:
    rng = np.random.default_rng(1)
    sigma = np.exp(rng.uniform(math.log(0.11), math.log(30), size=(6, 9, 11)))
    sym = np.floor(rng.normal(0, sigma) + 0.5).astype(np.int64)
    flat = sym.reshape(-1)
    flat[:8] = [INT32_MAX, INT32_MIN, INT32_MIN + 1, 2**20, -(2**20), 5000, -5000, 3]
    sym = sym.astype(np.int32)
    idx = _sigma_indexes(sigma, gauss)
    idx.reshape(-1)[:4] = 0  # tiny-scale rows for the biggest outliers
    data = encode_symbols(sym, idx, gauss)
    assert len(data) % 4 == 0
    out = decode_symbols(data, idx, gauss)
    assert out.dtype == np.int32 and out.shape == sym.shape
    np.testing.assert_array_equal(out, sym)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(INT32_MIN, INT32_MAX) | st.integers(-400, 12), min_size=0, max_size=60),
    st.randoms(use_true_random=False),
)
def test_round_trip_any_int32(values: list[int], rnd) -> None:  # type: ignore[no-untyped-def]
    table = _small()
    sym = np.array(values, dtype=np.int32)
    idx = np.array([rnd.randrange(table.num_rows) for _ in values], dtype=np.int64)
    np.testing.assert_array_equal(decode_symbols(encode_symbols(sym, idx, table), idx, table), sym)


def test_empty_arrays(small_table: CdfTable) -> None:
    for shape in [(0,), (2, 0, 3)]:
        sym = np.zeros(shape, dtype=np.int32)
        idx = np.zeros(shape, dtype=np.int64)
        assert encode_symbols(sym, idx, small_table) == b""
        out = decode_symbols(b"", idx, small_table)
        assert out.shape == shape and out.dtype == np.int32
    # ANS codes "first bin of its row" at zero cost from the empty state: b"" is a valid message
    sym, idx = np.array([-1, 7, -300], np.int32), np.array([0, 1, 2])
    assert encode_symbols(sym, idx, small_table) == b""
    np.testing.assert_array_equal(decode_symbols(b"", idx, small_table), sym)


def test_mixed_indexes_need_the_right_rows(small_table: CdfTable) -> None:
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 3, size=400)
    sym = (small_table.offsets[idx] + rng.integers(0, 3, size=400)).astype(np.int32)
    data = encode_symbols(sym, idx, small_table)
    np.testing.assert_array_equal(decode_symbols(data, idx, small_table), sym)
    wrong = (idx + 1) % 3
    with contextlib.suppress(CorruptFileError):
        assert not np.array_equal(decode_symbols(data, wrong, small_table), sym)


def test_encoding_is_deterministic_across_processes(gauss: CdfTable) -> None:
    """The same symbols give the same bytes in a fresh interpreter (tables rebuilt there too)."""
    code = (
        "import numpy as np, hashlib\n"
        "from hificli.entropy.tables import latent_tables\n"
        "from hificli.entropy.coder import encode_symbols\n"
        "rng = np.random.default_rng(7)\n"
        "idx = rng.integers(0, 256, size=5000)\n"
        "sym = rng.integers(-40, 41, size=5000).astype(np.int32)\n"
        "print(hashlib.sha256(encode_symbols(sym, idx, latent_tables('gaussian'))).hexdigest())\n"
    )
    rng = np.random.default_rng(7)
    idx = rng.integers(0, 256, size=5000)
    sym = rng.integers(-40, 41, size=5000).astype(np.int32)
    here = hashlib.sha256(encode_symbols(sym, idx, gauss)).hexdigest()
    there = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert there.strip() == here


def test_bad_arguments_raise_value_error(small_table: CdfTable) -> None:
    with pytest.raises(ValueError, match="indexes"):
        encode_symbols(np.zeros(3, np.int32), np.array([0, 1, 3]), small_table)
    with pytest.raises(ValueError, match="same shape"):
        encode_symbols(np.zeros(3, np.int32), np.zeros(4, np.int64), small_table)
    with pytest.raises(ValueError, match="int32"):
        encode_symbols(np.array([2**31]), np.zeros(1, np.int64), small_table)
    with pytest.raises(ValueError, match="int32"):
        encode_symbols(np.array([0.5]), np.zeros(1, np.int64), small_table)


def test_models_are_cached_on_the_table(small_table: CdfTable) -> None:
    assert small_table.model(2) is small_table.model(2)
    clone = copy.deepcopy(small_table)  # copies drop the cache and rebuild it
    sym, idx = np.array([-300, 8, 0], np.int32), np.array([2, 1, 0])
    np.testing.assert_array_equal(decode_symbols(encode_symbols(sym, idx, small_table), idx, clone), sym)


# ---------------------------------------------------------------- corrupt data


def test_corrupt_streams_raise_corrupt_file_error(gauss: CdfTable) -> None:
    rng = np.random.default_rng(5)
    sigma = np.exp(rng.uniform(math.log(0.11), math.log(30), size=3000))
    sym = np.floor(rng.normal(0, sigma) + 0.5).astype(np.int32)
    sym[::500] = 10**6  # some escapes, so the escape streams are in play too
    idx = _sigma_indexes(sigma, gauss)
    data = encode_symbols(sym, idx, gauss)
    bad = {
        "odd length": data[:-1],
        "truncated end": data[:-4],
        "truncated start": data[4:],
        "appended word": data + b"\x01\x00\x00\x00",
        "zero trailing word": data + b"\x00\x00\x00\x00",
        "one word": b"\x01\x02\x03\x04",
    }
    for name, blob in bad.items():
        with pytest.raises(CorruptFileError, match="damaged stream 'y'"):
            decode_symbols(blob, idx, gauss, stream="y")
            pytest.fail(f"{name} decoded without error")
    with pytest.raises(CorruptFileError):
        decode_symbols(b"\x01\x00\x00\x00", np.zeros(0, np.int64), gauss)
    assert CorruptFileError("x").exit_code == 3


def test_garbage_never_hangs_and_is_almost_always_rejected(gauss: CdfTable) -> None:
    """Random words: each decode is O(symbols) and either fails cleanly or returns int32 data."""
    rng = np.random.default_rng(9)
    idx = rng.integers(0, gauss.num_rows, size=2000)
    rejected = 0
    for trial in range(40):
        words = rng.integers(1, 2**32, size=int(rng.integers(1, 400)), dtype=np.uint64).astype("<u4")
        if trial % 2:  # bias towards the escape path: tiny-scale rows with garbage state
            idx = np.zeros(2000, dtype=np.int64)
        try:
            out = decode_symbols(words.tobytes(), idx, gauss)
            assert out.dtype == np.int32 and out.shape == idx.shape
        except CorruptFileError:
            rejected += 1
    assert rejected >= 38


def test_decoded_values_outside_int32_are_rejected(small_table: CdfTable) -> None:
    """Hand-craft a stream whose escape decodes to offset + 2**31 + ...: must be corrupt, not wrap."""
    stream = constriction.stream
    coder = stream.stack.AnsCoder()
    # row 0 (offset -1, 3 regular values): escape above with e = 2**32 + 2 -> v = 2**31 + 1 + 3
    e1 = 2**32 + 3
    k = e1.bit_length() - 1
    mant = e1 - (1 << k)
    chunks = np.array([mant & 0xFFFF, mant >> 16], dtype=np.int32)
    coder.encode_reverse(chunks, stream.model.Uniform(), np.array([2**16, 2**16], np.int32))
    coder.encode_reverse(np.array([k], dtype=np.int32), stream.model.Uniform(33))
    coder.encode_reverse(np.array([3], dtype=np.int32), small_table.model(0))
    data = coder.get_compressed().astype("<u4").tobytes()
    with pytest.raises(CorruptFileError):
        decode_symbols(data, np.zeros(1, np.int64), small_table)


# ---------------------------------------------------------------- quantize_pmf and tables


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False, allow_infinity=False), min_size=1, max_size=300),
    st.integers(9, 24),
)
def test_quantize_pmf_invariants(pmf: list[float], precision: int) -> None:
    p = np.array(pmf, dtype=np.float64)
    if p.sum() <= 0:
        with pytest.raises(ValueError):
            quantize_pmf(p, precision)
        return
    f = quantize_pmf(p, precision)
    assert f.dtype == np.uint32 and f.shape == p.shape
    assert int(f.astype(np.int64).sum()) == 2**precision
    assert f.min() >= 1
    ideal = p / p.sum() * 2**precision
    assert np.all(np.abs(f - ideal) <= p.size + 1)
    np.testing.assert_array_equal(quantize_pmf(p, precision), f)


def test_quantize_pmf_rejects_bad_input() -> None:
    for bad in ([0.5, -0.1], [np.nan, 1.0], [0.0, 0.0], []):
        with pytest.raises(ValueError):
            quantize_pmf(np.array(bad, dtype=np.float64))
    with pytest.raises(ValueError, match="cannot each get"):
        quantize_pmf(np.ones(300), precision=8)


def test_latent_tables_layout(gauss: CdfTable) -> None:
    scales = latent_scale_table()
    assert scales.size == gauss.num_rows == 256
    assert math.isclose(scales[0], 0.11) and math.isclose(scales[-1], 256.0)
    np.testing.assert_array_equal(gauss.scale_thresholds_fixed, np.round(scales * 2**16).astype(np.int64))
    assert np.all(gauss.offsets == -((gauss.lengths - 2) // 2))  # symmetric [-c, c] plus the escape bin
    sums = gauss.freqs.astype(np.int64).sum(axis=1)
    assert np.all(sums == 2**PRECISION)
    for k in (0, 100, 255):  # symmetric rows
        body = gauss.freqs[k, : gauss.lengths[k] - 1].astype(np.int64)
        np.testing.assert_array_equal(body, body[::-1])
    logistic = latent_tables("logistic", scales[:8])
    assert np.all(logistic.lengths > latent_tables("gaussian", scales[:8]).lengths)  # heavier tails
    with pytest.raises(ValueError):
        latent_tables("laplace")


def test_table_arrays_round_trip_and_validation(gauss: CdfTable) -> None:
    arrays = gauss.to_arrays("entropy.y.")
    names = ("freqs", "lengths", "offsets", "scale_thresholds_fixed")
    assert set(arrays) == {f"entropy.y.{n}" for n in names}
    assert arrays["entropy.y.freqs"].dtype == np.int32 and arrays["entropy.y.freqs"].ndim == 1
    back = CdfTable.from_arrays(arrays, "entropy.y.")
    for name in ("freqs", "lengths", "offsets", "scale_thresholds_fixed"):
        np.testing.assert_array_equal(getattr(back, name), getattr(gauss, name))

    def broken(**changes: np.ndarray) -> dict[str, np.ndarray]:
        a = {k.removeprefix("entropy.y."): v.copy() for k, v in arrays.items()}
        a.update(changes)
        return a

    f = arrays["entropy.y.freqs"]
    lengths = arrays["entropy.y.lengths"]
    cases = {
        "sums to": broken(freqs=f + np.eye(1, f.size, 3, dtype=np.int32)[0]),
        "frequency 0": broken(freqs=np.where(np.arange(f.size) == 1, 0, f).astype(np.int32)),
        "packed bins": broken(freqs=f[:-1]),
        "lengths": broken(lengths=np.where(np.arange(lengths.size) == 0, 1, lengths)),
        "integer dtype": broken(freqs=f.astype(np.float32)),
        "increasing": broken(scale_thresholds_fixed=arrays["entropy.y.scale_thresholds_fixed"][::-1].copy()),
        "offsets": broken(offsets=np.full(lengths.size, 2**30, dtype=np.int32)),
        "shape": broken(offsets=np.zeros(3, dtype=np.int32)),
        "too large": broken(lengths=np.array([2] * 64 + [2**20]), freqs=np.ones(2**20 + 128, np.int32)),
    }
    for message, bad in cases.items():
        with pytest.raises(ValueError, match=message):
            CdfTable.from_arrays(bad)
    missing = broken()
    del missing["offsets"]
    with pytest.raises(ValueError, match="missing"):
        CdfTable.from_arrays(missing)
    with pytest.raises(ValueError, match="padding"):
        CdfTable(np.array([[2**24 - 1, 1, 5]]), np.array([2]), np.array([0]))


# ---------------------------------------------------------------- coded size


def _ideal_bits(s: np.ndarray, sigma: np.ndarray, kind: str) -> float:
    """sum(-log2 P([s - 1/2, s + 1/2])) under the continuous, unquantized-scale density."""
    if kind == "gaussian":
        erfc = np.vectorize(math.erfc)

        def q(x: np.ndarray) -> np.ndarray:
            return 0.5 * erfc(x / math.sqrt(2))
    else:

        def q(x: np.ndarray) -> np.ndarray:
            return 1.0 / (1.0 + np.exp(x))

    a = np.abs(s).astype(np.float64)
    mass = np.where(a == 0, 1 - 2 * q(0.5 / sigma), q((a - 0.5) / sigma) - q((a + 0.5) / sigma))
    return float(-np.log2(mass).sum())


@pytest.mark.parametrize("kind", ["gaussian", "logistic"])
def test_coded_size_close_to_ideal(kind: str) -> None:
    """Coded size <= ideal continuous estimate * 1.005 + 64 bytes; the port's 64 levels / 2**-8 do worse."""
    rng = np.random.default_rng(11)
    n = 60_000
    sigma = np.exp(rng.uniform(math.log(0.11), math.log(30), n))
    mu = rng.normal(0, 5, n)
    y = mu + (rng.normal(0, sigma) if kind == "gaussian" else rng.logistic(0, sigma))
    s = np.floor(y - mu + 0.5).astype(np.int32)
    ideal = _ideal_bits(s, sigma, kind) / 8
    table = latent_tables(kind)
    idx = _sigma_indexes(sigma, table)
    data = encode_symbols(s, idx, table)
    np.testing.assert_array_equal(decode_symbols(data, idx, table), s)
    assert len(data) <= ideal * 1.005 + 64, (len(data), ideal)
    assert abs(estimate_bits(s, idx, table) / 8 - len(data)) <= 0.001 * ideal + 16
    port = latent_tables(kind, latent_scale_table(64), 2.0**-8)
    port_size = len(encode_symbols(s, _sigma_indexes(sigma, port), port))
    assert port_size - ideal > 2 * (len(data) - ideal)


# ---------------------------------------------------------------- factorized (hyperlatent) tables


def _logistic_pmf(loc: np.ndarray, scale: np.ndarray, floor: float = 0.0):  # type: ignore[no-untyped-def]
    def pmf(values):  # type: ignore[no-untyped-def]
        import torch

        v = values.double()
        lc = torch.tensor(loc, dtype=torch.float64).view(1, -1, 1, 1)
        sc = torch.tensor(scale, dtype=torch.float64).view(1, -1, 1, 1)
        m = torch.sigmoid((v + 0.5 - lc) / sc) - torch.sigmoid((v - 0.5 - lc) / sc)
        return m.clamp_min(floor).float()

    return pmf


def test_factorized_tables_from_logistic_density() -> None:
    loc = np.array([0.0, 3.3, -7.6, 0.4, 20.0])
    scale = np.array([0.3, 1.0, 2.5, 9.0, 0.05])
    tail = 2.0**-14
    table = factorized_tables(_logistic_pmf(loc, scale), len(loc), tail)
    assert np.all(table.freqs.astype(np.int64).sum(axis=1) == 2**PRECISION)
    for c in range(len(loc)):
        lo, n = int(table.offsets[c]), int(table.lengths[c]) - 1
        values = np.arange(lo, lo + n)
        # the cut keeps each tail <= tail/2 and is tight: one more bin off either side would not
        def cdf(x: np.ndarray | float, c: int = c) -> np.ndarray:
            return 1 / (1 + np.exp(-(x - loc[c]) / scale[c]))

        below, above = cdf(lo - 0.5), 1 - cdf(lo + n - 0.5)
        assert below <= tail / 2 * 1.01 and above <= tail / 2 * 1.01
        slack = tail / 8  # mass outside the search window counts on both sides
        assert cdf(lo + 0.5) > tail / 2 - slack and 1 - cdf(lo + n - 1.5) > tail / 2 - slack
        mass = cdf(values + 0.5) - cdf(values - 0.5)
        freq = table.freqs[c, :n].astype(np.float64) / 2**PRECISION
        assert np.abs(freq - mass).max() < 1e-4
        esc = table.freqs[c, n] / 2**PRECISION
        assert abs(esc - (below + above)) < 1e-5
    # samples from the density round-trip, at close to ideal cost
    rng = np.random.default_rng(2)
    noise = rng.logistic(0, scale[:, None, None], (5, 8, 12))
    z = np.floor(loc[:, None, None] + noise + 0.5).astype(np.int32)
    z[1, 0, 0] = 10**6
    idx = np.broadcast_to(np.arange(5)[:, None, None], z.shape)
    data = encode_symbols(z, idx, table)
    np.testing.assert_array_equal(decode_symbols(data, idx, table, stream="z"), z)


def test_factorized_tables_with_floor_and_cap() -> None:
    """A likelihood floor (1e-9 per bin, as in HiFiC) and a density too wide for the cap stay valid."""
    table = factorized_tables(_logistic_pmf(np.array([0.0, 1.0]), np.array([1.0, 1e5]), floor=1e-9), 2)
    assert table.lengths[0] < 100
    assert table.lengths[1] == 2 * 2**12 + 2  # capped at |v| <= 2**12, the rest escapes
    assert table.freqs[1, table.lengths[1] - 1] > 2**PRECISION // 2
    sym = np.array([[-(2**20), 4096, 3, 0]], dtype=np.int32)
    idx = np.array([[1, 1, 0, 0]])
    np.testing.assert_array_equal(decode_symbols(encode_symbols(sym, idx, table), idx, table), sym)


# ---------------------------------------------------------------- exact-consumption guard


def test_settled_symbols_always_pass_the_damaged_stream_rule(gauss: CdfTable) -> None:
    """A valid encoding whose last-decoded symbols are all first bins looks like a stream that ran out
    of words; the encoder moves one symbol by one bin so the decoder accepts what it writes."""
    from hificli.entropy.coder import settle_final_run

    rows = np.full((4, 8, 8), 200, dtype=np.int32)  # wide distributions: a first bin costs ~14 bits
    symbols = np.full(rows.shape, int(gauss.offsets[200]), dtype=np.int32)  # every symbol in bin 0
    with pytest.raises(CorruptFileError, match="ran out before its symbols"):
        decode_symbols(encode_symbols(symbols, rows, gauss), rows, gauss)
    settled = settle_final_run(symbols, rows, gauss)
    assert np.count_nonzero(settled != symbols) == 1 and int((settled - symbols).sum()) == 1
    assert np.array_equal(decode_symbols(encode_symbols(settled, rows, gauss), rows, gauss), settled)
    rng = np.random.default_rng(3)
    typical = rng.integers(-3, 4, rows.shape).astype(np.int32)  # ordinary data is left alone
    assert settle_final_run(typical, rows, gauss) is typical
