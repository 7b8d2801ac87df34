"""Integer CDF tables: built once from floats when weights are converted, then used as integers only.

A :class:`CdfTable` holds K discrete distributions ("rows") over contiguous integer ranges. Row ``k``
covers the values ``offsets[k] .. offsets[k] + lengths[k] - 2``; its last real bin (index
``lengths[k] - 1``) is the ESCAPE bin, which stands for every value outside that range (the coder
then codes the exact value separately). Frequencies are integers >= 1 that sum to exactly
``2**PRECISION`` per row.

Why ``PRECISION = 24``: constriction's ``Categorical`` works with 24-bit fixed-point probabilities.
At 24 bits (i) the mandatory ``freq >= 1`` floor costs at most ``2**-24`` per bin, where 16 bits would
steal up to ~1 % of the mass from the body of a wide (2000-bin) row; and (ii) ``freqs / 2**24`` is an
exact float64, so constriction's own re-quantization (``floor(cdf * (2**24 - n)) + i``) is exact
arithmetic on our integers: every process on every machine builds the same coder model.

Defaults, measured against the ideal continuous estimate ``sum(-log2 P(bin | true sigma))`` on
Gaussian/logistic latents with sigma log-uniform in [0.11, S] (the test uses S = 30):
``LATENT_LEVELS = 256`` log-spaced scales over [0.11, 256] (neighbour ratio 1.031) and
``TAIL_MASS = 2**-14`` code within 0.01-0.05 % (+ ~10 bytes of ANS state) for S = 30 and within 0.1 %
for S = 0.5; the port's 64 levels (ratio 1.13) with tail 2**-8 cost 0.23-0.27 % (S = 30) and 0.4-0.8 %
(S = 0.5). 128 levels / 2**-12 would cost ~2x more than the default; tails below 2**-14 gain nothing
measurable. The packed tables hold ~69 k bins (Gaussian, longest row 2056) / ~178 k (logistic, 5326).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

PRECISION = 24  #: bits of every table row: rows sum to exactly 2**PRECISION
SCALE_FRAC_BITS = 16  #: fractional bits of fixed-point scales (sigma) and means (mu)
SCALE_MIN = 0.11  #: lower bound of sigma (as in HiFiC / the port)
SCALE_MAX = 256.0
LATENT_LEVELS = 256
TAIL_MASS = 2.0**-14
#: Fixed-point lower bound of sigma: round(0.11 * 2**16) = 7209.
SCALE_MIN_FIXED = int(round(SCALE_MIN * 2**SCALE_FRAC_BITS))
#: Hyperlatent tables never extend beyond |v| <= 2**12 (the exact synthesis clamps z there anyway).
FACTORIZED_SUPPORT_MAX = 2**12
#: Bounds that keep every coder value inside int64 and constriction's limits.
MAX_ROW_LENGTH = 2**20
MAX_ABS_OFFSET = 2**24
#: K * Lmax of the zero-padded in-memory table (128 MiB); real tables use a few million at most.
MAX_TABLE_CELLS = 2**25

LATENT_KINDS = ("gaussian", "logistic")


@dataclass(eq=False)
class CdfTable:
    """K integer distributions; see the module docstring for the layout.

    freqs: uint32 [K, Lmax], zero-padded after each row's ``lengths[k]`` real bins.
    lengths: int32 [K], real bins per row including the final escape bin (>= 2).
    offsets: int32 [K], the integer value of bin 0 of each row.
    scale_thresholds_fixed: optional int64 [K], strictly increasing; for latent tables, row k is used
        for sigma in (thresholds[k-1], thresholds[k]] (fixed point, SCALE_FRAC_BITS fractional bits).
    The constructor validates everything and raises ValueError naming the problem.
    """

    freqs: np.ndarray
    lengths: np.ndarray
    offsets: np.ndarray
    scale_thresholds_fixed: np.ndarray | None = None
    _models: list[Any] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self.freqs = _as_int_array(self.freqs, "freqs", np.uint32, ndim=2)
        self.lengths = _as_int_array(self.lengths, "lengths", np.int32, ndim=1)
        self.offsets = _as_int_array(self.offsets, "offsets", np.int32, ndim=1)
        if self.scale_thresholds_fixed is not None:
            self.scale_thresholds_fixed = _as_int_array(
                self.scale_thresholds_fixed, "scale_thresholds_fixed", np.int64, ndim=1
            )
        self._validate()
        self._models = [None] * self.num_rows

    @property
    def num_rows(self) -> int:
        return int(self.freqs.shape[0])

    def _validate(self) -> None:
        k, lmax = self.freqs.shape
        if k < 1 or lmax < 2:
            raise ValueError(f"table freqs must have shape [K >= 1, Lmax >= 2], got {self.freqs.shape}")
        if self.lengths.shape != (k,) or self.offsets.shape != (k,):
            raise ValueError(
                f"table lengths/offsets must have shape ({k},), got {self.lengths.shape}/{self.offsets.shape}"
            )
        if self.lengths.min() < 2 or self.lengths.max() > min(lmax, MAX_ROW_LENGTH):
            raise ValueError(f"table lengths must lie in [2, {min(lmax, MAX_ROW_LENGTH)}]")
        if np.abs(self.offsets.astype(np.int64)).max() > MAX_ABS_OFFSET:
            raise ValueError(f"table offsets must lie in [-{MAX_ABS_OFFSET}, {MAX_ABS_OFFSET}]")
        real = np.arange(lmax)[None, :] < self.lengths[:, None]
        if np.any(self.freqs[real] < 1):
            raise ValueError("table has a real bin with frequency 0")
        if np.any(self.freqs[~real] != 0):
            raise ValueError("table padding after a row's length must be zero")
        sums = self.freqs.astype(np.int64).sum(axis=1)
        bad = np.flatnonzero(sums != 2**PRECISION)
        if bad.size:
            raise ValueError(f"table row {int(bad[0])} sums to {int(sums[bad[0]])}, not 2**{PRECISION}")
        t = self.scale_thresholds_fixed
        if t is not None:
            if t.shape != (k,):
                raise ValueError(f"scale_thresholds_fixed must have shape ({k},), got {t.shape}")
            if t[0] < 1 or np.any(np.diff(t) <= 0):
                raise ValueError("scale_thresholds_fixed must be positive and strictly increasing")

    def __getstate__(self) -> dict[str, Any]:  # copies/pickles rebuild the constriction models lazily
        state = self.__dict__.copy()
        state["_models"] = [None] * self.num_rows
        return state

    def model(self, row: int) -> Any:
        """The constriction Categorical of one row (built on first use, then cached on the table)."""
        m = self._models[row]
        if m is None:
            import constriction

            probs = self.freqs[row, : self.lengths[row]].astype(np.float64) / 2.0**PRECISION
            m = constriction.stream.model.Categorical(probs, perfect=False)
            self._models[row] = m
        return m

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Packed integer arrays for storage: ``{prefix}freqs`` holds only the real bins, row after row.

        All arrays are int32 (int64 for thresholds), which every safetensors backend can store.
        """
        real = np.arange(self.freqs.shape[1])[None, :] < self.lengths[:, None]
        out = {
            f"{prefix}freqs": self.freqs[real].astype(np.int32),
            f"{prefix}lengths": self.lengths.astype(np.int32),
            f"{prefix}offsets": self.offsets.astype(np.int32),
        }
        if self.scale_thresholds_fixed is not None:
            out[f"{prefix}scale_thresholds_fixed"] = self.scale_thresholds_fixed.astype(np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, Any], prefix: str = "") -> CdfTable:
        """Inverse of :meth:`to_arrays`; accepts numpy arrays or tensors. Bad arrays -> ValueError."""
        try:
            packed = _as_int_array(arrays[f"{prefix}freqs"], "freqs", np.int64, ndim=1)
            lengths = _as_int_array(arrays[f"{prefix}lengths"], "lengths", np.int64, ndim=1)
            offsets = arrays[f"{prefix}offsets"]
        except KeyError as exc:
            raise ValueError(f"entropy table array {exc.args[0]!r} is missing") from None
        thresholds = arrays.get(f"{prefix}scale_thresholds_fixed")
        if lengths.size < 1 or lengths.min() < 2 or lengths.max() > MAX_ROW_LENGTH:
            raise ValueError(f"table lengths must lie in [2, {MAX_ROW_LENGTH}]")
        if lengths.size * int(lengths.max()) > MAX_TABLE_CELLS:
            raise ValueError(f"table of {lengths.size} rows x {lengths.max()} bins is too large")
        if int(lengths.sum()) != packed.size:
            raise ValueError(f"table has {packed.size} packed bins but its lengths add up to {lengths.sum()}")
        if packed.size and (packed.min() < 0 or packed.max() > 2**PRECISION):
            raise ValueError("table frequencies out of range")
        freqs = np.zeros((lengths.size, int(lengths.max())), dtype=np.uint32)
        freqs[np.arange(freqs.shape[1])[None, :] < lengths[:, None]] = packed
        return cls(freqs, lengths, offsets, thresholds)


