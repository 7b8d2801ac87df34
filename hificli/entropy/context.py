"""Integer-exact context models: each coding group's mean and scale from the groups decoded before it.

The float layers are hificli.models.context; here they run on integers held in float64 numpy arrays
(no torch; the arithmetic and the exactness argument of hificli.entropy.exact), built from a weights
file's arrays with the nets and taps of hificli.models.geometry.context_nets:

* inputs at ``ACT_FRAC`` fractional bits, clamped to ``|v| <= ACT_MAX``: the dequantized latents of the
  groups already decoded, ``mu_fixed + symbol * step_fixed`` (zero where not decoded and outside the
  grid), and the group's hyperprior ``mu_fixed`` and ``max(scale_fixed, SCALE_MIN_FIXED)``, each
  requantized from ``OUT_FRAC`` bits;
* the context convolution only at the group's positions, as one matrix product with the im2col columns
  of its taps (gathered tap by tap: exact copies);
  then the three 1x1 layers (ReLU and clamp to ``[0, ACT_MAX]`` after the first two), the last
  requantized to ``OUT_FRAC`` bits and clamped to ``|v| <= OUT_MAX``;
* ``mu' = mu_fixed + d_mu``, ``scale' = max(scale_fixed, SCALE_MIN_FIXED) + d_scale`` (int64).

Every partial sum is bounded at construction (``check_exact_bound``), so the result does not depend on
summation order, threads or BLAS. Rows are processed in bands (each with the kernel's radius of rows
around it) to bound memory; every output sees its whole receptive field, so the bands are bit-identical
to one pass.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hificli.entropy.exact import (
    ACT_FRAC,
    ACT_MAX,
    OUT_FRAC,
    OUT_MAX,
    W_FRAC,
    check_exact_bound,
    requantize,
    sub_state,
    to_int,
)
from hificli.entropy.groups import coding_groups, split_mask
from hificli.entropy.rate import STEP_FRAC
from hificli.entropy.tables import SCALE_MIN_FIXED
from hificli.models.geometry import KERNEL, RADIUS, ContextNetSpec, context_nets

#: Bytes of im2col columns one band may hold (a band is at least one latent row).
BAND_BYTES = 48 << 20
_IN_SHIFT = OUT_FRAC - ACT_FRAC  # fixed-point inputs (OUT_FRAC bits) -> ACT_FRAC bits

assert STEP_FRAC == OUT_FRAC, "latents are mu_fixed + symbol * step_fixed: both need the same fraction"


# -- exact networks ------------------------------------------------------------------------------------


def _conv(state: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], name: str,
          ) -> tuple[np.ndarray, np.ndarray]:
    """(weight, bias) of the convolution ``key`` in ``state``, checked against ``shape`` (out, in, k, k)."""
    try:
        weight, bias = np.asarray(state[f"{key}.weight"]), np.asarray(state[f"{key}.bias"])
    except KeyError:
        raise ValueError(f"{name}.{key} is missing") from None
    if weight.shape != shape or bias.shape != shape[:1]:
        raise ValueError(f"{name}.{key} has shape {weight.shape}, expected {shape}")
    return weight, bias


def _matrix(state: Mapping[str, np.ndarray], key: str, shape: tuple[int, int], name: str,
            ) -> tuple[np.ndarray, np.ndarray]:
    """(weight (out, in) integers, bias (out, 1) integers at the accumulator's scale) of a 1x1
    convolution whose inputs have ACT_FRAC fractional bits; refuses weights that could break exactness."""
    weight, bias = _conv(state, key, (*shape, 1, 1), name)
    weight = to_int(weight[:, :, 0, 0], W_FRAC, f"{name}.{key}.weight")
    bias = to_int(bias, W_FRAC + ACT_FRAC, f"{name}.{key}.bias")
    check_exact_bound(f"{name}.{key}", float(np.abs(weight).sum(axis=1).max()), ACT_MAX, bias)
    return weight, bias[:, None]


class ExactContextNet:
    """A :class:`~hificli.models.context.ContextNet` in exact integers, from its state (numpy arrays:
    ``context_conv.weight``, ...) and its geometry ``spec``. Features are (channels, P): the context
    convolution is one matrix product with the im2col columns of its taps."""

    def __init__(self, state: Mapping[str, np.ndarray], spec: ContextNetSpec, width: int, name: str) -> None:
        self.taps = spec.taps
        self.in_channels, self.channels = spec.in_channels, spec.channels
        weight, bias = _conv(state, "context_conv", (width, self.in_channels, KERNEL, KERNEL), name)
        raster = [(dr + RADIUS) * KERNEL + (dc + RADIUS) for dr, dc in self.taps]
        taps = weight.reshape(width, self.in_channels, KERNEL * KERNEL)[:, :, raster]  # rows: channel, then tap
        self.context_weight = to_int(taps, W_FRAC, f"{name}.context_conv.weight").reshape(width, -1)
        bias = to_int(bias, W_FRAC + ACT_FRAC, f"{name}.context_conv.bias")
        check_exact_bound(f"{name}.context_conv", float(np.abs(self.context_weight).sum(axis=1).max()), ACT_MAX,
                          bias)
        self.context_bias = bias[:, None]
        shapes = [(width, width + 2 * self.channels), (width, width), (2 * self.channels, width)]
        self.layers = [_matrix(state, f"param_conv{i}", shape, name) for i, shape in enumerate(shapes, 1)]

    def deltas(
        self, known: np.ndarray, mu: np.ndarray, scale: np.ndarray, outputs: np.ndarray | None, band_bytes: int,
    ) -> np.ndarray:
        """Integer corrections (2c, P) of (mu, scale) at the P output positions (``outputs``: bool (h, w),
        raster order; None: all). known (C_in, h, w), mu, scale (c, h, w): ACT_FRAC integers (float64)."""
        _, h, w = known.shape
        per_row = w * KERNEL * KERNEL * self.in_channels * 8 * 2
        rows = max(1, band_bytes // per_row)
        parts = [self._band(known, mu, scale, outputs, r0, min(h, r0 + rows)) for r0 in range(0, h, rows)]
        return np.concatenate(parts, axis=1)

    def _columns(self, known: np.ndarray, r0: int, r1: int, select: np.ndarray | None) -> np.ndarray:
        """im2col columns (C_in * taps, positions) of rows [r0, r1), zero outside the grid; ``select``: the
        band's output positions (flat indexes), None for all."""
        c_in, h, w = known.shape
        lo, hi = max(0, r0 - RADIUS), min(h, r1 + RADIUS)
        padded = np.zeros((c_in, r1 - r0 + 2 * RADIUS, w + 2 * RADIUS))
        padded[:, lo - r0 + RADIUS : hi - r0 + RADIUS, RADIUS : RADIUS + w] = known[:, lo:hi]
        count = (r1 - r0) * w if select is None else select.size
        columns = np.empty((c_in, len(self.taps), count))
        for t, (dr, dc) in enumerate(self.taps):
            window = padded[:, RADIUS + dr : RADIUS + dr + r1 - r0, RADIUS + dc : RADIUS + dc + w].reshape(c_in, -1)
            columns[:, t] = window if select is None else window[:, select]
        return columns.reshape(c_in * len(self.taps), count)

    def _band(
        self, known: np.ndarray, mu: np.ndarray, scale: np.ndarray, outputs: np.ndarray | None, r0: int, r1: int,
    ) -> np.ndarray:
        select = None if outputs is None else np.flatnonzero(outputs[r0:r1])
        columns = self._columns(known, r0, r1, select)
        ctx = np.clip(requantize(self.context_weight @ columns + self.context_bias, W_FRAC), -ACT_MAX, ACT_MAX)
        del columns
        band_mu = mu[:, r0:r1].reshape(mu.shape[0], -1)
        band_scale = scale[:, r0:r1].reshape(scale.shape[0], -1)
        if select is not None:
            band_mu, band_scale = band_mu[:, select], band_scale[:, select]
        hidden = np.concatenate([ctx, band_mu, band_scale], axis=0)
        for i, (weight, bias) in enumerate(self.layers):
            acc = weight @ hidden + bias
            if i < len(self.layers) - 1:
                hidden = np.clip(requantize(acc, W_FRAC), 0.0, float(ACT_MAX))
            else:
                hidden = np.clip(requantize(acc, W_FRAC + ACT_FRAC - OUT_FRAC), -float(OUT_MAX), float(OUT_MAX))
        return hidden.astype(np.int64)


class ExactContext:
    """The context of a model (kind ``kind``, width ``width``) in exact integers, from a weights file's
    arrays (``Context.*``): coding groups in order and each group's parameters from the latents decoded
    before it."""

    def __init__(self, arrays: Mapping[str, np.ndarray], kind: str, latent_channels: int, width: int,
                 band_bytes: int = BAND_BYTES) -> None:
        if kind not in ("checkerboard", "channel"):
            raise ValueError(f"unknown context {kind!r}")
        self.kind = kind
        self.groups = coding_groups(kind, latent_channels)
        self.nets = [None if spec is None else
                     ExactContextNet(sub_state(arrays, spec.prefix), spec, width, spec.prefix.rstrip("."))
                     for spec in context_nets(kind, latent_channels)]
        self.band_bytes = band_bytes

    def group_parameters(
        self, index: int, decoded: np.ndarray, mu_fixed: np.ndarray, scale_fixed: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(mu_fixed, scale_fixed) int64 of group ``index``'s elements (its stream's shape).

        decoded: (C, h, w) int64 dequantized latents ``mu' + symbol * step`` (OUT_FRAC bits), filled for
        the groups before ``index``; mu_fixed, scale_fixed (C, h, w): the hyperprior's."""
        group = self.groups[index]
        mu = np.asarray(mu_fixed[group.lo : group.hi], dtype=np.int64)
        scale = np.maximum(np.asarray(scale_fixed[group.lo : group.hi], dtype=np.int64), SCALE_MIN_FIXED)
        net = self.nets[index]
        if net is None:
            return group.at_positions(mu), group.at_positions(scale)
        _, h, w = decoded.shape
        if self.kind == "checkerboard":
            anchors = split_mask(h, w)
            known, outputs = np.where(anchors, decoded, 0), ~anchors
        else:
            known, outputs = decoded[: group.lo], None
        delta = net.deltas(_to_act(known), _to_act(mu), _to_act(scale), outputs, self.band_bytes)
        c = group.hi - group.lo
        shape = group.shape(h, w)
        return (group.at_positions(mu) + delta[:c].reshape(shape),
                group.at_positions(scale) + delta[c:].reshape(shape))


def _to_act(fixed: np.ndarray) -> np.ndarray:
    """OUT_FRAC fixed point (int64) -> ACT_FRAC bits (round half up), clamped to |v| <= ACT_MAX, float64."""
    shifted = (np.asarray(fixed, dtype=np.int64) + (1 << (_IN_SHIFT - 1))) >> _IN_SHIFT
    return np.clip(shifted, -ACT_MAX, ACT_MAX).astype(np.float64)
