"""Training and validation images: discovery, deterministic random crops, batches per step.

Every training sample is a pure function of ``(seed, global sample index)``: the image (a fresh
permutation of the set each epoch), the rescale factor, the crop position and the flip. Step ``s`` of a
run with batch ``B`` per process on ``W`` processes uses indices ``[s*B*W, (s+1)*B*W)``, process ``r``
the slice ``r*B .. r*B+B``. So the data order is independent of the number of loader workers and a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps
from torch.utils.data import DataLoader, Dataset, Sampler

from hificli.errors import InvalidInputError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp"})
VAL_MULTIPLE = 64  # validation crops: multiple of the encoder x hyper-analysis stride
VAL_MIN_SIDE = 128  # the network's smallest input side

Warn = Callable[[str], None]


def _stderr_warn(message: str) -> None:
    sys.stderr.write(f"warning: {message}\n")


def find_images(root: str | Path) -> list[Path]:
    """Image files under ``root`` (recursive, sorted; extensions in :data:`IMAGE_EXTENSIONS`)."""
    root = Path(root)
    if not root.is_dir():
        raise InvalidInputError(f"{root}: not a directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
    if not files:
        exts = ", ".join(sorted(e[1:] for e in IMAGE_EXTENSIONS))
        raise InvalidInputError(f"{root}: no images found", f"expected files ending in {exts}")
    return files


def open_rgb(path: Path) -> Image.Image:
    """Decode ``path`` fully into an RGB image (EXIF orientation applied)."""
    with Image.open(path) as handle:
        image = ImageOps.exif_transpose(handle)
        image = image.convert("RGB")
        image.load()
    return image


def split_validation(files: Sequence[Path], fraction: float) -> tuple[list[Path], list[Path]]:
    """Hold out ``fraction`` of ``files`` (evenly spaced, at least 1) when there are 10 or more."""
    files = list(files)
    n_val = max(1, round(len(files) * fraction)) if fraction > 0 and len(files) >= 10 else 0
    if n_val == 0:
        return files, []
    picks = {round((i + 0.5) * len(files) / n_val) for i in range(n_val)}
    picks = {min(p, len(files) - 1) for p in picks}
    return [f for i, f in enumerate(files) if i not in picks], [f for i, f in enumerate(files) if i in picks]


class ImagePool:
    """The training images, decoded once into memory when they fit in ``cache_mb`` (else read per crop).

    Unreadable files are skipped with one warning each.
    """

    def __init__(self, files: Sequence[Path], *, cache_mb: float = 4096, warn: Warn = _stderr_warn) -> None:
        self.files: list[Path] = []
        self.sizes: list[tuple[int, int]] = []
        for path in files:
            try:
                with Image.open(path) as handle:
                    size = handle.size
                    if handle.getexif().get(0x0112, 1) in (5, 6, 7, 8):
                        size = size[::-1]
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                warn(f"skipping unreadable image {path}: {exc}")
                continue
            self.files.append(path)
            self.sizes.append(size)
        total_mb = sum(w * h * 4 for w, h in self.sizes) / 2**20  # Pillow keeps RGB as 4 bytes/pixel
        self.images: list[Image.Image] | None = None
        if total_mb <= cache_mb:
            kept, images, sizes = [], [], []
            for path, size in zip(self.files, self.sizes, strict=True):
                try:
                    images.append(open_rgb(path))
                except (OSError, ValueError, Image.DecompressionBombError) as exc:
                    warn(f"skipping unreadable image {path}: {exc}")
                    continue
                kept.append(path)
                sizes.append(size)
            self.files, self.sizes, self.images = kept, sizes, images
        if not self.files:
            raise InvalidInputError("no readable training images")

    def __len__(self) -> int:
        return len(self.files)

    @property
    def in_memory(self) -> bool:
        return self.images is not None

    def get(self, index: int) -> Image.Image:
        """Image ``index`` (decoded now unless cached); a file that fails here falls back to the next."""
        if self.images is not None:
            return self.images[index]
        for k in range(len(self.files)):
            path = self.files[(index + k) % len(self.files)]
            try:
                return open_rgb(path)
            except (OSError, ValueError, Image.DecompressionBombError) as exc:
                _stderr_warn(f"skipping unreadable image {path}: {exc}")
        raise InvalidInputError("no readable training images")


@dataclass(frozen=True)
class CropSpec:
    """How a training crop is drawn: side, rescale range (fraction of the side) and flips."""

    crop: int = 256
    scale_min: float = 0.75
    scale_max: float = 0.95
    hflip: bool = True


class CropDataset(Dataset):
    """Map-style dataset: global sample index -> (3, crop, crop) uint8 tensor (see module docstring).

    Each image is rescaled by s ~ U[max(c/short, lo), max(c/short, hi)] (never below the crop; small
    images are upscaled so the short side equals the crop), then cropped at a uniform position and
    flipped horizontally with probability 1/2. Only the crop window is resampled (bicubic).
    """

    def __init__(self, pool: ImagePool, spec: CropSpec, seed: int) -> None:
        self.pool = pool
        self.spec = spec
        self.seed = seed
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def __len__(self) -> int:  # unbounded stream; the sampler decides what is read
        return 2**62

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.pool))
            self._perm_epoch = epoch
        assert self._perm is not None
        return self._perm

    def __getitem__(self, index: int) -> torch.Tensor:
        epoch, pos = divmod(int(index), len(self.pool))
        image_index = int(self._order(epoch)[pos])
        rng = np.random.default_rng([self.seed, 2, int(index)])
        image = self.pool.get(image_index)
        c = self.spec.crop
        w, h = image.size
        floor = c / min(w, h)
        scale = rng.uniform(max(floor, self.spec.scale_min), max(floor, self.spec.scale_max))
        window = min(c / scale, w, h)
        x0 = rng.uniform(0, w - window)
        y0 = rng.uniform(0, h - window)
        if abs(window - c) < 1e-6:  # no resampling: integer crop
            x, y = int(x0), int(y0)
            patch = image.crop((x, y, x + c, y + c))
        else:
            box = (x0, y0, x0 + window, y0 + window)
            patch = image.resize((c, c), Image.Resampling.BICUBIC, box=box)
        pixels = np.asarray(patch, dtype=np.uint8)
        if self.spec.hflip and rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


class StepBatchSampler(Sampler[list[int]]):
    """Yields this process's sample indices for steps ``start .. end-1`` (always step 0's if ``fixed``)."""

    def __init__(self, start: int, end: int, batch: int, *, world: int = 1, rank: int = 0, fixed: bool = False):
        self.start, self.end, self.batch = start, end, batch
        self.world, self.rank, self.fixed = world, rank, fixed

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.end):
            base = (0 if self.fixed else step) * self.batch * self.world + self.rank * self.batch
            yield list(range(base, base + self.batch))


def make_loader(dataset: CropDataset, sampler: StepBatchSampler, *, workers: int, pin_memory: bool) -> DataLoader:
    """A DataLoader over ``sampler``'s batches: uint8 tensors (B, 3, crop, crop).

    It gets its own generator so that starting it never draws from the global torch RNG (whose state
    checkpoints restore for the quantization noise).
    """
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers > 0 else None,
        persistent_workers=False,
        generator=torch.Generator().manual_seed(dataset.seed),
    )


def default_workers() -> int:
    """min(2, usable CPUs)."""
    import os

    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:
        cpus = os.cpu_count() or 1
    return min(2, cpus)


def load_validation(
    files: Sequence[Path], *, max_side: int = 512, max_images: int = 16, warn: Warn = _stderr_warn
) -> list[tuple[str, torch.Tensor]]:
    """Validation images as (name, (3, H, W) uint8), centre-cropped to multiples of 64 in [128, max_side]
    (smaller images are upscaled first)."""
    out: list[tuple[str, torch.Tensor]] = []
    for path in files:
        if len(out) >= max_images:
            break
        try:
            image = open_rgb(path)
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            warn(f"skipping unreadable validation image {path}: {exc}")
            continue
        w, h = image.size
        if min(w, h) < VAL_MIN_SIDE:
            s = VAL_MIN_SIDE / min(w, h)
            image = image.resize((math.ceil(w * s), math.ceil(h * s)), Image.Resampling.BICUBIC)
            w, h = image.size
        cw = max(VAL_MIN_SIDE, min(max_side, w) // VAL_MULTIPLE * VAL_MULTIPLE)
        ch = max(VAL_MIN_SIDE, min(max_side, h) // VAL_MULTIPLE * VAL_MULTIPLE)
        left, top = (w - cw) // 2, (h - ch) // 2
        pixels = np.asarray(image.crop((left, top, left + cw, top + ch)), dtype=np.uint8)
        name = path.stem if all(path.stem != n for n, _ in out) else f"{path.stem}-{len(out)}"
        out.append((name, torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))))
    return out
