"""The HiFiC network (Mentzer et al. 2020) in the layout of the earlier PyTorch port.

Data flows top to bottom: Encoder (image -> y, /16), Hyperprior (y -> z, /4, and z -> mu, scale),
Generator (y_hat -> image, x16). Submodule and parameter names reproduce the port's state_dict keys
(``Encoder.conv_block1.1.weight``, ...), so its checkpoints load strictly (hificli.checkpoint).

Image sizes: the forward pass needs sides that are multiples of 64 (16 for the encoder times 4 for the
hyper-analysis) and at least 128: the hyper-analysis' last reflect-padded 5x5 conv needs an input of
at least 3 latent rows/columns, i.e. a latent side of at least 8 after padding to a multiple of 4.
:meth:`HificModel.padded_size` gives the size a codec has to pad an image to.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from hificli.layers import (
    GDN,
    ChannelNorm2d,
    ResidualBlock,
    add_uniform_noise,
    clamp_toward,
    lower_bound,
    round_around,
    round_around_st,
    round_half_up,
)
from hificli.models.config import ArchConfig
from hificli.models.context import build_context
from hificli.models.geometry import HYPER_SYNTHESIS, hyper_synthesis_channels
from hificli.models.likelihoods import MIN_LIKELIHOOD, SCALE_MIN, bits, latent_likelihood
from hificli.models.rate import RateSteps

#: Image sides must be multiples of this (encoder /16 times hyper-analysis /4).
SIDE_MULTIPLE = ArchConfig.latent_stride * ArchConfig.hyper_stride
#: Smallest image side the network accepts (latent side 8; see the module docstring).
MIN_SIDE = 2 * SIDE_MULTIPLE


class Encoder(nn.Module):
    """(N, 3, H, W) model-space image -> (N, C, H/16, W/16) latents y (raw, no activation).

    conv_block1: reflect pad 3, 7x7 conv, ChannelNorm, ReLU; conv_block2..5: reflect pad
    (left 0, right 1, top 1, bottom 0), 3x3 conv stride 2, ChannelNorm, ReLU; conv_block_out:
    reflect pad 1, 3x3 conv to C channels. Widths from ``config.encoder_channels``.
    """

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        ch = config.encoder_channels
        self.conv_block1 = nn.Sequential(
            nn.ReflectionPad2d(3), nn.Conv2d(3, ch[0], kernel_size=7), ChannelNorm2d(ch[0]), nn.ReLU()
        )
        for i in range(1, 5):
            block = nn.Sequential(
                nn.ReflectionPad2d((0, 1, 1, 0)),
                nn.Conv2d(ch[i - 1], ch[i], kernel_size=3, stride=2),
                ChannelNorm2d(ch[i]),
                nn.ReLU(),
            )
            self.add_module(f"conv_block{i + 1}", block)
        self.conv_block_out = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(ch[4], config.latent_channels, kernel_size=3)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for name in ("conv_block1", "conv_block2", "conv_block3", "conv_block4", "conv_block5"):
            x = getattr(self, name)(x)
        return self.conv_block_out(x)


class Generator(nn.Module):
    """(N, C, h, w) quantized latents -> (N, 3, 16h, 16w) image in model space (no final activation).

    conv_block_init (ChannelNorm(C), reflect pad 1, 3x3 conv, ChannelNorm) gives ``head``; then the
    residual blocks, a global skip ``x + head``, four upconv blocks (ConvTranspose2d k3 s2 p1 op1,
    ChannelNorm, ReLU) and conv_block_out (reflect pad 3, 7x7 conv to 3 channels).
    """

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        ch = config.encoder_channels[::-1]  # widest first: 960, 480, 240, 120, 60
        c = config.latent_channels
        self.n_residual_blocks = config.n_residual_blocks
        self.conv_block_init = nn.Sequential(
            ChannelNorm2d(c), nn.ReflectionPad2d(1), nn.Conv2d(c, ch[0], kernel_size=3), ChannelNorm2d(ch[0])
        )
        for i in range(config.n_residual_blocks):
            self.add_module(f"resblock_{i}", ResidualBlock(ch[0]))
        for i in range(1, 5):
            block = nn.Sequential(
                nn.ConvTranspose2d(ch[i - 1], ch[i], kernel_size=3, stride=2, padding=1, output_padding=1),
                ChannelNorm2d(ch[i]),
                nn.ReLU(),
            )
            self.add_module(f"upconv_block{i}", block)
        self.conv_block_out = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(ch[4], 3, kernel_size=7))

    @property
    def trunk_radius(self) -> int:
        """Receptive radius (latents) of :meth:`trunk`: init conv + two 3x3 convs per block."""
        return 1 + 2 * self.n_residual_blocks

    def trunk(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Latent-resolution part: init block, residual blocks and the global skip."""
        head = self.conv_block_init(y_hat)
        x = head
        for i in range(self.n_residual_blocks):
            x = getattr(self, f"resblock_{i}")(x)
        return x.add_(head) if torch.is_inference_mode_enabled() else x + head

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """Trunk features -> model-space image (x16): the upconv blocks and the output conv."""
        for i in range(1, 5):
            x = getattr(self, f"upconv_block{i}")(x)
        return self.conv_block_out(x)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.trunk(y_hat))


