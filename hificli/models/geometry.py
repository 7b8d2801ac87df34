"""Layer geometry that the float network (hificli.models) and the integer decoder (hificli.entropy.exact,
hificli.entropy.context) share: one source for both, and torch-free, so that ``hific decode`` parses a
file's latents before torch is imported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from hificli.entropy.groups import coding_groups

if TYPE_CHECKING:
    from hificli.models.config import ArchConfig


@dataclass(frozen=True)
class TransposedConv:
    """One ConvTranspose2d of the hyper-synthesis (groups 1, dilation 1) and whether a ReLU follows it."""

    name: str
    kernel: int
    stride: int
    padding: int
    output_padding: int
    relu: bool

    def out_size(self, size: int) -> int:
        """Output side for an input side ``size``."""
        return (size - 1) * self.stride - 2 * self.padding + self.kernel + self.output_padding


#: The three layers of each hyper-synthesis net (``Hyperprior.synthesis_mu`` / ``synthesis_std``):
#: z_hat (N_h channels, h x w) -> N_h, 2h x 2w -> N_h, 4h x 4w -> C, 4h x 4w.
HYPER_SYNTHESIS: tuple[TransposedConv, ...] = (
    TransposedConv("conv1", 5, 2, 2, 1, relu=True),
    TransposedConv("conv2", 5, 2, 2, 1, relu=True),
    TransposedConv("conv3", 3, 1, 1, 0, relu=False),
)
#: The two hyper-synthesis nets, by state-dict prefix.
HYPER_SYNTHESIS_NETS = ("Hyperprior.synthesis_mu", "Hyperprior.synthesis_std")


def hyper_synthesis_channels(latent_channels: int, hyper_channels: int) -> list[tuple[int, int]]:
    """(in, out) channels of each :data:`HYPER_SYNTHESIS` layer."""
    return [(hyper_channels, hyper_channels), (hyper_channels, hyper_channels), (hyper_channels, latent_channels)]


def hyper_synthesis_parameters(latent_channels: int, hyper_channels: int) -> int:
    """Weights and biases of both hyper-synthesis nets."""
    layers = zip(HYPER_SYNTHESIS, hyper_synthesis_channels(latent_channels, hyper_channels), strict=True)
    return 2 * sum(c_in * c_out * layer.kernel**2 + c_out for layer, (c_in, c_out) in layers)


#: Side of the context kernels and their radius (the halo a band of latents needs).
KERNEL = 5
RADIUS = KERNEL // 2
#: (dr, dc) offsets of the kernel taps that meet anchors from a non-anchor position (12 of 25).
ANCHOR_TAPS: tuple[tuple[int, int], ...] = tuple(
    (dr, dc) for dr in range(-RADIUS, RADIUS + 1) for dc in range(-RADIUS, RADIUS + 1) if (dr + dc) % 2
)
ALL_TAPS: tuple[tuple[int, int], ...] = tuple(
    (dr, dc) for dr in range(-RADIUS, RADIUS + 1) for dc in range(-RADIUS, RADIUS + 1)
)


@dataclass(frozen=True)
class ContextNetSpec:
    """One context net (hificli.models.context.ContextNet): its state-dict prefix, the channels it reads
    (``known``), the coding group's channels it corrects and the kernel taps it uses."""

    prefix: str
    in_channels: int
    channels: int
    taps: tuple[tuple[int, int], ...]

    def parameters(self, width: int) -> int:
        """Weights and biases of the net with context width ``width``."""
        c2 = 2 * self.channels
        return (self.in_channels * KERNEL * KERNEL * width + width + (width + c2) * width + width
                + width * width + width + width * c2 + c2)


def context_nets(kind: str, latent_channels: int) -> list[ContextNetSpec | None]:
    """The context net of each coding group (hificli.entropy.groups), None for a group coded with the
    hyperprior alone: the checkerboard's anchors, the first channel slice."""
    groups = coding_groups(kind, latent_channels)
    if kind == "none":
        return [None]
    if kind == "checkerboard":
        return [None, ContextNetSpec("Context.", latent_channels, latent_channels, ANCHOR_TAPS)]
    return [None] + [ContextNetSpec(f"Context.nets.{k - 1}.", g.lo, g.hi - g.lo, ALL_TAPS)
                     for k, g in enumerate(groups) if k]


def exact_parameters(config: ArchConfig) -> int:
    """Parameters the integer decoder holds as float64 copies: both hyper-synthesis nets and the context."""
    nets = context_nets(config.context, config.latent_channels)
    context = sum(spec.parameters(config.context_channels) for spec in nets if spec is not None)
    return hyper_synthesis_parameters(config.latent_channels, config.hyper_channels) + context
