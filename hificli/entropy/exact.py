"""Integer-exact hyper-synthesis: mu and sigma from z_hat, bit-identical in every process and machine.

The decoder picks each latent's table row from sigma, so sigma must come out identical wherever the
file is decoded; float convolutions do not guarantee that (summation order depends on threads, BLAS
and CPU). Here every layer works on integers held in float64 numpy arrays (no torch: ``hific decode``
parses a file's latents before it imports torch), with the layer geometry of
hificli.models.geometry.HYPER_SYNTHESIS:

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
trained HiFiC hyper-synthesis weights are ~0.01-0.05), plus |w| <= 2**15 per weight. A transposed
convolution is computed here as one matrix product (every tap's contribution at every input position:
BLAS dgemm, sums of products, no FFT/Winograd path) and a strided scatter-add of the taps (col2im), so
the proof covers it: the integers are those of any other evaluation, e.g. torch's conv_transpose2d in
float64, which computed them before. The requantization steps multiply by powers of two and floor,
which is exact too.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from hificli.entropy.tables import SCALE_FRAC_BITS, SCALE_MIN_FIXED
from hificli.models.geometry import HYPER_SYNTHESIS, TransposedConv

W_FRAC = 16  #: fractional bits of the integer weights
ACT_FRAC = 12  #: fractional bits of the hidden activations
Z_MAX = 2**12  #: |z_hat| is clamped to this
ACT_MAX = 2**24  #: hidden activations (integer units) are clamped to [0, ACT_MAX], i.e. values <= 4096
OUT_FRAC = SCALE_FRAC_BITS  #: fractional bits of mu_fixed and scale_fixed
OUT_MAX = 2**31  #: |mu_fixed|, |scale_fixed| <= 2**31, i.e. values within +-32768
W_INT_MAX = 2**31  #: per-weight bound (|w| <= 2**15)
_EXACT_LIMIT = 2**52


class _Layer:
    """One transposed convolution as integer arrays plus its fixed-point bookkeeping."""

    def __init__(self, geometry: TransposedConv, state: Mapping[str, np.ndarray], in_frac: int, in_max: int,
                 name: str) -> None:
        weight, bias = (_param(state, f"{geometry.name}.{part}", name) for part in ("weight", "bias"))
        k = geometry.kernel
        if weight.ndim != 4 or weight.shape[2:] != (k, k) or bias.shape != (weight.shape[1],):
            raise ValueError(f"{name}: expected a {k}x{k} transposed convolution, got weight {weight.shape}, "
                             f"bias {bias.shape}")
        self.geometry = geometry
        self.acc_frac = W_FRAC + in_frac
        w_int = to_int(weight, W_FRAC, f"{name}.weight")
        self.bias = to_int(bias, self.acc_frac, f"{name}.bias")
        magnitude = np.abs(w_int)
        if magnitude.size and magnitude.max() > W_INT_MAX:
            raise ValueError(f"{name}: a weight exceeds {W_INT_MAX / 2**W_FRAC} in magnitude")
        # ConvTranspose2d weight layout: [in, out, kh, kw]; bound per output channel.
        check_exact_bound(name, float(magnitude.sum(axis=(0, 2, 3)).max()), in_max, self.bias)
        self.in_channels, self.out_channels = int(weight.shape[0]), int(weight.shape[1])
        # rows (out, kh, kw): one matrix product gives every tap's contribution at every input position
        self.matrix = np.ascontiguousarray(w_int.transpose(1, 2, 3, 0).reshape(-1, self.in_channels))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Accumulator (integers in float64, bias included) (out, H, W) of an input (in, h, w)."""
        g = self.geometry
        _, h, w = x.shape
        k, s, p = g.kernel, g.stride, g.padding
        taps = (self.matrix @ x.reshape(self.in_channels, h * w)).reshape(self.out_channels, k, k, h, w)
        ho, wo = g.out_size(h), g.out_size(w)
        full = np.zeros((self.out_channels, max((h - 1) * s + k, p + ho), max((w - 1) * s + k, p + wo)))
        for a in range(k):
            for b in range(k):
                full[:, a : a + s * h : s, b : b + s * w : s] += taps[:, a, b]
        del taps
        out = full[:, p : p + ho, p : p + wo]
        out += self.bias[:, None, None]
        return out


def _param(state: Mapping[str, np.ndarray], key: str, name: str) -> np.ndarray:
    try:
        return np.asarray(state[key])
    except KeyError:
        raise ValueError(f"{name} needs {key!r}") from None


