"""Deterministic entropy coding: integer tables, the ANS symbol coder, integer-exact hyper-synthesis.

Everything here is numpy (and constriction for the coder): no torch. ``exact`` is imported on first
use of :class:`ExactHyperSynthesis` or :func:`scale_indexes`.
"""

from __future__ import annotations

from typing import Any

from hificli.entropy.coder import decode_symbols, encode_symbols, estimate_bits
from hificli.entropy.tables import (
    LATENT_LEVELS,
    PRECISION,
    SCALE_FRAC_BITS,
    TAIL_MASS,
    CdfTable,
    factorized_tables,
    latent_scale_table,
    latent_tables,
    quantize_pmf,
)

__all__ = [
    "LATENT_LEVELS",
    "PRECISION",
    "SCALE_FRAC_BITS",
    "TAIL_MASS",
    "CdfTable",
    "ExactHyperSynthesis",
    "decode_symbols",
    "encode_symbols",
    "estimate_bits",
    "factorized_tables",
    "latent_scale_table",
    "latent_tables",
    "quantize_pmf",
    "scale_indexes",
]


def __getattr__(name: str) -> Any:
    if name in ("ExactHyperSynthesis", "scale_indexes"):
        from hificli.entropy import exact

        return getattr(exact, name)
    raise AttributeError(f"module 'hificli.entropy' has no attribute {name!r}")
