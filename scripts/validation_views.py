"""Write the two validation views of a folder of photos (MODELS.md, ``hific-perceptual``):

- ``--mode crop``: the centre 768x512 of each photo at its own resolution (or the whole side where the
  photo is shorter): a zoomed-in part of the scene (``/tmp/rval2c``);
- ``--mode scale``: each photo scaled (Lanczos) to cover 768x512, then centre-cropped, as E15 was made
  (``../shared/data/README.md``); a photo smaller than that is kept whole, never scaled up (``/tmp/rval2s``).

    .venv/bin/python scripts/validation_views.py data/rval2 /tmp/rval2s --mode scale
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image

WIDTH, HEIGHT = 768, 512


def view(image: Image.Image, mode: str) -> Image.Image:
    """One photo's view (RGB): ``crop`` or ``scale`` (see the module)."""
    image = image.convert("RGB")
    w, h = image.size
    if mode == "scale" and w >= WIDTH and h >= HEIGHT:
        scale = max(WIDTH / w, HEIGHT / h)
        w, h = max(WIDTH, round(w * scale)), max(HEIGHT, round(h * scale))
        image = image.resize((w, h), Image.Resampling.LANCZOS)
    cw, ch = min(w, WIDTH), min(h, HEIGHT)
    left, top = (w - cw) // 2, (h - ch) // 2
    return image.crop((left, top, left + cw, top + ch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="folder of PNG photos")
    parser.add_argument("dest", type=Path)
    parser.add_argument("--mode", choices=("crop", "scale"), required=True)
    args = parser.parse_args()
    photos = sorted(args.source.glob("*.png"))
    if not photos:
        raise SystemExit(f"{args.source}: no .png photos")
    args.dest.mkdir(parents=True, exist_ok=True)
    for path in photos:
        with Image.open(path) as image:
            out = view(image, args.mode)
        out.save(args.dest / path.name)
        print(f"{path.name}: {out.width}x{out.height}")


if __name__ == "__main__":
    main()
