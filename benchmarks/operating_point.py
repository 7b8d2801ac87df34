"""PSNR of a variable-rate model at another model's operating point, per image, from one eval report.

    .venv/bin/python benchmarks/operating_point.py benchmarks/results/e15-hific-vr.json hific-vr hific-compact

For each image: the variable-rate model's curve (its quality sweep and default point) is interpolated
(monotone PCHIP of PSNR over log bpp, as the BD-rate fit) at the fixed-rate model's bpp, and compared
with that model's PSNR there. Prints a table and the mean / median difference (positive: the
variable-rate model is better at equal bpp).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

import numpy as np


def model_points(image: dict, label: str) -> list[dict]:
    """A model's points for one image of an eval report: its default point and its quality sweep."""
    points = [image["hific"].get(label), *image.get("curves", {}).get(label, [])]
    return [p for p in points if p is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("report", type=Path)
    parser.add_argument("variable", help="label of the variable-rate model in the report")
    parser.add_argument("fixed", help="label of the fixed-rate model in the report")
    args = parser.parse_args()

    from hificli.eval.bdrate import monotone_curve, pchip_eval

    report = json.loads(args.report.read_text())
    print("| image | fixed bpp | fixed PSNR | variable PSNR at that bpp | difference (dB) |")
    print("|---|---|---|---|---|")
    diffs = []
    for image in report["per_image"]:
        fixed = image["hific"].get(args.fixed)
        points = model_points(image, args.variable)
        if fixed is None or len(points) < 2:
            continue
        rates, psnrs = monotone_curve([p["bpp"] for p in points], [p["psnr-rgb"] for p in points])
        x = math.log(fixed["bpp"])
        logs = [math.log(r) for r in rates]
        if not logs[0] <= x <= logs[-1]:
            print(f"| {image['name']} | {fixed['bpp']:.4f} | {fixed['psnr-rgb']:.2f} | outside the curve | |")
            continue
        value = pchip_eval(np.array(logs), np.array(psnrs), x)
        diffs.append(value - fixed["psnr-rgb"])
        print(f"| {image['name']} | {fixed['bpp']:.4f} | {fixed['psnr-rgb']:.2f} | {value:.2f} | {diffs[-1]:+.2f} |")
    if diffs:
        mean, median = statistics.fmean(diffs), statistics.median(diffs)
        print(f"\n{len(diffs)} images: mean {mean:+.3f} dB, median {median:+.3f} dB")


if __name__ == "__main__":
    main()
