"""Integer-exact hyper-synthesis (numpy): exact integers, the same as torch's float64 transposed
convolutions gave, identical across threads/processes/fp16, close to float."""

from __future__ import annotations

import copy
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from model_fixtures import numpy_state
from torch import nn

from hificli.entropy.exact import (
    ACT_FRAC,
    ACT_MAX,
    OUT_FRAC,
    OUT_MAX,
    W_FRAC,
    Z_MAX,
    ExactHyperSynthesis,
    requantize,
    scale_indexes,
    to_int,
)
from hificli.entropy.tables import SCALE_MIN_FIXED, latent_scale_table, latent_tables


class Synthesis(nn.Module):
    """Same structure as Hyperprior.synthesis_mu / synthesis_std (stand-in until hific.py exists)."""

    def __init__(self, n: int, c: int) -> None:
        super().__init__()
        self.conv1 = nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1)
        self.conv2 = nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1)
        self.conv3 = nn.ConvTranspose2d(n, c, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))


def make_nets(n: int, c: int, seed: int = 0, gain: float = 1.0) -> tuple[Synthesis, Synthesis]:
    torch.manual_seed(seed)
    mu, std = Synthesis(n, c), Synthesis(n, c)
    if gain != 1.0:
        with torch.no_grad():
            for p in list(mu.parameters()) + list(std.parameters()):
                p.mul_(gain)
    return mu, std