class GdnEncoder(nn.Module):
    """transform "gdn": (N, 3, H, W) -> (N, C, H/16, W/16). Four 5x5 stride-2 convolutions (zero pad 2)
    with GDN after the first three; widths ``encoder_channels[1:4]`` then C."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        widths = (3, *config.encoder_channels[1:4], config.latent_channels)
        layers: list[nn.Module] = []
        for i in range(4):
            layers.append(nn.Conv2d(widths[i], widths[i + 1], kernel_size=5, stride=2, padding=2))
            if i < 3:
                layers.append(GDN(widths[i + 1]))
        self.transform = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x)


def gdn_synthesis_widths(config: ArchConfig) -> tuple[int, ...]:
    """Channels from the latents to the image through the GDN Generator's layers."""
    return (config.latent_channels, *config.encoder_channels[3:0:-1], 3)


def gdn_synthesis(config: ArchConfig) -> nn.Sequential:
    """The GDN Generator's layers: four 5x5 stride-2 transposed convolutions (padding 2, output padding
    1) with an inverse GDN after the first three (also the realism decoder's, hificli.models.realism)."""
    widths = gdn_synthesis_widths(config)
    layers: list[nn.Module] = []
    for i in range(4):
        layers.append(
            nn.ConvTranspose2d(widths[i], widths[i + 1], kernel_size=5, stride=2, padding=2, output_padding=1)
        )
        if i < 3:
            layers.append(GDN(widths[i + 1], inverse=True))
    return nn.Sequential(*layers)


class GdnGenerator(nn.Module):
    """transform "gdn": (N, C, h, w) -> (N, 3, 16h, 16w). The encoder's mirror: four 5x5 stride-2
    transposed convolutions (padding 2, output padding 1) with IGDN after the first three. It has no
    latent-resolution trunk (``trunk`` is the identity), so tiles need only the upsampling halo."""

    trunk_radius = 0

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        self.transform = gdn_synthesis(config)

    def trunk(self, y_hat: torch.Tensor) -> torch.Tensor:
        return y_hat

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        return self.transform(x)

    def forward(self, y_hat: torch.Tensor) -> torch.Tensor:
        return self.transform(y_hat)


