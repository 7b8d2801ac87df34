"""Integer-exact context models: each coding group's mean and scale from the groups decoded before it.

The float layers are hificli.models.context; here they run on integers held in float64 (the
arithmetic and the exactness argument of hificli.entropy.exact):

* inputs at ``ACT_FRAC`` fractional bits, clamped to ``|v| <= ACT_MAX``: the dequantized latents of the
  groups already decoded, ``mu_fixed + symbol * step_fixed`` (zero where not decoded and outside the
  grid), and the group's hyperprior ``mu_fixed`` and ``max(scale_fixed, SCALE_MIN_FIXED)``, each
  requantized from ``OUT_FRAC`` bits;
* the context convolution only at the group's positions, as one matrix product with the im2col columns
  of its taps;
  then the three 1x1 layers (ReLU and clamp to ``[0, ACT_MAX]`` after the first two), the last
  requantized to ``OUT_FRAC`` bits and clamped to ``|v| <= OUT_MAX``;
* ``mu' = mu_fixed + d_mu``, ``scale' = max(scale_fixed, SCALE_MIN_FIXED) + d_scale`` (int64).

Every partial sum is bounded at construction (``check_exact_bound``), so the result does not depend on
summation order, threads or BLAS. Rows are processed in bands (each with the kernel's radius of rows
around it) to bound memory; every output sees its whole receptive field, so the bands are bit-identical
to one pass.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
from hificli.entropy.groups import coding_groups, split_mask
from hificli.entropy.rate import STEP_FRAC
from hificli.entropy.tables import SCALE_MIN_FIXED
from hificli.models.context import KERNEL, RADIUS

#: Bytes of im2col columns one band may hold (a band is at least one latent row).
BAND_BYTES = 48 << 20
_IN_SHIFT = OUT_FRAC - ACT_FRAC  # fixed-point inputs (OUT_FRAC bits) -> ACT_FRAC bits

assert STEP_FRAC == OUT_FRAC, "latents are mu_fixed + symbol * step_fixed: both need the same fraction"


# -- exact networks ------------------------------------------------------------------------------------


def _matrix(conv: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight (out, in) integers, bias (out, 1) integers at the accumulator's scale) of a 1x1
    convolution whose inputs have ACT_FRAC fractional bits; refuses weights that could break exactness."""
    weight = to_int(conv.weight.detach().to("cpu")[:, :, 0, 0], W_FRAC, f"{name}.weight").contiguous()
    bias = to_int(conv.bias.detach().to("cpu"), W_FRAC + ACT_FRAC, f"{name}.bias")
    check_exact_bound(name, weight.abs().sum(dim=1).max().item(), ACT_MAX, bias)
    return weight, bias[:, None]


class ExactContextNet:
    """A :class:`~hificli.models.context.ContextNet` in exact integers. Features are (channels, P): the
    context convolution is one matrix product with the im2col columns (``F.unfold``) of its taps."""

    def __init__(self, net: Any, name: str) -> None:
        weight = net.context_conv.weight.detach().to("cpu")  # (K, C_in, k, k)
        self.taps = tuple(net.taps)
        self.in_channels = int(weight.shape[1])
        self.channels = int(net.channels)
        # unfold's rows are channel-major, then the kernel taps in raster order
        raster = [(dr + RADIUS) * KERNEL + (dc + RADIUS) for dr, dc in self.taps]
        self.rows = None if raster == list(range(KERNEL * KERNEL)) else torch.tensor(
            [c * KERNEL * KERNEL + t for c in range(self.in_channels) for t in raster])
        taps = weight.reshape(weight.shape[0], self.in_channels, KERNEL * KERNEL)[:, :, raster]
        self.context_weight = to_int(taps, W_FRAC, f"{name}.context_conv.weight").reshape(weight.shape[0], -1)
        bias = to_int(net.context_conv.bias.detach().to("cpu"), W_FRAC + ACT_FRAC, f"{name}.context_conv.bias")
        check_exact_bound(f"{name}.context_conv", self.context_weight.abs().sum(dim=1).max().item(), ACT_MAX, bias)
        self.context_bias = bias[:, None]
        self.layers = [_matrix(getattr(net, f"param_conv{i}"), f"{name}.param_conv{i}") for i in (1, 2, 3)]
        if self.layers[-1][0].shape[0] != 2 * self.channels:
            raise ValueError(f"{name}.param_conv3 must output 2 x {self.channels} channels")

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

    def _band(
        self, known: np.ndarray, mu: np.ndarray, scale: np.ndarray, outputs: np.ndarray | None, r0: int, r1: int,
    ) -> np.ndarray:
        c_in, h, w = known.shape
        lo, hi = max(0, r0 - RADIUS), min(h, r1 + RADIUS)
        padded = torch.zeros((1, c_in, r1 - r0 + 2 * RADIUS, w + 2 * RADIUS), dtype=torch.float64)
        padded[0, :, lo - r0 + RADIUS : hi - r0 + RADIUS, RADIUS : RADIUS + w] = torch.from_numpy(known[:, lo:hi])
        columns = F.unfold(padded, KERNEL)[0]  # (C_in * 25, band positions), exact copies
        del padded
        if self.rows is not None:
            columns = columns[self.rows]
        select = None if outputs is None else torch.from_numpy(np.flatnonzero(outputs[r0:r1]))
        if select is not None:
            columns = columns[:, select]
        ctx = requantize(self.context_weight @ columns + self.context_bias, W_FRAC).clamp_(-ACT_MAX, ACT_MAX)
        del columns
        band_mu = torch.from_numpy(mu[:, r0:r1].reshape(mu.shape[0], -1))
        band_scale = torch.from_numpy(scale[:, r0:r1].reshape(scale.shape[0], -1))
        if select is not None:
            band_mu, band_scale = band_mu[:, select], band_scale[:, select]
        hidden = torch.cat([ctx, band_mu, band_scale], dim=0)
        for i, (weight, bias) in enumerate(self.layers):
            acc = weight @ hidden + bias
            if i < len(self.layers) - 1:
                hidden = requantize(acc, W_FRAC).clamp_(0.0, float(ACT_MAX))
            else:
                hidden = requantize(acc, W_FRAC + ACT_FRAC - OUT_FRAC).clamp_(-float(OUT_MAX), float(OUT_MAX))
        return hidden.to(torch.int64).numpy()


class ExactContext:
    """The context of a model (``network.Context``, kind ``kind``) in exact integers: coding groups in
    order and each group's parameters from the latents decoded before it."""

    def __init__(self, context: Any, kind: str, latent_channels: int, band_bytes: int = BAND_BYTES) -> None:
        self.kind = kind
        self.groups = coding_groups(kind, latent_channels)
        if kind == "checkerboard":
            self.nets: list[ExactContextNet | None] = [None, ExactContextNet(context, "Context")]
        elif kind == "channel":
            self.nets = [None] + [ExactContextNet(net, f"Context.nets.{i}") for i, net in enumerate(context.nets)]
        else:
            raise ValueError(f"unknown context {kind!r}")
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
