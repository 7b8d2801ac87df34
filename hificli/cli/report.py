"""What encode and decode print about each file: the summary table, --json lines, warnings, -v details.

Plain text on purpose: off a terminal (logs, pipes, CI) lines are never truncated or wrapped, full paths
stay whole, and ``--json`` prints one object per file on stdout (JSON Lines) for scripts:

    input, output   str    the paths as given ("-" for stdin / stdout)
    ok              bool   false if the file failed; error and exit_code then say why
    error           str | null          exit_code  int (0 when ok)
    width, height   int | null          pixels of the image
    input_bytes, output_bytes  int | null   file sizes
    bpp             float | null        8 * .hfc bytes / pixels (the real file size)
    seconds         float | null        coding time of this file, model loading left out
    model           str | null          model id that coded the file
    quality         float               only for files coded at a quality (variable-rate models)
    warnings        list of str
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

COLUMNS = ("input", "output", "pixels", "in", "out", "bpp", "ratio", "time")


def human_bytes(n: float) -> str:
    """Binary sizes as the table prints them: 512 B, 3.4 KB, 1.2 MB (1 KB = 1024 B)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _hfc_and_image(result: Any, hfc_is_output: bool) -> tuple[int, int]:
    return (result.out_bytes, result.in_bytes) if hfc_is_output else (result.in_bytes, result.out_bytes)


def _row(name: str, target: str, pixels: str, in_bytes: int, out_bytes: int, hfc: int, image: int,
         area: int, seconds: float) -> list[str]:
    bpp = 8.0 * hfc / area if area else 0.0
    ratio = f"{image / hfc:.1f}x" if hfc else "-"
    return [name, target, pixels, human_bytes(in_bytes), human_bytes(out_bytes), f"{bpp:.3f}", ratio,
            f"{seconds:.2f}s"]


def summary_lines(results: Sequence[Any], *, hfc_is_output: bool) -> list[str]:
    """The table (file, pixels, sizes, bpp from the real .hfc size, ratio of image file size to .hfc
    size, coding time), a total row for several files, and the model(s) used."""
    rows = [list(COLUMNS)]
    for r in results:
        hfc, image = _hfc_and_image(r, hfc_is_output)
        rows.append(_row(r.source, r.target, f"{r.width}x{r.height}", r.in_bytes, r.out_bytes, hfc, image,
                         r.width * r.height, r.seconds))
    if len(results) > 1:
        pairs = [_hfc_and_image(r, hfc_is_output) for r in results]
        rows.append(_row(
            f"total ({len(results)} files)", "", _megapixels(results), sum(r.in_bytes for r in results),
            sum(r.out_bytes for r in results), sum(h for h, _ in pairs), sum(i for _, i in pairs),
            sum(r.width * r.height for r in results), sum(r.seconds for r in results),
        ))
    lines = _align(rows, right_from=2)
    models = list(dict.fromkeys(r.model for r in results if r.model))
    if models:
        lines.append(f"model: {', '.join(models)}")
    return lines


def _megapixels(results: Sequence[Any]) -> str:
    return f"{sum(r.width * r.height for r in results) / 1e6:.2f} MP"


def _align(rows: list[list[str]], right_from: int) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [c.ljust(w) if i < right_from else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        lines.append("  ".join(cells).rstrip())
    return lines


def print_summary(results: Sequence[Any], *, hfc_is_output: bool) -> None:
    """The summary table on stderr (bold header on a terminal)."""
    lines = summary_lines(results, hfc_is_output=hfc_is_output)
    if sys.stderr.isatty():
        lines[0] = f"\x1b[1m{lines[0]}\x1b[0m"
    sys.stderr.write("\n".join(lines) + "\n")
    sys.stderr.flush()


def warn(message: str) -> None:
    """``warning: message`` on stderr, one line whatever its length."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def record(path: str, target: str | None, outcome: Any, *, hfc_is_output: bool) -> dict[str, Any]:
    """The --json object of one file: ``outcome`` is its JobResult or the error it raised."""
    if not hasattr(outcome, "out_bytes"):
        message = getattr(outcome, "message", None) or getattr(outcome, "strerror", None) or str(outcome)
        from hificli.errors import EXIT_ERROR

        data: dict[str, Any] = dict.fromkeys(
            ("width", "height", "input_bytes", "output_bytes", "bpp", "seconds", "model")
        )
        code = getattr(outcome, "exit_code", EXIT_ERROR)
        return {"input": path, "output": target, "ok": False, "error": message, "exit_code": code, **data,
                "warnings": []}
    hfc, _ = _hfc_and_image(outcome, hfc_is_output)
    out = {
        "input": path, "output": outcome.target, "ok": True, "error": None, "exit_code": 0,
        "width": outcome.width, "height": outcome.height,
        "input_bytes": outcome.in_bytes, "output_bytes": outcome.out_bytes,
        "bpp": 8.0 * hfc / (outcome.width * outcome.height),
        "seconds": round(outcome.seconds, 4), "model": outcome.model or None,
    }
    quality = getattr(outcome, "quality", None)
    if quality is not None:
        out["quality"] = quality
    out["warnings"] = list(outcome.warnings)
    return out


def print_record(obj: dict[str, Any]) -> None:
    """One JSON object per line on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def note(message: str) -> None:
    """An informational line on stderr (-v details)."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def model_line(model: Any, seconds: float) -> str:
    """-v: which weights a model came from and how long loading took."""
    kind = "fp16" if model.info.half else "fp32"
    return (f"model {model.model_id}: {model.path} ({kind}, fingerprint {model.fingerprint.hex()}), "
            f"loaded in {seconds:.2f} s")


def layout(hfc: Any) -> str:
    """-vv: the bytes of a parsed .hfc file's parts, e.g. ``z 120 B, y 5,012 B, header 58 B, total ...``."""
    if isinstance(hfc, bytes):
        from hificli import container

        hfc = container.unpack(hfc)
    streams = ", ".join(f"{s.name} {s.length:,} B" for s in hfc.header.streams)
    return f"{streams}, header {hfc.header_bytes:,} B, total {hfc.size:,} B"


def verbose_lines(result: Any, level: int) -> list[str]:
    """-v: the tiles a file was coded in and the tiling policy; -vv adds the .hfc layout."""
    lines = []
    if level >= 1 and result.tiles:
        plural = "s" if result.tiles != 1 else ""
        lines.append(f"{result.source}: {result.tiles} tile{plural} ({result.tiling})")
    if level >= 2 and result.layout:
        lines.append(f"{result.source}: {result.layout}")
    return lines