def make_z(n: int, h: int, w: int, seed: int = 1, spread: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(-spread, spread + 1, (1, n, h, w)).astype(np.float32)


def exact(mu: Synthesis, std: Synthesis) -> ExactHyperSynthesis:
    return ExactHyperSynthesis(numpy_state(mu), numpy_state(std))


# ------------------------------------------------------------ an independent int64 reference


def _int_weights(conv: nn.ConvTranspose2d, acc_frac: int) -> tuple[np.ndarray, np.ndarray]:
    w = np.round(conv.weight.detach().half().double().numpy() * 2**W_FRAC).astype(np.int64)
    b = np.round(conv.bias.detach().half().double().numpy() * 2**acc_frac).astype(np.int64)
    return w, b


def _conv_t_int(
    x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int, out_pad: int
) -> np.ndarray:
    """Transposed convolution in int64 by scattering each tap (slow but obviously exact)."""
    n, _, h, wd = x.shape
    k = w.shape[2]
    size = ((h - 1) * stride + k + out_pad, (wd - 1) * stride + k + out_pad)
    full = np.zeros((n, w.shape[1], *size), np.int64)
    for a in range(k):
        for c in range(k):
            full[:, :, a : a + stride * h : stride, c : c + stride * wd : stride] += np.einsum(
                "nihw,io->nohw", x, w[:, :, a, c]
            )
    ho, wo = (h - 1) * stride - 2 * pad + k + out_pad, (wd - 1) * stride - 2 * pad + k + out_pad
    return full[:, :, pad : pad + ho, pad : pad + wo] + b[None, :, None, None]


def _round_shift(acc: np.ndarray, shift: int) -> np.ndarray:
    return (acc + (1 << (shift - 1))) >> shift  # arithmetic shift = floor division


def reference_fixed(net: Synthesis, z: np.ndarray) -> np.ndarray:
    x = np.clip(z.astype(np.int64), -Z_MAX, Z_MAX)
    frac = 0
    for i, (conv, pad, out_pad) in enumerate([(net.conv1, 2, 1), (net.conv2, 2, 1), (net.conv3, 1, 0)]):
        w, b = _int_weights(conv, W_FRAC + frac)
        acc = _conv_t_int(x, w, b, conv.stride[0], pad, out_pad)
        if i < 2:
            x, frac = np.clip(_round_shift(acc, W_FRAC + frac - ACT_FRAC), 0, ACT_MAX), ACT_FRAC
        else:
            x = np.clip(_round_shift(acc, W_FRAC + frac - OUT_FRAC), -OUT_MAX, OUT_MAX)
    return x


# ------------------------------------------------------------ tests


@pytest.mark.parametrize("gain", [1.0, 40.0])
def test_matches_exact_int64_arithmetic(gain: float) -> None:
    """float64 results equal an independent int64 computation (gain 40 drives partial sums past 2**40)."""
    mu_net, std_net = make_nets(5, 6, gain=gain)
    z = make_z(5, 3, 4, spread=40)
    z[0, 0, 0, 0] = 10**5  # beyond Z_MAX: clamped
    mu_fixed, scale_fixed = exact(mu_net, std_net).fixed(z)
    np.testing.assert_array_equal(mu_fixed, reference_fixed(mu_net, z))
    np.testing.assert_array_equal(scale_fixed, reference_fixed(std_net, z))
    if gain > 1:
        assert np.abs(mu_fixed).max() > 2**30  # float32 could not have held this exactly


def torch_fixed(net: Synthesis, z: np.ndarray) -> np.ndarray:
    """The integers as hific computed them before the decoder became numpy-only: torch's float64
    conv_transpose2d on the same integer weights, requantized the same way."""
    import torch.nn.functional as F

    x = torch.from_numpy(np.clip(z.astype(np.float64), -Z_MAX, Z_MAX))
    frac = 0
    for i, conv in enumerate((net.conv1, net.conv2, net.conv3)):
        weight = torch.from_numpy(to_int(conv.weight.detach().numpy(), W_FRAC, "w"))
        bias = torch.from_numpy(to_int(conv.bias.detach().numpy(), W_FRAC + frac, "b"))
        acc = F.conv_transpose2d(x, weight, bias, conv.stride, conv.padding, conv.output_padding).numpy()
        if i < 2:
            x, frac = torch.from_numpy(np.clip(requantize(acc, W_FRAC + frac - ACT_FRAC), 0, ACT_MAX)), ACT_FRAC
        else:
            return np.clip(requantize(acc, W_FRAC + frac - OUT_FRAC), -OUT_MAX, OUT_MAX).astype(np.int64)
    raise AssertionError("three layers")


def test_matches_the_torch_float64_evaluation() -> None:
    """Per-tap matrix product + scatter-add gives the integers of torch's GEMM + col2im (any order is
    exact), on nets wide enough for blocked, multi-threaded BLAS and with partial sums past 2**40."""
    mu_net, std_net = make_nets(48, 40, seed=3, gain=20.0)
    z = make_z(48, 5, 7, spread=300)
    mu_fixed, scale_fixed = exact(mu_net, std_net).fixed(z)
    np.testing.assert_array_equal(mu_fixed, torch_fixed(mu_net, z))
    np.testing.assert_array_equal(scale_fixed, torch_fixed(std_net, z))
    assert np.abs(mu_fixed).max() > 2**30 and len(np.unique(scale_fixed)) > 1000


def test_close_to_float32_reference() -> None:
    mu_net, std_net = make_nets(5, 6, gain=3.0)  # outputs up to ~10, like a trained hyper-synthesis
    z = make_z(5, 3, 4)
    mu_fixed, scale_fixed = exact(mu_net, std_net).fixed(z)
    assert mu_fixed.dtype == np.int64 and scale_fixed.dtype == np.int64
    assert mu_fixed.shape == scale_fixed.shape == (1, 6, 12, 16)
    with torch.no_grad():
        ref_mu, ref_std = (net(torch.from_numpy(z)).double().numpy() for net in (mu_net, std_net))
    assert np.abs(ref_mu).max() > 5 and np.abs(ref_std).max() > 5  # a meaningful comparison
    # fp16 weights give ~2**-12 relative error; the integer activations add ~2**-13 absolute per layer
    for got, ref in ((mu_fixed, ref_mu), (scale_fixed, ref_std)):
        assert np.abs(got * 2.0**-OUT_FRAC - ref).max() <= 1e-3 * np.abs(ref).max() + 1e-3


def _digest(ex: ExactHyperSynthesis, z: np.ndarray) -> str:
    mu_fixed, scale_fixed = ex.fixed(z)
    idx = scale_indexes(scale_fixed, latent_tables("gaussian", latent_scale_table(64)).scale_thresholds_fixed)
    return hashlib.sha256(mu_fixed.tobytes() + scale_fixed.tobytes() + idx.tobytes()).hexdigest()


_SUBPROCESS = """
import sys
sys.path.insert(0, {tests!r})
from test_exact_synthesis import exact, make_nets, make_z, _digest
print(_digest(exact(*make_nets(48, 40)), make_z(48, 6, 7)))
"""


def test_identical_across_threads_processes_and_fp16() -> None:
    """Same mu bits and indexes with 1 or 2 BLAS threads (fresh processes), and from an fp16 weight copy."""
    mu_net, std_net = make_nets(48, 40)  # big enough for multi-threaded GEMM
    z = make_z(48, 6, 7)
    one = _digest(exact(mu_net, std_net), z)
    half = exact(copy.deepcopy(mu_net).half(), copy.deepcopy(std_net).half())
    assert _digest(half, z) == one
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    for threads in ("1", "2"):
        env = {**os.environ, "OPENBLAS_NUM_THREADS": threads, "OMP_NUM_THREADS": threads}
        out = subprocess.run([sys.executable, "-c", _SUBPROCESS.format(tests=tests_dir)], capture_output=True,
                             text=True, check=True, env=env).stdout
        assert out.strip() == one, threads


def test_scale_indexes_pick_smallest_level_at_or_above_sigma() -> None:
    thresholds = latent_tables("gaussian", latent_scale_table(16)).scale_thresholds_fixed
    s = np.array([0, -5, SCALE_MIN_FIXED, thresholds[3], thresholds[3] + 1, thresholds[-1], 2**40])
    idx = scale_indexes(s, thresholds)
    np.testing.assert_array_equal(idx, [0, 0, 0, 3, 4, 15, 15])
    assert idx.dtype == np.int32
    with pytest.raises(ValueError, match="fixed point"):
        scale_indexes(np.array([0.5]), thresholds)


def test_rejects_bad_inputs_and_unsafe_weights() -> None:
    mu_net, std_net = make_nets(5, 6)
    ex = exact(mu_net, std_net)
    with pytest.raises(ValueError, match="integer"):
        ex.fixed(np.full((1, 5, 2, 2), 0.5))
    with pytest.raises(ValueError, match="integer"):
        ex.fixed(np.full((1, 5, 2, 2), np.nan))
    with pytest.raises(ValueError, match="shape"):
        ex.fixed(np.zeros((1, 4, 2, 2)))
    big_mu, big_std = make_nets(5, 6, gain=1e4)  # sum |w| per channel far beyond 2**12
    with pytest.raises(ValueError, match="too large|float16"):
        exact(big_mu, big_std)
    nan_mu = copy.deepcopy(mu_net)
    with torch.no_grad():
        nan_mu.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        exact(nan_mu, std_net)
    with pytest.raises(ValueError, match="conv1"):
        exact(nn.Identity(), std_net)
    with pytest.raises(ValueError, match="5x5"):
        ExactHyperSynthesis({**numpy_state(std_net), "conv1.weight": np.zeros((5, 5, 3, 3))}, numpy_state(std_net))