class HyperpriorDensity(nn.Module):
    """Factorized density of the hyperlatents z, one univariate density per channel (Ballé et al.
    2018, Sec. 6.1), in the port's variant: tanh gating on all four layers.

    Parameters per layer k (f = (1, *filters, 1)): ``H_k`` (channels, f[k+1], f[k]), ``a_k`` and
    ``b_k`` (channels, f[k+1], 1). Init: H_k = log(expm1(1 / scale / f[k+1])) with
    scale = init_scale ** (1 / 4), a_k = 0, b_k ~ U(-0.5, 0.5).
    """

    def __init__(self, channels: int, filters: tuple[int, ...] = (3, 3, 3), init_scale: float = 10.0) -> None:
        super().__init__()
        self.channels = channels
        self.filters = tuple(int(f) for f in filters)
        dims = (1, *self.filters, 1)
        self.n_layers = len(dims) - 1
        scale = float(init_scale) ** (1.0 / self.n_layers)
        for k in range(self.n_layers):
            h_init = math.log(math.expm1(1.0 / scale / dims[k + 1]))
            h = torch.full((channels, dims[k + 1], dims[k]), h_init)
            self.register_parameter(f"H_{k}", nn.Parameter(h))
            self.register_parameter(f"a_{k}", nn.Parameter(torch.zeros(channels, dims[k + 1], 1)))
            b = torch.empty(channels, dims[k + 1], 1)
            nn.init.uniform_(b, -0.5, 0.5)
            self.register_parameter(f"b_{k}", nn.Parameter(b))

    def cdf_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the per-channel CDFs. x: (channels, 1, M) -> (channels, 1, M).

        Per layer: ``l = softplus(H_k) @ l + b_k``, then ``l = l + tanh(a_k) * tanh(l)``.
        """
        logits = x
        for k in range(self.n_layers):
            h = getattr(self, f"H_{k}")
            logits = torch.bmm(F.softplus(h), logits) + getattr(self, f"b_{k}")
            logits = logits + torch.tanh(getattr(self, f"a_{k}")) * torch.tanh(logits)
        return logits

    def likelihood(self, x: torch.Tensor) -> torch.Tensor:
        """Mass of [x - 0.5, x + 0.5] under each channel's density: ``|sigmoid(s*u) - sigmoid(s*l)|``
        with u, l the CDF logits at x +- 0.5 and s = -sign(u + l), lower-bounded at 1e-9.

        x: any tensor (N, C, ...) whose dim 1 is the channel (C == self.channels) -> same shape.
        For per-channel pmfs at integers k pass a (1, C, 1, K) tensor: it is evaluated without copies.
        """
        if x.dim() < 2 or x.shape[1] != self.channels:
            raise ValueError(f"expected (N, {self.channels}, ...) input, got shape {tuple(x.shape)}")
        moved = x.transpose(0, 1)
        flat = moved.reshape(self.channels, 1, -1)
        lower = self.cdf_logits(flat - 0.5)
        upper = self.cdf_logits(flat + 0.5)
        sign = -torch.sign(lower + upper).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        lik = lower_bound(lik, MIN_LIKELIHOOD)
        return lik.reshape(moved.shape).transpose(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.likelihood(x)


class HyperAnalysis(nn.Module):
    """y (N, C, h, w) -> z (N, N_h, h/4, w/4): conv1 3x3 zero pad 1 + ReLU, conv2 5x5 s2 reflect pad 2
    + ReLU, conv3 5x5 s2 reflect pad 2 (no activation)."""

    def __init__(self, c: int, n: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, n, kernel_size=3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(n, n, kernel_size=5, stride=2, padding=2, padding_mode="reflect")
        self.conv3 = nn.Conv2d(n, n, kernel_size=5, stride=2, padding=2, padding_mode="reflect")

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.conv3(F.relu(self.conv2(F.relu(self.conv1(y)))))


class HyperSynthesis(nn.Module):
    """z_hat (N, N_h, h, w) -> (N, C, 4h, 4w): conv1, conv2 ConvTranspose2d 5x5 s2 p2 op1 + ReLU, conv3
    ConvTranspose2d 3x3 s1 p1 to C channels (no activation), as hificli.models.geometry.HYPER_SYNTHESIS
    says; the integer decoder (hificli.entropy.exact) evaluates the same layers from the same table."""

    def __init__(self, c: int, n: int) -> None:
        super().__init__()
        for layer, (c_in, c_out) in zip(HYPER_SYNTHESIS, hyper_synthesis_channels(c, n), strict=True):
            conv = nn.ConvTranspose2d(c_in, c_out, kernel_size=layer.kernel, stride=layer.stride,
                                      padding=layer.padding, output_padding=layer.output_padding)
            self.add_module(layer.name, conv)

    def forward(self, z_hat: torch.Tensor) -> torch.Tensor:
        x = z_hat
        for layer in HYPER_SYNTHESIS:
            x = getattr(self, layer.name)(x)
            x = F.relu(x) if layer.relu else x
        return x


class Hyperprior(nn.Module):
    """Mean-scale hyperprior: analysis (y -> z), two synthesis nets (z_hat -> mu, raw scale) and the
    factorized density of z. ``likelihood_kind`` names the conditional of y (config.likelihood)."""

    def __init__(self, config: ArchConfig) -> None:
        super().__init__()
        c, n = config.latent_channels, config.hyper_channels
        self.likelihood_kind = config.likelihood
        self.analysis_net = HyperAnalysis(c, n)
        self.synthesis_mu = HyperSynthesis(c, n)
        self.synthesis_std = HyperSynthesis(c, n)
        self.hyperlatent_likelihood = HyperpriorDensity(n)

    def analysis(self, y: torch.Tensor) -> torch.Tensor:
        """y (N, C, h, w) -> z (N, N_h, h/4, w/4), unquantized."""
        return self.analysis_net(y)

    def synthesis(self, z_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """z_hat (N, N_h, h, w) -> (mu, scale), each (N, C, 4h, 4w); scale = lower_bound(raw, 0.11)."""
        mu = self.synthesis_mu(z_hat)
        scale = lower_bound(self.synthesis_std(z_hat), SCALE_MIN)
        return mu, scale

    def z_likelihood(self, z_hat: torch.Tensor) -> torch.Tensor:
        """Per-element likelihood of (noisy or rounded) hyperlatents, same shape as z_hat (always float32:
        CDF differences lose the rate in bf16/fp16 autocast)."""
        with torch.autocast(z_hat.device.type, enabled=False):
            return self.hyperlatent_likelihood.likelihood(_at_least_float32(z_hat))

    def y_likelihood(self, y_hat: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Per-element likelihood of (noisy or rounded) latents under (mu, scale), in float32."""
        with torch.autocast(y_hat.device.type, enabled=False):
            y_hat, mu, scale = (_at_least_float32(t) for t in (y_hat, mu, scale))
            return latent_likelihood(y_hat, mu, scale, self.likelihood_kind)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass
