"""Widen a trained GDN model's transforms without changing what it computes (``hific train --widen``).

The hidden widths of the GDN encoder and generator (``encoder_channels[1:4]``: the layers at 1/2, 1/4
and 1/8 of the image size) grow to new widths. Each new channel gets small random weights from the
layer's input and zero weights into the next layer; in its GDN / IGDN it has beta 1, gamma 0.1 on its
own square and 0 elsewhere, so the old channels are normalized exactly as before. The widened model
therefore decodes the same pixels from the same latents (to float rounding), and training moves the
zero weights first (their gradients are the new channels' activations).
"""

from __future__ import annotations

import dataclasses

import torch

from hificli.layers import GDN
from hificli.models.config import ArchConfig

#: (convolution index, GDN index or None) of each layer of a GDN transform's ``transform`` Sequential.
_LAYERS = ((0, 1), (2, 3), (4, 5), (6, None))
#: Small relative scale of a new channel's incoming weights (against the layer's weight RMS).
NEW_WEIGHT_SCALE = 0.1


def widened_config(config: ArchConfig, widths: tuple[int, int, int]) -> ArchConfig:
    """``config`` with hidden GDN widths ``widths`` (1/2, 1/4, 1/8 resolution); each at least the old."""
    if config.transform != "gdn":
        raise ValueError(f"only 'gdn' transforms can be widened (this model's is {config.transform!r})")
    old = config.encoder_channels[1:4]
    if len(widths) != 3 or any(new < was for new, was in zip(widths, old, strict=True)):
        raise ValueError(f"new widths {tuple(widths)} must be 3 values, each >= the current {old}")
    ec = config.encoder_channels
    return dataclasses.replace(config, encoder_channels=(ec[0], *widths, ec[4]))


def _gdn_state(old_beta: torch.Tensor, old_gamma: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored (beta, gamma) of a GDN grown to ``width`` channels: old block kept, new channels start
    as a fresh layer's on their own square and are not coupled to the old channels."""
    fresh = GDN(width)
    beta, gamma = fresh.beta.detach().clone(), fresh.gamma.detach().clone()
    n = old_beta.shape[0]
    zero = GDN.PEDESTAL**0.5  # stored form of gamma 0
    gamma[:n, n:] = zero
    gamma[n:, :n] = zero
    beta[:n] = old_beta
    gamma[:n, :n] = old_gamma
    return beta, gamma


def _grow(weight: torch.Tensor, dim: int, size: int, fill: str, generator: torch.Generator) -> torch.Tensor:
    """``weight`` padded along ``dim`` to ``size`` with zeros or small random values."""
    extra = size - weight.shape[dim]
    if extra <= 0:
        return weight
    shape = list(weight.shape)
    shape[dim] = extra
    if fill == "zero":
        pad = torch.zeros(shape, dtype=weight.dtype)
    else:
        rms = float(weight.float().pow(2).mean().sqrt())
        pad = torch.randn(shape, generator=generator, dtype=torch.float32).to(weight.dtype) * rms * NEW_WEIGHT_SCALE
    return torch.cat([weight, pad], dim=dim)


def widen_state(
    state: dict[str, torch.Tensor], config: ArchConfig, widths: tuple[int, int, int], *, seed: int = 0,
) -> tuple[ArchConfig, dict[str, torch.Tensor]]:
    """(widened config, widened network state) of a GDN model's ``state`` (other tensors unchanged)."""
    new_config = widened_config(config, widths)
    generator = torch.Generator().manual_seed(seed)
    out = dict(state)
    ec = new_config.encoder_channels
    hidden = {"Encoder": (ec[1], ec[2], ec[3]), "Generator": (ec[3], ec[2], ec[1])}
    for part in ("Encoder", "Generator"):
        width_in = None  # the widened input width of this layer (None: the image or the latents)
        for index, (conv, norm) in enumerate(_LAYERS):
            w_key, b_key = f"{part}.transform.{conv}.weight", f"{part}.transform.{conv}.bias"
            weight, bias = out[w_key], out[b_key]
            # Conv2d weights are (out, in, k, k); ConvTranspose2d weights are (in, out, k, k)
            out_dim, in_dim = (0, 1) if part == "Encoder" else (1, 0)
            if width_in is not None:
                weight = _grow(weight, in_dim, width_in, "zero", generator)
            if norm is not None:
                width = hidden[part][index]
                weight = _grow(weight, out_dim, width, "random", generator)
                bias = _grow(bias, 0, width, "zero", generator)
                g_key = f"{part}.transform.{norm}"
                beta, gamma = _gdn_state(out[f"{g_key}.beta"], out[f"{g_key}.gamma"], width)
                for name, value in (("beta", beta), ("gamma", gamma)):
                    out[f"{g_key}.{name}"] = value.to(out[f"{g_key}.{name}"].dtype)
                width_in = width
            out[w_key], out[b_key] = weight.contiguous(), bias.contiguous()
    return new_config, out
