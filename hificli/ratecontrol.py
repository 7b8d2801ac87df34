"""Rate control: the largest file not above a byte budget, by quality search or model choice.

Variable-rate models: the analysis transforms run once (:func:`hificli.codec.analyse_source`); a binary
search over the integer quality codes only re-quantizes and re-codes the latents, so a ``--size``
encode costs the analysis plus about 16 entropy-coding passes. Coded size grows with quality; the
search returns the largest code whose file fits (a fitting file is always returned, never a larger one).
Fixed-rate model families (HiFiC low/med/high): every candidate model encodes the image and the
largest file that fits wins.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from hificli.errors import TargetUnreachableError

if TYPE_CHECKING:
    from hificli.codec import CodecModel
    from hificli.imageio import SourceImage


@dataclass(frozen=True)
class RateResult:
    """An encoded file, the quality code it was coded at (None: fixed-rate) and the model used."""

    data: bytes
    quality_code: int | None
    model: CodecModel
    trials: int


def budget_for_bpp(bpp: float, width: int, height: int) -> int:
    """The byte budget of a bits-per-pixel target for a width x height image (whole file)."""
    if not bpp > 0 or not math.isfinite(bpp):
        raise ValueError(f"target bpp must be a positive number, got {bpp}")
    return int(bpp * width * height // 8)


def _unreachable(smallest: int, max_bytes: int, what: str) -> TargetUnreachableError:
    return TargetUnreachableError(
        f"target of {max_bytes} bytes is below the smallest file {what} can make ({smallest} bytes)",
        f"ask for at least {smallest} bytes (--size {smallest})",
    )


def encode_to_size(source: SourceImage, model: CodecModel, max_bytes: int) -> RateResult:
    """The highest-quality encoding of ``source`` with ``model`` (variable-rate) within ``max_bytes``."""
    from hificli.codec import analyse_source, code_analysis
    from hificli.entropy.rate import QUALITY_CODE_MAX

    if not model.variable_rate:
        raise ValueError(f"model {model.model_id!r} is fixed-rate; use choose_model")
    analysis = analyse_source(source, model)
    trials = 1
    lowest = code_analysis(analysis, model, 0)
    if len(lowest) > max_bytes:
        raise _unreachable(len(lowest), max_bytes, f"{model.model_id} at quality 0")
    best, lo, hi = (lowest, 0), 0, QUALITY_CODE_MAX + 1  # invariant: lo fits, hi does not (or is past the end)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        data = code_analysis(analysis, model, mid)
        trials += 1
        if len(data) <= max_bytes:
            best, lo = (data, mid), mid
        else:
            hi = mid
    return RateResult(best[0], best[1], model, trials)


def choose_model(source: SourceImage, models: Sequence[CodecModel], max_bytes: int) -> RateResult:
    """The largest file within ``max_bytes`` among fixed-rate ``models`` (each encodes the image once)."""
    from hificli.codec import encode_source

    if not models:
        raise ValueError("no candidate models")
    results = [(encode_source(source, m), m) for m in models]
    fitting = [(len(d), d, m) for d, m in results if len(d) <= max_bytes]
    if not fitting:
        smallest = min(len(d) for d, _ in results)
        names = ", ".join(m.model_id for m in models)
        raise _unreachable(smallest, max_bytes, f"the installed models ({names})")
    _, data, model = max(fitting, key=lambda t: t[0])
    return RateResult(data, None, model, len(models))


@dataclass(frozen=True)
class RateRequest:
    """What the user asked for: a quality (0-100), a bits-per-pixel target or a byte budget (at most
    one; none means the model's default quality)."""

    quality: float | None = None
    target_bpp: float | None = None
    target_size: int | None = None

    def __post_init__(self) -> None:
        given = [v for v in (self.quality, self.target_bpp, self.target_size) if v is not None]
        if len(given) > 1:
            raise ValueError("give at most one of quality, target_bpp and target_size")
        if self.quality is not None and not 0 <= self.quality <= 100:
            raise ValueError(f"quality must be in 0-100, got {self.quality}")
        if self.target_size is not None and self.target_size < 1:
            raise ValueError(f"target size must be at least 1 byte, got {self.target_size}")
        if self.target_bpp is not None:
            budget_for_bpp(self.target_bpp, 1, 1)  # validates the number

    @property
    def has_target(self) -> bool:
        return self.target_bpp is not None or self.target_size is not None

    def budget(self, width: int, height: int) -> int:
        """The byte budget of a target request for a width x height image."""
        if self.target_size is not None:
            return self.target_size
        if self.target_bpp is None:
            raise ValueError("not a target request")
        return budget_for_bpp(self.target_bpp, width, height)


def encode_with(
    source: SourceImage, model: CodecModel, request: RateRequest, family: Sequence[CodecModel] = ()
) -> RateResult:
    """Encode ``source`` as ``request`` asks. ``family``: other fixed-rate models a target may choose
    from besides ``model``. A quality for a fixed-rate model is a ValueError (the CLI checks first)."""
    from hificli.codec import encode_source
    from hificli.entropy.rate import DEFAULT_QUALITY, quality_code

    if request.has_target:
        budget = request.budget(source.width, source.height)
        if model.variable_rate:
            return encode_to_size(source, model, budget)
        return choose_model(source, [model, *family], budget)
    if not model.variable_rate:
        if request.quality is not None:
            raise ValueError(f"model {model.model_id!r} is fixed-rate: it takes no quality")
        return RateResult(encode_source(source, model), None, model, 1)
    code = quality_code(DEFAULT_QUALITY if request.quality is None else request.quality)
    return RateResult(encode_source(source, model, code), code, model, 1)
