"""Checkerboard spatial context (He et al., CVPR 2021) on top of the mean-scale hyperprior.

The latent grid is split like a checkerboard: *anchors* are the positions with ``(row + col)`` even
(global latent coordinates), the others are *non-anchors*. Anchors are coded with the hyperprior's
mean and scale, as in a model without context. The non-anchors' mean and scale are the hyperprior's
plus a correction computed from the decoded anchors around them:

    ctx   = conv5x5(anchors_hat)                  # only the 12 taps that meet anchors (dr + dc odd)
    delta = conv1x1(relu(conv1x1(relu(conv1x1([ctx, mu, scale])))))
    mu'   = mu + delta[:C];   scale' = max(scale + delta[C:], SCALE_MIN)

``anchors_hat`` holds the dequantized anchor latents (``mu + step * symbol``) and zeros elsewhere;
``scale`` is the hyperprior's lower-bounded scale. The last layer starts at zero, so a model gaining
a context starts as the model it was before. The integer decoder (hificli.entropy.context) evaluates
the same layers in exact integer arithmetic.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from hificli.layers import lower_bound
from hificli.models.likelihoods import SCALE_MIN

#: Side of the spatial context kernel and its radius (the halo a band of latents needs).
KERNEL = 5
RADIUS = KERNEL // 2
#: (dr, dc) offsets of the kernel taps that meet anchors from a non-anchor position (12 of 25).
ANCHOR_TAPS: tuple[tuple[int, int], ...] = tuple(
    (dr, dc) for dr in range(-RADIUS, RADIUS + 1) for dc in range(-RADIUS, RADIUS + 1) if (dr + dc) % 2
)


def anchor_mask(height: int, width: int, *, row0: int = 0, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool (height, width): True at anchors, ``(row + col) % 2 == 0`` with rows counted from ``row0``."""
    rows = torch.arange(row0, row0 + height, device=device)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    return (rows + cols) % 2 == 0


def tap_mask(device: torch.device | str | None = None) -> torch.Tensor:
    """Float (KERNEL, KERNEL): 1 at :data:`ANCHOR_TAPS`, 0 elsewhere."""
    mask = torch.zeros(KERNEL, KERNEL, device=device)
    for dr, dc in ANCHOR_TAPS:
        mask[dr + RADIUS, dc + RADIUS] = 1.0
    return mask


class CheckerboardContext(nn.Module):
    """Mean and scale of every latent from the hyperprior's (mu, scale) and the decoded anchors.

    ``latent_channels`` C, ``channels`` K: the context convolution maps C -> K, the parameter network
    (K + 2C) -> K -> K -> 2C. Attribute names are what the integer decoder reads.
    """

    def __init__(self, latent_channels: int, channels: int) -> None:
        super().__init__()
        c, k = latent_channels, channels
        self.latent_channels = c
        self.context_conv = nn.Conv2d(c, k, kernel_size=KERNEL, padding=RADIUS)
        self.param_conv1 = nn.Conv2d(k + 2 * c, k, kernel_size=1)
        self.param_conv2 = nn.Conv2d(k, k, kernel_size=1)
        self.param_conv3 = nn.Conv2d(k, 2 * c, kernel_size=1)
        with torch.no_grad():
            self.context_conv.weight.mul_(tap_mask())
        nn.init.zeros_(self.param_conv3.weight)
        nn.init.zeros_(self.param_conv3.bias)

    def corrections(self, anchors_hat: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """(N, 2C, h, w) corrections of (mu, scale) from anchor latents (zeros at non-anchors)."""
        weight = self.context_conv.weight * tap_mask(anchors_hat.device).to(anchors_hat.dtype)
        ctx = F.conv2d(anchors_hat, weight, self.context_conv.bias, padding=RADIUS)
        hidden = F.relu(self.param_conv1(torch.cat([ctx, mu, scale], dim=1)))
        return self.param_conv3(F.relu(self.param_conv2(hidden)))

    def forward(
        self, y_hat: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, scale) of every latent: the hyperprior's at anchors, corrected at non-anchors.

        y_hat: (N, C, h, w) dequantized latents (only the anchors are read); mu, scale: the
        hyperprior's, scale already lower-bounded.
        """
        anchors = anchor_mask(y_hat.shape[-2], y_hat.shape[-1], device=y_hat.device)
        anchors_hat = torch.where(anchors, y_hat, torch.zeros((), dtype=y_hat.dtype, device=y_hat.device))
        delta = self.corrections(anchors_hat, mu, scale)
        c = self.latent_channels
        mu_ctx = mu + delta[:, :c]
        scale_ctx = lower_bound(scale + delta[:, c:], SCALE_MIN)
        return torch.where(anchors, mu, mu_ctx), torch.where(anchors, scale, scale_ctx)
