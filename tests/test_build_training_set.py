"""scripts/build_training_set.py, offline: the photo filter, the E15/train near-duplicate check, the
halving rule, the curated source table and the train2/val symlink layout, on tiny synthetic images."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "build_training_set.py"


@pytest.fixture(scope="module")
def bts():
    spec = importlib.util.spec_from_file_location("build_training_set", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def natural(seed: int, size: tuple[int, int] = (320, 288)) -> Image.Image:
    """A photo-like image: smooth random colour fields (upsampled noise) plus fine noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)).resize(size, Image.Resampling.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.float32) + rng.normal(0, 6, (size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def test_photo_filter_keeps_photos_and_rejects_small_grey_and_drawings(bts):
    assert bts.photo_problem(natural(0)) is None
    assert "too small" in bts.photo_problem(natural(0, (300, 200)))
    assert bts.photo_problem(natural(0).convert("L").convert("RGB")) == "greyscale"
    drawing = Image.new("RGB", (400, 300), (30, 90, 200))
    drawing.paste((250, 200, 10), (50, 50, 200, 150))
    assert "few colours" in bts.photo_problem(drawing)


def test_near_duplicate_finds_rescaled_and_cropped_copies_only(bts):
    e15 = {"eval/a": bts.fingerprints(natural(1, (768, 512))), "train/b": bts.fingerprints(natural(2))}
    same = natural(1, (768, 512))
    # the same photo as a wider original (E15 images are 3:2 centre crops of 16:10 photos), and smaller
    wider = Image.new("RGB", (820, 512))
    wider.paste(same, (26, 0))
    for copy in (same.resize((384, 256), Image.Resampling.LANCZOS), wider):
        hit = bts.near_duplicate(bts.fingerprints(copy), e15)
        assert hit is not None and hit[0] == "eval/a"
    assert bts.near_duplicate(bts.fingerprints(natural(3, (768, 512))), e15) is None
    assert bts.near_duplicate(bts.fingerprints(natural(3)), {}) is None


def test_name_clash_ignores_source_prefix_and_case(bts):
    assert bts.name_clash("sklearn-Flower", ["Bamboo", "flower"]) == "flower"
    assert bts.name_clash("skimage-coffee", ["Bamboo", "flower"]) is None


def test_halving_rule(bts):
    big = Image.new("RGB", (1600, 1024))
    assert bts.prepare(big, jpeg_sourced=True).size == (800, 512)
    assert bts.prepare(big, jpeg_sourced=False).size == (1600, 1024)
    assert bts.prepare(Image.new("RGB", (1600, 1023)), jpeg_sourced=True).size == (1600, 1023)
    assert bts.patches(Image.new("RGB", (800, 512))) == 6


def test_source_table_is_consistent(bts):
    packages = {p.name: p for p in bts.PACKAGES}
    assert not set(packages) & bts.EXCLUDED_PACKAGES
    stems = [f"{packages[p.package].prefix}-{p.name}" for p in bts.PHOTOS]
    assert len(stems) == len(set(stems))
    for photo in bts.PHOTOS:
        assert photo.package in packages and photo.licence
        assert "lena" not in photo.path.lower()
    for package in bts.PACKAGES:
        assert package.kind in ("deb", "wheel")
        assert package.kind == "deb" or "==" in package.spec  # wheels pinned: the files are fixed


def make_tree(root: Path, train: list[str], extra: list[str]) -> None:
    for folder, names in (("train", train), ("extra", extra)):
        (root / folder).mkdir(parents=True)
        for name in names:
            Image.new("RGB", (4, 4)).save(root / folder / name)


def test_layout_links_train_minus_val_plus_extra(bts, tmp_path):
    make_tree(tmp_path, ["FreshFlower.png", "drop.png", "Aqua.png"], ["skimage-coffee.png", "mpl-grace-hopper.png"])
    (tmp_path / "extra" / "SOURCES.tsv").write_text("file\n")
    train2, val = bts.build_layout(tmp_path)
    assert (
        sorted(os.listdir(tmp_path / "train2"))
        == sorted(train2)
        == [
            "Aqua.png",
            "mpl-grace-hopper.png",
            "skimage-coffee.png",
        ]
    )
    assert sorted(os.listdir(tmp_path / "val")) == sorted(val) == ["FreshFlower.png", "drop.png"]
    link = tmp_path / "train2" / "skimage-coffee.png"
    assert link.is_symlink() and os.readlink(link) == os.path.join("..", "extra", "skimage-coffee.png")
    assert (tmp_path / "val" / "drop.png").resolve() == (tmp_path / "train" / "drop.png").resolve()
    # rebuilding replaces the links; the training loader follows them
    bts.build_layout(tmp_path)
    from hificli.train.data import find_images

    assert [p.name for p in find_images(tmp_path / "train2")] == sorted(train2)
    assert [p.name for p in find_images(tmp_path / "val")] == ["FreshFlower.png", "drop.png"]


def test_layout_refuses_real_files_and_missing_val(bts, tmp_path):
    make_tree(tmp_path, ["FreshFlower.png", "drop.png"], [])
    (tmp_path / "train2").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "train2" / "mine.png")
    with pytest.raises(SystemExit, match="not a symlink"):
        bts.build_layout(tmp_path)
    with pytest.raises(SystemExit, match="validation photos missing"):
        bts.build_layout(tmp_path, val_photos=("FreshFlower.png", "other.png"))