class ModelOutput:
    """Result of :meth:`HificModel.forward` for an (N, 3, H, W) input.

    x_hat: (N, 3, H, W) reconstruction in [0, 1] (clamped with :func:`clamp_toward`, so gradients
      still pull out-of-range pixels back). y, y_hat, mu, scale, y_likelihoods: (N, C, H/16, W/16);
      z, z_hat, z_likelihoods: (N, N_h, H/64, W/64).
    Training mode: z_hat = z + U(-.5, .5) (fed to the synthesis), y_hat = straight-through
      round(y - mu) + mu (fed to the generator), likelihoods of z_hat and of y + U(-.5, .5).
    Eval mode: z_hat = floor(z + .5), y_hat = floor(y - mu + .5) + mu, likelihoods of those.
    bpp, bpp_y, bpp_z: rate (bits per input pixel, averaged over the batch) of the likelihoods above;
      q_bpp: hard-quantized rate (z rounded, y rounded around mu), equal to bpp in eval mode.
      All four are scalar tensors; bpp and its parts carry gradients.
    """

    x_hat: torch.Tensor
    y: torch.Tensor
    y_hat: torch.Tensor
    z: torch.Tensor
    z_hat: torch.Tensor
    mu: torch.Tensor
    scale: torch.Tensor
    y_likelihoods: torch.Tensor
    z_likelihoods: torch.Tensor
    bpp: torch.Tensor
    q_bpp: torch.Tensor
    bpp_y: torch.Tensor
    bpp_z: torch.Tensor


