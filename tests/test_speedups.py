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
