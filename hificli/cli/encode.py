"""`hific encode`: images -> .hfc files."""

from __future__ import annotations

import sys

import click

from hificli.cli.batch import JobResult, run_batch
from hificli.cli.common import settings, stderr_console, verbosity_options
from hificli.cli.modelopts import ModelCache, model_options


@click.command("encode")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE...")
@click.option("-o", "--output", metavar="OUT|DIR", help="Output file, directory, or - for stdout.")
@click.option("-m", "--model", metavar="NAME|PATH", help="Registry name, weights file, checkpoint or run dir.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@click.option(
    "--reconstruct",
    metavar="OUT.png|DIR",
    help="Also decode and write the reconstruction (a directory when encoding several files).",
)
@model_options
@verbosity_options
def command(
    inputs: tuple[str, ...],
    output: str | None,
    model: str | None,
    force: bool,
    reconstruct: str | None,
    offline: bool | None,
    cache_dir: str | None,
) -> None:
    """Compress images (PNG, JPEG, WebP, TIFF, ...) into .hfc files.

    \b
    photo.png -> photo.hfc next to the input unless -o says otherwise; - reads stdin / writes stdout.
    Existing files are never overwritten without -f.
    """
    from hificli import fileio

    many = len(inputs) > 1
    if many and output == "-":
        raise click.UsageError("-o - (stdout) takes a single input")
    targets = {p: fileio.output_path(p, ".hfc", output, many) for p in inputs}
    if "-" in targets.values() and sys.stdout.isatty():
        raise click.UsageError("refusing to write a .hfc file to a terminal; use -o FILE or redirect stdout")
    recon_targets = {p: fileio.output_path(p, ".png", reconstruct, many) for p in inputs} if reconstruct else {}
    models = ModelCache(offline, cache_dir)
    models.get(model)  # load (or fail) once, before touching any file

    def job(path: str) -> JobResult:
        from hificli.codec import decode_file, encode_source, to_pil
        from hificli.imageio import encode_image, output_format, read_image

        target = targets[path]
        fileio.check_writable(target, force)
        if path in recon_targets:
            fileio.check_writable(recon_targets[path], force)
        raw = fileio.read_input(path)
        source = read_image(raw)
        for warning in source.warnings:
            if not settings().quiet:
                stderr_console().print(f"[yellow]warning[/]: {path}: {warning}")
        codec_model = models.get(model)
        data = encode_source(source, codec_model)
        fileio.write_output(target, data, force)
        if path in recon_targets:
            recon_path = recon_targets[path]
            pixels, header = decode_file(data, codec_model)
            image_bytes = encode_image(to_pil(pixels, header), output_format(recon_path), header.icc_profile)
            fileio.write_output(recon_path, image_bytes, force)
        return JobResult(path, target, len(raw), len(data), source.width, source.height)

    code = run_batch(list(inputs), job, verb="encoding", hfc_is_output=True)
    sys.exit(code) if code else None
