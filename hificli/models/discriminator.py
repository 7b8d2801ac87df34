"""Patch discriminator conditioned on the quantized latents (HiFiC's D; training only).

Its state_dict keys match the port's ``Discriminator.*`` keys (spectral norm stores ``weight_orig``,
``weight_u``, ``weight_v``), so a port checkpoint's discriminator can be restored for fine-tuning.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from hificli.models.config import ArchConfig

#: Widths of conv1..conv4.
WIDTHS = (64, 128, 256, 512)


class Discriminator(nn.Module):
    """D(x, y_hat) -> one logit per patch.

    context_conv: 3x3 reflect conv C -> ``config.discriminator_context`` + LeakyReLU(0.2), nearest
    upsampling to the image size (x16), concatenated after the 3 image channels; conv1..conv4: 4x4
    stride 2 reflect pad 1 with spectral norm + LeakyReLU(0.2); conv_out: 1x1 -> 1 logit.

    ``high_pass`` replaces the image by itself minus its 3x3 mean (texture only) and ``input_gain``
    scales what D sees. Spectral norm bounds every layer's gain by 1, so a decode a few grey levels off
    its original gets nearly its logits; measured (benchmarks/disc_probe.py), a gain alone does not
    change that, the high-pass image at gain 32-64 does. Neither is a tensor: state_dict keys stay the
    port's.
    """

    def __init__(self, config: ArchConfig | None = None, input_gain: float = 1.0, high_pass: bool = False) -> None:
        super().__init__()
        self.input_gain = float(input_gain)
        self.high_pass = bool(high_pass)
        config = config if config is not None else ArchConfig()
        ctx = config.discriminator_context
        self.context_conv = nn.Conv2d(
            config.latent_channels, ctx, kernel_size=3, padding=1, padding_mode="reflect"
        )
        widths = (3 + ctx, *WIDTHS)
        for i in range(4):
            conv = nn.Conv2d(
                widths[i], widths[i + 1], kernel_size=4, stride=2, padding=1, padding_mode="reflect"
            )
            self.add_module(f"conv{i + 1}", spectral_norm(conv))
        self.conv_out = nn.Conv2d(WIDTHS[-1], 1, kernel_size=1)

    def forward(self, x: torch.Tensor, y_hat: torch.Tensor) -> torch.Tensor:
        """Patch logits for aligned batches: ``x[i]`` (N, 3, H, W) is judged together with ITS OWN latent
        ``y_hat[i]`` (N, C, H/16, W/16). To score real and generated images in one call, concatenate
        both batches and repeat the latents the same way (``torch.cat([y_hat, y_hat])``), not
        interleaved. y_hat is detached here: no discriminator gradient reaches the encoder.

        Returns (N * P, 1) logits, image-major (the P = (H/16) * (W/16) patches of x[0] first).
        """
        if x.shape[0] != y_hat.shape[0]:
            raise ValueError(f"x and y_hat batches differ: {x.shape[0]} vs {y_hat.shape[0]}")
        context = F.leaky_relu(self.context_conv(y_hat.detach()), 0.2)
        context = F.interpolate(context, size=x.shape[-2:], mode="nearest")
        if self.high_pass:
            x = x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), 3, stride=1)
        if self.input_gain != 1.0:
            x = x * self.input_gain
        h = torch.cat([x, context], dim=1)
        for i in range(1, 5):
            h = F.leaky_relu(getattr(self, f"conv{i}")(h), 0.2)
        return self.conv_out(h).reshape(-1, 1)
