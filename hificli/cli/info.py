"""`hific info FILE...`: what a .hfc file holds, read from its header only (no torch, no model).

JSON schema (``--json``): a list with one object per FILE argument, in order, always with these keys:

    path           str    the argument as given ("-" for stdin)
    ok             bool   false if the file could not be read or is not a valid .hfc file
    error          str | null   the error message when ok is false
    file_bytes     int | null   size of the file (null if it could not be read)
    format_version str    "MAJOR.MINOR"        model          str  model id that encoded it
    quality        float | null   the quality (0-100) of a variable-rate file; null: fixed-rate model
    fingerprint    str    16 hex digits         width, height, padded_width, padded_height   int
    channels       int    3 (RGB) or 1 (gray)   icc_bytes      int  size of the ICC profile, 0 if none
    coder          str    e.g. "constriction-ans32"   coder_id int   coder_version str "0.5"
    streams        list of {"name": str, "shape": [int, ...], "bytes": int}, in file order
    header_bytes   int    bytes before the streams (header fields and ICC profile)
    bpp            float  8 * file_bytes / (width * height)

When ok is false every key after ``file_bytes`` is null. Exit status: 0 if every file is valid, 3 if any
file is missing, unreadable or invalid (each is reported on stderr as ``error: PATH: message``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from hificli.cli.common import print_file_error
from hificli.errors import EXIT_INVALID_INPUT, InvalidInputError

_DATA_KEYS = (
    "format_version", "model", "quality", "fingerprint", "width", "height", "padded_width", "padded_height",
    "channels", "icc_bytes", "coder", "coder_id", "coder_version", "streams", "header_bytes", "bpp",
)


def describe(path: str, hfc: Any) -> dict[str, Any]:
    """The JSON record of a parsed file (see the module docstring)."""
    from hificli.container import coder_name

    h = hfc.header
    return {
        "path": path,
        "ok": True,
        "error": None,
        "file_bytes": hfc.size,
        "format_version": "{}.{}".format(*h.version),
        "model": h.model_id,
        "quality": h.quality,
        "fingerprint": h.fingerprint.hex(),
        "width": h.width,
        "height": h.height,
        "padded_width": h.padded_width,
        "padded_height": h.padded_height,
        "channels": h.channels,
        "icc_bytes": len(h.icc_profile) if h.icc_profile else 0,
        "coder": coder_name(h.coder_id),
        "coder_id": h.coder_id,
        "coder_version": "{}.{}".format(*h.coder_version),
        "streams": [{"name": s.name, "shape": list(s.shape), "bytes": s.length} for s in h.streams],
        "header_bytes": hfc.header_bytes,
        "bpp": 8 * hfc.size / (h.width * h.height),
    }


def failure(path: str, message: str, file_bytes: int | None) -> dict[str, Any]:
    """The JSON record of a file that could not be read or parsed."""
    record = {"path": path, "ok": False, "error": message, "file_bytes": file_bytes}
    return {**record, **dict.fromkeys(_DATA_KEYS)}


def _read(path: str) -> Any:
    """Parse ``path`` (``-`` = stdin) into an HfcFile."""
    from hificli.container import read_file, read_stream

    return read_stream(sys.stdin.buffer, "stdin") if path == "-" else read_file(path)


def _size(path: str) -> int | None:
    """Size of a regular file, None for stdin, a missing path or a directory."""
    import os

    try:
        return os.stat(path).st_size if path != "-" and os.path.isfile(path) else None
    except OSError:
        return None


def _table(record: dict[str, Any]):
    from rich.table import Table

    gray = {1: "grayscale", 3: "RGB"}.get(record["channels"], "?")
    icc = f"{record['icc_bytes']} bytes" if record["icc_bytes"] else "none"
    rows = [
        ("format", record["format_version"]),
        ("model", record["model"]),
        ("quality", "fixed-rate model" if record["quality"] is None else f"{record['quality']:g}"),
        ("fingerprint", record["fingerprint"]),
        ("image", f"{record['width']} x {record['height']}"),
        ("padded", f"{record['padded_width']} x {record['padded_height']}"),
        ("channels", f"{record['channels']} ({gray})"),
        ("ICC profile", icc),
        ("coder", f"{record['coder']} {record['coder_version']} (id {record['coder_id']})"),
        *(
            (f"stream {s['name']}", f"{' x '.join(map(str, s['shape']))}, {s['bytes']} bytes")
            for s in record["streams"]
        ),
        ("header", f"{record['header_bytes']} bytes"),
        ("total", f"{record['file_bytes']} bytes"),
        ("bpp", f"{record['bpp']:.4f}"),
    ]
    table = Table(title=record["path"], show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return table


@click.command("info")
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list (schema: see FORMAT.md).")
@click.pass_context
def command(ctx: click.Context, files: tuple[str, ...], as_json: bool) -> None:
    """Show what .hfc FILEs hold (model, sizes, streams, bpp) from their headers; '-' reads stdin.

    Exit status 3 if any FILE is missing or not a valid .hfc file; the others are still shown.
    """
    console = None
    if not as_json:
        from rich.console import Console

        console = Console(highlight=False)
    records = []
    for path in files:
        try:
            record = describe(path, _read(path))
        except InvalidInputError as exc:
            message = exc.message.replace(f"cannot read {path}: ", "", 1)  # the path is printed anyway
            print_file_error(path, message, exc.hint)
            record = failure(path, message, _size(path))
        records.append(record)
        if console is not None and record["ok"]:
            console.print(_table(record))
    if as_json:
        sys.stdout.write(json.dumps(records, indent=2) + "\n")
    if not all(r["ok"] for r in records):
        ctx.exit(EXIT_INVALID_INPUT)
