"""Rate-distortion-perception plots of a report: bpp against PSNR, MS-SSIM and LPIPS.

One curve per baseline (its sweep, mean over images) and one marker per hific model (joined into a
curve when there are several). matplotlib is an optional extra: :func:`require_matplotlib` fails with
a clear error, and ``hific eval`` calls it before any work when ``--plot`` is given.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from hificli.errors import HificError

PLOT_FORMATS = (".png", ".pdf", ".svg")
_PANELS = (("psnr-rgb", "PSNR (dB)"), ("ms-ssim", "MS-SSIM"), ("lpips", "LPIPS (lower is better)"))


def require_matplotlib() -> None:
    """Raise a HificError saying how to install matplotlib when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise HificError(
            "--plot needs matplotlib, which is not installed",
            "pip install matplotlib (or pip install 'hific[eval]'), or leave out --plot",
        ) from None


def check_plot_path(path: str | Path) -> None:
    """Refuse an output extension matplotlib is not asked to write."""
    if Path(path).suffix.lower() not in PLOT_FORMATS:
        raise HificError(
            f"cannot write a plot with extension {Path(path).suffix or '(none)'!r}",
            f"use one of {', '.join(PLOT_FORMATS)}",
        )


def render(report: dict[str, Any], fmt: str = "png") -> bytes:
    """The figure as bytes of a ``fmt`` (png, pdf, svg) file."""
    require_matplotlib()
    from matplotlib.figure import Figure

    panels = [(key, label) for key, label in _PANELS if _has_values(report, key)]
    if not panels:
        raise HificError("nothing to plot: no codec produced a measurement")
    figure = Figure(figsize=(5.0 * len(panels), 4.2), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    models = [e for e in report["codecs"] if "codec" not in e and "curve_of" not in e]
    curves = [e for e in report["codecs"] if "curve_of" in e]
    n = len(report["per_image"])
    x_max = _x_limit(models, curves)
    for ax, (key, label) in zip(axes, panels, strict=True):
        for entry in report["codecs"]:
            if "codec" in entry:
                _line(ax, entry["results"]["bpp"], entry["results"][key], entry["name"], "o-", 4)
        if len(models) > 1:
            pairs = [(e["results"]["bpp"][0], e["results"][key][0]) for e in models]
            pairs = sorted(p for p in pairs if None not in p)
            _line(ax, [p[0] for p in pairs], [p[1] for p in pairs], None, "k-", 0)
        for entry in curves:  # variable-rate models: their quality sweep as a curve
            _line(ax, entry["results"]["bpp"], entry["results"][key], entry["name"], "*-", 9)
        for entry in models:
            _line(ax, entry["results"]["bpp"], entry["results"][key], entry["name"], "*", 13)
        if x_max is not None:
            _zoom(ax, x_max)
        ax.set_xlabel("bits per pixel")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    lpips = report["metrics"].get("lpips_kind")
    figure.suptitle(f"Mean over {n} image(s)" + (f"; LPIPS = {lpips}" if lpips else ""))
    axes[0].legend(fontsize="small")
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, dpi=120)
    return buffer.getvalue()


def _x_limit(models: list[dict[str, Any]], curves: list[dict[str, Any]] = ()) -> float | None:
    """With hific models, show bpp up to 3x the largest model's (at least 0.5) and the whole of any
    model's quality curve: the region compared."""
    rates = [e["results"]["bpp"][0] for e in models if e["results"]["bpp"][0] is not None]
    ends = [max(v for v in e["results"]["bpp"] if v is not None) for e in curves
            if any(v is not None for v in e["results"]["bpp"])]
    if not rates and not ends:
        return None
    return max([0.5, *(3.0 * r for r in rates), *(1.05 * e for e in ends)])


def _zoom(ax: Any, x_max: float) -> None:
    """Limit x to [0, x_max] and fit y to the data drawn inside it."""
    ys = [y for line in ax.get_lines() for x, y in zip(line.get_xdata(), line.get_ydata(), strict=True)
          if x <= x_max]
    ax.set_xlim(0.0, x_max)
    if ys:
        low, high = min(ys), max(ys)
        margin = 0.05 * (high - low) or 0.05 * abs(high) or 0.05
        ax.set_ylim(low - margin, high + margin)


def _has_values(report: dict[str, Any], key: str) -> bool:
    return any(v is not None for e in report["codecs"] for v in e["results"][key])


def _line(ax: Any, xs: list, ys: list, label: str | None, style: str, size: float) -> None:
    pairs = [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None]
    if pairs:
        ax.plot([p[0] for p in pairs], [p[1] for p in pairs], style, label=label, markersize=size)


def write_plot(report: dict[str, Any], path: str | Path, *, force: bool) -> None:
    """Render and write the plot atomically (format from the extension)."""
    from hificli.fileio import write_output

    check_plot_path(path)
    write_output(str(path), render(report, Path(path).suffix.lower().lstrip(".")), force)
