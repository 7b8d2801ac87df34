"""Integer-exact hyper-synthesis: exact integers, identical across threads/processes/fp16, close to float."""

from __future__ import annotations

import copy
import hashlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from hificli.entropy.exact import (
    ACT_FRAC,
    ACT_MAX,
    OUT_FRAC,
    OUT_MAX,
    W_FRAC,
    Z_MAX,
    ExactHyperSynthesis,
    scale_indexes,
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


def make_z(n: int, h: int, w: int, seed: int = 1, spread: int = 12) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-spread, spread + 1, (1, n, h, w), generator=g).float()


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


def reference_fixed(net: Synthesis, z: torch.Tensor) -> np.ndarray:
    x = np.clip(z.numpy().astype(np.int64), -Z_MAX, Z_MAX)
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
    mu_fixed, scale_fixed = ExactHyperSynthesis(mu_net, std_net).fixed(z)
    np.testing.assert_array_equal(mu_fixed.numpy(), reference_fixed(mu_net, z))
    np.testing.assert_array_equal(scale_fixed.numpy(), reference_fixed(std_net, z))
    if gain > 1:
        assert np.abs(mu_fixed.numpy()).max() > 2**30  # float32 could not have held this exactly


def test_close_to_float32_reference() -> None:
    mu_net, std_net = make_nets(5, 6, gain=3.0)  # outputs up to ~10, like a trained hyper-synthesis
    z = make_z(5, 3, 4)
    mu, scale_fixed = ExactHyperSynthesis(mu_net, std_net)(z)
    assert mu.dtype == torch.float64 and scale_fixed.dtype == torch.int64
    assert mu.shape == scale_fixed.shape == (1, 6, 12, 16)
    with torch.no_grad():
        ref_mu, ref_std = mu_net(z), std_net(z)
    assert ref_mu.abs().max() > 5 and ref_std.abs().max() > 5  # a meaningful comparison
    # fp16 weights give ~2**-12 relative error; the integer activations add ~2**-13 absolute per layer
    for got, ref in ((mu, ref_mu), (scale_fixed.double() * 2.0**-OUT_FRAC, ref_std)):
        assert (got - ref.double()).abs().max() <= 1e-3 * ref.abs().max() + 1e-3
    np.testing.assert_array_equal((mu * 2**OUT_FRAC).numpy(), np.round((mu * 2**OUT_FRAC).numpy()))


def _digest(ex: ExactHyperSynthesis, z: torch.Tensor) -> str:
    mu, scale_fixed = ex(z)
    idx = scale_indexes(scale_fixed, latent_tables("gaussian", latent_scale_table(64)).scale_thresholds_fixed)
    return hashlib.sha256(mu.numpy().tobytes() + scale_fixed.numpy().tobytes() + idx.tobytes()).hexdigest()


_SUBPROCESS = """
import sys, torch
sys.path.insert(0, {tests!r})
from test_exact_synthesis import make_nets, make_z, _digest
from hificli.entropy.exact import ExactHyperSynthesis
torch.set_num_threads({threads})
print(_digest(ExactHyperSynthesis(*make_nets(48, 40)), make_z(48, 6, 7)))
"""


def test_identical_across_threads_processes_and_fp16() -> None:
    """Same mu bits and indexes with 1 or 2 threads, in a fresh process, and from an fp16 weight copy."""
    mu_net, std_net = make_nets(48, 40)  # big enough for multi-threaded GEMM
    z = make_z(48, 6, 7)
    ex = ExactHyperSynthesis(mu_net, std_net)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = _digest(ex, z)
        torch.set_num_threads(2)
        two = _digest(ex, z)
    finally:
        torch.set_num_threads(before)
    assert one == two
    half = ExactHyperSynthesis(copy.deepcopy(mu_net).half(), copy.deepcopy(std_net).half())
    assert _digest(half, z) == one
    tests_dir = str(__import__("pathlib").Path(__file__).parent)
    script = _SUBPROCESS.format(tests=tests_dir, threads=2)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    assert out.strip() == one


def test_scale_indexes_pick_smallest_level_at_or_above_sigma() -> None:
    thresholds = latent_tables("gaussian", latent_scale_table(16)).scale_thresholds_fixed
    s = np.array([0, -5, SCALE_MIN_FIXED, thresholds[3], thresholds[3] + 1, thresholds[-1], 2**40])
    idx = scale_indexes(torch.from_numpy(s), thresholds)
    np.testing.assert_array_equal(idx, [0, 0, 0, 3, 4, 15, 15])
    assert idx.dtype == np.int32
    with pytest.raises(ValueError, match="fixed point"):
        scale_indexes(np.array([0.5]), thresholds)


def test_rejects_bad_inputs_and_unsafe_weights() -> None:
    mu_net, std_net = make_nets(5, 6)
    ex = ExactHyperSynthesis(mu_net, std_net)
    with pytest.raises(ValueError, match="integer"):
        ex(torch.full((1, 5, 2, 2), 0.5))
    with pytest.raises(ValueError, match="integer"):
        ex(torch.full((1, 5, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="shape"):
        ex(torch.zeros(1, 4, 2, 2))
    big_mu, big_std = make_nets(5, 6, gain=1e4)  # sum |w| per channel far beyond 2**12
    with pytest.raises(ValueError, match="too large|float16"):
        ExactHyperSynthesis(big_mu, big_std)
    nan_mu = copy.deepcopy(mu_net)
    with torch.no_grad():
        nan_mu.conv2.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        ExactHyperSynthesis(nan_mu, std_net)
    with pytest.raises(ValueError, match="conv1"):
        ExactHyperSynthesis(nn.Identity(), std_net)
