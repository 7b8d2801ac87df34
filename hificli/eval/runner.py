"""Evaluate images with hific models and baseline codecs: one :class:`ImageResult` per image.

For every image: each hific model encodes and decodes it (bpp from the real .hfc size) at its default
quality, and a variable-rate model also at each of the spec's qualities (its curve); each baseline
runs its quality sweep and, for each hific model, the setting matched to that model's default bpp. Every
reconstruction is measured with PSNR, MS-SSIM and (when available) LPIPS against the image as hific
reads it (8-bit RGB after the image policy of :mod:`hificli.imageio`). A model's realism labels (its
realism decoder at ``r``, hificli.models.realism) decode that model's files again at ``r``: same bytes,
hence the same bpp and bpp-matched baselines.

``jobs > 1`` runs images in a process pool (spawned workers, each loading the models and the LPIPS
network once, torch threads split between them); results come back in input order.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hificli.eval import baselines as bl
from hificli.eval.metrics import Perceptual, load_lpips, ms_ssim, psnr

_UNSET: Any = object()
#: Qualities a variable-rate model is swept over by default (6 points over the whole range).
DEFAULT_EVAL_QUALITIES = (0.0, 20.0, 40.0, 60.0, 80.0, 100.0)


@dataclass
class Point:
    """One encoding of one image: its size and quality."""

    codec: str
    setting: float | None  # the baseline's knob value; None for hific
    nbytes: int
    bpp: float
    psnr: float
    ms_ssim: float
    lpips: float | None
    encode_s: float
    decode_s: float
    target_bpp: float | None = None  # set for points matched to a hific model's bpp
    file: str | None = None  # saved reconstruction (--save-images)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "codec": self.codec,
            "setting": self.setting,
            "bytes": self.nbytes,
            "bpp": self.bpp,
            "psnr-rgb": self.psnr,
            "ms-ssim": self.ms_ssim,
            "lpips": self.lpips,
            "encoding_time": self.encode_s,
            "decoding_time": self.decode_s,
        }
        if self.target_bpp is not None:
            data["target_bpp"] = self.target_bpp
        if self.file is not None:
            data["file"] = self.file
        return data


@dataclass
class ImageResult:
    """Everything measured on one image."""

    name: str
    path: str
    width: int
    height: int
    hific: dict[str, Point] = field(default_factory=dict)  # model label -> point (default quality)
    curves: dict[str, list[Point]] = field(default_factory=dict)  # variable-rate model label -> quality sweep
    sweeps: dict[str, list[Point]] = field(default_factory=dict)  # baseline key -> sweep points
    matched: dict[str, dict[str, Point]] = field(default_factory=dict)  # model -> baseline -> point
    errors: dict[str, str] = field(default_factory=dict)  # codec -> what failed
    warnings: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": self.path,
            "width": self.width,
            "height": self.height,
            "hific": {k: p.to_json() for k, p in self.hific.items()},
            "curves": {k: [p.to_json() for p in ps] for k, ps in self.curves.items()},
            "sweeps": {k: [p.to_json() for p in ps] for k, ps in self.sweeps.items()},
            "matched": {m: {k: p.to_json() for k, p in d.items()} for m, d in self.matched.items()},
            "errors": dict(self.errors),
            "warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class EvalSpec:
    """What to run on each image (picklable: it travels to the worker processes)."""

    models: tuple[tuple[str, str], ...] = ()  # (label, name or path for load_model)
    baselines: tuple[str, ...] = ()
    lpips: str = "none"  # a kind for load_lpips (resolved by the caller), or "none"
    sweep_lpips: bool = True  # False: LPIPS only for hific and the bpp-matched baselines
    offline: bool | None = None
    cache_dir: str | None = None
    save_dir: str | None = None
    device: str = "cpu"  #: where the hific models run (hificli.device)
    half: bool = False
    threads: int | None = None  #: torch threads per process (None: the cores divided among workers)
    qualities: tuple[float, ...] = DEFAULT_EVAL_QUALITIES  #: curve of each variable-rate model
    #: (label, model label, realism): decode that model's files at a realism > 0 too (--realism)
    realism: tuple[tuple[str, str, float], ...] = ()


@dataclass(frozen=True)
class ImageJob:
    """One input image and its unique display name."""

    path: str
    name: str


#: Files taken from a directory input (not recursive); files named on the command line may be anything
#: Pillow reads.
IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}
)


def find_images(inputs: Sequence[str]) -> list[str]:
    """Expand directories into their image files (sorted by name); keep file arguments as given."""
    paths: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            paths.extend(
                str(p) for p in sorted(path.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            paths.append(item)
    return paths


def safe_name(text: str) -> str:
    """A file-name-safe form of a label (letters, digits, ``._-``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "x"


def image_jobs(paths: Sequence[str]) -> list[ImageJob]:
    """Jobs with unique names: the file stem, suffixed ``-2``, ``-3``, ... on collisions."""
    seen: dict[str, int] = {}
    jobs = []
    for path in paths:
        stem = safe_name(Path(path).stem)
        count = seen.get(stem, 0) + 1
        seen[stem] = count
        jobs.append(ImageJob(path, stem if count == 1 else f"{stem}-{count}"))
    return jobs


def saved_files(spec: EvalSpec, job: ImageJob) -> dict[str, str]:
    """Where ``--save-images`` writes one image's files: key (``original``, model label or
    ``label/baseline``) -> path. Known before running, so existing files can be refused up front."""
    if spec.save_dir is None:
        return {}
    folder = Path(spec.save_dir) / job.name
    files = {"original": str(folder / "original.png")}
    for label, _ in spec.models:
        files[label] = str(folder / f"{safe_name(label)}.png")
        for key in spec.baselines:
            files[f"{label}/{key}"] = str(folder / f"{safe_name(label)}.{key}.png")
    for label, _, _ in spec.realism:  # its baselines are the model's (same bpp)
        files[label] = str(folder / f"{safe_name(label)}.png")
    return files


class Evaluator:
    """Holds the loaded models and LPIPS network; :meth:`evaluate` measures one image."""

    def __init__(self, spec: EvalSpec, models: dict[str, Any] | None = None, lpips: Any = _UNSET) -> None:
        self.spec = spec
        if models is None:
            from hificli.api import load_model

            models = {
                label: load_model(name, offline=spec.offline, cache_dir=spec.cache_dir, progress=False,
                                  device=spec.device, half=spec.half)
                for label, name in spec.models
            }
        self.models = models
        self.lpips: Perceptual | None = load_lpips(spec.lpips)[0] if lpips is _UNSET else lpips

    def _measure(
        self,
        codec: str,
        reference: np.ndarray,
        data: bytes,
        decoded: np.ndarray,
        *,
        setting: float | None,
        times: tuple[float, float],
        warnings: list[str],
        with_lpips: bool = True,
    ) -> Point:
        """A point for one encoding: size of ``data``, and ``decoded`` measured against ``reference``."""
        distance = None
        if self.lpips is not None and with_lpips:
            try:
                distance = self.lpips(reference, decoded)
            except Exception as exc:  # e.g. an image too small for the network
                message = f"LPIPS failed ({type(exc).__name__}: {exc})"
                if message not in warnings:
                    warnings.append(message)
        return Point(
            codec=codec,
            setting=setting,
            nbytes=len(data),
            bpp=bl.bpp_of(data, reference),
            psnr=psnr(reference, decoded),
            ms_ssim=ms_ssim(reference, decoded),
            lpips=distance,
            encode_s=times[0],
            decode_s=times[1],
        )

    def _baseline_point(
        self, baseline: bl.Baseline, pixels: np.ndarray, setting: float, warnings: list[str], with_lpips: bool = True
    ) -> tuple[Point, np.ndarray]:
        start = time.perf_counter()
        data = baseline.encode(pixels, setting)
        encoded = time.perf_counter()
        decoded = baseline.decode(data)
        done = time.perf_counter()
        if decoded.shape != pixels.shape:
            raise ValueError(f"decoded shape {decoded.shape} differs from the input's {pixels.shape}")
        times = (encoded - start, done - encoded)
        point = self._measure(
            baseline.key, pixels, data, decoded, setting=setting, times=times, warnings=warnings,
            with_lpips=with_lpips,
        )
        return point, decoded

    def evaluate(self, job: ImageJob) -> ImageResult:
        """Run every codec of the spec on one image."""
        from hificli.imageio import read_image

        source = read_image(job.path)
        pixels = source.pixels
        result = ImageResult(job.name, job.path, source.width, source.height, warnings=list(source.warnings))
        files = saved_files(self.spec, job)
        saves: dict[str, np.ndarray] = {"original": pixels} if files else {}
        files_of: dict[tuple[str, float | None], tuple[bytes, float]] = {}  # (label, quality) -> file, encode s
        for label, model in self.models.items():
            try:
                point, decoded = self._hific_point(label, model, pixels, result.warnings, files=files_of)
            except Exception as exc:
                result.errors[label] = _describe(exc)
                continue
            result.hific[label] = point
            saves[label] = decoded
            if getattr(model, "variable_rate", False):
                try:
                    result.curves[label] = [
                        self._hific_point(label, model, pixels, result.warnings, quality=q,
                                          with_lpips=self.spec.sweep_lpips, files=files_of)[0]
                        for q in self.spec.qualities
                    ]
                except Exception as exc:
                    result.errors[f"{label} curve"] = _describe(exc)
        self._realism_points(pixels, result, saves, files_of)
        for key in self.spec.baselines:
            baseline = bl.get(key)
            try:
                result.sweeps[key] = [
                    self._baseline_point(baseline, pixels, setting, result.warnings, self.spec.sweep_lpips)[0]
                    for setting in baseline.sweep
                ]
                for label, hific_point in result.hific.items():
                    setting, _ = bl.match_bpp(baseline, pixels, hific_point.bpp)
                    point, decoded = self._baseline_point(baseline, pixels, setting, result.warnings)
                    point.target_bpp = hific_point.bpp
                    result.matched.setdefault(label, {})[key] = point
                    saves[f"{label}/{key}"] = decoded
            except Exception as exc:
                result.errors[key] = _describe(exc)
                result.sweeps.pop(key, None)
                for label, by_model in result.matched.items():
                    by_model.pop(key, None)
                    saves.pop(f"{label}/{key}", None)
        for label, base, _ in self.spec.realism:
            if base in result.matched:
                result.matched[label] = dict(result.matched[base])
        if files:
            self._save(files, saves, result)
        return result

    def _realism_points(
        self, pixels: np.ndarray, result: ImageResult, saves: dict[str, np.ndarray],
        files_of: dict[tuple[str, float | None], tuple[bytes, float]],
    ) -> None:
        """The realism labels' points: each model's files (default quality, then its curve) decoded at r."""
        for label, base, realism in self.spec.realism:
            if base not in result.hific:
                continue
            model = self.models[base]
            try:
                point, saves[label] = self._hific_point(label, model, pixels, result.warnings, files=files_of,
                                                        reuse=base, realism=realism)
                result.hific[label] = point
                if base in result.curves:
                    result.curves[label] = [
                        self._hific_point(label, model, pixels, result.warnings, quality=q, files=files_of,
                                          reuse=base, realism=realism, with_lpips=self.spec.sweep_lpips)[0]
                        for q in self.spec.qualities
                    ]
            except Exception as exc:
                result.errors[label] = _describe(exc)

    def _hific_point(
        self, label: str, model: Any, pixels: np.ndarray, warnings: list[str], *, quality: float | None = None,
        with_lpips: bool = True, files: dict[tuple[str, float | None], tuple[bytes, float]] | None = None,
        reuse: str | None = None, realism: float = 0.0,
    ) -> tuple[Point, np.ndarray]:
        """Encode + decode with a model (at ``quality``, or its default; decoding at ``realism``); the
        point's setting is the quality the file was coded at (None for fixed-rate models). ``files``
        records each file made (by label and quality); with ``reuse`` the file of that label is decoded
        instead of encoding again."""
        from PIL import Image

        from hificli import api, container

        if reuse is not None and files is not None:
            data, encode_s = files[(reuse, quality)]
        else:
            start = time.perf_counter()
            data = api.encode(Image.fromarray(pixels, "RGB"), model, quality=quality)
            encode_s = time.perf_counter() - start
            if files is not None:
                files[(label, quality)] = (data, encode_s)
        start = time.perf_counter()
        decoded = np.asarray(api.decode(data, model, realism=realism).convert("RGB"))
        times = (encode_s, time.perf_counter() - start)
        setting = container.unpack(data).header.quality
        point = self._measure(label, pixels, data, decoded, setting=setting, times=times, warnings=warnings,
                              with_lpips=with_lpips)
        return point, decoded

    def _save(self, files: dict[str, str], saves: dict[str, np.ndarray], result: ImageResult) -> None:
        from PIL import Image

        from hificli.fileio import write_output

        for key, pixels in saves.items():
            path = files[key]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            buffer = io.BytesIO()
            Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
            write_output(path, buffer.getvalue(), force=True)  # existing files were refused up front
            label, _, baseline = key.partition("/")
            if baseline:
                result.matched[label][baseline].file = path
            elif label in result.hific:
                result.hific[label].file = path


def _describe(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


# --- running a batch ---------------------------------------------------------------------------------

_WORKER: Evaluator | None = None


def _init_worker(spec: EvalSpec, workers: int) -> None:
    from hificli.device import apply_threads

    global _WORKER
    apply_threads(workers, spec.threads)
    _WORKER = Evaluator(spec)


def _work(job: ImageJob) -> ImageResult:
    assert _WORKER is not None, "worker not initialised"
    return _WORKER.evaluate(job)


def run_eval(
    jobs: Sequence[ImageJob],
    spec: EvalSpec,
    *,
    workers: int = 1,
    evaluator: Evaluator | None = None,
    on_result: Callable[[int, ImageResult], None] | None = None,
) -> list[ImageResult]:
    """Evaluate every job, in input order. ``workers > 1`` uses a spawned process pool; otherwise the
    given ``evaluator`` (or a new one) runs here. ``on_result(index, result)`` reports each image as it
    finishes (in completion order)."""
    if workers <= 1 or len(jobs) <= 1:
        if spec.threads:
            from hificli.device import apply_threads

            apply_threads(1, spec.threads)
        evaluator = evaluator or Evaluator(spec)
        results = []
        for index, job in enumerate(jobs):
            results.append(evaluator.evaluate(job))
            if on_result is not None:
                on_result(index, results[-1])
        return results

    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    workers = min(workers, len(jobs))
    ordered: list[ImageResult | None] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, context, initializer=_init_worker, initargs=(spec, workers))
    try:
        futures = {pool.submit(_work, job): index for index, job in enumerate(jobs)}
        for future in as_completed(futures):
            index = futures[future]
            ordered[index] = future.result()
            if on_result is not None:
                on_result(index, ordered[index])
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return [r for r in ordered if r is not None]
