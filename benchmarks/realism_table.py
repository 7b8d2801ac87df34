"""Issue #14's table: ST-LPIPS at equal bpp of a model's realism decoder against AVIF and against the
model's own faithful decoder, from one ``hific eval --realism`` report.

For every image, each point of the model's curve (and its default point) at or below ``--max-bpp``:
the faithful and the realism decoder read the same file (same bpp); AVIF's ST-LPIPS, PSNR and MS-SSIM
at that bpp are interpolated on its sweep (linear in log bpp; points outside AVIF's range are skipped).
Per image: the mean over those points of ``lpips / lpips_other - 1``; then the median over images.

    hific eval data/eval -m MODEL -b avif --lpips stlpips-alex --realism 1 --qualities 0,10,20,30,40,50 \\
        -j 2 -o benchmarks/results/e15-realism.json
    .venv/bin/python benchmarks/realism_table.py benchmarks/results/e15-realism.json hific-vr2 hific-vr2@r1

A second (perceptual) model has its own files: its bpp differ, so the faithful model is interpolated on its
curve too. ``--with`` joins another report of the same images (e.g. one run per model):

    .venv/bin/python benchmarks/realism_table.py e15-vr2p.json hific-vr2 hific-vr2p --with e15-realism.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import statistics
from pathlib import Path


def points(image: dict, label: str) -> list[dict]:
    """A model's points on one image (default point and curve), by bpp."""
    found = ([image["hific"][label]] if label in image["hific"] else []) + image["curves"].get(label, [])
    return sorted(found, key=lambda p: p["bpp"])


def interpolate(sweep: list[dict], bpp: float, key: str) -> float | None:
    """``key`` of a sweep at ``bpp`` (linear in log bpp), None outside the sweep or where undefined."""
    sweep = sorted((p for p in sweep if p.get(key) is not None and p["bpp"] > 0), key=lambda p: p["bpp"])
    for lo, hi in itertools.pairwise(sweep):
        if lo["bpp"] <= bpp <= hi["bpp"]:
            if hi["bpp"] == lo["bpp"]:
                return lo[key]
            t = (math.log(bpp) - math.log(lo["bpp"])) / (math.log(hi["bpp"]) - math.log(lo["bpp"]))
            return lo[key] + t * (hi[key] - lo[key])
    return None


def image_row(image: dict, faithful: str, realism: str, baseline: str, max_bpp: float) -> dict | None:
    """Mean relative ST-LPIPS (and PSNR / MS-SSIM) of one image over its points up to ``max_bpp``.

    ``realism`` is either ``faithful``'s realism decoder (the same files, so the same bpp) or another
    model (a second, perceptual model): the faithful model's curve and the baseline's sweep are both
    interpolated at each of its points' bpp."""
    faithful_curve = points(image, faithful)
    rows = []
    for real in points(image, realism):
        if real["bpp"] > max_bpp or real["lpips"] is None:
            continue
        other = {k: interpolate(image["sweeps"].get(baseline, []), real["bpp"], k)
                 for k in ("lpips", "psnr-rgb", "ms-ssim")}
        point = {k: interpolate(faithful_curve, real["bpp"], k) for k in ("lpips", "psnr-rgb", "ms-ssim")}
        if other["lpips"] is None or point["lpips"] is None:
            continue
        rows.append({
            "bpp": real["bpp"], "vs_baseline": real["lpips"] / other["lpips"] - 1.0,
            "vs_faithful": real["lpips"] / point["lpips"] - 1.0,
            "lpips": (real["lpips"], point["lpips"], other["lpips"]),
            "psnr": (real["psnr-rgb"], point["psnr-rgb"], other["psnr-rgb"]),
            "ms_ssim": (real["ms-ssim"], point["ms-ssim"], other["ms-ssim"]),
        })
    if not rows:
        return None

    def mean(key: str, i: int | None = None) -> float:
        return statistics.fmean(r[key] if i is None else r[key][i] for r in rows)

    return {"name": image["name"], "points": len(rows), "bpp": (rows[0]["bpp"], rows[-1]["bpp"]),
            "vs_baseline": mean("vs_baseline"), "vs_faithful": mean("vs_faithful"),
            **{f"{k}_{n}": mean(k, i) for k in ("lpips", "psnr", "ms_ssim")
               for i, n in enumerate(("realism", "faithful", "baseline"))}}


