"""`hific decode`: .hfc files -> images."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from hificli.cli.batch import (
    JobResult,
    ModelJob,
    ModelLoader,
    effective_jobs,
    make_tiling,
    output_targets,
    performance_options,
    run_batch,
    show_progress,
)
from hificli.cli.common import verbosity_options
from hificli.cli.deviceopts import device_options
from hificli.cli.modelopts import model_options


@click.command("decode")
@click.argument("inputs", nargs=-1, required=True, metavar="FILE.hfc...")
@click.option("-o", "--output", metavar="OUT|DIR", help="Output image (format by extension), directory, or -.")
@click.option("-m", "--model", metavar="NAME|PATH", help="Decode with these weights instead of the file's model.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@performance_options
@device_options
@model_options
@verbosity_options
def command(
    inputs: tuple[str, ...],
    output: str | None,
    model: str | None,
    force: bool,
    offline: bool | None,
    cache_dir: str | None,
    jobs: int,
    tile: int | None,
    max_memory: int,
    device: str,
    half: bool,
    threads: int | None,
) -> None:
    """Decompress .hfc files into images (PNG by default; .jpg/.webp/.tif by the -o extension).

    \b
    photo.hfc -> photo.png next to the input; it refuses to replace an existing photo.png (the
    original, typically) unless -f is given. The model is taken from each file's header.
    """
    from hificli.device import check_device

    targets = output_targets(inputs, output, ".png", "image data")
    check_device(device)  # a missing GPU fails once, here, not once per file
    workers = effective_jobs(jobs, inputs)
    loader = ModelLoader(
        offline, cache_dir, make_tiling(tile, max_memory, workers), progress=workers == 1 and show_progress(),
        device=device, half=half,
    )
    if workers > 1:
        fetch_models_once(inputs, model, offline, cache_dir)
    job = DecodeJob(targets, force, model, loader)
    prepare = job.prepare if model else None
    code = run_batch(
        list(inputs), job, verb="decoding", hfc_is_output=False, jobs=workers, prepare=prepare, threads=threads
    )
    sys.exit(code) if code else None


def fetch_models_once(inputs: tuple[str, ...], model: str | None, offline: bool | None, cache_dir: str | None) -> None:
    """Before -j workers start: download, here and with progress, any registry model the inputs need
    (``model`` or each readable file's header). Workers would otherwise wait silently on the cache lock
    while one of them fetches it. Failures are left to the workers, which report them per file."""
    from hificli import container
    from hificli.errors import HificError
    from hificli.zoo.resolve import resolve_model

    names = {model} if model else set()
    for path in () if model else inputs:
        try:
            names.add(container.read_file(path).header.model_id)
        except (OSError, HificError):
            continue
    for name in sorted(names):
        try:
            resolve_model(name, offline=offline, cache_dir=cache_dir, progress=show_progress())
        except HificError:
            continue


@dataclass
class DecodeJob(ModelJob):
    """Decode one input with the model named in its header, or with ``model`` when set."""

    def __call__(self, path: str) -> JobResult:
        from hificli import container, fileio
        from hificli.codec import decode_latents
        from hificli.imageio import output_format

        target = self.targets[path]
        output_format(target)  # an unknown extension fails before any work
        fileio.check_writable(target, self.force)
        raw = fileio.read_input(path)
        in_bytes = len(raw)
        hfc = container.unpack(raw)
        header = hfc.header
        codec_model, loading = self.load(self.model or header.model_id)
        y_hat = decode_latents(hfc, codec_model)
        del raw, hfc
        pixels = codec_model.synthesise(y_hat, header.width, header.height)
        del y_hat
        out_bytes = self.write_image(target, pixels, header)
        return JobResult(path, target, in_bytes, out_bytes, header.width, header.height, model_seconds=loading,
                         device=codec_model.device)
