"""Entropy coding of int32 symbols with integer tables, using constriction's ANS coder.

Stream layout (what :func:`decode_symbols` pops, in order; the encoder pushes it in reverse because
the ANS coder is a stack):

1. the symbols grouped by table row, rows in increasing order, each group in raster order (a stable
   sort of the row indexes), each group coded with its row's Categorical model. A value
   ``v = symbol - offsets[row]`` in ``[0, lengths[row] - 1)`` is coded as itself, anything else as the
   escape bin ``lengths[row] - 1``;
2. for every escaped symbol (same order), the bit count ``k`` of ``e + 1`` with ``Uniform(33)``, where
   ``e = 2 * (v - n)`` above the range (``n = lengths[row] - 1``) and ``e = 2 * (-v - 1) + 1`` below it;
3. for every escaped symbol, the ``k`` low bits of ``e + 1`` in chunks of <= 16 bits, low chunk first,
   each with a ``Uniform(2**width)`` model.

The compressed data are the coder's uint32 words, little-endian. Every int32 symbol round-trips.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hificli.entropy.interrupts import deferred_interrupts
from hificli.entropy.tables import PRECISION, CdfTable
from hificli.errors import CorruptFileError

ESCAPE_BITS_ALPHABET = 33  #: k = bit count of e + 1 is in 0..32 given |offset| <= 2**24 (see tables)
CHUNK_BITS = 16
_MAX_CHUNKS = 2  # k <= 32 bits = two 16-bit chunks
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_SAFE_INT32 = 2**30  # symbols within this range may be offset in int32 arithmetic
#: A stream whose final run of free first-bin symbols (see free_bits) carries more information than
#: this is damaged: a valid encoding ends in such a run with probability 2**-MAX_FREE_BITS.
MAX_FREE_BITS = 64.0
_SCAN = 1 << 16  # symbols scanned per step when looking for the end of that run


def _constriction() -> Any:
    import constriction

    return constriction.stream


def _check_inputs(indexes: np.ndarray, table: CdfTable) -> np.ndarray:
    idx = np.asarray(indexes)
    if idx.size and idx.dtype.kind not in "iu":
        raise ValueError(f"indexes must be integers, got dtype {idx.dtype}")
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= table.num_rows):
        raise ValueError(f"indexes must lie in [0, {table.num_rows}), got [{idx.min()}, {idx.max()}]")
    return idx


def _small(idx: np.ndarray, rows: int) -> np.ndarray:
    """Row indexes as the smallest unsigned dtype, so a stable argsort is a radix sort."""
    dtype = np.uint8 if rows <= 256 else np.uint16 if rows <= 65536 else np.uint32
    return idx.reshape(-1).astype(dtype)


def _grouping(idx: np.ndarray, table: CdfTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, symbols per row [K], group bounds per row [K + 1]) of the stable grouping by row."""
    flat = _small(idx, table.num_rows)
    order = np.argsort(flat, kind="stable")
    # Group starts by binary search in the sorted rows (whose dtype holds every row number): about 2x
    # faster than np.bincount, which first widens small dtypes.
    starts = np.searchsorted(flat[order], np.arange(table.num_rows, dtype=flat.dtype))
    bounds = np.append(starts, flat.size).astype(np.intp, copy=False)
    return order, np.diff(bounds), bounds


