"""Integer-exact hyper-synthesis: mu and sigma from z_hat, bit-identical in every process and machine.

The decoder picks each latent's table row from sigma, so sigma must come out identical wherever the
file is decoded; float convolutions do not guarantee that (summation order depends on threads, BLAS
and CPU). Here every layer works on integers held in float64 tensors:

* weights: ``w_int = round_half_even(float16(w) * 2**W_FRAC)`` (an fp32 and an fp16 copy of the same
  weights give the same integers); biases ``round_half_even(float16(b) * 2**acc_frac)`` at the scale
  of the layer's accumulator;
* input: ``z_hat`` (integers) clamped to ``|z| <= Z_MAX = 2**12``, fractional bits 0;
* each transposed convolution sums products of integers; its accumulator has ``W_FRAC + in_frac``
  fractional bits; it is requantized to ``ACT_FRAC`` bits by ``floor((acc + 2**(s-1)) / 2**s)`` (round
  half up: an exact power-of-two scaling plus floor), then ReLU and clamped to ``[0, ACT_MAX]``;
* the last layer is requantized to ``OUT_FRAC = SCALE_FRAC_BITS`` bits and clamped to ``|v| <= OUT_MAX``;
  ``mu = mu_fixed * 2**-OUT_FRAC`` exactly.

Exactness proof. float64 represents every integer of magnitude <= 2**53 exactly, so a sum of integer
products is exact in ANY order (threads, blocking, FMA) as long as every partial sum stays below
2**53. For one output element of a layer, every partial sum is bounded by
``A_in * S + |b_int|``, where ``A_in`` is the largest input magnitude (2**12 for z, ``ACT_MAX = 2**24``
for activations) and ``S = max over output channels of sum |w_int|`` over ALL input channels and taps
(the taps that actually meet one output element are a subset). The constructor checks
``A_in * S + max|b_int| < 2**52`` for each layer (half the limit: room for the rounding offset) and
raises ValueError otherwise. For activations this allows ``sum |w| < 2**12`` per output channel (e.g.
320 channels x 25 taps with mean |w| up to 0.5;
trained HiFiC hyper-synthesis weights are ~0.01-0.05), plus |w| <= 2**15 per weight. torch computes a
float64 transposed convolution as sums of products (GEMM + col2im; there is no FFT/Winograd path for
float64), so the proof covers it. The requantization steps multiply by powers of two and floor, which
is exact too.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from hificli.entropy.tables import SCALE_FRAC_BITS, SCALE_MIN_FIXED

W_FRAC = 16  #: fractional bits of the integer weights
ACT_FRAC = 12  #: fractional bits of the hidden activations
Z_MAX = 2**12  #: |z_hat| is clamped to this
ACT_MAX = 2**24  #: hidden activations (integer units) are clamped to [0, ACT_MAX], i.e. values <= 4096
OUT_FRAC = SCALE_FRAC_BITS  #: fractional bits of mu_fixed and scale_fixed
OUT_MAX = 2**31  #: |mu_fixed|, |scale_fixed| <= 2**31, i.e. values within +-32768
W_INT_MAX = 2**31  #: per-weight bound (|w| <= 2**15)
_EXACT_LIMIT = 2**52


class _Layer:
    """One transposed convolution as integer tensors plus its fixed-point bookkeeping."""

    def __init__(self, conv: Any, in_frac: int, in_max: int, name: str) -> None:
        if getattr(conv, "groups", 1) != 1 or tuple(getattr(conv, "dilation", (1, 1))) != (1, 1):
            raise ValueError(f"{name}: only groups=1, dilation=1 transposed convolutions are supported")
        weight = conv.weight.detach().to("cpu")
        bias = conv.bias.detach().to("cpu") if conv.bias is not None else torch.zeros(weight.shape[1])
        self.acc_frac = W_FRAC + in_frac
        self.weight = to_int(weight, W_FRAC, f"{name}.weight")
        self.bias = to_int(bias, self.acc_frac, f"{name}.bias")
        magnitude = self.weight.abs()
        if magnitude.max().item() > W_INT_MAX:
            raise ValueError(f"{name}: a weight exceeds {W_INT_MAX / 2**W_FRAC} in magnitude")
        # ConvTranspose2d weight layout: [in, out, kh, kw]; bound per output channel.
        check_exact_bound(name, magnitude.sum(dim=(0, 2, 3)).max().item(), in_max, self.bias)
        self.stride = tuple(conv.stride)
        self.padding = tuple(conv.padding)
        self.output_padding = tuple(conv.output_padding)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv_transpose2d(
            x, self.weight, self.bias, self.stride, self.padding, self.output_padding
        )


def check_exact_bound(name: str, weight_sum: float, in_max: int, bias: torch.Tensor) -> None:
    """Refuse a layer whose partial sums could leave float64's exact integers (see the module docstring):
    ``weight_sum`` is the largest sum of |w_int| over one output's inputs and taps."""
    bound = in_max * weight_sum + (bias.abs().max().item() if bias.numel() else 0.0)
    if not bound < _EXACT_LIMIT:
        raise ValueError(f"{name}: weights too large for exact float64 accumulation (bound {bound:.3g} >= 2**52)")