class HificModel(nn.Module):
    """Encoder + Generator + Hyperprior, named as in the port's checkpoints (no Discriminator: see
    hificli.models.discriminator). Build with an :class:`ArchConfig`."""

    def __init__(self, config: ArchConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else ArchConfig()
        gdn = self.config.transform == "gdn"
        self.Encoder = GdnEncoder(self.config) if gdn else Encoder(self.config)
        self.Generator = GdnGenerator(self.config) if gdn else Generator(self.config)
        self.Hyperprior = Hyperprior(self.config)
        if self.config.rate_levels:
            self.RateSteps = RateSteps(self.config.rate_levels, self.config.latent_channels)
        if self.has_context:
            self.Context = build_context(self.config.context, self.config.latent_channels,
                                         self.config.context_channels)

    @property
    def has_context(self) -> bool:
        """True if non-anchor latents are coded with a spatial context (hificli.models.context)."""
        return self.config.context != "none"

    def context_parameters(
        self, y: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor, steps: torch.Tensor | None,
        *, straight_through: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mu, scale) of every latent: the hyperprior's, corrected by the context model
        (hificli.models.context) from the latents decoded before, quantized as the codec does
        (``round((y - mu) / step) * step + mu``; with ``straight_through`` the rounding passes
        gradients to y). Unchanged without a context. ``steps``: (N, C, 1, 1) or None (unit steps)."""
        if not self.has_context:
            return mu, scale
        d = steps if steps is not None else torch.ones((1, y.shape[1], 1, 1), dtype=y.dtype, device=y.device)
        rounding = round_around_st if straight_through else round_around
        return self.Context(y, mu, scale, d, rounding)

    @property
    def variable_rate(self) -> bool:
        return self.config.rate_levels > 0

    # -- sizes -------------------------------------------------------------------------------------
    @staticmethod
    def padded_size(height: int, width: int) -> tuple[int, int]:
        """Smallest (H, W) >= (height, width) that the network accepts (multiples of 64, >= 128)."""

        def side(v: int) -> int:
            return max(MIN_SIDE, -(-v // SIDE_MULTIPLE) * SIDE_MULTIPLE)

        return side(height), side(width)

    @staticmethod
    def check_input_size(height: int, width: int) -> None:
        """Raise ValueError unless both sides are multiples of 64 and at least 128."""
        for name, v in (("height", height), ("width", width)):
            if v % SIDE_MULTIPLE or v < MIN_SIDE:
                raise ValueError(
                    f"image {name} {v} must be a multiple of {SIDE_MULTIPLE} and >= {MIN_SIDE} "
                    f"(pad the image first; see HificModel.padded_size)"
                )

    # -- value ranges ------------------------------------------------------------------------------
    def preprocess(self, x01: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) image in [0, 1] -> model input: ``x * 2 - 1`` if normalize_input, else x."""
        return x01 * 2.0 - 1.0 if self.config.normalize_input else x01

    def postprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Generator output (model space) -> image in [0, 1]: ``(tanh(x) + 1) / 2`` if normalize_input,
        then a clamp to [0, 1] whose gradient still pulls out-of-range values back (clamp_toward)."""
        if self.config.normalize_input:
            x = (torch.tanh(x) + 1.0) / 2.0
        return clamp_toward(x, 0.0, 1.0)

    # -- codec entry points ------------------------------------------------------------------------
    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """Model-space image (``preprocess`` output), (N, 3, H, W) -> latents y (N, C, H/16, W/16)."""
        return self.Encoder(x)

    def generate(self, y_hat: torch.Tensor) -> torch.Tensor:
        """Quantized latents (N, C, h, w) -> model-space image (N, 3, 16h, 16w); see ``postprocess``."""
        return self.Generator(y_hat)

    # -- training / evaluation forward -------------------------------------------------------------
    def forward(
        self, x01: torch.Tensor, *, generator: torch.Generator | None = None,
        rate_positions: torch.Tensor | None = None,
    ) -> ModelOutput:
        """Full pass on an (N, 3, H, W) batch in [0, 1] (H, W multiples of 64, >= 128).

        Training mode uses the port's "mixed" quantization (PORT_FACTS 1.10), eval mode hard rounding
        everywhere; see :class:`ModelOutput`. ``generator`` seeds the uniform noise (training only).
        ``rate_positions`` (N,) in [0, L - 1]: the rate level of each image (variable-rate models only,
        where it is required); the latents are quantized with those levels' steps.
        """
        if x01.dim() != 4 or x01.shape[1] != 3:
            raise ValueError(f"expected an (N, 3, H, W) batch, got shape {tuple(x01.shape)}")
        n, _, height, width = x01.shape
        self.check_input_size(height, width)
        pixels = n * height * width
        hp = self.Hyperprior

        y = self.encode_latents(self.preprocess(x01))
        z = hp.analysis(y)
        z_q = round_half_up(z)
        z_hat = add_uniform_noise(z, generator) if self.training else z_q
        mu, scale = hp.synthesis(z_hat)
        steps = self._steps(rate_positions, n)
        mu, scale = self.context_parameters(y, mu, scale, steps, straight_through=self.training)
        # Quantize in units of the step: y / d around mu / d with scale / d (d = 1 for fixed rate).
        y_n, mu_n = (y, mu) if steps is None else (y / steps, mu / steps)
        scale_n = scale if steps is None else lower_bound(scale / steps, SCALE_MIN)
        y_q = round_around(y_n, mu_n)
        z_lik_q = hp.z_likelihood(z_q)
        y_lik_q = hp.y_likelihood(y_q, mu_n, scale_n)
        if self.training:
            z_lik = hp.z_likelihood(z_hat)
            y_lik = hp.y_likelihood(add_uniform_noise(y_n, generator), mu_n, scale_n)
            y_hat = round_around_st(y_n, mu_n)
        else:
            z_lik, y_lik, y_hat = z_lik_q, y_lik_q, y_q
        if steps is not None:
            y_hat = y_hat * steps

        x_hat = self.postprocess(self.generate(y_hat))
        bpp_y = bits(y_lik) / pixels
        bpp_z = bits(z_lik) / pixels
        bpp = bpp_y + bpp_z
        q_bpp = (bits(y_lik_q) + bits(z_lik_q)) / pixels if self.training else bpp
        return ModelOutput(
            x_hat=x_hat,
            y=y,
            y_hat=y_hat,
            z=z,
            z_hat=z_hat,
            mu=mu,
            scale=scale,
            y_likelihoods=y_lik,
            z_likelihoods=z_lik,
            bpp=bpp,
            q_bpp=q_bpp,
            bpp_y=bpp_y,
            bpp_z=bpp_z,
        )

    def _steps(self, positions: torch.Tensor | None, n: int) -> torch.Tensor | None:
        """(N, C, 1, 1) quantization steps for a variable-rate model, None for a fixed-rate one."""
        if not self.variable_rate:
            if positions is not None:
                raise ValueError("rate_positions given to a fixed-rate model")
            return None
        if positions is None or tuple(positions.shape) != (n,):
            raise ValueError(f"a variable-rate model needs rate_positions of shape ({n},)")
        return self.RateSteps.steps(positions.to(self.RateSteps.log_step.device))[:, :, None, None]

    # -- weights -----------------------------------------------------------------------------------
    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """state_dict restricted to the Encoder/Generator/Hyperprior keys (what inference needs)."""
        prefixes = ("Encoder.", "Generator.", "Hyperprior.", "Context.")
        return {k: v for k, v in self.state_dict().items() if k.startswith(prefixes)}

    def count_parameters(self) -> dict[str, int]:
        """Parameter counts per submodule (Encoder, Generator, Hyperprior and its parts) and total."""
        counts: dict[str, int] = {}
        for name in ("Encoder", "Generator", "Hyperprior"):
            counts[name] = sum(p.numel() for p in getattr(self, name).parameters())
        for name, module in self.Hyperprior.named_children():
            counts[f"Hyperprior.{name}"] = sum(p.numel() for p in module.parameters())
        counts["total"] = counts["Encoder"] + counts["Generator"] + counts["Hyperprior"]
        if self.has_context:
            counts["Context"] = sum(p.numel() for p in self.Context.parameters())
            counts["total"] += counts["Context"]
        return counts
