"""Integer rate parameters of variable-rate models: quality -> per-channel quantization steps.

A variable-rate model stores ``L`` rate levels, each a vector of per-latent-channel quantization
steps in fixed point (``STEP_FRAC`` fractional bits; level 0 = the coarsest steps, lowest quality).
A file records its quality as an integer code ``q = round(quality * QUALITY_SCALE)`` in
``0 .. QUALITY_CODE_MAX``. The steps a quality uses are the linear interpolation between the two
neighbouring levels, in integers only::

    pos = q * (L - 1);  l = min(pos // QUALITY_CODE_MAX, L - 2);  a = pos - l * QUALITY_CODE_MAX
    step = (step_l * (QUALITY_CODE_MAX - a) + step_{l+1} * a + QUALITY_CODE_MAX // 2) // QUALITY_CODE_MAX

With steps ``d`` the latent symbol is ``round((y - mu) / d)``, the reconstruction ``mu + s * d``, and
the table row is chosen by ``sigma / d``: ``floor(max(sigma_fixed, SCALE_MIN_FIXED) * 2**STEP_FRAC /
step)``. Every quantity that decides how bits are parsed is an integer, so decoders agree everywhere.
numpy only (no torch): ``hific info`` may import it.
"""

from __future__ import annotations

import numpy as np

from hificli.container import MAX_QUALITY_CODE as QUALITY_CODE_MAX
from hificli.container import QUALITY_SCALE

STEP_FRAC = 16  #: fractional bits of fixed-point quantization steps
STEP_MIN_FIXED = 1 << (STEP_FRAC - 6)  #: steps are at least 1/64 ...
STEP_MAX_FIXED = 1 << (STEP_FRAC + 8)  #: ... and at most 256
MAX_RATE_LEVELS = 64
#: Quality used when none is asked for: the middle level, the fixed-rate model's operating point the
#: variable-rate default was trained from (E15 photos average about 0.3 bpp there).
DEFAULT_QUALITY = 50.0


def quality_code(quality: float) -> int:
    """The integer a header stores for ``quality`` (0-100; ValueError outside)."""
    if not 0.0 <= float(quality) <= 100.0:
        raise ValueError(f"quality must be in 0-100, got {quality}")
    return int(round(float(quality) * QUALITY_SCALE))


def check_levels(levels_fixed: np.ndarray, channels: int | None = None) -> np.ndarray:
    """Validate an (L, C) integer level table (L >= 2, steps within bounds, non-increasing in the
    level per channel, so higher quality never means coarser steps); returns it as int64."""
    levels = np.asarray(levels_fixed)
    if levels.dtype.kind not in "iu" or levels.ndim != 2:
        raise ValueError(f"rate levels must be a 2-D integer array, got {levels.dtype} {levels.shape}")
    if not 2 <= levels.shape[0] <= MAX_RATE_LEVELS:
        raise ValueError(f"rate levels: need 2-{MAX_RATE_LEVELS} levels, got {levels.shape[0]}")
    if channels is not None and levels.shape[1] != channels:
        raise ValueError(f"rate levels have {levels.shape[1]} channels, the model {channels}")
    levels = levels.astype(np.int64)
    if levels.min() < STEP_MIN_FIXED or levels.max() > STEP_MAX_FIXED:
        raise ValueError("rate level steps must lie in [1/64, 256]")
    if np.any(np.diff(levels, axis=0) > 0):
        raise ValueError("rate level steps must not grow with the level (quality)")
    return levels


def steps_at(levels_fixed: np.ndarray, code: int) -> np.ndarray:
    """Per-channel fixed-point steps (int64, (C,)) for quality code ``code`` (integer arithmetic)."""
    if not 0 <= code <= QUALITY_CODE_MAX:
        raise ValueError(f"quality code must be in 0..{QUALITY_CODE_MAX}, got {code}")
    levels = np.asarray(levels_fixed, dtype=np.int64)
    n = levels.shape[0]
    pos = int(code) * (n - 1)
    lo = min(pos // QUALITY_CODE_MAX, n - 2)
    a = pos - lo * QUALITY_CODE_MAX
    mixed = levels[lo] * (QUALITY_CODE_MAX - a) + levels[lo + 1] * a + QUALITY_CODE_MAX // 2
    return mixed // QUALITY_CODE_MAX


def scale_on_steps(scale_fixed: np.ndarray, steps_fixed: np.ndarray, scale_min_fixed: int) -> np.ndarray:
    """``sigma / step`` in fixed point: ``floor(max(sigma, min) * 2**STEP_FRAC / step)`` (int64).

    ``steps_fixed`` must broadcast against ``scale_fixed`` (e.g. (1, C, 1, 1) for (1, C, H, W)).
    """
    s = np.maximum(np.asarray(scale_fixed, dtype=np.int64), scale_min_fixed)
    return (s << STEP_FRAC) // np.asarray(steps_fixed, dtype=np.int64)
