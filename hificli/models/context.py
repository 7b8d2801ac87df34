"""Context models on top of the mean-scale hyperprior: latents coded in groups, each group's mean and
scale corrected from the groups decoded before it.

Two kinds (``ArchConfig.context``):

* ``"checkerboard"`` (He et al., CVPR 2021): two groups over all channels. *Anchors*, the positions
  with ``(row + col)`` even (global latent coordinates), use the hyperprior's mean and scale; the other
  positions are corrected from the decoded anchors around them (the 12 taps of a 5x5 kernel with
  ``dr + dc`` odd).
* ``"channel"`` (channel-conditional, Minnen & Singh 2020): :data:`SLICES` groups of consecutive
  channels over all positions. Slice 0 uses the hyperprior's parameters; slice k is corrected from the
  decoded slices 0..k-1 (all 25 taps of a 5x5 kernel).

Each correction is one :class:`ContextNet`::

    ctx   = conv5x5(known)                       # the decoded groups (zero elsewhere)
    delta = conv1x1(relu(conv1x1(relu(conv1x1([ctx, mu, scale])))))
    mu'   = mu + delta[:c];   scale' = max(scale + delta[c:], SCALE_MIN)

over the group's ``c`` channels, where ``mu`` and ``scale`` are the hyperprior's (scale lower-bounded)
and ``known`` holds dequantized latents ``mu' + step * symbol``. The last layer starts at zero, so a
model gaining a context starts as the model it was. The integer decoder (hificli.entropy.context)
evaluates the same layers in exact integer arithmetic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from hificli.entropy.groups import SLICES, slice_bounds
from hificli.layers import lower_bound
from hificli.models.geometry import ANCHOR_TAPS, KERNEL, RADIUS, context_nets
from hificli.models.likelihoods import SCALE_MIN

#: ``rounding(y / step, mu / step)``: the quantizer the context sees (hard, or straight-through in training).
Rounding = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def anchor_mask(height: int, width: int, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool (height, width): True at anchors, where ``(row + col)`` is even."""
    rows = torch.arange(height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return (rows + cols) % 2 == 0


def tap_mask(taps: tuple[tuple[int, int], ...], device: torch.device | str | None = None) -> torch.Tensor:
    """Float (KERNEL, KERNEL): 1 at ``taps``, 0 elsewhere."""
    mask = torch.zeros(KERNEL, KERNEL, device=device)
    for dr, dc in taps:
        mask[dr + RADIUS, dc + RADIUS] = 1.0
    return mask


class ContextNet(nn.Module):
    """One group's correction: ``known`` (N, in, h, w) and the group's (mu, scale) (N, c, h, w) ->
    (mu', scale'). Attribute names are what the integer decoder reads."""

    def __init__(self, in_channels: int, channels: int, width: int, taps: tuple[tuple[int, int], ...]) -> None:
        super().__init__()
        self.taps = taps
        self.channels = channels
        self.context_conv = nn.Conv2d(in_channels, width, kernel_size=KERNEL, padding=RADIUS)
        self.param_conv1 = nn.Conv2d(width + 2 * channels, width, kernel_size=1)
        self.param_conv2 = nn.Conv2d(width, width, kernel_size=1)
        self.param_conv3 = nn.Conv2d(width, 2 * channels, kernel_size=1)
        if self.context_conv.weight.device.type != "meta":  # meta: weights come from a file
            with torch.no_grad():
                self.context_conv.weight.mul_(tap_mask(taps))
        nn.init.zeros_(self.param_conv3.weight)
        nn.init.zeros_(self.param_conv3.bias)

    def correct(
        self, known: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu', scale') of the group from the decoded latents ``known`` and its hyperprior (mu, scale)."""
        weight = self.context_conv.weight * tap_mask(self.taps, known.device).to(known.dtype)
        ctx = F.conv2d(known, weight, self.context_conv.bias, padding=RADIUS)
        hidden = F.relu(self.param_conv1(torch.cat([ctx, mu, scale], dim=1)))
        delta = self.param_conv3(F.relu(self.param_conv2(hidden)))
        c = self.channels
        return mu + delta[:, :c], lower_bound(scale + delta[:, c:], SCALE_MIN)


class CheckerboardContext(ContextNet):
    """Checkerboard context: anchors from the hyperprior, the other half from the anchors."""

    def __init__(self, latent_channels: int, channels: int) -> None:
        super().__init__(latent_channels, latent_channels, channels, ANCHOR_TAPS)

    def forward(
        self, y: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor, step: torch.Tensor, rounding: Rounding,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, scale) of every latent from latents y (the anchors are quantized with ``rounding`` in
        units of ``step``, broadcastable to y) and the hyperprior's (mu, scale)."""
        anchors = anchor_mask(y.shape[-2], y.shape[-1], device=y.device)
        anchors_hat = rounding(y / step, mu / step) * step
        zero = torch.zeros((), dtype=y.dtype, device=y.device)
        mu_ctx, scale_ctx = self.correct(torch.where(anchors, anchors_hat, zero), mu, scale)
        return torch.where(anchors, mu, mu_ctx), torch.where(anchors, scale, scale_ctx)


class ChannelContext(nn.Module):
    """Channel-conditional context: slice k from the hyperprior and the decoded slices before it."""

    def __init__(self, latent_channels: int, channels: int) -> None:
        super().__init__()
        self.bounds = slice_bounds(latent_channels)
        specs = context_nets("channel", latent_channels)[1:]  # slices 1 .. SLICES - 1
        self.nets = nn.ModuleList(ContextNet(s.in_channels, s.channels, channels, s.taps) for s in specs)

    def forward(
        self, y: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor, step: torch.Tensor, rounding: Rounding,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, scale) of every latent, slice after slice (see :class:`CheckerboardContext`; ``step`` is
        (N or 1, C, 1, 1))."""
        b = self.bounds
        mus, scales, decoded = [mu[:, : b[1]]], [scale[:, : b[1]]], []
        for k in range(SLICES):
            lo, hi = b[k], b[k + 1]
            if k:
                m, s = self.nets[k - 1].correct(torch.cat(decoded, dim=1), mu[:, lo:hi], scale[:, lo:hi])
                mus.append(m)
                scales.append(s)
            d = step[:, lo:hi]
            decoded.append(rounding(y[:, lo:hi] / d, mus[k] / d) * d)
        return torch.cat(mus, dim=1), torch.cat(scales, dim=1)


def build_context(kind: str, latent_channels: int, channels: int) -> nn.Module:
    """The context module of an architecture's ``context`` kind (not "none")."""
    if kind == "checkerboard":
        return CheckerboardContext(latent_channels, channels)
    if kind == "channel":
        return ChannelContext(latent_channels, channels)
    raise ValueError(f"unknown context {kind!r}")