def _as_int_array(value: Any, name: str, dtype: type, ndim: int) -> np.ndarray:
    """Convert a numpy array / tensor / list to an integer array, checking dtype kind, rank and range."""
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    arr = np.asarray(value)
    if arr.dtype.kind not in "iu" and not (arr.size == 0 and arr.dtype.kind == "f"):
        raise ValueError(f"table array {name!r} must have an integer dtype, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"table array {name!r} must have {ndim} dimension(s), got shape {arr.shape}")
    info = np.iinfo(dtype)
    if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
        raise ValueError(f"table array {name!r} has values outside {np.dtype(dtype).name}")
    return np.ascontiguousarray(arr, dtype=dtype)


def quantize_pmf(pmf: np.ndarray, precision: int = PRECISION) -> np.ndarray:
    """Deterministic integer frequencies for a pmf: each >= 1, summing to exactly ``2**precision``.

    Rule: ``f = max(1, floor(p / sum(p) * 2**precision + 0.5))``; a positive shortfall is added to the
    largest bin (the first one on ties); an excess is taken from bins in order of decreasing frequency
    (stable on ties), never lowering one below 1.
    """
    p = np.asarray(pmf, dtype=np.float64)
    if p.ndim != 1 or p.size < 1:
        raise ValueError(f"pmf must be a non-empty 1-D array, got shape {p.shape}")
    if not 1 <= precision <= 30:
        raise ValueError(f"precision must be in [1, 30], got {precision}")
    total_int = 1 << precision
    if p.size > total_int:
        raise ValueError(f"{p.size} bins cannot each get a frequency >= 1 at precision {precision}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError("pmf must be finite and non-negative")
    total = float(p.sum())
    if not total > 0:
        raise ValueError("pmf must have a positive sum")
    f = np.maximum(np.floor(p / total * total_int + 0.5), 1.0).astype(np.int64)
    diff = total_int - int(f.sum())
    if diff > 0:
        f[int(np.argmax(f))] += diff
    elif diff < 0:
        order = np.argsort(-f, kind="stable")
        spare = np.cumsum(f[order] - 1)  # how much the first j+1 bins (in order) can give
        need = -diff
        j = int(np.searchsorted(spare, need))  # bins order[:j] give everything, order[j] the rest
        f[order[:j]] = 1
        f[order[j]] -= need - (int(spare[j - 1]) if j else 0)
    return f.astype(np.uint32)


def latent_scale_table(
    levels: int = LATENT_LEVELS, smin: float = SCALE_MIN, smax: float = SCALE_MAX
) -> np.ndarray:
    """``levels`` log-spaced scales from smin to smax (float64)."""
    if levels < 2 or not 0 < smin < smax:
        raise ValueError(f"need levels >= 2 and 0 < smin < smax, got {levels}, {smin}, {smax}")
    return np.exp(np.linspace(math.log(smin), math.log(smax), levels))


def _survival(kind: str) -> Callable[[float], float]:
    """P(X > x) of the standardized distribution (accurate in the tails)."""
    if kind == "gaussian":
        return lambda x: 0.5 * math.erfc(x / math.sqrt(2.0))
    if kind == "logistic":
        return lambda x: math.exp(-x) / (1.0 + math.exp(-x)) if x >= 0 else 1.0 / (1.0 + math.exp(x))
    raise ValueError(f"kind must be one of {LATENT_KINDS}, got {kind!r}")


def _upper_quantile(kind: str, tail: float) -> float:
    """x with P(X > x) = tail for the standardized distribution."""
    if kind == "gaussian":
        return NormalDist().inv_cdf(1.0 - tail)
    return math.log(1.0 / tail - 1.0)


def latent_tables(kind: str, scales: np.ndarray | None = None, tail_mass: float = TAIL_MASS) -> CdfTable:
    """Zero-mean tables for quantized Gaussian/logistic latents, one row per scale.

    Row k covers [-c, c] with ``c = ceil(scale_k * quantile(1 - tail_mass / 2))``; bin v holds the mass
    of [v - 0.5, v + 0.5]; the escape bin holds the two-sided tail mass beyond c + 0.5. ``scales``
    defaults to :func:`latent_scale_table`; they become ``scale_thresholds_fixed`` (rounded to
    SCALE_FRAC_BITS fractional bits).
    """
    survival = _survival(kind)
    if not 0 < tail_mass < 1:
        raise ValueError(f"tail_mass must be in (0, 1), got {tail_mass}")
    scales = latent_scale_table() if scales is None else np.asarray(scales, dtype=np.float64)
    if scales.ndim != 1 or scales.size < 1 or not np.all(scales > 0) or np.any(np.diff(scales) <= 0):
        raise ValueError("scales must be a positive, strictly increasing 1-D array")
    q = _upper_quantile(kind, tail_mass / 2)
    rows, offsets = [], []
    for s in scales.tolist():
        c = max(1, math.ceil(s * q))
        upper = [survival((k - 0.5) / s) for k in range(1, c + 2)]  # P(X > k - 1/2), k = 1..c+1
        side = [upper[i] - upper[i + 1] for i in range(c)]  # mass of bins 1..c
        centre = 1.0 - 2.0 * upper[0]
        pmf = np.array(side[::-1] + [centre] + side + [2.0 * upper[c]])
        rows.append(quantize_pmf(pmf))
        offsets.append(-c)
    thresholds = np.round(scales * 2**SCALE_FRAC_BITS).astype(np.int64)
    return _stack_rows(rows, offsets, thresholds)


def _stack_rows(rows: list[np.ndarray], offsets: list[int], thresholds: np.ndarray | None = None) -> CdfTable:
    lengths = np.array([r.size for r in rows], dtype=np.int32)
    freqs = np.zeros((len(rows), int(lengths.max())), dtype=np.uint32)
    for k, r in enumerate(rows):
        freqs[k, : r.size] = r
    return CdfTable(freqs, lengths, np.array(offsets, dtype=np.int32), thresholds)


def _to_numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().double().numpy()
    return np.asarray(value, dtype=np.float64)


def factorized_tables(
    pmf_fn: Callable[[Any], Any], channels: int, tail_mass: float = TAIL_MASS, start: int = 16
) -> CdfTable:
    """Per-channel tables for the hyperlatents from a bin-mass function (``HyperpriorDensity.likelihood``).

    ``pmf_fn(values)`` receives a float32 torch tensor (1, channels, 1, K) holding the integers
    ``-W .. W`` in every channel and returns the mass of [v - 0.5, v + 0.5] per element. The window W
    doubles from ``start`` until every channel has at most ``tail_mass / 8`` of its mass outside it, or
    W reaches FACTORIZED_SUPPORT_MAX (values beyond that always take the escape path). Each row is then
    cut to the narrowest [lo, hi] whose left and right tails (counting the mass outside the window in
    both) are each <= tail_mass / 2; the escape bin gets the remaining mass ``1 - sum(row)``.
    """
    import torch

    if channels < 1 or not 0 < tail_mass < 1:
        raise ValueError(f"need channels >= 1 and 0 < tail_mass < 1, got {channels}, {tail_mass}")
    w = max(1, min(start, FACTORIZED_SUPPORT_MAX))
    while True:
        values = torch.arange(-w, w + 1, dtype=torch.float32).expand(1, channels, 1, 2 * w + 1)
        with torch.no_grad():
            mass = _to_numpy(pmf_fn(values.contiguous())).reshape(channels, 2 * w + 1)
        if not np.all(np.isfinite(mass)):
            raise ValueError("the density returned non-finite bin masses")
        mass = np.clip(mass, 0.0, 1.0)
        outside = np.maximum(1.0 - mass.sum(axis=1), 0.0)
        if np.all(outside <= tail_mass / 8) or w >= FACTORIZED_SUPPORT_MAX:
            break
        w = min(2 * w, FACTORIZED_SUPPORT_MAX)
    half = tail_mass / 2
    left = np.cumsum(mass, axis=1) + outside[:, None]  # mass at or below each bin, plus the unknown
    right = np.cumsum(mass[:, ::-1], axis=1)[:, ::-1] + outside[:, None]
    lo = (left <= half).sum(axis=1)  # bins 0..lo-1 can go to the escape bin
    hi = 2 * w - (right <= half).sum(axis=1)
    hi = np.maximum(hi, lo)
    rows, offsets = [], []
    for c in range(channels):
        body = mass[c, lo[c] : hi[c] + 1]
        escape = max(1.0 - float(body.sum()), 0.0)
        rows.append(quantize_pmf(np.append(body, escape)))
        offsets.append(int(lo[c]) - w)
    return _stack_rows(rows, offsets)
