"""Turn per-image results into the JSON report, the BD-rates and the tables.

JSON layout (``hific eval -o results.json``)::

    {"format": "hific-eval", "version": 1, "hific_version": ..., "created": ...,
     "metrics": {...what each metric is, which LPIPS...},
     "models": {label: {...}}, "baselines": {key: {...}}, "skipped": {key: reason},
     "codecs": [CompressAI entry, ...],
     "bd_rate": [{"test", "anchor", "metric", "mean_pct", "median_pct", "n_valid", "n", ...}, ...],
     "per_image": [{"name", "path", "width", "height", "hific", "sweeps", "matched", ...}, ...]}

Each entry of ``codecs`` follows CompressAI's results schema (``name``, ``description``, ``results``
with equal-length lists ``bpp``, ``psnr-rgb``, ``ms-ssim``, ``lpips``, ``encoding_time``,
``decoding_time``; ``ms-ssim-rgb`` repeats ``ms-ssim`` for newer CompressAI files), each value the mean
over images at one setting; ``median`` holds the same lists as medians. NaN and infinity (PSNR of a
lossless point) are written as null.

BD-rate: for every image, each hific model's point against the baseline's curve on that image (its
sweep plus its points matched to hific's bpp), on PSNR, MS-SSIM (in dB: -10 log10(1 - MS-SSIM)) and
-LPIPS; then mean and median over the images where it is defined. With several models, their points
also form one curve, "hific (all models)", for a regular BD-rate.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import statistics
from collections.abc import Callable, Sequence
from typing import Any

from hificli.eval import baselines as bl
from hificli.eval.bdrate import BDResult, bd_rate
from hificli.eval.runner import ImageResult, Point

REPORT_FORMAT = "hific-eval"
REPORT_VERSION = 1
ALL_MODELS = "hific (all models)"

#: metric key -> (label, value of a point, transform to "higher is better" for BD-rate)
METRICS: dict[str, tuple[str, Callable[[Point], float | None], Callable[[float], float]]] = {
    "psnr-rgb": ("PSNR", lambda p: p.psnr, lambda v: v),
    "ms-ssim": ("MS-SSIM", lambda p: p.ms_ssim, lambda v: ms_ssim_db(v)),
    "lpips": ("LPIPS", lambda p: p.lpips, lambda v: -v),
}

_POINT_FIELDS: dict[str, Callable[[Point], float | None]] = {
    "bpp": lambda p: p.bpp,
    "psnr-rgb": lambda p: p.psnr,
    "ms-ssim": lambda p: p.ms_ssim,
    "ms-ssim-rgb": lambda p: p.ms_ssim,
    "lpips": lambda p: p.lpips,
    "encoding_time": lambda p: p.encode_s,
    "decoding_time": lambda p: p.decode_s,
}


def ms_ssim_db(value: float) -> float:
    """MS-SSIM on a dB scale, -10 log10(1 - v) (infinite for identical images)."""
    return -10.0 * math.log10(1.0 - value) if value < 1.0 else math.inf


def finite(value: float | None) -> float | None:
    """JSON has no NaN or infinity: those become None."""
    return float(value) if value is not None and math.isfinite(value) else None


def _aggregate(values: Sequence[float | None], how: Callable[[list[float]], float]) -> float | None:
    """Mean/median of the values, None if any is missing (a partial mean would mislead)."""
    if not values or any(v is None for v in values):
        return None
    return finite(how([float(v) for v in values if v is not None]))


def _results(points_per_setting: Sequence[Sequence[Point]], how: Callable[[list[float]], float]) -> dict:
    return {
        name: [_aggregate([get(p) for p in points], how) for points in points_per_setting]
        for name, get in _POINT_FIELDS.items()
    }


def codec_entries(
    results: Sequence[ImageResult],
    models: dict[str, dict[str, Any]],
    baselines: Sequence[str],
    lpips_note: str,
) -> list[dict[str, Any]]:
    """CompressAI-style entries: one per hific model (one point) and one per baseline (its sweep)."""
    entries = []
    for label, info in models.items():
        points = [r.hific[label] for r in results if label in r.hific]
        if not points:
            continue
        entries.append({
            "name": label,
            "description": f"hific model {info.get('model_id', label)} "
            f"(weights {info.get('fingerprint', '?')}), mean over {len(points)} image(s); "
            f"LPIPS: {lpips_note}",
            "results": _results([points], statistics.fmean),
            "median": _results([points], statistics.median),
        })
        curves = [r.curves[label] for r in results if r.curves.get(label)]
        if curves and all(len(c) == len(curves[0]) for c in curves):
            per_quality = [[c[i] for c in curves] for i in range(len(curves[0]))]
            entries.append({
                "name": f"{label}-curve",
                "curve_of": label,
                "description": f"hific model {info.get('model_id', label)} at qualities "
                f"{', '.join(f'{p.setting:g}' for p in curves[0])}; mean over {len(curves)} image(s)",
                "results": {"quality": [p.setting for p in curves[0]], **_results(per_quality, statistics.fmean)},
                "median": _results(per_quality, statistics.median),
            })
    for key in baselines:
        baseline = bl.get(key)
        sweeps = [r.sweeps[key] for r in results if key in r.sweeps]
        if not sweeps:
            continue
        per_setting = [[sweep[i] for sweep in sweeps] for i in range(len(baseline.sweep))]
        entry = {
            "name": baseline.name,
            "description": f"{baseline.settings}; {bl.library_version(key)}; {baseline.knob} "
            f"{', '.join(f'{v:g}' for v in baseline.sweep)}; mean over {len(sweeps)} image(s)",
            "codec": key,
            "results": {baseline.knob: list(baseline.sweep), **_results(per_setting, statistics.fmean)},
            "median": _results(per_setting, statistics.median),
        }
        entries.append(entry)
    return entries


def _curve(points: Sequence[Point], metric: str) -> tuple[list[float], list[float]]:
    _, get, transform = METRICS[metric]
    rates, qualities = [], []
    for p in points:
        value = get(p)
        if value is not None and math.isfinite(value):
            rates.append(p.bpp)
            qualities.append(transform(value))
    return rates, qualities


def anchor_points(result: ImageResult, key: str) -> list[Point]:
    """A baseline's points on one image: its sweep plus its settings matched to any model's bpp."""
    matched = [by_model[key] for by_model in result.matched.values() if key in by_model]
    return list(result.sweeps.get(key, [])) + matched


def bd_rates(
    results: Sequence[ImageResult],
    models: Sequence[str],
    baselines: Sequence[str],
    metrics: Sequence[str] = tuple(METRICS),
    combined: Sequence[str] | None = None,
) -> list[dict]:
    """Per-image BD-rates of each model (and of the ``combined`` models, by default all, as one curve)
    against each baseline."""
    def model_points(r: ImageResult, label: str) -> list[Point]:
        """A model's points on one image: its default point plus its quality curve (variable rate)."""
        return ([r.hific[label]] if label in r.hific else []) + list(r.curves.get(label, []))

    tests: list[tuple[str, Callable[[ImageResult], list[Point]]]] = [
        (label, lambda r, label=label: model_points(r, label)) for label in models
    ]
    combined = list(models if combined is None else combined)
    if len(combined) > 1:
        tests.append((ALL_MODELS, lambda r: [p for m in combined for p in model_points(r, m)]))
    rows = []
    for test, test_points in tests:
        for key in baselines:
            for metric in metrics:
                per_image: dict[str, BDResult] = {}
                for r in results:
                    anchor = anchor_points(r, key)
                    points = test_points(r)
                    if not anchor or not points:
                        per_image[r.name] = BDResult(math.nan, "not measured (codec failed or skipped)")
                        continue
                    per_image[r.name] = bd_rate(*_curve(anchor, metric), *_curve(points, metric))
                rows.append(_bd_row(test, key, metric, per_image))
    return rows


