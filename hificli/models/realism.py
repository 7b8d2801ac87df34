"""The realism decoder: HiFiC's synthesised detail as a knob at decode time (issue #14).

``x(r) = x0 + r * (G_r(y_hat, r) - x0)`` for a realism ``r`` in [0, 1], in model space:

* ``x0 = Generator(y_hat)``, the model's own (MSE-faithful) reconstruction;
* ``G_r``: a second generator with the Generator's layers, initialised from it, whose hidden layers are
  modulated by ``r`` (``h * (1 + r * scale_l) + r * shift_l`` after each inverse GDN; scale and shift
  start at zero) and trained with a perceptual and an adversarial loss (``hific train --stage realism``,
  hificli.train.realism);
* optionally a grain head (hificli.models.grain): noise keyed to pixel position with the high-pass
  energy it predicts the decode lacks, for the detail the latents do not describe.

``r = 0`` is the Generator's output exactly (``G_r`` is not run); the encoder, the latents and the
bitstream never depend on ``r``, so one file decodes at any realism. Agustsson et al. (CVPR 2023,
"Multi-realism image compression with a conditional generator") condition the whole decoder on the
realism weight; here the MSE decoder is kept as it is and the realistic one blended in, so that the
faithful reconstruction stays available bit for bit. Only the "gdn" transform (the embedded models)
has one.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from hificli.models.config import ArchConfig
from hificli.models.grain import ENERGY_RADIUS, GrainHead, noise_field
from hificli.models.hific import gdn_synthesis, gdn_synthesis_widths
from hificli.weights import REALISM_PREFIX

#: Prefix of the realism decoder's tensors in a weights file (defined by hificli.weights).
PREFIX = REALISM_PREFIX


def supports_realism(config: ArchConfig) -> bool:
    """True if a realism decoder can be built for this architecture."""
    return config.transform == "gdn"


class ResidualBlock(nn.Module):
    """``y + conv(relu(conv(y)))`` at latent resolution (3x3 convolutions); the last one starts at zero,
    so a new block is the identity."""

    def __init__(self, channels: int, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, channels, 3, padding=1))
        with torch.no_grad():
            self.body[-1].weight.zero_()
            self.body[-1].bias.zero_()

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.body(y)


class RealismGenerator(nn.Module):
    """``G_r``: (N, C, h, w) latents and realism (N,) -> (N, 3, 16h, 16w) model-space image.

    ``transform`` has the layout (and state_dict keys) of the GDN Generator's ``transform``: four 5x5
    stride-2 transposed convolutions with an inverse GDN after the first three; ``scale.l`` and
    ``shift.l`` (one per hidden layer) modulate each inverse GDN's output by the realism. Optional, at
    latent resolution before it (:meth:`latent_part`): ``blocks`` residual blocks of ``block_width``
    channels (``blocks.i.*``), and ``grain.*``, position-keyed noise with the energy it predicts the
    decode lacks (``origins``: each image's top-left pixel in the whole picture, so that tiles of one
    picture get one noise field)."""

    def __init__(self, config: ArchConfig, *, grain: bool = False, blocks: int = 0, block_width: int = 128) -> None:
        super().__init__()
        if not supports_realism(config):
            raise ValueError(f"a realism decoder needs the 'gdn' transform, not {config.transform!r}")
        self.transform = gdn_synthesis(config)
        widths = gdn_synthesis_widths(config)
        self.scale = nn.ParameterList([nn.Parameter(torch.zeros(w)) for w in widths[1:4]])
        self.shift = nn.ParameterList([nn.Parameter(torch.zeros(w)) for w in widths[1:4]])
        self.blocks = nn.ModuleList([ResidualBlock(widths[0], block_width) for _ in range(blocks)])
        self.grain = GrainHead(widths[0]) if grain else None

    @property
    def has_latent_part(self) -> bool:
        """True if :meth:`latent_part` computes anything (residual blocks or a grain head)."""
        return len(self.blocks) > 0 or self.grain is not None

    @property
    def latent_radius(self) -> int:
        """Latents :meth:`latent_part` reads around each position (the halo tiles need beyond the
        transform's)."""
        return max(2 * len(self.blocks), ENERGY_RADIUS if self.grain is not None else 0)

    def latent_part(self, y_hat: torch.Tensor) -> torch.Tensor:
        """What G_r computes at latent resolution: the latents after the residual blocks, then (with
        grain) the grain's predicted log energy as one more channel."""
        z = y_hat
        for block in self.blocks:
            z = block(z)
        return z if self.grain is None else torch.cat([z, self.grain.energy(y_hat)], dim=1)

    def forward(self, y_hat: torch.Tensor, realism: torch.Tensor, origins: torch.Tensor | None = None, *,
                latent: torch.Tensor | None = None, with_grain: bool = True) -> torch.Tensor:
        """``latent``: :meth:`latent_part` of ``y_hat`` when the caller has it (tiles compute it on a
        wider window); ``with_grain=False``: the output without the grain."""
        latent = self.latent_part(y_hat) if latent is None else latent
        channels = y_hat.shape[1]
        r = realism.to(y_hat.dtype).reshape(-1, 1, 1, 1)
        x = latent[:, :channels]
        for i, layer in enumerate(self.transform):
            x = layer(x)
            if i % 2 == 1:  # after an inverse GDN
                k = i // 2
                x = x * (1.0 + r * self.scale[k].view(1, -1, 1, 1)) + r * self.shift[k].view(1, -1, 1, 1)
        if self.grain is not None and with_grain:
            if origins is None:
                origins = torch.zeros(y_hat.shape[0], 2, dtype=torch.int64)
            x = x + self.grain(latent[:, channels:], noise_field(origins, x.shape[2], x.shape[3], device=x.device))
        return x

    def start_from(self, generator: nn.Module) -> None:
        """Copy the Generator's layers (the realistic decoder starts as the faithful one)."""
        self.transform.load_state_dict(generator.transform.state_dict())
        with torch.no_grad():
            for p in (*self.scale, *self.shift):
                p.zero_()


def architecture_of(shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
    """RealismGenerator keyword arguments (grain, blocks, block_width) that a state_dict's tensor shapes
    (keys without the file prefix) describe."""
    indices = {int(k.split(".")[1]) for k in shapes if k.startswith("blocks.")}
    blocks = max(indices) + 1 if indices else 0
    width = shapes["blocks.0.body.0.weight"][0] if blocks else 128
    return {"grain": any(k.startswith("grain.") for k in shapes), "blocks": blocks, "block_width": width}


def blend(x0: torch.Tensor, x_real: torch.Tensor, realism: torch.Tensor) -> torch.Tensor:
    """``x0 + r * (x_real - x0)`` per image (model space); r (N,) or a scalar tensor."""
    r = realism.to(x0.dtype).reshape(-1, 1, 1, 1)
    return x0 + r * (x_real - x0)


class BlendedGenerator(nn.Module):
    """The decoder at one realism ``r`` > 0, with the Generator's tiling interface (``trunk``,
    ``upsample``, ``trunk_radius``): ``upsample(y) = blend(Generator(y), G_r(y, r), r)``. ``trunk`` runs
    G_r's latent-resolution part (residual blocks, grain energy) on a window ``trunk_radius`` latents
    wider; its transform has the Generator's layers, hence the same upsampling halo. ``positional``:
    upsample takes the tile's pixel ``origin`` (the grain is keyed to it)."""

    trunk_radius = 0
    positional = True

    def __init__(self, generator: nn.Module, realism_generator: RealismGenerator, realism: float) -> None:
        super().__init__()
        if not 0.0 < realism <= 1.0:
            raise ValueError(f"realism must be in (0, 1] here (0 is the Generator itself), got {realism}")
        self.generator = generator
        self.realism_generator = realism_generator
        self.realism = realism
        self.trunk_radius = realism_generator.latent_radius  # G_r's latent part, per tile on a wider window

    def trunk(self, y_hat: torch.Tensor) -> torch.Tensor:
        """The latents, then G_r's latent part (:meth:`RealismGenerator.latent_part`), if it has one, as
        more channels."""
        if not self.realism_generator.has_latent_part:
            return y_hat
        return torch.cat([y_hat, self.realism_generator.latent_part(y_hat)], dim=1)

    def upsample(self, features: torch.Tensor, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        channels = self.realism_generator.transform[0].in_channels
        y_hat, latent = features[:, :channels], features[:, channels:]
        latent = latent if self.realism_generator.has_latent_part else None
        r = torch.full((y_hat.shape[0],), self.realism, dtype=y_hat.dtype, device=y_hat.device)
        origins = torch.tensor([origin], dtype=torch.int64).expand(y_hat.shape[0], 2)
        x_real = self.realism_generator(y_hat, r, origins, latent=latent)
        return blend(self.generator(y_hat), x_real, r)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.trunk(y_hat))