def _per_symbol(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """A per-row int32 value repeated for every (grouped) symbol of that row."""
    return np.repeat(values.astype(np.int32, copy=False), counts)


def _bit_length(x: np.ndarray) -> np.ndarray:
    """Bit length of positive int64 values below 2**53 (exact through float64 frexp)."""
    return np.frexp(x.astype(np.float64))[1].astype(np.int64)


def _chunk_widths(k: np.ndarray) -> np.ndarray:
    """[n_esc, 3] widths of the mantissa chunks (0 = absent)."""
    starts = np.arange(_MAX_CHUNKS, dtype=np.int64) * CHUNK_BITS
    return np.clip(k[:, None] - starts[None, :], 0, CHUNK_BITS)


def encode_symbols(symbols: np.ndarray, indexes: np.ndarray, table: CdfTable) -> bytes:
    """Code int32 ``symbols`` (any shape, raster order) with table row ``indexes`` (same shape)."""
    sym = np.asarray(symbols)
    idx = _check_inputs(indexes, table)
    if sym.shape != idx.shape:
        raise ValueError(f"symbols {sym.shape} and indexes {idx.shape} must have the same shape")
    if sym.size == 0:
        return b""
    lo, hi = (int(sym.min()), int(sym.max())) if sym.dtype.kind in "iu" else (0, 0)
    if sym.dtype.kind not in "iu" or lo < _INT32_MIN or hi > _INT32_MAX:
        raise ValueError("symbols must be integers in the int32 range")
    order, counts, bounds = _grouping(idx, table)
    offsets = _per_symbol(table.offsets, counts)
    n = _per_symbol(table.lengths - 1, counts)
    if sym.dtype == np.int32 and -_SAFE_INT32 <= lo and hi <= _SAFE_INT32:  # noqa: SIM300
        v = sym.reshape(-1)[order] - offsets  # |offsets| <= 2**24: no int32 overflow
        # Unsigned, negative values wrap to huge numbers: one minimum maps both sides to the escape bin.
        coded = np.minimum(v.view(np.uint32), n.view(np.uint32)).view(np.int32)
        escaped = coded == n
    else:
        v = sym.reshape(-1)[order].astype(np.int64) - offsets
        escaped = (v < 0) | (v >= n)
        coded = np.where(escaped, n, v).astype(np.int32, copy=False)

    with deferred_interrupts():  # constriction may call back into Python: no KeyboardInterrupt there
        stream = _constriction()
        coder = stream.stack.AnsCoder()
        if escaped.any():
            ve, ne = v[escaped].astype(np.int64), n[escaped].astype(np.int64)
            e1 = np.where(ve < 0, 2 * (-ve - 1) + 1, 2 * (ve - ne)) + 1
            k = _bit_length(e1) - 1
            mant = e1 - (np.int64(1) << k)
            widths = _chunk_widths(k)
            shifts = np.arange(_MAX_CHUNKS, dtype=np.int64) * CHUNK_BITS
            chunks = (mant[:, None] >> shifts[None, :]) & ((np.int64(1) << widths) - 1)
            present = widths > 0
            if present.any():
                sizes = (np.int64(1) << widths[present]).astype(np.int32)
                coder.encode_reverse(chunks[present].astype(np.int32), stream.model.Uniform(), sizes)
            coder.encode_reverse(k.astype(np.int32), stream.model.Uniform(ESCAPE_BITS_ALPHABET))
        for row in range(table.num_rows - 1, -1, -1):
            lo, hi = bounds[row], bounds[row + 1]
            if hi > lo:
                coder.encode_reverse(coded[lo:hi], table.model(row))
        compressed = coder.get_compressed()
    return compressed.astype("<u4", copy=False).tobytes()


def settle_final_run(symbols: np.ndarray, indexes: np.ndarray, table: CdfTable) -> np.ndarray:
    """``symbols`` as an encoder may code them so that the decoder's exact-consumption rule accepts the
    stream: unchanged, unless the run of first-bin symbols that ends the table-coded part (see
    :func:`free_bits`) carries more than MAX_FREE_BITS under the tables, which a valid encoding can do
    when the model is far off (such a file would be refused as damaged). Then the run's last symbol
    moves up one bin (one quantization step on one latent), which ends the run; returns a copy."""
    sym = np.asarray(symbols)
    idx = _check_inputs(indexes, table)
    if sym.size == 0:
        return sym
    order, _, bounds = _grouping(idx, table)
    rows = idx.reshape(-1)[order].astype(np.intp)
    v = sym.reshape(-1)[order].astype(np.int64) - table.offsets[rows].astype(np.int64)
    n = table.lengths[rows].astype(np.int64) - 1
    escaped = (v < 0) | (v >= n)
    if escaped.any():
        ve, ne = v[escaped], n[escaped]
        e1 = np.where(ve < 0, 2 * (-ve - 1) + 1, 2 * (ve - ne)) + 1
        k = _bit_length(e1) - 1
    else:
        k = np.zeros(0, dtype=np.int64)
    coded = np.where(escaped, n, v)
    if free_bits(coded, bounds, k, table) <= MAX_FREE_BITS:
        return sym
    settled = sym.copy()
    settled.reshape(-1)[order[-1]] += 1  # the last symbol decoded: first bin -> second bin (or escape)
    return settled


def decode_symbols(data: bytes, indexes: np.ndarray, table: CdfTable, *, stream: str = "data") -> np.ndarray:
    """Inverse of :func:`encode_symbols`: int32 symbols shaped like ``indexes``.

    Any inconsistency (length not a multiple of 4, leftover or missing data, out-of-range values,
    errors inside constriction) raises ``CorruptFileError("damaged stream '<stream>': ...")``,
    and so does a stream that ran out of words before its symbols did (see :func:`free_bits`): the
    data must be consumed exactly. Work and memory are O(number of symbols) whatever the data. ANS has
    no redundancy, so a damage that keeps the coder in step (e.g. a flipped bit that resynchronises)
    still decodes to wrong symbols: the container's checksum is what detects those.
    """
    idx = _check_inputs(indexes, table)
    corrupt = CorruptFileError(f"damaged stream {stream!r}: its entropy-coded data does not decode exactly")
    if len(data) % 4:
        raise corrupt
    if idx.size == 0:
        if data:
            raise corrupt
        return np.zeros(idx.shape, dtype=np.int32)
    words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
    order, counts, bounds = _grouping(idx, table)
    coded = np.empty(idx.size, dtype=np.int32)
    with deferred_interrupts():  # a KeyboardInterrupt inside constriction would read as damage
        cs = _constriction()
        try:
            coder = cs.stack.AnsCoder(words)
            for row in range(table.num_rows):
                lo, hi = bounds[row], bounds[row + 1]
                if hi > lo:
                    coded[lo:hi] = coder.decode(table.model(row), int(hi - lo))
            n = _per_symbol(table.lengths - 1, counts)
            escaped = coded == n
            values = coded.astype(np.int64)
            n_esc = int(escaped.sum())
            k = np.zeros(0, dtype=np.int64)
            if n_esc:
                k = coder.decode(cs.model.Uniform(ESCAPE_BITS_ALPHABET), n_esc).astype(np.int64)
                widths = _chunk_widths(k)
                present = widths > 0
                chunks = np.zeros(widths.shape, dtype=np.int64)
                if present.any():
                    sizes = (np.int64(1) << widths[present]).astype(np.int32)
                    chunks[present] = coder.decode(cs.model.Uniform(), sizes)
                shifts = np.arange(_MAX_CHUNKS, dtype=np.int64) * CHUNK_BITS
                e1 = (np.int64(1) << k) + (chunks << shifts[None, :]).sum(axis=1)
                e = e1 - 1
                ne = n[escaped].astype(np.int64)
                values[escaped] = np.where(e % 2 == 1, -(e // 2) - 1, e // 2 + ne)
            if not coder.is_empty():
                raise corrupt
            unpaid = free_bits(coded, bounds, k, table)
            if unpaid > MAX_FREE_BITS:
                raise CorruptFileError(
                    f"damaged stream {stream!r}: its data ran out before its symbols ({unpaid:.0f} bits short)"
                )
        except (KeyboardInterrupt, SystemExit):
            raise
        except CorruptFileError:
            raise
        except BaseException as exc:  # constriction raises ValueError/KeyError and PanicException
            raise corrupt from exc
    sym = values + _per_symbol(table.offsets, counts)
    if int(sym.min()) < _INT32_MIN or int(sym.max()) > _INT32_MAX:
        raise corrupt
    out = np.empty(idx.size, dtype=np.int32)
    out[order] = sym
    return out.reshape(idx.shape)


def free_bits(coded: np.ndarray, bounds: np.ndarray, k: np.ndarray, table: CdfTable) -> float:
    """Information, in bits under the coder's tables, of the run of "first bin" symbols that ends the
    table-coded part of the decode (when no escape data follows it that the coder paid for).

    Once an ANS decoder has used every word it sits in its initial state, which is a fixed point of
    every model's first bin (cumulative frequency 0): it then returns first bins at no cost. A valid
    encoder produces such a run only for the first-bin symbols it pushed first, so a valid stream ends
    in a run of probability 2**-bits under the models; a stream whose words ran out early (an empty or
    truncated stream, garbage, a damaged word) ends in a long run that its words never paid for.
    Memory is O(_SCAN) whatever the sizes.
    """
    # Escape bit counts and mantissa chunks are coded with uniform models that do not describe them:
    # k = 0 (the value just past a row's range) is the most common escape, so a valid stream may well
    # end in a run of zero k's. Only the table-coded symbols are judged: if any k is non-zero the coder
    # still held data after them, and otherwise their final run of first bins is priced by the tables.
    if k.size and np.any(k != 0):
        return 0.0
    start = _run_start(coded)
    first_bin = PRECISION - np.log2(table.freqs[:, 0].astype(np.float64))  # bits of bin 0, per row
    lo, hi = np.clip(bounds[:-1], start, coded.size), np.clip(bounds[1:], start, coded.size)
    return float(((hi - lo) * first_bin).sum())


def _run_start(values: np.ndarray) -> int:
    """Index where the trailing run of zeros of a 1-d array starts (its size when the last is non-zero),
    scanned backwards in blocks."""
    end = values.size
    while end > 0:
        begin = max(0, end - _SCAN)
        nonzero = np.flatnonzero(values[begin:end])
        if nonzero.size:
            return begin + int(nonzero[-1]) + 1
        end = begin
    return 0


def estimate_bits(symbols: np.ndarray, indexes: np.ndarray, table: CdfTable) -> float:
    """Ideal cost in bits of :func:`encode_symbols` under the integer table (escapes included)."""
    sym = np.asarray(symbols).reshape(-1).astype(np.int64)
    idx = _check_inputs(indexes, table).reshape(-1).astype(np.intp)
    if sym.size != idx.size:
        raise ValueError("symbols and indexes must have the same size")
    if sym.size == 0:
        return 0.0
    v = sym - table.offsets[idx].astype(np.int64)
    n = table.lengths[idx].astype(np.int64) - 1
    escaped = (v < 0) | (v >= n)
    col = np.where(escaped, n, v)
    bits = PRECISION - np.log2(table.freqs[idx, col].astype(np.float64))
    if escaped.any():
        ve, ne = v[escaped], n[escaped]
        e1 = np.where(ve < 0, 2 * (-ve - 1) + 1, 2 * (ve - ne)) + 1
        extra = np.log2(ESCAPE_BITS_ALPHABET) + (_bit_length(e1) - 1)
        return float(bits.sum() + extra.sum())
    return float(bits.sum())