def _bd_row(test: str, anchor: str, metric: str, per_image: dict[str, BDResult]) -> dict[str, Any]:
    valid = [r.percent for r in per_image.values() if r.valid]
    return {
        "test": test,
        "anchor": anchor,
        "metric": metric,
        "mean_pct": finite(statistics.fmean(valid)) if valid else None,
        "median_pct": finite(statistics.median(valid)) if valid else None,
        "n_valid": len(valid),
        "n": len(per_image),
        "per_image_pct": {name: finite(r.percent) for name, r in per_image.items()},
        "reasons": {name: r.reason for name, r in per_image.items() if r.reason},
    }


def build_report(
    results: Sequence[ImageResult],
    *,
    models: dict[str, dict[str, Any]],
    baselines: Sequence[str],
    skipped: dict[str, str],
    lpips_note: str,
    lpips_kind: str | None,
) -> dict[str, Any]:
    """The whole JSON document (see the module docstring)."""
    from hificli import __version__
    from hificli.eval.metrics import MS_SSIM_WEIGHTS

    measured = [m for m in METRICS if m != "lpips" or lpips_kind]  # no LPIPS rows when it was not run

    return _clean({
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "hific_version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "metrics": {
            "bpp": "8 * bytes of the whole encoded file / (width * height)",
            "psnr-rgb": "PSNR over R, G and B (8-bit, peak 255), dB",
            "ms-ssim": f"MS-SSIM (Wang et al. 2003) on RGB, weights {list(MS_SSIM_WEIGHTS)}, "
            "gaussian 11 / 1.5, fewer scales for images under 161 px a side (see hificli/eval/metrics.py)",
            "lpips": lpips_note,
            "lpips_kind": lpips_kind,
            "bd_rate": "Bjontegaard delta rate, PCHIP fit of log(bpp) over quality, per image then averaged; "
            "negative = fewer bits than the anchor; a single model point gives the rate difference at its "
            "quality; MS-SSIM in dB, LPIPS negated",
        },
        "models": models,
        "baselines": {
            key: {
                "name": bl.get(key).name,
                "settings": bl.get(key).settings,
                "library": bl.library_version(key),
                "knob": bl.get(key).knob,
                "sweep": list(bl.get(key).sweep),
            }
            for key in baselines
        },
        "skipped": dict(skipped),
        "codecs": codec_entries(results, models, baselines, lpips_note),
        "bd_rate": bd_rates(results, list(models), baselines, measured,
                            combined=[label for label, info in models.items() if "realism" not in info]),
        "per_image": [r.to_json() for r in results],
    })


