"""Training speed and memory of `hific train`: steps/s and peak memory per architecture.

Runs the real training loop (hificli.train.loop.train) on synthetic 512x384 images, one fresh process per
configuration, and prints a markdown table. Peak RSS is the process high-water mark (model, optimizer,
perceptual network, data); CUDA peak is torch.cuda.max_memory_allocated. The first step (allocator and
oneDNN warm-up) is not timed.

    .venv/bin/python benchmarks/bench_train.py                       # small + full, batch 8, 256 crops
    .venv/bin/python benchmarks/bench_train.py --arch small --steps 5 --perceptual none stlpips-alex
    .venv/bin/python benchmarks/bench_train.py --stage realism --init hificli/zoo/default/hific-vr2.safetensors \
        --arch hific-vr2 --batch 8 --crop 128     # the realism decoder of a weights file (--arch: its label)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def synthetic_images(folder: Path, count: int = 4, seed: int = 0) -> None:
    """Smooth colour fields with texture (no test fixtures needed)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:384, 0:512].astype(np.float32)
    for i in range(count):
        planes = [127 + 90 * np.sin(rng.uniform(0.01, 0.06) * xx + rng.uniform(0, 6)) *
                  np.cos(rng.uniform(0.01, 0.06) * yy + c) for c in range(3)]
        pixels = np.stack(planes, axis=2) + rng.normal(0, 8, (384, 512, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"img{i}.png")


def worker(args: argparse.Namespace) -> None:
    """Train ``args.steps + 1`` steps of one configuration; print one JSON line of measurements."""
    import torch

    from hificli.train.loop import train
    from hificli.train.options import TrainOptions

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        synthetic_images(data)
        options = TrainOptions(
            data_dir=str(data), out=str(Path(tmp) / "run"), stage=args.stage, arch=args.arch[0],
            steps=args.steps + 1, batch_size=args.batch, crop=args.crop, device=args.device,
            perceptual=args.perceptual[0], log_every=1, save_every=0, val_every=0, val_split=0.0,
            channels_last=args.channels_last, threads=args.threads, checkpoints=False,
            perceptual_crop=args.perceptual_crop, init=args.init,
        )
        start = time.perf_counter()
        train(options, quiet=True, warn=lambda m: None)
        wall = time.perf_counter() - start
        records = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
    times = [r["step_time"] for r in records if r["kind"] == "train"][1:]
    cuda = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() and args.device != "cpu" else None
    print(json.dumps({
        "arch": args.arch[0], "perceptual": args.perceptual[0], "stage": args.stage,
        "s_per_step": sum(times) / len(times), "steps_timed": len(times), "wall_s": wall,
        "rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "cuda_gib": cuda,
        "threads": torch.get_num_threads(), "load": os.getloadavg()[0],
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["small", "full"])
    parser.add_argument("--perceptual", nargs="+", default=["stlpips-alex"])
    parser.add_argument("--stage", default="base", choices=["base", "gan", "realism"])
    parser.add_argument("--init", default=None, help="weights to start from (required by --stage realism)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--perceptual-crop", type=int, default=0, help="score LPIPS on a PxP window")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return

    rows = []
    load_start = os.getloadavg()[0]
    for arch in args.arch:
        for kind in args.perceptual:
            cmd = [sys.executable, __file__, "--worker", "--arch", arch, "--perceptual", kind, "--stage", args.stage,
                   "--batch", str(args.batch), "--crop", str(args.crop), "--steps", str(args.steps),
                   "--device", args.device]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            if args.channels_last:
                cmd.append("--channels-last")
            if args.perceptual_crop:
                cmd += ["--perceptual-crop", str(args.perceptual_crop)]
            if args.init:
                cmd += ["--init", args.init]
            proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ})
            if proc.returncode != 0:
                sys.exit(f"{arch}/{kind} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"done {arch}/{kind}: {rows[-1]['s_per_step']:.2f} s/step", file=sys.stderr)

    window = f", perceptual on {args.perceptual_crop}px windows" if args.perceptual_crop else ""
    print(f"`hific train --stage {args.stage}`, batch {args.batch}, {args.crop}x{args.crop} crops{window}, "
          f"{args.device} ({platform.processor() or platform.machine()}, {rows[0]['threads']} threads), "
          f"mean of {args.steps} steps after 1 warm-up step; load average (1 min) {load_start:.2f} at start\n")
    print("| arch | perceptual | s/step | steps/s | images/s | peak RSS (GiB) | CUDA peak (GiB) | load at end |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        cuda = f"{r['cuda_gib']:.2f}" if r["cuda_gib"] is not None else "-"
        print(f"| {r['arch']} | {r['perceptual']} | {r['s_per_step']:.2f} | {1 / r['s_per_step']:.3f} | "
              f"{args.batch / r['s_per_step']:.2f} | {r['rss_gib']:.2f} | {cuda} | {r['load']:.1f} |")


if __name__ == "__main__":
    main()
