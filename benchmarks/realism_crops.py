"""Side-by-side crops at equal bpp: original, the model's faithful decoder, its realism decoder, a second
(perceptual) model, AVIF.

For each image the model encodes at ``--quality``; the file decodes at realism 0 and at ``--realism``
(same file, same bpp); ``--second`` encodes to that bpp (its ``target_bpp``), and AVIF is matched to it
(the eval's binary search on AVIF quality).
One row per image: the same ``--crop`` px window of each, labelled with bpp, PSNR and ST-LPIPS of the
whole image. The 1-minute load average is printed (timings are not the point here).

    .venv/bin/python benchmarks/realism_crops.py data/eval/A.png data/eval/B.png -m MODEL \\
        --quality 20 --realism 1 -o benchmarks/results/realism-crops.png
    .venv/bin/python benchmarks/realism_crops.py data/eval/A.png -m hific-vr2 --second hific-perceptual \
        --quality 20 --realism 1 -o benchmarks/results/perceptual-crops.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe  # noqa: E402

LABEL_HEIGHT = 34


def decode_row(path: Path, model, quality: float, realism: float, lpips, second=None) -> list[tuple[str, np.ndarray]]:
    """(caption, pixels) of the original, realism 0, realism ``realism`` (``realism`` 0: left out), the
    ``second`` model (if any, encoded to the same bpp) and AVIF at the same bpp."""
    from PIL import Image

    from hificli import api
    from hificli.eval import baselines as bl
    from hificli.eval.metrics import psnr
    from hificli.imageio import read_image

    pixels = read_image(str(path)).pixels
    data = api.encode(Image.fromarray(pixels, "RGB"), model, quality=quality)
    bpp = bl.bpp_of(data, pixels)
    avif = bl.get("avif")
    _, avif_data = bl.match_bpp(avif, pixels, bpp)
    decoded = {f"{model.model_id}": np.asarray(api.decode(data, model).convert("RGB"))}
    sizes = {"AVIF": bl.bpp_of(avif_data, pixels)}
    if realism:
        blended = api.decode(data, model, realism=realism).convert("RGB")
        decoded[f"{model.model_id}, realism {realism:g}"] = np.asarray(blended)
    if second is not None:
        other = api.encode(Image.fromarray(pixels, "RGB"), second, target_bpp=bpp)
        decoded[second.model_id] = np.asarray(api.decode(other, second).convert("RGB"))
        sizes[second.model_id] = bl.bpp_of(other, pixels)
    decoded["AVIF"] = avif.decode(avif_data)
    row = [(f"{path.stem} (original)", pixels)]
    for name, image in decoded.items():
        distance = lpips(pixels, image) if lpips is not None else float("nan")
        row.append((f"{name}: {sizes.get(name, bpp):.3f} bpp, {psnr(pixels, image):.2f} dB, "
                    f"ST-LPIPS {distance:.3f}", image))
    return row


def crop_window(pixels: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left of the ``side`` px window with the most detail (largest gradient energy, coarse grid)."""
    gray = pixels.astype(np.float64).mean(axis=2)
    energy = np.abs(np.diff(gray, axis=0))[:, :-1] + np.abs(np.diff(gray, axis=1))[:-1, :]
    best, where = -1.0, (0, 0)
    step = max(16, side // 4)
    for top in range(0, max(1, energy.shape[0] - side), step):
        for left in range(0, max(1, energy.shape[1] - side), step):
            value = energy[top : top + side, left : left + side].sum()
            if value > best:
                best, where = value, (top, left)
    return where


def compose(rows: list[list[tuple[str, np.ndarray]]], side: int, out: Path) -> None:
    from PIL import Image, ImageDraw

    columns = len(rows[0])
    sheet = Image.new("RGB", (columns * side, len(rows) * (side + LABEL_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, row in enumerate(rows):
        top, left = crop_window(row[0][1], side)
        for c, (caption, pixels) in enumerate(row):
            tile = Image.fromarray(pixels[top : top + side, left : left + side])
            y = r * (side + LABEL_HEIGHT)
            sheet.paste(tile, (c * side, y + LABEL_HEIGHT))
            head, _, tail = caption.partition(": ")
            draw.text((c * side + 4, y + 2), head, fill="black")
            draw.text((c * side + 4, y + 17), tail, fill="black")
    sheet.save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("-m", "--model", required=True, help="a model with a realism decoder (name or path)")
    parser.add_argument("--quality", type=float, default=20.0)
    parser.add_argument("--realism", type=float, default=1.0, help="0: no realism column")
    parser.add_argument("--second", default=None, help="a second model, encoded to the first one's bpp")
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    print(describe())
    from hificli.api import load_model
    from hificli.eval.metrics import load_lpips

    model = load_model(args.model, progress=False)
    second = load_model(args.second, progress=False) if args.second else None
    lpips, note = load_lpips("stlpips-alex")
    if lpips is None:
        print(f"ST-LPIPS unavailable ({note}): captions show nan")
    rows = [decode_row(path, model, args.quality, args.realism, lpips, second) for path in args.images]
    for row in rows:
        for caption, _ in row[1:]:
            print(caption)
    compose(rows, args.crop, args.output)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
