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


class RealismGenerator(nn.Module):
    """``G_r``: (N, C, h, w) latents and realism (N,) -> (N, 3, 16h, 16w) model-space image.

    ``transform`` has the layout (and state_dict keys) of the GDN Generator's ``transform``: four 5x5
    stride-2 transposed convolutions with an inverse GDN after the first three; ``scale.l`` and
    ``shift.l`` (one per hidden layer) modulate each inverse GDN's output by the realism. With
    ``grain``, ``grain.*`` adds position-keyed noise shaped by the last hidden layer (``origins``: each
    image's top-left pixel in the whole picture, so that tiles of one picture get one noise field)."""

    def __init__(self, config: ArchConfig, *, grain: bool = False) -> None:
        super().__init__()
        if not supports_realism(config):
            raise ValueError(f"a realism decoder needs the 'gdn' transform, not {config.transform!r}")
        self.transform = gdn_synthesis(config)
        widths = gdn_synthesis_widths(config)
        self.scale = nn.ParameterList([nn.Parameter(torch.zeros(w)) for w in widths[1:4]])
        self.shift = nn.ParameterList([nn.Parameter(torch.zeros(w)) for w in widths[1:4]])
        self.grain = GrainHead(widths[0]) if grain else None

    def forward(self, y_hat: torch.Tensor, realism: torch.Tensor, origins: torch.Tensor | None = None, *,
                log_energy: torch.Tensor | None = None, with_grain: bool = True) -> torch.Tensor:
        """``log_energy``: the grain head's prediction for ``y_hat`` when the caller has it (tiles compute
        it on a wider window); ``with_grain=False``: the output without the grain."""
        r = realism.to(y_hat.dtype).reshape(-1, 1, 1, 1)
        x = y_hat
        for i, layer in enumerate(self.transform):
            x = layer(x)
            if i % 2 == 1:  # after an inverse GDN
                k = i // 2
                x = x * (1.0 + r * self.scale[k].view(1, -1, 1, 1)) + r * self.shift[k].view(1, -1, 1, 1)
        if self.grain is not None and with_grain:
            if origins is None:
                origins = torch.zeros(y_hat.shape[0], 2, dtype=torch.int64)
            log_energy = self.grain.energy(y_hat) if log_energy is None else log_energy
            x = x + self.grain(log_energy, noise_field(origins, x.shape[2], x.shape[3], device=x.device))
        return x

    def add_grain(self) -> None:
        """Give a decoder without one a fresh grain head (training continues with it)."""
        if self.grain is None:
            self.grain = GrainHead(self.transform[0].in_channels).to(self.scale[-1].device)

    def start_from(self, generator: nn.Module) -> None:
        """Copy the Generator's layers (the realistic decoder starts as the faithful one)."""
        self.transform.load_state_dict(generator.transform.state_dict())
        with torch.no_grad():
            for p in (*self.scale, *self.shift):
                p.zero_()


def blend(x0: torch.Tensor, x_real: torch.Tensor, realism: torch.Tensor) -> torch.Tensor:
    """``x0 + r * (x_real - x0)`` per image (model space); r (N,) or a scalar tensor."""
    r = realism.to(x0.dtype).reshape(-1, 1, 1, 1)
    return x0 + r * (x_real - x0)


class BlendedGenerator(nn.Module):
    """The decoder at one realism ``r`` > 0, with the Generator's tiling interface (``trunk``,
    ``upsample``, ``trunk_radius``): ``upsample(y) = blend(Generator(y), G_r(y, r), r)``. G_r has the
    Generator's layers, hence its receptive field: tiles need the same halo. ``positional``: upsample
    takes the tile's pixel ``origin`` (the grain is keyed to it)."""

    trunk_radius = 0
    positional = True

    def __init__(self, generator: nn.Module, realism_generator: RealismGenerator, realism: float) -> None:
        super().__init__()
        if not 0.0 < realism <= 1.0:
            raise ValueError(f"realism must be in (0, 1] here (0 is the Generator itself), got {realism}")
        self.generator = generator
        self.realism_generator = realism_generator
        self.realism = realism
        if self.grain is not None:  # the grain's energy is computed per tile on a window that wide
            self.trunk_radius = ENERGY_RADIUS

    @property
    def grain(self) -> GrainHead | None:
        return self.realism_generator.grain

    def trunk(self, y_hat: torch.Tensor) -> torch.Tensor:
        """The latents, with the grain's predicted log energy as one more channel."""
        if self.grain is None:
            return y_hat
        return torch.cat([y_hat, self.grain.energy(y_hat)], dim=1)

    def upsample(self, features: torch.Tensor, origin: tuple[int, int] = (0, 0)) -> torch.Tensor:
        y_hat, log_energy = (features, None) if self.grain is None else (features[:, :-1], features[:, -1:])
        r = torch.full((y_hat.shape[0],), self.realism, dtype=y_hat.dtype, device=y_hat.device)
        origins = torch.tensor([origin], dtype=torch.int64).expand(y_hat.shape[0], 2)
        x_real = self.realism_generator(y_hat, r, origins, log_energy=log_energy)
        return blend(self.generator(y_hat), x_real, r)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.trunk(y_hat))
