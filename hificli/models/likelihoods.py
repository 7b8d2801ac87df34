"""Conditional likelihood of the latents y given the hyperprior's (mu, scale), and the standardized
CDF / quantile of the two supported distributions (PORT_FACTS 1.8).

``kind`` is ``"gaussian"`` (scale = standard deviation) or ``"logistic"`` (scale = logistic s).
"""

from __future__ import annotations

import math

import torch

from hificli.layers import lower_bound

#: Lower bound of the latent scales (sigma = max(raw, SCALE_MIN)); also the smallest entropy-table scale.
SCALE_MIN = 0.11
#: Lower bound of every likelihood, so that -log2 stays finite (16/30 bits at most per element).
MIN_LIKELIHOOD = 1e-9

_INV_SQRT2 = 1.0 / math.sqrt(2.0)
KINDS = ("gaussian", "logistic")


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"likelihood kind must be one of {KINDS}, got {kind!r}")


def standardized_cdf(x: torch.Tensor, kind: str) -> torch.Tensor:
    """CDF of the zero-mean, unit-scale distribution, elementwise (same shape and dtype as x).

    gaussian: ``0.5 * erfc(-x / sqrt(2))``; logistic: ``sigmoid(x)``.
    """
    _check_kind(kind)
    if kind == "gaussian":
        return 0.5 * torch.special.erfc(x * -_INV_SQRT2)
    return torch.sigmoid(x)


def standardized_quantile(p: float | torch.Tensor, kind: str) -> float | torch.Tensor:
    """Inverse of :func:`standardized_cdf`. A Python float is evaluated in float64 and returns a float
    (e.g. ``-standardized_quantile(2**-9, "logistic") == log(511)``); a tensor returns a tensor of the
    same shape and dtype."""
    _check_kind(kind)
    if isinstance(p, torch.Tensor):
        return torch.special.ndtri(p) if kind == "gaussian" else torch.logit(p)
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile needs 0 < p < 1, got {p}")
    if kind == "gaussian":
        return float(torch.special.ndtri(torch.tensor(p, dtype=torch.float64)))
    return math.log(p) - math.log1p(-p)


def latent_likelihood(y: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor, kind: str) -> torch.Tensor:
    """Probability mass of the bin [y - 0.5, y + 0.5] under the distribution (mu, scale).

    Computed in the symmetric form ``CDF((0.5 - |y - mu|) / s) - CDF((-0.5 - |y - mu|) / s)``, which
    stays accurate in the tails. y, mu and scale broadcast together (usually all (N, C, H, W));
    scale must be positive (the hyperprior bounds it at SCALE_MIN). The result is lower-bounded at
    MIN_LIKELIHOOD with gradients passing toward larger values.
    """
    v = torch.abs(y - mu)
    upper = standardized_cdf((0.5 - v) / scale, kind)
    lower = standardized_cdf(-(0.5 + v) / scale, kind)
    return lower_bound(upper - lower, MIN_LIKELIHOOD)


def bits(likelihoods: torch.Tensor) -> torch.Tensor:
    """Total information content ``sum(-log2 p)`` of a likelihood tensor, as a scalar tensor."""
    return -torch.log2(likelihoods).sum()
