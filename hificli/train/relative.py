"""Relative perceptual weights (``--perceptual-relative``): each image's perceptual term weighted by how
low its distance is for its rate level, so that training follows the relative change that equal-bpp
comparisons measure (``lpips / lpips_other - 1`` per image) instead of the absolute one, which is
dominated by textured, high-distance crops.

For image i at rate level l_i (its position rounded), the weight is ``m(l_i) / d_i``, where d_i is its
perceptual distance (no gradient) and m(l) a running mean of the distances seen at level l; weights are
clipped to [1 / MAX_WEIGHT, MAX_WEIGHT] and then scaled to a batch mean of 1, so the term's overall weight
(``--k-p``, ``--perceptual-per-lambda``) is unchanged and only shared out differently: a smooth crop,
whose distance is low for its rate, gets more, a busy one less. The gradient of ``m * log d`` is
``m / d * grad d``: to first order this trains the log distance.

The running means are not saved with checkpoints: a resumed run starts them again from its first batch.
"""

from __future__ import annotations

import torch

#: Weights are clipped to [1 / MAX_WEIGHT, MAX_WEIGHT] before the batch normalisation.
MAX_WEIGHT = 4.0
#: Running mean: m <- DECAY * m + (1 - DECAY) * d per image at the level.
DECAY = 0.98


class RelativePerceptualWeights:
    """Per-image relative weights from rate positions and perceptual distances (see the module)."""

    def __init__(self, levels: int, decay: float = DECAY, max_weight: float = MAX_WEIGHT) -> None:
        if levels < 1 or not 0 <= decay < 1 or not max_weight >= 1:
            raise ValueError("levels >= 1, 0 <= decay < 1 and max_weight >= 1")
        self.decay = decay
        self.max_weight = max_weight
        self.means = torch.full((levels,), float("nan"), dtype=torch.float64)

    def __call__(self, positions: torch.Tensor, distances: torch.Tensor) -> torch.Tensor:
        """Weights (n,) float32 with mean 1, on ``distances``' device; updates the running means."""
        d = distances.detach().to("cpu", torch.float64).clamp_min(1e-6)
        levels = positions.detach().to("cpu").round().long().clamp(0, self.means.numel() - 1)
        for level, value in zip(levels.tolist(), d.tolist(), strict=True):
            old = self.means[level]
            self.means[level] = value if torch.isnan(old) else self.decay * old + (1 - self.decay) * value
        weights = (self.means[levels] / d).clamp(1 / self.max_weight, self.max_weight)
        return (weights / weights.mean()).to(distances.device, torch.float32)