def _clean(value: Any) -> Any:
    """Replace NaN/inf by None throughout (strict JSON)."""
    if isinstance(value, float):
        return finite(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def to_json(report: dict[str, Any]) -> bytes:
    """Serialised report (strict JSON, UTF-8, trailing newline)."""
    return (json.dumps(report, indent=1, allow_nan=False) + "\n").encode("utf-8")


def compressai_files(report: dict[str, Any]) -> dict[str, bytes]:
    """One CompressAI results file per codec (``name``, ``description``, ``results``), by file stem."""
    files = {}
    for entry in report["codecs"]:
        stem = entry.get("codec") or entry["name"]
        data = {"name": entry["name"], "description": entry["description"], "results": entry["results"]}
        files[stem] = (json.dumps(data, indent=1, allow_nan=False) + "\n").encode("utf-8")
    return files


# --- tables ------------------------------------------------------------------------------------------

_COLUMNS = (("bpp", "bpp", 3), ("psnr-rgb", "PSNR", 2), ("ms-ssim", "MS-SSIM", 4), ("lpips", "LPIPS", 4))


def _fmt(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


#: A matched baseline whose bpp is further than this (relative) from hific's is flagged in the table.
MATCH_TOLERANCE = 0.1


def _setting(report: dict[str, Any], point: dict[str, Any]) -> str:
    key = point["codec"]
    if key not in report["baselines"] or point.get("setting") is None:
        return ""
    text = f"{report['baselines'][key]['knob'][0]}={point['setting']:g}"
    return text + "*" if _off_target(point) else text


def _off_target(point: dict[str, Any]) -> bool:
    target = point.get("target_bpp")
    return bool(target) and abs(point["bpp"] / target - 1.0) > MATCH_TOLERANCE


def _codec_name(report: dict[str, Any], key: str) -> str:
    return report["baselines"][key]["name"] if key in report["baselines"] else key


def per_image_table(report: dict[str, Any]):
    """Each image: every model's point, then each baseline matched to that model's bpp."""
    from rich.table import Table

    table = Table(title="Per image: hific and the baselines at hific's bpp", header_style="bold", box=None)
    table.add_column("image")
    table.add_column("codec")
    table.add_column("setting", justify="right")
    for _, title, _ in _COLUMNS:
        table.add_column(title, justify="right")
    for image in report["per_image"]:
        first = True
        for label, point in image["hific"].items():
            rows = [(label, point)] + [
                (f"  {_codec_name(report, key)}", p) for key, p in image["matched"].get(label, {}).items()
            ]
            for name, p in rows:
                cells = [_fmt(p[field], digits) for field, _, digits in _COLUMNS]
                table.add_row(image["name"] if first else "", name, _setting(report, p), *cells)
                first = False
        table.add_section()
    return table


def _summary(points: list[dict[str, Any]], field: str, digits: int) -> str:
    values = [p[field] for p in points]
    if not values or any(v is None for v in values):
        return "—"
    return f"{statistics.fmean(values):.{digits}f} / {statistics.median(values):.{digits}f}"


def summary_table(report: dict[str, Any]):
    """Mean / median over images of every model and of each baseline at that model's bpp."""
    from rich.table import Table

    n = len(report["per_image"])
    table = Table(title=f"Mean / median over {n} image(s)", header_style="bold", box=None)
    table.add_column("codec")
    for _, title, _ in _COLUMNS:
        table.add_column(title, justify="right")
    for label in report["models"]:
        hific = [img["hific"][label] for img in report["per_image"] if label in img["hific"]]
        if not hific:
            continue
        rows = [(label, hific)]
        for key in report["baselines"]:
            matched = [img["matched"][label][key] for img in report["per_image"]
                       if key in img["matched"].get(label, {})]
            if matched:
                rows.append((f"  {_codec_name(report, key)} at {label}'s bpp", matched))
        for name, points in rows:
            table.add_row(name, *[_summary(points, field, digits) for field, _, digits in _COLUMNS])
        table.add_section()
    return table


def curves_table(report: dict[str, Any]):
    """Each baseline's sweep, averaged over images (what the plot and the CompressAI entries show)."""
    from rich.table import Table

    n = len(report["per_image"])
    table = Table(title=f"Curves, mean over {n} image(s)", header_style="bold", box=None)
    table.add_column("codec")
    table.add_column("setting", justify="right")
    for _, title, _ in _COLUMNS:
        table.add_column(title, justify="right")
    for entry in report["codecs"]:
        key = entry.get("codec")
        if key is None and "curve_of" not in entry:
            continue
        knob = "quality" if key is None else report["baselines"][key]["knob"]
        for i, setting in enumerate(entry["results"][knob]):
            cells = [_fmt(entry["results"][field][i], digits) for field, _, digits in _COLUMNS]
            table.add_row(entry["name"] if i == 0 else "", f"{knob[0]}={setting:g}", *cells)
        table.add_section()
    return table


def bd_table(report: dict[str, Any]):
    """BD-rate (mean of per-image values) of each model against each baseline, per metric."""
    from rich.table import Table

    table = Table(
        title="BD-rate vs each baseline (per image, then mean / median; negative = hific needs fewer bits)",
        header_style="bold",
        box=None,
    )
    table.add_column("hific")
    table.add_column("metric")
    keys = list(report["baselines"])
    for key in keys:
        table.add_column(_codec_name(report, key), justify="right")
    cells: dict[tuple[str, str], dict[str, str]] = {}
    for row in report["bd_rate"]:
        text = "—" if row["mean_pct"] is None else f"{row['mean_pct']:+.1f}% / {row['median_pct']:+.1f}%"
        if row["n_valid"] < row["n"]:
            text += f" ({row['n_valid']}/{row['n']})"
        cells.setdefault((row["test"], row["metric"]), {})[row["anchor"]] = text
    previous = None
    for (test, metric), by_anchor in cells.items():
        if previous is not None and test != previous:
            table.add_section()
        values = [by_anchor.get(k, "") for k in keys]
        table.add_row(test if test != previous else "", METRICS[metric][0], *values)
        previous = test
    return table


def print_tables(report: dict[str, Any], console: Any, *, curves: bool = False) -> None:
    """All tables for the terminal: per image, summary, BD-rate (and the baseline curves when asked,
    or when there is no hific model to compare)."""
    has_models = any(img["hific"] for img in report["per_image"])
    if has_models:
        console.print(per_image_table(report))
        console.print(summary_table(report))
    if report["codecs"] and (curves or not has_models):
        console.print(curves_table(report))
    if has_models and report["bd_rate"] and report["baselines"]:
        console.print(bd_table(report))
    console.print(f"LPIPS: {report['metrics']['lpips']}")
    matched = [p for img in report["per_image"] for by in img["matched"].values() for p in by.values()]
    if any(_off_target(p) for p in matched):
        console.print(f"*: the codec's range cannot reach hific's bpp within {MATCH_TOLERANCE:.0%}.")
    incomplete = [r for r in report["bd_rate"] if r["n_valid"] < r["n"]]
    if incomplete and has_models:
        console.print("(k/n): BD-rate defined on k of n images; the JSON report says why for the others.")
