"""Does the realism discriminator learn on CPU? Train D alone to tell real crops from decodes.

A frozen model with a realism decoder encodes random crops of the training photos (random rate level per
crop) and decodes them faithfully or at realism 1 (``--fake``); each variant of D is then trained for
``--steps`` steps on (real, decoded) batches exactly as ``hific train --stage realism`` trains it, and
scored on crops of held-out photos: the gap between the mean logits of real and decoded patches and the
patch accuracy at threshold 0. A D that cannot separate them within a hundred steps gives the generator
no signal in the steps these cores allow.

    .venv/bin/python benchmarks/disc_probe.py hificli/zoo/default/hific-vr2.safetensors data/rtrain data/rval \\
        --steps 100 --variants gain1:1e-4,gain1:1e-3,gain32:1e-4:hp,gain64:1e-4:hp

A variant is ``gainG:LR``, plus ``:hp`` for a high-pass input (``--d-high-pass``) and ``:nosn`` to drop the
spectral norm.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402


def parse_variant(text: str) -> tuple[str, float, float, bool, bool]:
    """``gainG:LR[:nosn][:hp]`` -> (label, input gain, learning rate, spectral norm, high-pass input)."""
    gain, lr, *rest = text.split(":")
    return text, float(gain.removeprefix("gain")), float(lr), "nosn" not in rest, "hp" in rest


def without_spectral_norm(disc) -> None:
    from torch.nn.utils import remove_spectral_norm

    for i in range(1, 5):
        remove_spectral_norm(getattr(disc, f"conv{i}"))


def random_crops(folder: Path, count: int, size: int, rng: np.random.Generator):
    import torch
    from PIL import Image

    from hificli.train.data import find_images, open_rgb

    files = find_images(folder)
    crops = []
    for _ in range(count):
        image: Image.Image = open_rgb(files[int(rng.integers(len(files)))])
        w, h = image.size
        left, top = int(rng.integers(w - size + 1)), int(rng.integers(h - size + 1))
        crop = np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.float32) / 255.0
        crops.append(torch.from_numpy(crop).permute(2, 0, 1))
    return torch.stack(crops)


def decode_batch(network, x, fake: str):
    """(y_hat, decoded) of a [0, 1] batch at random rate levels, as the codec quantizes."""
    import torch

    from hificli.models.realism import blend
    from hificli.train.variable_rate import sample_positions

    with torch.no_grad():
        levels = network.config.rate_levels
        positions = sample_positions(x.shape[0], levels) if levels else None
        out = network(x, rate_positions=positions) if positions is not None else network(x)
        x0 = network.generate(out.y_hat)
        if fake == "realism":
            one = torch.ones(x.shape[0])
            x0 = blend(x0, network.Realism(out.y_hat, one), one)
        return out.y_hat, network.postprocess(x0).clamp(0, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", type=Path, help="weights file of a model with a realism decoder")
    parser.add_argument("train", type=Path, help="folder of training photos")
    parser.add_argument("held_out", type=Path, help="folder of photos D never sees in training")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--pool", type=int, default=96, help="training crops (decoded once)")
    parser.add_argument("--fake", choices=("faithful", "realism"), default="realism")
    parser.add_argument("--variants", default="gain1:1e-4,gain1:1e-3,gain8:1e-4,gain32:1e-4")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from hificli.models.discriminator import Discriminator
    from hificli.train import losses as L
    from hificli.weights import load_weights

    torch.set_num_threads(2)
    rng = np.random.default_rng(args.seed)
    network, _, _, info = load_weights(args.weights)
    network.eval()
    t0 = time.perf_counter()
    train_x = random_crops(args.train, args.pool, args.crop, rng)
    test_x = random_crops(args.held_out, 32, args.crop, rng)
    torch.manual_seed(args.seed)
    train_y, train_fake = decode_batch(network, train_x, args.fake)
    test_y, test_fake = decode_batch(network, test_x, args.fake)
    print(f"{machine.describe()}\nmodel {args.weights}; fake = {args.fake} decodes; {args.pool} training crops, "
          f"32 held-out, {args.crop} px; decoded in {time.perf_counter() - t0:.1f} s; "
          f"RMS(real - fake) {float((train_x - train_fake).pow(2).mean().sqrt()) * 255:.2f} grey levels\n")
    print("| variant (input gain : lr) | steps | s/step | D loss, first / last 10 steps | held-out logit gap "
          "(real - fake) | held-out accuracy |")
    print("|---|---|---|---|---|---|")
    for label, gain, lr, spectral, high_pass in (parse_variant(v) for v in args.variants.split(",")):
        torch.manual_seed(args.seed)
        disc = Discriminator(info.config, input_gain=gain, high_pass=high_pass)
        if not spectral:
            without_spectral_norm(disc)
        opt = torch.optim.Adam(disc.parameters(), lr=lr, betas=(0.5, 0.999))
        order = np.random.default_rng(args.seed + 1)
        t1 = time.perf_counter()
        losses = []
        for _ in range(args.steps):
            idx = torch.from_numpy(order.choice(args.pool, args.batch, replace=False))
            y = train_y[idx]
            logits = disc(torch.cat([train_x[idx], train_fake[idx]]), torch.cat([y, y]))
            real, fake = logits.chunk(2)
            loss = L.discriminator_loss(real, fake)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        per_step = (time.perf_counter() - t1) / args.steps
        with torch.no_grad():
            real = disc(test_x, test_y)
            fake = disc(test_fake, test_y)
        gap = float(real.mean() - fake.mean())
        accuracy = float(((real > 0).float().mean() + (fake < 0).float().mean()) / 2)
        print(f"| {label} | {args.steps} | {per_step:.2f} | {np.mean(losses[:10]):.4f} / {np.mean(losses[-10:]):.4f} "
              f"| {gap:+.3f} | {accuracy:.1%} |", flush=True)


if __name__ == "__main__":
    main()
