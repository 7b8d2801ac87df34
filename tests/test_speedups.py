"""Shortcuts taken for speed must give the answers of the slow way."""

from __future__ import annotations

import pytest
import torch

from hificli.checkpoint import _all_finite


@pytest.mark.parametrize(
    ("values", "dtype", "finite"),
    [
        ([1.0, -2.0, 3.5], torch.float32, True),
        ([1.0, float("nan"), 3.0], torch.float32, False),
        ([1.0, float("inf")], torch.float32, False),
        ([float("-inf"), 0.0], torch.float32, False),
        ([float("inf"), float("-inf")], torch.float32, False),  # the sum is NaN
        ([3e38, 3e38], torch.float32, True),  # finite values whose sum overflows
        ([60000.0, 60000.0], torch.float16, True),
        ([60000.0, float("nan")], torch.float16, False),
        ([], torch.float32, True),
    ],
)
def test_finite_check_agrees_with_the_elementwise_one(values: list[float], dtype: torch.dtype, finite: bool) -> None:
    tensor = torch.tensor(values, dtype=dtype)
    assert bool(torch.isfinite(tensor).all()) is finite
    assert _all_finite(tensor) is finite


@pytest.mark.parametrize("channels", [2, 7, 64])
def test_channel_norm_fused_channels_last_path_matches_the_unbiased_formula(channels: int) -> None:
    from hificli.layers import ChannelNorm2d

    torch.manual_seed(channels)
    norm = ChannelNorm2d(channels)
    with torch.no_grad():
        norm.gamma.normal_()
        norm.beta.normal_()
    x = torch.randn(2, channels, 5, 6) * 3 + 1
    reference = (x - x.mean(1, keepdim=True)) * torch.rsqrt(x.var(1, keepdim=True) + norm.eps) * norm.gamma + norm.beta
    fast = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        fused = norm(fast)
        plain = norm(x)
    assert fused.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(plain, reference)  # NCHW keeps the port's exact formula
    formula = (fast - fast.mean(1, keepdim=True)) * torch.rsqrt(fast.var(1, keepdim=True) + norm.eps)
    assert torch.equal(norm(fast).detach(), formula * norm.gamma + norm.beta)  # training keeps the formula
