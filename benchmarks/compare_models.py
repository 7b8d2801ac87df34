"""Two variable-rate hific models against each other, per image, from one eval report.

    .venv/bin/python benchmarks/compare_models.py benchmarks/results/e15-hific-vr2.json hific-vr2 hific-vr

For each image, both models' curves (quality sweep plus default point) give: the BD-rate of NEW against
OLD in PSNR and MS-SSIM (negative: NEW needs fewer bits for the same quality), and NEW's PSNR minus
OLD's at equal bpp, sampled at 25 log-spaced rates across the range both curves cover (the worst and
the mean of those samples: "better over the whole range" means the worst is not below zero). Prints a
markdown table and the mean / median over the images.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np
from operating_point import model_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("new", help="label of the new model in the report")
    parser.add_argument("old", help="label of the model it is compared with")
    args = parser.parse_args()

    from hificli.eval.bdrate import bd_rate, monotone_curve, pchip_eval

    report = json.loads(args.report.read_text())
    print("| image | bpp range shared | BD-rate PSNR | BD-rate MS-SSIM | PSNR at equal bpp: worst / mean (dB) |")
    print("|---|---|---|---|---|")
    bd_psnr, bd_ssim, worst_all, mean_all = [], [], [], []
    for image in report["per_image"]:
        new, old = model_points(image, args.new), model_points(image, args.old)
        if len(new) < 2 or len(old) < 2:
            continue
        psnr = bd_rate([p["bpp"] for p in old], [p["psnr-rgb"] for p in old],
                       [p["bpp"] for p in new], [p["psnr-rgb"] for p in new])
        ssim = bd_rate([p["bpp"] for p in old], [p["ms-ssim"] for p in old],
                       [p["bpp"] for p in new], [p["ms-ssim"] for p in new])
        curves = [monotone_curve([p["bpp"] for p in pts], [p["psnr-rgb"] for p in pts]) for pts in (new, old)]
        lo = max(math.log(c[0][0]) for c in curves)
        hi = min(math.log(c[0][-1]) for c in curves)
        if hi <= lo:
            print(f"| {image['name']} | none | | | |")
            continue
        samples = np.linspace(lo, hi, 25)
        diffs = [pchip_eval(np.log(curves[0][0]), curves[0][1], x) - pchip_eval(np.log(curves[1][0]), curves[1][1], x)
                 for x in samples]
        worst, mean = min(diffs), statistics.fmean(diffs)
        worst_all.append(worst)
        mean_all.append(mean)
        if psnr.valid:
            bd_psnr.append(100 * psnr.value)
        if ssim.valid:
            bd_ssim.append(100 * ssim.value)
        print(f"| {image['name']} | {math.exp(lo):.3f}-{math.exp(hi):.3f} | {100 * psnr.value:+.1f} % | "
              f"{100 * ssim.value:+.1f} % | {worst:+.2f} / {mean:+.2f} |")
    if worst_all:
        print(f"\n{len(worst_all)} images. BD-rate PSNR mean {statistics.fmean(bd_psnr):+.1f} %, median "
              f"{statistics.median(bd_psnr):+.1f} %; MS-SSIM mean {statistics.fmean(bd_ssim):+.1f} %, median "
              f"{statistics.median(bd_ssim):+.1f} %. PSNR at equal bpp: mean {statistics.fmean(mean_all):+.2f} dB; "
              f"worst sample {min(worst_all):+.2f} dB; images better everywhere: "
              f"{sum(w >= 0 for w in worst_all)} / {len(worst_all)}")


if __name__ == "__main__":
    main()
