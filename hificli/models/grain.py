"""Grain: synthesised fine detail for the realism decoder (hificli.models.realism).

A decoder that maps latents to pixels can sharpen the texture the latents describe, but not the fine
detail (grain, foliage, gravel) the encoder spent no bits on: to the decoder that detail is random. The
grain head adds it as noise with the energy the decode is missing, which it predicts from the latents:

    grain = gain * exp(upsample16(e(y_hat)) / 2) * filter(noise)

``e`` (:attr:`GrainHead.energy`, three convolutions at latent resolution) predicts per latent position
the log of the high-pass energy the original has and the realism decoder's output lacks
(:func:`missing_energy`; trained by regression, ``hific train --stage realism --grain-fit``); ``gain``
(one per colour) and ``filter`` (3x3, the noise's spectrum) scale and shape it. ``noise`` is one channel of
uniform values in [-1, 1) keyed to absolute pixel position (:func:`position_noise`): an integer hash of
the row and column, the same on every machine and for every tiling, so a file decodes to the same pixels
everywhere. It never touches the latents or the bitstream.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

MASK32 = 0xFFFFFFFF
#: Position hash (:func:`position_noise`): constants of the row's hash and Wellons' "lowbias32" finaliser.
ROW_MUL, SEED = 0x9E3779B1, 0x27D4EB2F
MIX1, MIX2 = 0x7FEB352D, 0x846CA68B
NOISE_BITS = 24  #: uniform values on a 2**-23 grid, exact in float32
MARGIN = 1  #: extra noise pixels on every side that the 3x3 filter reads
LATENT = 16  #: pixels per latent position
ENERGY_RADIUS = 3  #: latents the grain reads around each position (two 3x3 layers, then bilinear)
ENERGY_FLOOR = (0.3 / 255.0) ** 2  #: added before the log: missing energy below ~0.3 grey levels RMS is none
FIT_QUANTILE = 0.25  #: quantile of the missing energy that --grain-fit predicts (hificli.train.realism)
INITIAL_GAIN = 1.3  #: about 0.7x the missing high-pass energy (uniform noise's high-pass RMS is 0.54)


def _mul32(h: torch.Tensor, m: int) -> torch.Tensor:
    """``h * m mod 2**32`` for int64 ``h`` in [0, 2**32), in 16-bit halves so that no product overflows."""
    low = h * (m & 0xFFFF)
    high = ((h * (m >> 16)) & 0xFFFF) << 16
    return (low + high) & MASK32


def _mix(h: torch.Tensor) -> torch.Tensor:
    """Wellons' "lowbias32" finaliser on int64 values in [0, 2**32)."""
    h = h ^ (h >> 16)
    h = _mul32(h, MIX1)
    h = h ^ (h >> 15)
    h = _mul32(h, MIX2)
    return h ^ (h >> 16)


def position_noise(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Uniform noise in [-1, 1) at integer pixel positions; ``rows`` and ``cols`` broadcast together
    (integers, taken mod 2**32). Deterministic: a function of the positions only, in exact int64
    arithmetic: ``mix(mix(row * ROW_MUL ^ SEED) + col)``."""
    h = _mix(_mul32(rows.to(torch.int64) & MASK32, ROW_MUL) ^ SEED)
    h = _mix((h + (cols.to(torch.int64) & MASK32)) & MASK32)
    top = (h >> (32 - NOISE_BITS)).to(torch.float32)
    return top * (2.0 / (1 << NOISE_BITS)) - 1.0


def noise_field(origins: torch.Tensor, height: int, width: int, device: torch.device | None = None) -> torch.Tensor:
    """(N, 1, height + 2, width + 2) noise for N images whose top-left pixel sits at ``origins``
    (N, 2) = (row, column); the border of :data:`MARGIN` pixels is what the grain filter reads."""
    origins = origins.to(device=device, dtype=torch.int64)
    rows = torch.arange(-MARGIN, height + MARGIN, device=device, dtype=torch.int64)
    cols = torch.arange(-MARGIN, width + MARGIN, device=device, dtype=torch.int64)
    r = origins[:, 0].view(-1, 1, 1) + rows.view(1, -1, 1)
    c = origins[:, 1].view(-1, 1, 1) + cols.view(1, 1, -1)
    return position_noise(r, c).unsqueeze(1)


def high_pass_energy(image: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) -> (N, 1, H/16, W/16): mean square of the image minus its 3x3 mean, per 16 px block
    (averaged over colours)."""
    blurred = F.avg_pool2d(F.pad(image, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    return F.avg_pool2d((image - blurred).pow(2).mean(dim=1, keepdim=True), LATENT)


def missing_energy(original: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
    """Regression target of :attr:`GrainHead.energy`: log(high-pass energy the original has beyond the
    decode's, floored at :data:`ENERGY_FLOOR`), per 16 px block; images in [0, 1]."""
    lacking = (high_pass_energy(original) - high_pass_energy(decoded)).clamp(min=0.0)
    return torch.log(lacking + ENERGY_FLOOR)


class GrainHead(nn.Module):
    """Latents (N, C, h, w) -> predicted log missing energy (N, 1, h, w) (:attr:`energy`); that and a
    noise field (N, 1, 16h + 2, 16w + 2) -> grain (N, 3, 16h, 16w) (:meth:`forward`)."""

    def __init__(self, latent_channels: int, hidden: int = 64) -> None:
        super().__init__()
        self.energy = nn.Sequential(
            nn.Conv2d(latent_channels, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, 1, 1),
        )
        self.gain = nn.Parameter(torch.full((3,), INITIAL_GAIN))
        self.filter = nn.Conv2d(1, 1, kernel_size=3, bias=False)
        with torch.no_grad():
            self.energy[-1].weight.zero_()  # starts at the floor: next to no grain until it is fitted
            self.energy[-1].bias.fill_(math.log(ENERGY_FLOOR))
            self.filter.weight.zero_()
            self.filter.weight[0, 0, 1, 1] = 1.0

    def forward(self, log_energy: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        rms = torch.exp(0.5 * F.interpolate(log_energy, scale_factor=LATENT, mode="bilinear", align_corners=False))
        shaped = self.filter(noise.to(rms.dtype))
        if shaped.shape[-2:] != rms.shape[-2:]:
            raise ValueError(f"noise field {tuple(noise.shape[-2:])} does not fit latents "
                             f"{tuple(log_energy.shape[-2:])} (needs 16x their size plus {2 * MARGIN})")
        return self.gain.view(1, 3, 1, 1) * rms * shaped
