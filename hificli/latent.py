"""The integer half of a model: everything that decides how a .hfc file's bits are parsed, torch-free.

A :class:`LatentModel` holds a weights file's entropy tables, its exact hyper-synthesis and context nets
(hificli.entropy.exact, hificli.entropy.context), its rate levels and its info, built from the file's
verified numpy arrays. The encoder and the decoder take mu, sigma and the context from it
(hificli.codec), so ``hific decode`` entropy-decodes every latent stream before torch is imported: a
damaged file is refused in a fraction of a second (issue #16). The float network
(hificli.codec.CodecModel) is built from the same arrays when pixels are needed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hificli.errors import ModelMismatchError
from hificli.tiling import ModelSize, Tiling

if TYPE_CHECKING:
    from hificli.entropy.context import ExactContext
    from hificli.entropy.exact import ExactHyperSynthesis
    from hificli.entropy.tables import CdfTable
    from hificli.models.config import ArchConfig
    from hificli.weights import WeightsInfo


@dataclass
class LatentModel:
    """Tables, exact nets and rate levels of one model; ``tiling`` bounds the hyper-synthesis' memory
    (it never changes the bits). ``weights``: the verified arrays the float network is built from,
    handed over once (:meth:`release_weights`)."""

    info: WeightsInfo
    z_table: CdfTable
    y_table: CdfTable
    exact: ExactHyperSynthesis
    context: ExactContext | None
    levels_fixed: np.ndarray | None
    path: Path | None = None
    tiling: Tiling = field(default_factory=Tiling)
    weights: dict[str, np.ndarray] | None = field(default=None, repr=False)

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], info: WeightsInfo, path: Path | None) -> LatentModel:
        """The latent model of a weights file's verified arrays (hificli.weights.read_verified): network
        tensors by state-dict key plus the ``tables.*`` arrays. Unusable weights -> ModelMismatchError."""
        from hificli.entropy.context import ExactContext
        from hificli.entropy.exact import ExactHyperSynthesis, sub_state
        from hificli.models.geometry import HYPER_SYNTHESIS_NETS
        from hificli.weights import read_rate_levels, read_tables

        config = info.config
        z_table, y_table = read_tables(arrays, path)
        levels = read_rate_levels(arrays, config, path)
        try:
            exact = ExactHyperSynthesis(*(sub_state(arrays, f"{net}.") for net in HYPER_SYNTHESIS_NETS))
            context = None if config.context == "none" else ExactContext(
                arrays, config.context, config.latent_channels, config.context_channels)
        except ValueError as exc:
            raise ModelMismatchError(f"{path}: weights unfit for exact decoding ({exc})") from None
        if (exact.in_channels, exact.out_channels) != (config.hyper_channels, config.latent_channels):
            raise ModelMismatchError(
                f"{path}: hyper-synthesis maps {exact.in_channels} to {exact.out_channels} channels, the "
                f"architecture {config.hyper_channels} to {config.latent_channels}"
            )
        return cls(info, z_table, y_table, exact, context, levels, path, weights=arrays)

    @property
    def model_id(self) -> str:
        return self.info.model_id

    @property
    def fingerprint(self) -> bytes:
        return self.info.fingerprint

    @property
    def config(self) -> ArchConfig:
        return self.info.config

    @property
    def size(self) -> ModelSize:
        """What the memory estimates (hificli.tiling) know of the model."""
        return ModelSize(self.info.config, self.info.n_params)

    @property
    def variable_rate(self) -> bool:
        """True if the model takes a quality (its latents are quantized with rate-level steps)."""
        return self.levels_fixed is not None

    def steps_fixed(self, quality_code: int | None) -> np.ndarray | None:
        """Fixed-point quantization steps (int64, (C,)) for a quality code; None for fixed-rate models.

        Variable-rate models need a code and fixed-rate models refuse one (ValueError)."""
        from hificli.entropy.rate import steps_at

        if self.levels_fixed is None:
            if quality_code is not None:
                raise ValueError(f"model {self.model_id!r} is fixed-rate: it takes no quality")
            return None
        if quality_code is None:
            raise ValueError(f"model {self.model_id!r} is variable-rate: it needs a quality")
        return steps_at(self.levels_fixed, quality_code)

    def mean_scale(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact (mu_fixed, scale_fixed), int64 (1, C, 4h, 4w) with OUT_FRAC fractional bits, from integer
        hyperlatents (1, N, h, w), in tiles (bit-identical to one pass)."""
        from hificli import tiling

        return tiling.hyper_mean_scale(self.size, self.exact, z_hat, self.tiling)

    def release_weights(self) -> dict[str, np.ndarray]:
        """The verified arrays, handed to whoever builds the float network (once: the model then holds
        them; a second call is a ValueError)."""
        if self.weights is None:
            raise ValueError(f"the weights of model {self.model_id!r} were handed over already")
        weights, self.weights = self.weights, None
        return weights