def sub_state(arrays: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries of a state (weights file arrays) under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def check_exact_bound(name: str, weight_sum: float, in_max: int, bias: np.ndarray) -> None:
    """Refuse a layer whose partial sums could leave float64's exact integers (see the module docstring):
    ``weight_sum`` is the largest sum of |w_int| over one output's inputs and taps."""
    bound = in_max * weight_sum + (float(np.abs(bias).max()) if bias.size else 0.0)
    if not bound < _EXACT_LIMIT:
        raise ValueError(f"{name}: weights too large for exact float64 accumulation (bound {bound:.3g} >= 2**52)")


def to_int(values: np.ndarray, frac: int, name: str) -> np.ndarray:
    """``round_half_even(float16(values) * 2**frac)`` as float64 integers (an fp32 and an fp16 copy of the
    same weights give the same integers); refuses values that are not finite in float16."""
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float16's range is inf: refused below
        half = np.asarray(values).astype(np.float16).astype(np.float64)
    if half.size and not np.abs(half).max() <= 65504.0:  # also false for inf / nan
        raise ValueError(f"{name} has non-finite values or values beyond float16 range")
    return np.round(half * 2.0**frac)  # exact scaling, then round half to even


def requantize(acc: np.ndarray, shift: int) -> np.ndarray:
    """floor((acc + 2**(shift-1)) / 2**shift) on integer-valued float64 (exact)."""
    if shift == 0:
        return acc
    return np.floor((acc + 2.0 ** (shift - 1)) * 2.0**-shift)


class ExactHyperSynthesis:
    """mu and sigma networks of the hyperprior evaluated in integer-exact arithmetic.

    ``synthesis_mu`` / ``synthesis_std``: the states (numpy arrays) of the two nets of
    hificli.models.geometry.HYPER_SYNTHESIS: ``conv1.weight``, ``conv1.bias``, ... (``sub_state`` of a
    weights file's arrays under ``Hyperprior.synthesis_mu.``). Their weights are converted once here.
    """

    def __init__(self, synthesis_mu: Mapping[str, np.ndarray], synthesis_std: Mapping[str, np.ndarray]) -> None:
        self.nets = [self._convert(synthesis_mu, "synthesis_mu"), self._convert(synthesis_std, "synthesis_std")]
        if self.nets[0][-1].out_channels != self.nets[1][-1].out_channels:
            raise ValueError("synthesis_mu and synthesis_std must have the same number of output channels")
        self.in_channels = self.nets[0][0].in_channels
        self.out_channels = self.nets[0][-1].out_channels

    @staticmethod
    def _convert(state: Mapping[str, np.ndarray], name: str) -> list[_Layer]:
        layers, in_frac, in_max = [], 0, Z_MAX
        for geometry in HYPER_SYNTHESIS:
            layers.append(_Layer(geometry, state, in_frac, in_max, f"{name}.{geometry.name}"))
            in_frac, in_max = ACT_FRAC, ACT_MAX
        if any(a.out_channels != b.in_channels for a, b in zip(layers, layers[1:], strict=False)):
            raise ValueError(f"{name}: the layers' channels do not chain")
        return layers

    @staticmethod
    def _run(layers: list[_Layer], z: np.ndarray) -> np.ndarray:
        x = z
        for layer in layers:
            acc = layer(x)
            if layer.geometry.relu:
                x = np.clip(requantize(acc, layer.acc_frac - ACT_FRAC), 0.0, float(ACT_MAX))
            else:
                x = np.clip(requantize(acc, layer.acc_frac - OUT_FRAC), -float(OUT_MAX), float(OUT_MAX))
        return x.astype(np.int64)

    def fixed(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mu_fixed, scale_fixed): int64 arrays (N, C, 4h, 4w) with OUT_FRAC fractional bits, from integer
        hyperlatents (N, N_h, h, w) (any numeric dtype)."""
        z = np.asarray(z_hat)
        if z.ndim != 4 or z.shape[1] != self.in_channels:
            raise ValueError(f"z_hat must have shape (N, {self.in_channels}, h, w), got {tuple(z.shape)}")
        z = z.astype(np.float64)
        if not np.isfinite(z).all() or not np.array_equal(z, np.floor(z)):
            raise ValueError("z_hat must hold finite integer values")
        z = np.clip(z, -float(Z_MAX), float(Z_MAX))
        mu, scale = ([self._run(net, item)[None] for item in z] for net in self.nets)
        return (mu[0], scale[0]) if len(z) == 1 else (np.concatenate(mu), np.concatenate(scale))


def scale_indexes(scale_fixed: np.ndarray, table_thresholds: np.ndarray) -> np.ndarray:
    """Table row per element: the smallest level >= sigma (integer comparisons only).

    sigma is lower-bounded at SCALE_MIN_FIXED (0.11); sigmas above the last level use the last row.
    Returns int32 with the shape of ``scale_fixed``.
    """
    s = np.asarray(scale_fixed)
    if s.dtype.kind not in "iu":
        raise ValueError(f"scale_fixed must be integers (fixed point), got dtype {s.dtype}")
    thresholds = np.asarray(table_thresholds, dtype=np.int64)
    s = np.maximum(s.astype(np.int64), SCALE_MIN_FIXED)
    idx = np.searchsorted(thresholds, s, side="left")
    return np.minimum(idx, thresholds.size - 1).astype(np.int32)
