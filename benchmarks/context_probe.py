"""Which context model pays on these CPUs? A short, like-for-like probe on frozen transforms.

The encoder, hyperprior and rate steps of a shipped variable-rate model are frozen; only a context
network is trained, on cached latents of random training crops, to lower the rate of the same latents
(the transforms, hence the distortion, do not change). Compared, with the same steps, batch and lr:

* ``checkerboard``: hificli.models.context.CheckerboardContext (the shipped design, He et al. 2021);
* ``channel``: channel-conditional slices (Minnen & Singh 2020): the latent channels in S slices, each
  slice's (mu, scale) corrected from the hyperprior's and the decoded earlier slices (5x5 conv + three
  1x1 layers, the last zero-initialised, as the checkerboard's).

Reported: the bits of the validation photos' latents (hard-rounded, the float model's estimate) at three
rate levels, relative to the hyperprior alone, and the forward time of each context on a 768x512 grid.

    nice -n 19 python benchmarks/context_probe.py data/train2 data/val --steps 800
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

from hificli.layers import add_uniform_noise, lower_bound, round_around, round_around_st  # noqa: E402
from hificli.models.context import CheckerboardContext  # noqa: E402
from hificli.models.likelihoods import SCALE_MIN, latent_likelihood  # noqa: E402
from hificli.train.data import find_images, open_rgb  # noqa: E402
from hificli.weights import load_weights  # noqa: E402


class ChannelContext(nn.Module):
    """Channel-conditional slices: slice k's (mu, scale) from the hyperprior's and slices < k."""

    def __init__(self, channels: int, slices: int, width: int) -> None:
        super().__init__()
        self.bounds = np.linspace(0, channels, slices + 1).round().astype(int).tolist()
        self.nets = nn.ModuleList()
        for k in range(1, slices):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            net = nn.Sequential(
                nn.Conv2d(lo, width, 5, padding=2), nn.Conv2d(width, width, 1),  # previous slices -> features
            )
            param = nn.Sequential(
                nn.Conv2d(width + 2 * (hi - lo), width, 1), nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(),
                nn.Conv2d(width, 2 * (hi - lo), 1),
            )
            nn.init.zeros_(param[-1].weight)
            nn.init.zeros_(param[-1].bias)
            self.nets.append(nn.ModuleList([net, param]))

    def forward(self, y_hat: torch.Tensor, mu: torch.Tensor, scale: torch.Tensor):
        mus, scales = [mu[:, : self.bounds[1]]], [scale[:, : self.bounds[1]]]
        for k, (net, param) in enumerate(self.nets, start=1):
            lo, hi = self.bounds[k], self.bounds[k + 1]
            feats = net(y_hat[:, :lo])
            delta = param(torch.cat([feats, mu[:, lo:hi], scale[:, lo:hi]], dim=1))
            mus.append(mu[:, lo:hi] + delta[:, : hi - lo])
            scales.append(lower_bound(scale[:, lo:hi] + delta[:, hi - lo :], SCALE_MIN))
        return torch.cat(mus, 1), torch.cat(scales, 1)


def latents(network, image: torch.Tensor, position: float):
    """(y, mu, scale, step) in absolute units for a (1, 3, H, W) image at a rate position."""
    with torch.no_grad():
        y = network.encode_latents(network.preprocess(image))
        z_hat = torch.floor(network.Hyperprior.analysis(y) + 0.5)
        mu, scale = network.Hyperprior.synthesis(z_hat)
        step = network.RateSteps.steps(torch.tensor([position]))[:, :, None, None]
    return y, mu, scale, step


def bits(context, y, mu, scale, step, *, training: bool) -> torch.Tensor:
    """Latent bits under a context (None: the hyperprior alone), in units of the step as the codec."""
    if context is not None:
        rounding = round_around_st if training else round_around
        mu, scale = context(rounding(y / step, mu / step) * step, mu, scale)
    y_n, mu_n, scale_n = y / step, mu / step, lower_bound(scale / step, SCALE_MIN)
    y_q = add_uniform_noise(y_n) if training else round_around(y_n, mu_n)
    return -torch.log2(latent_likelihood(y_q, mu_n, scale_n, "gaussian")).sum()


def crops(files: list[Path], count: int, side: int, rng: np.random.Generator) -> list[torch.Tensor]:
    out = []
    for i in range(count):
        image = np.asarray(open_rgb(files[i % len(files)]), dtype=np.float32) / 255
        h, w = image.shape[:2]
        if min(h, w) < side:
            continue
        r, c = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
        out.append(torch.from_numpy(image[r : r + side, c : c + side]).permute(2, 0, 1)[None].contiguous())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("train", type=Path)
    parser.add_argument("val", type=Path)
    parser.add_argument("--weights", default="hificli/zoo/default/hific-vr.safetensors")
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--crops", type=int, default=192)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    network = load_weights(args.weights)[0]
    levels = network.RateSteps.levels
    print(f"machine: {describe()}")
    t0 = time.perf_counter()
    cache = [latents(network, x, float(rng.uniform(0, levels - 1)))
             for x in crops(find_images(args.train), args.crops, 256, rng)]
    val = []
    for path in find_images(args.val):
        image = np.asarray(open_rgb(path), dtype=np.float32) / 255
        h, w = (s // 64 * 64 for s in image.shape[:2])
        x = torch.from_numpy(image[:h, :w]).permute(2, 0, 1)[None].contiguous()
        val += [latents(network, x, p) for p in (0.0, (levels - 1) / 2, levels - 1.0)]
    print(f"latents of {len(cache)} crops and {len(val)} validation grids in {time.perf_counter() - t0:.0f} s")
    c = network.config.latent_channels
    candidates = {"checkerboard": CheckerboardContext(c, 192), "channel": ChannelContext(c, 4, 128)}
    base = [bits(None, *v, training=False).item() for v in val]
    for name, context in candidates.items():
        params = sum(p.numel() for p in context.parameters())
        opt = torch.optim.Adam(context.parameters(), lr=args.lr)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            batch = [cache[i] for i in rng.integers(0, len(cache), 4)]
            loss = sum(bits(context, *b, training=True) for b in batch) / (4 * 256 * 256)
            opt.zero_grad()
            loss.backward()
            opt.step()
        train_s = time.perf_counter() - t0
        with torch.no_grad():
            now = [bits(context, *v, training=False).item() for v in val]
            grid = torch.randn(1, c, 32, 48)
            t0 = time.perf_counter()
            for _ in range(5):
                context(grid, grid, grid.abs() + 0.2)
            forward_ms = (time.perf_counter() - t0) / 5 * 1000
        change = [100 * (n / b - 1) for n, b in zip(now, base, strict=True)]
        print(f"{name}: {params:,} params, {args.steps} steps in {train_s:.0f} s; latent bits vs hyperprior "
              f"per validation grid (levels 0 / mid / top per photo): "
              + " ".join(f"{v:+.1f}%" for v in change)
              + f"; mean {np.mean(change):+.1f}%; float forward 768x512 {forward_ms:.0f} ms")
    print(f"machine: {describe()}")


if __name__ == "__main__":
    main()
