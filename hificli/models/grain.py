"""Grain: content-shaped pixel noise for the realism decoder (hificli.models.realism).

A realism decoder that only maps latents to pixels can sharpen texture the latents describe, but it
cannot invent the fine detail (grain, foliage, gravel) that the encoder never spent bits on: that
detail is, to the decoder, random. The grain head adds it as noise whose local amplitude the decoder
predicts from its own features:

    grain = upsample2x(amplitude(h)) * filter(noise)

``h`` is the realism decoder's last hidden layer (half resolution), ``amplitude`` a 1x1 convolution to
3 channels (one amplitude per colour), ``filter`` a learned 3x3 filter that shapes the noise's
spectrum, and ``noise`` one channel of uniform values in [-1, 1) keyed to absolute pixel position
(:func:`position_noise`): an integer hash of the row and column, the same on every machine and for every
tiling of the image, so a file decodes to the same pixels everywhere. It never touches the latents or
the bitstream.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

MASK32 = 0xFFFFFFFF
#: Position hash (:func:`position_noise`): constants of the row's hash and Wellons' "lowbias32" finaliser.
ROW_MUL, SEED = 0x9E3779B1, 0x27D4EB2F
MIX1, MIX2 = 0x7FEB352D, 0x846CA68B
NOISE_BITS = 24  #: uniform values on a 2**-23 grid, exact in float32
MARGIN = 1  #: extra noise pixels on every side that the 3x3 filter reads


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


class GrainHead(nn.Module):
    """Hidden features (N, C, H/2, W/2) and a noise field (N, 1, H + 2, W + 2) -> grain (N, 3, H, W).

    Starts as a faint, flat grain (``INITIAL_AMPLITUDE`` everywhere) that training shapes: a zero
    start would sit where the noise's gradient averages to zero."""

    INITIAL_AMPLITUDE = 0.004  #: about one grey level, in the model's [0, 1] output space

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.amplitude = nn.Conv2d(channels, 3, kernel_size=1)
        self.filter = nn.Conv2d(1, 1, kernel_size=3, bias=False)
        with torch.no_grad():
            self.amplitude.weight.zero_()
            self.amplitude.bias.fill_(self.INITIAL_AMPLITUDE)
            self.filter.weight.zero_()
            self.filter.weight[0, 0, 1, 1] = 1.0

    def forward(self, hidden: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        amplitude = F.interpolate(self.amplitude(hidden), scale_factor=2, mode="bilinear", align_corners=False)
        shaped = self.filter(noise.to(hidden.dtype))
        if shaped.shape[-2:] != amplitude.shape[-2:]:
            raise ValueError(f"noise field {tuple(noise.shape[-2:])} does not fit features "
                             f"{tuple(hidden.shape[-2:])} (needs 2x their size plus {2 * MARGIN})")
        return amplitude * shaped
