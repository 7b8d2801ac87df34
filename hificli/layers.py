"""Building blocks of the HiFiC network: ChannelNorm, the generator's residual block, and the
quantization and bounding operations with their custom gradients.

Numerics follow the earlier PyTorch port (see PORT_FACTS.md 1.4 and 1.10) so that its checkpoints
reproduce their outputs: ChannelNorm uses the *unbiased* variance, rounding is ``floor(x + 0.5)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _is_channels_last(x: torch.Tensor) -> bool:
    """A 4-d tensor laid out channels-last (and not also plainly contiguous, as when H = W = 1)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class ChannelNorm2d(nn.Module):
    """Normalise each pixel over its channels: ``(x - mean) * rsqrt(var + eps) * gamma + beta``.

    The mean and the unbiased variance (divisor C - 1, as the port) are taken over dim 1 of an
    (N, C, H, W) tensor; ``gamma`` and ``beta`` are (1, C, 1, 1) parameters initialised to 1 and 0.
    """

    def __init__(self, channels: int, eps: float = 1e-3) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"ChannelNorm2d needs at least 2 channels (unbiased variance), got {channels}")
        self.channels = channels
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_inference_mode_enabled() and _is_channels_last(x):
            return self._fused_channels_last(x)
        mean = x.mean(dim=1, keepdim=True)
        var = x.var(dim=1, keepdim=True, unbiased=True)
        return (x - mean) * torch.rsqrt(var + self.eps) * self.gamma + self.beta

    def _fused_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalisation as one fused ``layer_norm`` over the channels, which are the innermost
        dimension of a channels-last tensor (2 passes over memory instead of 6). layer_norm divides by C:
        with var_u = var_b * C / (C - 1), ``rsqrt(var_u + eps) * gamma`` equals
        ``rsqrt(var_b + eps * (C - 1) / C) * gamma * sqrt((C - 1) / C)``. Equal up to float rounding."""
        c = self.channels
        shrink = (c - 1) / c
        weight = self.gamma.reshape(c) * shrink**0.5
        y = F.layer_norm(x.permute(0, 2, 3, 1), (c,), weight, self.beta.reshape(c), self.eps * shrink)
        return y.permute(0, 3, 1, 2)

    def extra_repr(self) -> str:
        return f"{self.channels}, eps={self.eps}"


class ResidualBlock(nn.Module):
    """Generator residual block: pad, conv1, norm1, ReLU, pad, conv2, norm2, plus the input.

    Shape-preserving on (N, C, H, W); no activation after the addition. Submodule names
    (``conv1``, ``norm1``, ``conv2``, ``norm2``) give the port's state_dict keys.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        # Registration order = the port's key order (conv1, conv2, norm1, norm2).
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3)
        self.norm1 = ChannelNorm2d(channels)
        self.norm2 = ChannelNorm2d(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.act(self.norm1(self.conv1(self.pad(x))))
        res = self.norm2(self.conv2(self.pad(res)))
        return x + res


class _LowerBound(torch.autograd.Function):
    """max(x, bound); the gradient passes where x >= bound or where it would push x upwards."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, bound: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.bound = bound
        return torch.clamp(x, min=bound)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        passes = (x >= ctx.bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


class _ClampToward(torch.autograd.Function):
    """clamp(x, lo, hi); the gradient passes inside [lo, hi] and outside where it points back in."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        ctx.lo, ctx.hi = lo, hi
        return torch.clamp(x, min=lo, max=hi)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        inside = (x >= ctx.lo) & (x <= ctx.hi)
        passes = inside | ((x < ctx.lo) & (grad < 0)) | ((x > ctx.hi) & (grad > 0))
        return grad * passes.to(grad.dtype), None, None


def lower_bound(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Forward ``max(x, bound)``. Backward (gradient descent convention): the gradient reaches x where
    ``x >= bound`` or where the gradient is negative, i.e. the update would raise x toward the bound
    (the port's LowerBoundToward, TFC's ``lower_bound``). Any shape; returns the same shape."""
    return _LowerBound.apply(x, float(bound))


def clamp_toward(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """Forward ``clamp(x, lo, hi)``. Backward: the gradient reaches x inside [lo, hi], and outside only
    where a descent step moves x back toward the interval, so out-of-range values are never stuck."""
    return _ClampToward.apply(x, float(lo), float(hi))


def round_half_up(x: torch.Tensor) -> torch.Tensor:
    """Hard quantization as in the port: ``floor(x + 0.5)`` (not torch.round's half-to-even)."""
    return torch.floor(x + 0.5)


def add_uniform_noise(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Training relaxation of rounding: ``x + U(-0.5, 0.5)`` elementwise."""
    noise = torch.rand(x.shape, dtype=x.dtype, device=x.device, generator=generator) - 0.5
    return x + noise


def round_around_st(y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Straight-through rounding around the mean: forward ``floor(y - mu + 0.5) + mu``, backward the
    identity with respect to y (no gradient reaches mu through the rounding residual)."""
    centred = y - mu
    delta = (round_half_up(centred) - centred).detach()
    return centred + delta + mu


def round_around(y: torch.Tensor, mu: torch.Tensor) -> torch.Tensor:
    """Hard rounding around the mean: ``floor(y - mu + 0.5) + mu`` (evaluation forward)."""
    return round_half_up(y - mu) + mu


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016) on (N, C, H, W):
    ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)``, or ``x_i * sqrt(...)`` when ``inverse`` (IGDN).

    beta and gamma are kept nonnegative by storing ``sqrt(value + PEDESTAL)`` and bounding it from below
    (beta >= 1e-6); init beta = 1, gamma = 0.1 I, so the layer starts close to the identity.
    """

    PEDESTAL = 2.0**-36
    BETA_MIN = 1e-6

    def __init__(self, channels: int, *, inverse: bool = False, gamma_init: float = 0.1) -> None:
        super().__init__()
        self.channels = channels
        self.inverse = inverse
        # Initial values computed on the CPU even inside a ``torch.device("meta")`` block: meta-tensor
        # arithmetic runs Python decompositions that import torch._dynamo (1.4 s of every model load).
        cpu = torch.device("cpu")
        self.beta = nn.Parameter(torch.sqrt(torch.ones(channels, device=cpu) + self.PEDESTAL))
        self.gamma = nn.Parameter(torch.sqrt(gamma_init * torch.eye(channels, device=cpu) + self.PEDESTAL))

    def _nonnegative(self, stored: torch.Tensor, minimum: float) -> torch.Tensor:
        bound = (minimum + self.PEDESTAL) ** 0.5
        return lower_bound(stored, bound) ** 2 - self.PEDESTAL

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self._nonnegative(self.beta, self.BETA_MIN)
        gamma = self._nonnegative(self.gamma, 0.0)
        norm = nn.functional.conv2d(x * x, gamma[:, :, None, None], beta)
        return x * torch.sqrt(norm) if self.inverse else x * torch.rsqrt(norm)

    def extra_repr(self) -> str:
        return f"{self.channels}, inverse={self.inverse}"
