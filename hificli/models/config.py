"""Architecture configuration: one frozen dataclass, plus named presets.

The same code builds the published 181 M-parameter HiFiC (``full``) and small models. A checkpoint
records its config; port checkpoints are mapped onto ``full`` with the block count read from the keys.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from typing import Any, ClassVar

LIKELIHOODS = ("gaussian", "logistic")
TRANSFORMS = ("hific", "gdn")
CONTEXTS = ("none", "checkerboard", "channel")
#: Bounds on what an architecture record may ask for (the full HiFiC uses 960 channels, 9 blocks).
MAX_WIDTH = 4096
MAX_RESIDUAL_BLOCKS = 64
#: Fields added after the first release, written by ``to_json`` only when they differ from these
#: defaults, so that existing weights files keep their fingerprints.
_LATER_FIELDS = {"transform": "hific", "rate_levels": 0, "context": "none", "context_channels": 0}


@dataclass(frozen=True)
class ArchConfig:
    """Widths and options of a HiFiC network.

    encoder_channels: output channels of Encoder conv_block1..5 (the generator mirrors them).
    latent_channels: C, channels of y (220 in HiFiC).
    hyper_channels: N, channels of the hyper-analysis/synthesis and of z (320 in HiFiC).
    n_residual_blocks: residual blocks in the generator (9 in the released models, 7 possible).
    likelihood: latent conditional, "gaussian" or "logistic".
    normalize_input: map inputs to [-1, 1] and put a tanh on the generator output (port's ``-norm``).
    discriminator_context: channels of the discriminator's latent context (12 in HiFiC).
    transform: "hific" (the paper's encoder and generator: 7x7 and 3x3 convolutions, ChannelNorm,
      residual blocks) or "gdn" (Ballé/Minnen-style 5x5 stride-2 convolutions with GDN / IGDN, no
      residual blocks). "gdn" has no full-resolution stage: its hidden widths at 1/2, 1/4 and 1/8 are
      ``encoder_channels[1:4]`` (the resolutions of HiFiC's conv_block2..4); entries 0 and 4 are unused.
    rate_levels: 0 for a fixed-rate model; L >= 2 for a variable-rate one, whose latents are quantized
      with per-channel steps interpolated between L trained levels by the quality (hificli.entropy.rate).
    context: "none" (every latent is coded with the hyperprior's mean and scale) or "checkerboard" (He et
      al. 2021: the anchor half of the latent grid is coded first; the other half's mean and scale are
      corrected from the decoded anchors around it) or "channel" (channel-conditional: four slices of
      channels, each corrected from the slices decoded before it); hificli.models.context.
    context_channels: width of the context networks (0 without a context).
    """

    encoder_channels: tuple[int, int, int, int, int] = (60, 120, 240, 480, 960)
    latent_channels: int = 220
    hyper_channels: int = 320
    n_residual_blocks: int = 9
    likelihood: str = "gaussian"
    normalize_input: bool = False
    discriminator_context: int = 12
    transform: str = "hific"
    rate_levels: int = 0
    context: str = "none"
    context_channels: int = 0

    def __post_init__(self) -> None:
        self._check_sizes()
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {self.likelihood!r}")
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if len(self.encoder_channels) != 5 or min(self.encoder_channels) < 2:
            raise ValueError(f"encoder_channels needs 5 widths >= 2, got {self.encoder_channels!r}")
        if self.latent_channels < 1 or self.hyper_channels < 1 or self.n_residual_blocks < 0:
            raise ValueError("latent_channels, hyper_channels must be >= 1 and n_residual_blocks >= 0")
        if self.context not in CONTEXTS:
            raise ValueError(f"context must be one of {CONTEXTS}, got {self.context!r}")
        if (self.context == "none") != (self.context_channels == 0) or self.context_channels < 0:
            raise ValueError("context_channels must be > 0 with a context and 0 without one")
        if self.rate_levels != 0 and not 2 <= self.rate_levels <= 64:
            raise ValueError(f"rate_levels must be 0 (fixed rate) or 2-64, got {self.rate_levels}")

    def _check_sizes(self) -> None:
        """Integer widths and depths within MAX_WIDTH / MAX_RESIDUAL_BLOCKS: metadata from a file must
        not build a huge network (ValueError, or TypeError for a value that is not an integer)."""
        widths = (
            *self.encoder_channels, self.latent_channels, self.hyper_channels, self.discriminator_context,
            self.context_channels,
        )
        if not all(type(v) is int for v in (*widths, self.n_residual_blocks)):
            raise TypeError(f"architecture widths and depths must be integers, got {self!r}")
        if max(widths) > MAX_WIDTH or self.n_residual_blocks > MAX_RESIDUAL_BLOCKS:
            raise ValueError(
                f"architecture too large: widths up to {MAX_WIDTH} and at most {MAX_RESIDUAL_BLOCKS} residual "
                f"blocks, got widths up to {max(widths)} and {self.n_residual_blocks} blocks"
            )

    # Image side divisors: the encoder downsamples by 16, the hyper-analysis by 4 more.
    latent_stride: ClassVar[int] = 16
    hyper_stride: ClassVar[int] = 4

    def to_json(self) -> str:
        """Stable JSON form (sorted keys), stored in weights files and hashed into fingerprints."""
        data = asdict(self)
        for name, default in _LATER_FIELDS.items():
            if data[name] == default:
                del data[name]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchConfig:
        """Inverse of ``asdict``; unknown keys are an error (a newer file)."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown architecture fields: {sorted(unknown)}")
        values = dict(data)
        if "encoder_channels" in values:
            values["encoder_channels"] = tuple(values["encoder_channels"])
        return cls(**values)

    @classmethod
    def from_json(cls, text: str) -> ArchConfig:
        return cls.from_dict(json.loads(text))

    def with_(self, **changes: Any) -> ArchConfig:
        return replace(self, **changes)


#: Named architectures (``hific train --arch NAME``). Sizes are documented in README/MODELS.md.
PRESETS: dict[str, ArchConfig] = {
    # The published HiFiC (Mentzer et al. 2020) as built by the earlier PyTorch port: 181 M params.
    "full": ArchConfig(),
    # The default embedded model: trains on 2 CPU cores. Same topology as "full"; thin at full resolution
    # (where compute goes), wider at 1/16 (latents, residual blocks), where capacity is cheap.
    "small": ArchConfig(
        encoder_channels=(16, 32, 64, 128, 192), latent_channels=160, hyper_channels=128, n_residual_blocks=4
    ),
    # The default embedded model since 0.2: GDN transforms at 64 channels (cheap at full resolution,
    # where the CPU time goes) with a wider latent; HiFiC's hyperprior, latent coding and GAN stage.
    "compact": ArchConfig(
        transform="gdn", encoder_channels=(64, 64, 64, 64, 64), latent_channels=160, hyper_channels=96,
        n_residual_blocks=0,
    ),
    # "compact" with a channel-conditional context 192 wide (hificli.models.context).
    "compact-ctx": ArchConfig(
        transform="gdn", encoder_channels=(64, 64, 64, 64, 64), latent_channels=160, hyper_channels=96,
        n_residual_blocks=0, context="channel", context_channels=192,
    ),
    # Unit tests only: a few thousand parameters.
    "tiny": ArchConfig(encoder_channels=(4, 6, 8, 8, 12), latent_channels=6, hyper_channels=5, n_residual_blocks=1),
    "tiny-gdn": ArchConfig(
        transform="gdn", encoder_channels=(6, 6, 8, 8, 8), latent_channels=6, hyper_channels=5, n_residual_blocks=0
    ),
}


def preset(name: str) -> ArchConfig:
    """Look up a preset by name, with a clear error listing the choices."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(PRESETS)}") from None
