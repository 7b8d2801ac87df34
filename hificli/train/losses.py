"""HiFiC loss terms (Mentzer et al. 2020, eq. 3-5; weights in :mod:`hificli.train.schedule`).

    L_EGP = rate_penalty * bpp + k_M * MSE_255 + k_P * LPIPS + beta * L_G     (encoder/generator/prior)
    L_D   = BCE(D(x, y_hat), 1) + BCE(D(x_hat, y_hat), 0)                    (discriminator)

``rate_penalty`` is lambda_A when the hard rate estimate ``q_bpp`` exceeds the target, else lambda_B.
The GAN loss is non-saturating: L_G = BCE(D(x_hat, y_hat), 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from hificli.tiling import LATENT


def rate_penalty(q_bpp: float, *, lambda_a: float, lambda_b: float, target_bpp: float) -> float:
    """The hard switch of the rate weight: lambda_a above the target rate, lambda_b at or below it."""
    return lambda_a if q_bpp > target_bpp else lambda_b


def mse_255(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error of [0,1] images measured on the 0..255 scale (scalar)."""
    return F.mse_loss(x_hat.float(), x.float()) * (255.0**2)


def psnr_from_mse255(mse: float) -> float:
    """PSNR in dB for an MSE on the 0..255 scale (inf for 0)."""
    import math

    return float("inf") if mse <= 0 else 10.0 * math.log10(255.0**2 / mse)


def grid_pattern(change: torch.Tensor, period: int = LATENT) -> torch.Tensor:
    """(C, period, period): the batch mean of ``change`` (N, C, H, W) at each phase of a ``period``
    px grid anchored at the top left (H and W cut to multiples of ``period``). Detail that follows the
    content averages out there; a pattern the decoder stamps at every latent position (its transposed
    convolutions' stride, ``LATENT`` px) does not."""
    n, c, h, w = change.shape
    h, w = h - h % period, w - w % period
    tiles = change[:, :, :h, :w].reshape(n, c, h // period, period, w // period, period)
    return tiles.mean(dim=(0, 2, 4))


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating D loss: real patches -> 1, generated patches -> 0 (means over patches)."""
    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return real + fake


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating G loss: generated patches -> 1."""
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))
