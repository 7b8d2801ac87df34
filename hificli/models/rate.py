"""Trainable rate levels of a variable-rate model (the float side of hificli.entropy.rate).

``RateSteps`` holds ``log_step`` (L, C): the natural log of each level's per-channel quantization
step. Level 0 is the coarsest (lowest quality), level L - 1 the finest. A continuous position
``p`` in [0, L - 1] selects the steps by linear interpolation of the steps themselves between the two
neighbouring levels, exactly the rule the integer codec applies to the stored fixed-point levels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from hificli.entropy.rate import STEP_FRAC, STEP_MAX_FIXED, STEP_MIN_FIXED, check_levels


class RateSteps(nn.Module):
    """Per-level, per-channel quantization steps; see the module docstring."""

    def __init__(self, levels: int, channels: int) -> None:
        super().__init__()
        self.log_step = nn.Parameter(torch.zeros(levels, channels))
        #: the exact integer levels this module was loaded from (None until :meth:`load_fixed`)
        self.levels_fixed: np.ndarray | None = None

    @property
    def levels(self) -> int:
        return int(self.log_step.shape[0])

    def initialize(self, lambdas: Sequence[float], reference: float) -> None:
        """High-rate theory start: step_l = sqrt(reference / lambda_l) in every channel (D ~ step^2),
        so the level whose lambda equals ``reference`` starts with unit steps (the fixed-rate model)."""
        if len(lambdas) != self.levels:
            raise ValueError(f"{len(lambdas)} lambdas for {self.levels} rate levels")
        values = torch.tensor([0.5 * math.log(reference / lam) for lam in lambdas], dtype=torch.float32)
        with torch.no_grad():
            self.log_step.copy_(values[:, None].expand_as(self.log_step))

    def steps(self, positions: torch.Tensor) -> torch.Tensor:
        """Steps (N, C) for level positions (N,) in [0, L - 1] (clamped), linear between levels."""
        pos = positions.to(self.log_step.dtype).clamp(0, self.levels - 1)
        lo = pos.floor().clamp(max=self.levels - 2).long()
        frac = (pos - lo.to(pos.dtype))[:, None]
        step = self.log_step.exp()
        return step[lo] * (1 - frac) + step[lo + 1] * frac

    def fixed(self) -> np.ndarray:
        """The levels as stored in weights files: int64 (L, C) fixed-point steps, made non-increasing
        along the levels (a running minimum) and clamped to the format's bounds. Levels loaded with
        :meth:`load_fixed` are returned as they were stored."""
        if self.levels_fixed is not None:
            return self.levels_fixed.copy()
        step = self.log_step.detach().double().exp().cpu().numpy()
        fixed = np.clip(np.round(step * 2.0**STEP_FRAC), STEP_MIN_FIXED, STEP_MAX_FIXED).astype(np.int64)
        return np.minimum.accumulate(fixed, axis=0)

    def load_fixed(self, levels_fixed: np.ndarray) -> None:
        """Keep stored fixed-point levels (validated; the codec uses them as they are) and set
        ``log_step`` from them, so the float model matches the codec. Bad levels -> ValueError."""
        self.levels_fixed = check_levels(levels_fixed, int(self.log_step.shape[1]))
        if self.levels_fixed.shape[0] != self.levels:
            raise ValueError(f"{self.levels_fixed.shape[0]} stored rate levels, the architecture has {self.levels}")
        values = torch.from_numpy(np.log(self.levels_fixed.astype(np.float64) / 2.0**STEP_FRAC))
        self.log_step = nn.Parameter(values.float(), requires_grad=False)  # also replaces a meta tensor
