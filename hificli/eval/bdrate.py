"""Bjontegaard delta rate (BD-rate) with a monotone piecewise cubic (PCHIP) fit, numpy only.

For each codec, log(rate) is interpolated as a function of quality with the shape-preserving piecewise
cubic Hermite interpolant of Fritsch and Carlson; both fits are integrated exactly over the quality
interval the two curves share, and BD-rate = exp(mean difference of log rates) - 1. A BD-rate of -0.2
means the test codec needs 20 % fewer bits than the anchor for the same quality.

A test "curve" of a single point (one hific model) is the degenerate case of a zero-width interval:
the rate difference at that point's quality, R_test / R_anchor(Q_test) - 1.

Curves are cleaned first (:func:`monotone_curve`): sorted by rate, keeping only points whose quality
improves on every cheaper point, so quality is strictly increasing (saturated or noisy points of a sweep
are dropped). When the curves share no quality interval the result is NaN with a reason.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BDResult:
    """A BD-rate as a fraction (-0.2 = 20 % fewer bits), or NaN with the reason."""

    value: float
    reason: str | None = None
    interval: tuple[float, float] | None = None  # the quality interval integrated over

    @property
    def valid(self) -> bool:
        return math.isfinite(self.value)

    @property
    def percent(self) -> float:
        return 100.0 * self.value


def monotone_curve(rates: Sequence[float], qualities: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Points with finite positive rate and finite quality, sorted by rate, quality strictly increasing."""
    pairs = [
        (float(r), float(q))
        for r, q in zip(rates, qualities, strict=True)
        if r is not None and q is not None and math.isfinite(r) and r > 0 and math.isfinite(q)
    ]
    pairs.sort(key=lambda p: (p[0], -p[1]))
    kept: list[tuple[float, float]] = []
    for rate, quality in pairs:
        if kept and (rate <= kept[-1][0] or quality <= kept[-1][1]):
            continue
        kept.append((rate, quality))
    return np.array([p[0] for p in kept]), np.array([p[1] for p in kept])


def pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Derivatives at the knots of the Fritsch-Carlson monotone cubic through (x, y), x increasing."""
    h = np.diff(x)
    delta = np.diff(y) / h
    n = len(x)
    slopes = np.zeros(n)
    if n == 2:
        slopes[:] = delta[0]
        return slopes
    for k in range(1, n - 1):
        d0, d1 = delta[k - 1], delta[k]
        if d0 * d1 > 0:  # same sign, both non-zero: weighted harmonic mean
            w1 = 2.0 * h[k] + h[k - 1]
            w2 = h[k] + 2.0 * h[k - 1]
            slopes[k] = (w1 + w2) / (w1 / d0 + w2 / d1)
    slopes[0] = _end_slope(h[0], h[1], delta[0], delta[1])
    slopes[-1] = _end_slope(h[-1], h[-2], delta[-1], delta[-2])
    return slopes


def _end_slope(h0: float, h1: float, d0: float, d1: float) -> float:
    """One-sided three-point slope at an end, limited so the end segment stays monotone."""
    m = ((2.0 * h0 + h1) * d0 - h0 * d1) / (h0 + h1)
    if np.sign(m) != np.sign(d0):
        return 0.0
    if np.sign(d0) != np.sign(d1) and abs(m) > abs(3.0 * d0):
        return 3.0 * d0
    return float(m)


def pchip_eval(x: np.ndarray, y: np.ndarray, at: float) -> float:
    """Value of the PCHIP interpolant through (x, y) at ``at`` (x[0] <= at <= x[-1])."""
    slopes = pchip_slopes(x, y)
    k = int(np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2))
    c0, c1, c2, c3 = _segment(x, y, slopes, k)
    t = at - x[k]
    return float(c0 + t * (c1 + t * (c2 + t * c3)))


def _segment(x: np.ndarray, y: np.ndarray, m: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Coefficients of y(x[k] + t) = c0 + c1 t + c2 t^2 + c3 t^3 on segment k."""
    h = x[k + 1] - x[k]
    d = (y[k + 1] - y[k]) / h
    return y[k], m[k], (3.0 * d - 2.0 * m[k] - m[k + 1]) / h, (m[k] + m[k + 1] - 2.0 * d) / (h * h)


def pchip_integral(x: np.ndarray, y: np.ndarray, lo: float, hi: float) -> float:
    """Exact integral of the PCHIP interpolant through (x, y) over [lo, hi] inside [x[0], x[-1]]."""
    slopes = pchip_slopes(x, y)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        c0, c1, c2, c3 = _segment(x, y, slopes, k)

        def antiderivative(t: float, c0=c0, c1=c1, c2=c2, c3=c3) -> float:
            return t * (c0 + t * (c1 / 2.0 + t * (c2 / 3.0 + t * c3 / 4.0)))

        total += antiderivative(b - x[k]) - antiderivative(a - x[k])
    return total


def bd_rate(
    anchor_rates: Sequence[float],
    anchor_quality: Sequence[float],
    test_rates: Sequence[float],
    test_quality: Sequence[float],
) -> BDResult:
    """BD-rate of the test curve against the anchor (quality: higher is better, e.g. PSNR in dB)."""
    ra, qa = monotone_curve(anchor_rates, anchor_quality)
    rt, qt = monotone_curve(test_rates, test_quality)
    if len(ra) < 2:
        return BDResult(math.nan, f"the anchor has {len(ra)} usable point(s), needs 2")
    if len(rt) < 1:
        return BDResult(math.nan, "the test curve has no usable point")
    la, lt = np.log(ra), np.log(rt)
    if len(rt) == 1:
        q = float(qt[0])
        if not qa[0] <= q <= qa[-1]:
            return BDResult(
                math.nan, f"quality {q:.4g} is outside the anchor's range [{qa[0]:.4g}, {qa[-1]:.4g}]"
            )
        return BDResult(math.expm1(float(lt[0]) - pchip_eval(qa, la, q)), None, (q, q))
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if hi <= lo:
        return BDResult(
            math.nan,
            f"no overlap in quality: anchor [{qa[0]:.4g}, {qa[-1]:.4g}], test [{qt[0]:.4g}, {qt[-1]:.4g}]",
        )
    mean_diff = (pchip_integral(qt, lt, lo, hi) - pchip_integral(qa, la, lo, hi)) / (hi - lo)
    return BDResult(math.expm1(mean_diff), None, (float(lo), float(hi)))


def summarize(results: Sequence[BDResult]) -> dict[str, float | int | None]:
    """Mean and median of the valid per-image BD-rates (fractions), with counts."""
    values = [r.value for r in results if r.valid]
    return {
        "mean": float(np.mean(values)) if values else None,
        "median": float(np.median(values)) if values else None,
        "n_valid": len(values),
        "n": len(results),
    }
