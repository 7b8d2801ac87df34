"""`hific decode`: .hfc files -> images."""

from __future__ import annotations

import sys

import click

from hificli.cli.batch import JobResult, run_batch
from hificli.cli.common import verbosity_options
from hificli.cli.modelopts import ModelCache, model_options


@click.command("decode")
@click.argument("inputs", nargs=-1, required=True, metavar="FILE.hfc...")
@click.option("-o", "--output", metavar="OUT|DIR", help="Output image (format by extension), directory, or -.")
@click.option("-m", "--model", metavar="NAME|PATH", help="Decode with these weights instead of the file's model.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@model_options
@verbosity_options
def command(
    inputs: tuple[str, ...],
    output: str | None,
    model: str | None,
    force: bool,
    offline: bool | None,
    cache_dir: str | None,
) -> None:
    """Decompress .hfc files into images (PNG by default; .jpg/.webp/.tif by the -o extension).

    \b
    photo.hfc -> photo.png next to the input; it refuses to replace an existing photo.png (the
    original, typically) unless -f is given. The model is taken from each file's header.
    """
    from hificli import fileio

    many = len(inputs) > 1
    if many and output == "-":
        raise click.UsageError("-o - (stdout) takes a single input")
    targets = {p: fileio.output_path(p, ".png", output, many) for p in inputs}
    if "-" in targets.values() and sys.stdout.isatty():
        raise click.UsageError("refusing to write image data to a terminal; use -o FILE or redirect stdout")
    models = ModelCache(offline, cache_dir)

    def job(path: str) -> JobResult:
        from hificli import container
        from hificli.codec import decode_latents, to_pil
        from hificli.imageio import encode_image, output_format

        target = targets[path]
        fmt = output_format(target)
        fileio.check_writable(target, force)
        raw = fileio.read_input(path)
        hfc = container.unpack(raw)
        header = hfc.header
        codec_model = models.get(model or header.model_id)
        y_hat = decode_latents(hfc, codec_model)
        pixels = codec_model.synthesise(y_hat, header.width, header.height)
        data = encode_image(to_pil(pixels, header), fmt, header.icc_profile)
        fileio.write_output(target, data, force)
        return JobResult(path, target, len(raw), len(data), header.width, header.height)

    code = run_batch(list(inputs), job, verb="decoding", hfc_is_output=False)
    sys.exit(code) if code else None