def rate_ratio(image: dict, realism: str, faithful: str) -> float | None:
    """Geometric mean over the qualities both models were run at of realism bpp / faithful bpp: how
    much larger the second model's files are at the same ``-q`` (1.0 for a realism decoder)."""
    def by_setting(label: str) -> dict:  # the default point repeats a curve setting: count it once
        return {p["setting"]: p["bpp"] for p in points(image, label) if p.get("setting") is not None}

    ours, theirs = by_setting(realism), by_setting(faithful)
    logs = [math.log(ours[q] / theirs[q]) for q in ours.keys() & theirs.keys() if ours[q] > 0 and theirs[q] > 0]
    return math.exp(statistics.fmean(logs)) if logs else None


def merged(reports: list[dict]) -> dict:
    """One report from several of the same images: their models, curves and sweeps side by side."""
    by_name: dict[str, dict] = {}
    for report in reports:
        for image in report["per_image"]:
            into = by_name.setdefault(image["name"], {"name": image["name"], "hific": {}, "curves": {}, "sweeps": {}})
            for key in ("hific", "curves", "sweeps"):
                into[key].update(image.get(key, {}))
    return {"per_image": list(by_name.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("faithful", help="label of the model (its faithful decoder)")
    parser.add_argument("realism", help="label of its realism decoder (MODEL@rR), or of a second model")
    parser.add_argument("--with", dest="extra", type=Path, action="append", default=[],
                        help="another report of the same images whose models and sweeps join REPORT's")
    parser.add_argument("--baseline", default="avif")
    parser.add_argument("--max-bpp", type=float, default=0.3)
    args = parser.parse_args()
    report = merged([json.loads(path.read_text()) for path in [args.report, *args.extra]])
    rows = [r for r in (image_row(img, args.faithful, args.realism, args.baseline, args.max_bpp)
                        for img in report["per_image"]) if r is not None]
    b = args.baseline.upper()
    print(f"ST-LPIPS at equal bpp (points <= {args.max_bpp} bpp), {args.realism} against {b} and {args.faithful}\n")
    print(f"| image | points | bpp | ST-LPIPS realism / faithful / {b} | vs {b} | vs faithful "
          f"| PSNR realism / faithful / {b} | MS-SSIM realism / faithful / {b} |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['points']} | {r['bpp'][0]:.3f}-{r['bpp'][1]:.3f} | "
              f"{r['lpips_realism']:.4f} / {r['lpips_faithful']:.4f} / {r['lpips_baseline']:.4f} | "
              f"{100 * r['vs_baseline']:+.1f} % | {100 * r['vs_faithful']:+.1f} % | "
              f"{r['psnr_realism']:.2f} / {r['psnr_faithful']:.2f} / {r['psnr_baseline']:.2f} | "
              f"{r['ms_ssim_realism']:.4f} / {r['ms_ssim_faithful']:.4f} / {r['ms_ssim_baseline']:.4f} |")
    if rows:
        median = {k: statistics.median(r[k] for r in rows) for k in ("vs_baseline", "vs_faithful")}
        print(f"\n{len(rows)} images. Median ST-LPIPS vs {b}: {100 * median['vs_baseline']:+.1f} %, "
              f"vs the faithful decoder: {100 * median['vs_faithful']:+.1f} %")
    ratios = [r for r in (rate_ratio(img, args.realism, args.faithful) for img in report["per_image"]) if r]
    if ratios:
        print(f"Rate at the same -q against {args.faithful}: median x{statistics.median(ratios):.3f} "
              f"(x{min(ratios):.3f}-x{max(ratios):.3f}) over {len(ratios)} images")


if __name__ == "__main__":
    main()
