"""Choose a realism decoder on validation photos: PSNR and ST-LPIPS at several realism settings.

Each photo's centre crop is encoded once per quality (the file never depends on the realism) and decoded
at every ``--realism``; the table gives per photo and mean the PSNR and ST-LPIPS (AlexNet, the evaluation
metric, whatever distance the decoder was trained with) and the change against realism 0 (the faithful
decode of the same file). Meant for checkpoints of a ``hific train --stage realism`` run on photos it was
not trained on (never E15):

    .venv/bin/python benchmarks/realism_sweep.py runs/real5/weights.safetensors data/rval \\
        --qualities 20,50 --realism 0,0.5,1
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402


def floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def centre_crop(image: Image.Image, width: int, height: int) -> Image.Image:
    w, h = image.size
    width, height = min(width, w), min(height, h)
    left, top = (w - width) // 2, (h - height) // 2
    return image.crop((left, top, left + width, top + height))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="model with a realism decoder (weights file, run directory or name)")
    parser.add_argument("photos", type=Path, help="folder of validation photos")
    parser.add_argument("--qualities", type=floats, default=[20.0, 50.0])
    parser.add_argument("--realism", type=floats, default=[0.0, 0.5, 1.0])
    parser.add_argument("--crop", default="768x512", help="centre crop WxH of each photo")
    parser.add_argument("--lpips", default="stlpips-alex")
    args = parser.parse_args()

    import torch

    from hificli import api
    from hificli.eval.metrics import load_lpips, psnr

    torch.set_num_threads(2)
    width, height = (int(v) for v in args.crop.split("x"))
    model = api.load_model(args.weights, progress=False)
    metric, note = load_lpips(args.lpips)
    if metric is None:
        raise SystemExit(f"no perceptual metric: {note}")
    print(f"{machine.describe()}\nmodel {args.weights}; {note}; centre crops {args.crop}\n")
    print("| photo | q | bpp | " + " | ".join(f"r {r:g}: PSNR / ST-LPIPS" for r in args.realism) + " |")
    print("|---|---|---|" + "---|" * len(args.realism))
    table: dict[tuple[float, float], list[tuple[float, float]]] = {}
    for path in sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".png", ".jpg", ".jpeg"}):
        image = centre_crop(Image.open(path).convert("RGB"), width, height)
        pixels = np.asarray(image)
        for q in args.qualities:
            data = api.encode(image, model, quality=q)
            cells = []
            for r in args.realism:
                decoded = np.asarray(api.decode(data, model, realism=r).convert("RGB"))
                score = (psnr(pixels, decoded), metric(pixels, decoded))
                table.setdefault((q, r), []).append(score)
                cells.append(f"{score[0]:.2f} / {score[1]:.4f}")
            bpp = 8 * len(data) / (pixels.shape[0] * pixels.shape[1])
            print(f"| {path.stem} | {q:g} | {bpp:.3f} | " + " | ".join(cells) + " |")
    print(f"\nmean over photos (load {machine.load_average():.2f}); ST-LPIPS change against realism 0:")
    for q in args.qualities:
        base = [s[1] for s in table[(q, 0.0)]] if (q, 0.0) in table else None
        for r in args.realism:
            scores = table[(q, r)]
            change = ""
            if base is not None:
                ratios = [s[1] / b - 1 for s, b in zip(scores, base, strict=True)]
                change = (f", change: mean {100 * statistics.fmean(ratios):+.1f} %, "
                          f"median {100 * statistics.median(ratios):+.1f} %")
            print(f"  q {q:g} realism {r:g}: PSNR {statistics.fmean(s[0] for s in scores):.2f} dB, "
                  f"ST-LPIPS {statistics.fmean(s[1] for s in scores):.4f}{change}")


if __name__ == "__main__":
    main()