def to_int(t: torch.Tensor, frac: int, name: str) -> torch.Tensor:
    values = t.to(torch.float16).to(torch.float64)
    if values.numel() and not values.abs().max().item() <= 65504.0:  # also false for inf / nan
        raise ValueError(f"{name} has non-finite values or values beyond float16 range")
    return values.mul_(2.0**frac).round_()  # exact scaling, then round half to even


def requantize(acc: torch.Tensor, shift: int) -> torch.Tensor:
    """floor((acc + 2**(shift-1)) / 2**shift) on integer-valued float64 (exact)."""
    if shift == 0:
        return acc
    return torch.floor((acc + 2.0 ** (shift - 1)) * 2.0**-shift)


class ExactHyperSynthesis:
    """mu and sigma networks of the hyperprior evaluated in integer-exact arithmetic.

    ``synthesis_mu`` / ``synthesis_std``: modules with ``conv1``, ``conv2`` (ConvTranspose2d, ReLU after
    each) and ``conv3`` (ConvTranspose2d, no activation). Their weights are converted once here.
    """

    def __init__(self, synthesis_mu: Any, synthesis_std: Any) -> None:
        self.nets = [
            self._convert(synthesis_mu, "synthesis_mu"),
            self._convert(synthesis_std, "synthesis_std"),
        ]
        if self.nets[0][2].weight.shape[1] != self.nets[1][2].weight.shape[1]:
            raise ValueError("synthesis_mu and synthesis_std must have the same number of output channels")
        self.in_channels = int(self.nets[0][0].weight.shape[0])
        self.out_channels = int(self.nets[0][2].weight.shape[1])

    @staticmethod
    def _convert(net: Any, name: str) -> list[_Layer]:
        try:
            convs = [net.conv1, net.conv2, net.conv3]
        except AttributeError:
            raise ValueError(f"{name} needs attributes conv1, conv2, conv3") from None
        return [
            _Layer(convs[0], 0, Z_MAX, f"{name}.conv1"),
            _Layer(convs[1], ACT_FRAC, ACT_MAX, f"{name}.conv2"),
            _Layer(convs[2], ACT_FRAC, ACT_MAX, f"{name}.conv3"),
        ]

    @staticmethod
    def _run(layers: list[_Layer], z: torch.Tensor) -> torch.Tensor:
        x = z
        for i, layer in enumerate(layers):
            acc = layer(x)
            if i < 2:
                x = requantize(acc, layer.acc_frac - ACT_FRAC).clamp_(0.0, float(ACT_MAX))
            else:
                x = requantize(acc, layer.acc_frac - OUT_FRAC).clamp_(-float(OUT_MAX), float(OUT_MAX))
        return x.to(torch.int64)

    def fixed(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu_fixed, scale_fixed): int64 tensors (N, C, 4h, 4w) with OUT_FRAC fractional bits."""
        z = torch.as_tensor(z_hat).detach().to("cpu", torch.float64)
        if z.ndim != 4 or z.shape[1] != self.in_channels:
            raise ValueError(f"z_hat must have shape (N, {self.in_channels}, h, w), got {tuple(z.shape)}")
        if not torch.isfinite(z).all() or not torch.equal(z, torch.floor(z)):
            raise ValueError("z_hat must hold finite integer values")
        z = z.clamp(-float(Z_MAX), float(Z_MAX))
        return self._run(self.nets[0], z), self._run(self.nets[1], z)

    def __call__(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu float64, scale_fixed int64), each (N, C, 4h, 4w); ``mu = mu_fixed * 2**-OUT_FRAC`` exactly."""
        mu_fixed, scale_fixed = self.fixed(z_hat)
        return mu_fixed.to(torch.float64) * 2.0**-OUT_FRAC, scale_fixed


def scale_indexes(scale_fixed: Any, table_thresholds: np.ndarray) -> np.ndarray:
    """Table row per element: the smallest level >= sigma (integer comparisons only).

    sigma is lower-bounded at SCALE_MIN_FIXED (0.11); sigmas above the last level use the last row.
    Returns int32 with the shape of ``scale_fixed``.
    """
    if isinstance(scale_fixed, torch.Tensor):
        scale_fixed = scale_fixed.detach().cpu().numpy()
    s = np.asarray(scale_fixed)
    if s.dtype.kind not in "iu":
        raise ValueError(f"scale_fixed must be integers (fixed point), got dtype {s.dtype}")
    thresholds = np.asarray(table_thresholds, dtype=np.int64)
    s = np.maximum(s.astype(np.int64), SCALE_MIN_FIXED)
    idx = np.searchsorted(thresholds, s, side="left")
    return np.minimum(idx, thresholds.size - 1).astype(np.int32)
