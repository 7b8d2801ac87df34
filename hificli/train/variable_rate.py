"""Variable-rate training: one rate level per image, lambda per image, R + lambda * D per image.

Each image of a batch gets a level position p ~ U[0, L - 1]; its latents are quantized with the steps
of p (hificli.models.rate) and its loss is ``bpp_i + lambda(p) * MSE_255,i`` with lambda interpolated
geometrically between the levels' lambdas (``--rate-lambdas``). The HiFiC rate penalty (target bpp
switch) does not apply: each level's lambda sets its own rate.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from hificli.errors import HificError
from hificli.models.config import ArchConfig

#: The rate steps learn this many times faster than the network (few parameters, large moves).
RATE_STEP_LR_SCALE = 30.0


def rate_config(config: ArchConfig, lambdas: Sequence[float] | None) -> tuple[ArchConfig, bool]:
    """(config to train, whether its rate levels must be initialised) for ``--rate-lambdas``.

    A fixed-rate init becomes variable-rate with ``len(lambdas)`` levels; a variable-rate init must
    have as many levels as lambdas are given (and lambdas are then required).
    """
    if not lambdas:
        if config.rate_levels:
            raise HificError(f"a variable-rate model ({config.rate_levels} levels) needs --rate-lambdas")
        return config, False
    if len(lambdas) < 2 or any(not lam > 0 for lam in lambdas) or list(lambdas) != sorted(lambdas):
        raise HificError("--rate-lambdas needs 2 or more positive, increasing values")
    if config.rate_levels == 0:
        return config.with_(rate_levels=len(lambdas)), True
    if config.rate_levels != len(lambdas):
        raise HificError(f"--rate-lambdas gives {len(lambdas)} values for a model with {config.rate_levels} levels")
    return config, False


def sample_positions(n: int, levels: int) -> torch.Tensor:
    """Level positions (n,) uniform over [0, L - 1] (torch's global generator: resumed exactly)."""
    return torch.rand(n, dtype=torch.float64) * (levels - 1)


def lambdas_at(positions: torch.Tensor, lambdas: Sequence[float]) -> torch.Tensor:
    """lambda (n,) for positions (n,): geometric interpolation between neighbouring levels."""
    logs = torch.tensor([math.log(v) for v in lambdas], dtype=torch.float64)
    pos = positions.to(torch.float64).clamp(0, len(lambdas) - 1)
    lo = pos.floor().clamp(max=len(lambdas) - 2).long()
    frac = pos - lo.to(torch.float64)
    return torch.exp(logs[lo] * (1 - frac) + logs[lo + 1] * frac)


def perceptual_weights(lambdas: torch.Tensor, reference: float) -> torch.Tensor:
    """Per-image perceptual weights (``--perceptual-per-lambda``): lambda / reference, so that the ratio
    of the perceptual term to the MSE term is the same at every rate level (1 where lambda = reference)."""
    return (lambdas / reference).to(torch.float32)


def per_image_bpp(y_likelihoods: torch.Tensor, z_likelihoods: torch.Tensor, pixels_per_image: int) -> torch.Tensor:
    """Rate (n,) in bits per pixel of each image from its latent and hyperlatent likelihoods."""
    bits_y = -torch.log2(y_likelihoods.float()).flatten(1).sum(1)
    bits_z = -torch.log2(z_likelihoods.float()).flatten(1).sum(1)
    return (bits_y + bits_z) / pixels_per_image


def per_image_mse255(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE (n,) of [0, 1] images on the 0..255 scale."""
    return ((x_hat.float() - x.float()) * 255.0).pow(2).flatten(1).mean(1)


def rate_distortion_loss(
    y_likelihoods: torch.Tensor, z_likelihoods: torch.Tensor, x_hat: torch.Tensor, x: torch.Tensor,
    lambdas: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean over images of bpp_i + lambda_i * MSE_i, mean MSE) for a variable-rate batch."""
    bpp = per_image_bpp(y_likelihoods, z_likelihoods, x.shape[-2] * x.shape[-1])
    mse = per_image_mse255(x_hat, x)
    loss = (bpp + lambdas.to(bpp.device, bpp.dtype) * mse).mean()
    return loss, mse.mean()
