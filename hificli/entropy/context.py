"""Integer-exact checkerboard context: the non-anchors' mean and scale from the decoded anchors.

The float layers are hificli.models.context.CheckerboardContext; here they run on integers held in
float64 (the arithmetic and the exactness argument of hificli.entropy.exact):

* inputs at ``ACT_FRAC`` fractional bits, clamped to ``|v| <= ACT_MAX``: the dequantized anchors
  ``mu_fixed + symbol * step_fixed`` (zero at non-anchors and outside the grid), the hyperprior's
  ``mu_fixed`` and ``max(scale_fixed, SCALE_MIN_FIXED)``, each requantized from ``OUT_FRAC`` bits;
* the context convolution only at non-anchor positions, as one matrix product over the 12 anchor
  taps (im2col); then the three 1x1 layers (ReLU and clamp to ``[0, ACT_MAX]`` after the first two),
  the last requantized to ``OUT_FRAC`` bits and clamped to ``|v| <= OUT_MAX``;
* ``mu' = mu_fixed + d_mu``, ``scale' = max(scale_fixed, SCALE_MIN_FIXED) + d_scale`` (int64).

Every partial sum is bounded at construction (``check_exact_bound``), so the result does not depend on
summation order, threads or BLAS. Rows are processed in bands (each with the kernel's radius of anchor
rows around it) to bound memory; every output sees its whole receptive field, so the bands are
bit-identical to one pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from hificli.entropy.exact import (
    ACT_FRAC,
    ACT_MAX,
    OUT_FRAC,
    OUT_MAX,
    W_FRAC,
    check_exact_bound,
    requantize,
    to_int,
)
from hificli.entropy.rate import STEP_FRAC
from hificli.entropy.tables import SCALE_MIN_FIXED
from hificli.models.context import ANCHOR_TAPS, RADIUS

#: Bytes of im2col columns one band may hold (a band is at least one latent row).
BAND_BYTES = 48 << 20
_IN_SHIFT = OUT_FRAC - ACT_FRAC  # fixed-point inputs (OUT_FRAC bits) -> ACT_FRAC bits

assert STEP_FRAC == OUT_FRAC, "anchors are mu_fixed + symbol * step_fixed: both need the same fraction"


def split_anchors(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., h, w) array, w even -> (anchors, non-anchors), each (..., h, w / 2) in raster order."""
    pairs = values.reshape(*values.shape[:-1], values.shape[-1] // 2, 2)
    even_rows = (np.arange(values.shape[-2]) % 2 == 0)[:, None]
    return np.where(even_rows, pairs[..., 0], pairs[..., 1]), np.where(even_rows, pairs[..., 1], pairs[..., 0])


def merge_anchors(anchors: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Inverse of :func:`split_anchors`."""
    even_rows = (np.arange(anchors.shape[-2]) % 2 == 0)[:, None]
    first = np.where(even_rows, anchors, others)
    second = np.where(even_rows, others, anchors)
    return np.stack([first, second], axis=-1).reshape(*anchors.shape[:-1], anchors.shape[-1] * 2)


def _matrix(conv: Any, name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weight (in, out) integers, bias (out,) integers at the accumulator's scale, per-output sum |w|)
    of a 1x1 convolution whose inputs have ACT_FRAC fractional bits."""
    weight = to_int(conv.weight.detach().to("cpu")[:, :, 0, 0], W_FRAC, f"{name}.weight").t().contiguous()
    bias = to_int(conv.bias.detach().to("cpu"), W_FRAC + ACT_FRAC, f"{name}.bias")
    return weight, bias, weight.abs().sum(dim=0)


class ExactCheckerboard:
    """The context networks of a :class:`~hificli.models.context.CheckerboardContext` in exact integers."""

    def __init__(self, context: Any, band_bytes: int = BAND_BYTES) -> None:
        weight = context.context_conv.weight.detach().to("cpu")  # (K, C, k, k)
        self.channels = int(weight.shape[1])
        taps = torch.stack([weight[:, :, dr + RADIUS, dc + RADIUS] for dr, dc in ANCHOR_TAPS])  # (T, K, C)
        taps = to_int(taps, W_FRAC, "context_conv.weight")
        self.context_weight = taps.permute(0, 2, 1).reshape(len(ANCHOR_TAPS) * self.channels, -1).contiguous()
        self.context_bias = to_int(context.context_conv.bias.detach().to("cpu"), W_FRAC + ACT_FRAC,
                                   "context_conv.bias")
        check_exact_bound("context_conv", self.context_weight.abs().sum(dim=0).max().item(), ACT_MAX,
                          self.context_bias)
        self.layers = []
        for name in ("param_conv1", "param_conv2", "param_conv3"):
            w, b, sums = _matrix(getattr(context, name), name)
            check_exact_bound(name, sums.max().item(), ACT_MAX, b)
            self.layers.append((w, b))
        if self.layers[-1][0].shape[1] != 2 * self.channels:
            raise ValueError("param_conv3 must output 2 x latent channels (mean and scale corrections)")
        self.band_bytes = band_bytes

    def parameters(
        self, mu_fixed: np.ndarray, scale_fixed: np.ndarray, anchor_symbols: np.ndarray,
        steps_fixed: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mu_fixed, scale_fixed) int64 (1, C, h, w) of every latent: the hyperprior's at anchors, the
        context's at non-anchors. ``anchor_symbols`` (1, C, h, w) integers (read at anchors only);
        ``steps_fixed`` (C,) for a variable-rate model, None for unit steps."""
        mu = np.asarray(mu_fixed, dtype=np.int64)
        scale = np.maximum(np.asarray(scale_fixed, dtype=np.int64), SCALE_MIN_FIXED)
        _, c, h, w = mu.shape
        if c != self.channels or w % 2 or h < 1:
            raise ValueError(f"latents must be (1, {self.channels}, h, even w), got {mu.shape}")
        symbols = np.asarray(anchor_symbols, dtype=np.int64)
        steps = (np.int64(1) << OUT_FRAC) if steps_fixed is None else np.asarray(steps_fixed, np.int64)[:, None, None]
        anchors = mu[0] + symbols[0] * steps
        anchors[:, split_mask(h, w) == 0] = 0
        anchors_act = _to_act(anchors)
        mu_out, scale_out = mu.copy(), scale.copy()
        per_row = max(1, w // 2) * len(ANCHOR_TAPS) * c * 8 * 2
        rows = max(1, self.band_bytes // per_row)
        for r0 in range(0, h, rows):
            self._band(anchors_act, mu[0], scale[0], mu_out[0], scale_out[0], r0, min(h, r0 + rows))
        return mu_out, scale_out

    def _band(
        self, anchors_act: np.ndarray, mu: np.ndarray, scale: np.ndarray, mu_out: np.ndarray,
        scale_out: np.ndarray, r0: int, r1: int,
    ) -> None:
        """Non-anchor outputs of latent rows [r0, r1) (written into mu_out / scale_out)."""
        c, h, w = anchors_act.shape
        lo, hi = max(0, r0 - RADIUS), min(h, r1 + RADIUS)
        padded = np.zeros((c, r1 - r0 + 2 * RADIUS, w + 2 * RADIUS), dtype=np.float64)
        padded[:, lo - r0 + RADIUS : hi - r0 + RADIUS, RADIUS : RADIUS + w] = anchors_act[:, lo:hi]
        rr, cc = np.nonzero(split_mask(r1 - r0, w, row0=r0) == 0)  # non-anchors of the band (local rows)
        columns = np.stack([padded[:, rr + RADIUS + dr, cc + RADIUS + dc] for dr, dc in ANCHOR_TAPS])
        x = torch.from_numpy(columns.transpose(2, 0, 1).reshape(rr.size, -1))  # (P, T * C)
        ctx = requantize(x @ self.context_weight + self.context_bias, W_FRAC).clamp_(-ACT_MAX, ACT_MAX)
        rows = rr + r0
        mu_in = torch.from_numpy(_to_act(mu[:, rows, cc]).T)
        scale_in = torch.from_numpy(_to_act(scale[:, rows, cc]).T)
        hidden = torch.cat([ctx, mu_in, scale_in], dim=1)
        for i, (weight, bias) in enumerate(self.layers):
            acc = hidden @ weight + bias
            if i < len(self.layers) - 1:
                hidden = requantize(acc, W_FRAC).clamp_(0.0, float(ACT_MAX))
            else:
                hidden = requantize(acc, W_FRAC + ACT_FRAC - OUT_FRAC).clamp_(-float(OUT_MAX), float(OUT_MAX))
        delta = hidden.to(torch.int64).numpy().T  # (2C, P)
        mu_out[:, rows, cc] = mu[:, rows, cc] + delta[:c]
        scale_out[:, rows, cc] = scale[:, rows, cc] + delta[c:]


def split_mask(height: int, width: int, *, row0: int = 0) -> np.ndarray:
    """uint8 (height, width): 1 at anchors (``(row + col)`` even, rows counted from ``row0``), else 0."""
    rows = np.arange(row0, row0 + height)[:, None]
    return ((rows + np.arange(width)[None, :]) % 2 == 0).astype(np.uint8)


def _to_act(fixed: np.ndarray) -> np.ndarray:
    """OUT_FRAC fixed point (int64) -> ACT_FRAC bits (round half up), clamped to |v| <= ACT_MAX, float64."""
    shifted = (np.asarray(fixed, dtype=np.int64) + (1 << (_IN_SHIFT - 1))) >> _IN_SHIFT
    return np.clip(shifted, -ACT_MAX, ACT_MAX).astype(np.float64)
