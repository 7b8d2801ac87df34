"""scripts/validation_views.py: the two validation views (native centre crop; scaled like E15)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "validation_views.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True)


def test_views_crop_at_native_scale_or_scale_like_e15(tmp_path: Path) -> None:
    source = tmp_path / "photos"
    source.mkdir()
    big = np.zeros((1000, 1600, 3), np.uint8)
    big[:, :800] = 200  # left half bright: a native crop sees the middle, a scaled view the whole width
    Image.fromarray(big).save(source / "big.png")
    Image.fromarray(np.full((500, 640, 3), 90, np.uint8)).save(source / "small.png")

    assert run(str(source), str(tmp_path / "c"), "--mode", "crop").returncode == 0
    assert run(str(source), str(tmp_path / "s"), "--mode", "scale").returncode == 0
    crop = np.asarray(Image.open(tmp_path / "c" / "big.png"))
    scaled = np.asarray(Image.open(tmp_path / "s" / "big.png"))
    assert crop.shape == scaled.shape == (512, 768, 3)
    assert np.array_equal(crop, big[244:756, 416:1184])
    # scaled to 819x512 (covers 768x512), then the centre 768 columns: the bright half ends at column 384
    assert scaled[:, :370].min() >= 199 and scaled[:, 400:].max() <= 1
    for view in ("c", "s"):  # a photo smaller than 768x512 is kept whole, never scaled up
        assert np.array_equal(np.asarray(Image.open(tmp_path / view / "small.png")), np.full((500, 640, 3), 90))


def test_an_empty_folder_is_an_error(tmp_path: Path) -> None:
    done = run(str(tmp_path), str(tmp_path / "out"), "--mode", "scale")
    assert done.returncode != 0 and "no .png photos" in done.stderr
