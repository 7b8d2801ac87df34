"""Where one realism-stage training step's time goes (hific train --stage realism), part by part.

Times the parts of a step on random crops with the embedded default model as the frozen base: the base's
quantized latents and faithful decode, G_r's forward, the discriminator's update, D on the generated
batch, the perceptual forward and the generator backward. Median-free: the mean of 3 steps after one
warm-up step. The machine's load is printed beside the figures.

    .venv/bin/python benchmarks/profile_realism_step.py --crop 128 --batch 8 [--perceptual stlpips-alex]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, load_average  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crop", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--perceptual", default="stlpips-alex")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(describe())
    import torch

    from hificli.models.discriminator import Discriminator
    from hificli.models.realism import RealismGenerator, blend
    from hificli.perceptual import load_perceptual
    from hificli.train import losses as L
    from hificli.train.realism import _Base, per_image_generator_loss, realism_loss
    from hificli.zoo import registry

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = _Base(registry.embedded_path(registry.get(registry.DEFAULT_MODEL)), torch.device("cpu"))
    realistic = RealismGenerator(base.info.config)
    realistic.start_from(base.network.Generator)
    disc = Discriminator(base.info.config)
    perceptual = load_perceptual(args.perceptual)
    x = torch.rand(args.batch, 3, args.crop, args.crop)
    seconds: dict[str, float] = {}
    load_before = load_average()
    for step in range(4):
        marks = [time.perf_counter()]

        def mark(name: str, marks: list[float] = marks, timed: bool = step > 0) -> None:
            marks.append(time.perf_counter())
            if timed:
                seconds[name] = seconds.get(name, 0.0) + marks[-1] - marks[-2]

        y_hat, x0 = base.latents(x)
        mark("base latents + faithful decode")
        r = torch.rand(args.batch)
        x_hat = base.network.postprocess(blend(x0, realistic(y_hat, r), r))
        mark("G_r forward")
        real, fake = disc(torch.cat([x, x_hat.detach()]), torch.cat([y_hat, y_hat])).chunk(2)
        L.discriminator_loss(real, fake).backward()
        mark("discriminator update")
        disc.requires_grad_(False)
        adversarial = per_image_generator_loss(disc(x_hat, y_hat), args.batch)
        disc.requires_grad_(True)
        mark("D on the generated batch")
        distance = perceptual(x_hat, x).reshape(args.batch)
        mark("perceptual forward")
        loss, _ = realism_loss(x_hat, x, r, distance, adversarial, k_m=0.075 * 2**-5, k_p=1.0, beta=0.15)
        loss.backward()
        mark("generator backward")
    print(f"\n{args.batch} crops of {args.crop} px, {args.perceptual}, {args.threads} threads; "
          f"load {load_before:.2f} -> {load_average():.2f}\n")
    print("| part | s/step |\n|---|---|")
    for name, total in seconds.items():
        print(f"| {name} | {total / 3:.3f} |")
    print(f"| total | {sum(seconds.values()) / 3:.2f} |")


if __name__ == "__main__":
    main()
