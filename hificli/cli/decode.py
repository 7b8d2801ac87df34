"""`hific decode`: .hfc files -> images."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from hificli.cli import preflight
from hificli.cli.batch import (
    JobResult,
    ModelJob,
    ModelLoader,
    effective_jobs,
    make_tiling,
    performance_options,
    read_nonempty,
    run_batch,
    show_progress,
)
from hificli.cli.common import settings, verbosity_options
from hificli.cli.deviceopts import device_options
from hificli.cli.modelopts import model_options
from hificli.device import can_fork_workers, threads_before_fork


@click.command("decode")
@click.argument("inputs", nargs=-1, required=True, metavar="FILE.hfc...")
@click.option("-o", "--output", metavar="OUT|DIR", help="Output image (format by extension), directory, or -.")
@click.option("-m", "--model", metavar="NAME|PATH", help="Decode with these weights instead of the file's model.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout, no table.")
@click.option("--realism", type=click.FloatRange(0.0, 1.0), default=0.0, show_default=True, metavar="R",
              help="Synthesised detail from the model's realism decoder: 0 = the faithful reconstruction, "
                   "1 = full realism (same file either way; detail that looks real is not the photo's).")
@performance_options
@device_options
@model_options
@verbosity_options
def command(
    inputs: tuple[str, ...],
    output: str | None,
    model: str | None,
    force: bool,
    as_json: bool,
    realism: float,
    offline: bool | None,
    cache_dir: str | None,
    jobs: int,
    tile: int | None,
    max_memory: int,
    device: str,
    half: bool,
    threads: int | None,
) -> None:
    """Decompress .hfc files into images (PNG unless the -o name says otherwise).

    \b
    photo.hfc -> photo.decoded.png next to the input (never the name of the original photo.png);
    -o DIR writes DIR/photo.png; -o FILE picks the format by extension: .png, .jpg/.jpeg, .webp,
    .tif/.tiff, .bmp, .ppm. Existing files are never overwritten without -f. The model is taken from
    each file's header (-m overrides it; the weights' fingerprint must match). --json prints one
    object per file. --realism R decodes with the model's realism decoder (HiFiC-style synthesised
    detail, blended in by R): the same file decodes faithfully at 0, the default.
    """
    from hificli.device import check_device

    targets = plan_outputs(inputs, output, as_json)
    preflight.check_model(model, cache_dir, offline)
    workers = effective_jobs(jobs, inputs, preflight.hfc_pixels)
    preflight.check_memory(max_memory, workers)
    if not force and preflight.all_exist(inputs, targets):  # nothing to do: no model needed
        refuse = preflight.ExistingOutputs(targets)
        sys.exit(run_batch(list(inputs), refuse, verb="decoding", hfc_is_output=False, as_json=as_json))
    check_device(device)  # a missing GPU fails once, here, not once per file
    fork = workers > 1 and can_fork_workers(device)
    loader = ModelLoader(
        offline, cache_dir, make_tiling(tile, max_memory, workers),
        progress=(workers == 1 or fork) and show_progress(), device=device, half=half, verbose=settings().verbose,
    )
    if fork:  # the workers inherit the models loaded here; each uses this many threads
        threads = threads_before_fork(workers, threads)
        load_models_once(inputs, model, loader)
    elif workers > 1:
        fetch_models_once(inputs, model, offline, cache_dir)
    job = DecodeJob(targets, force, model, loader, realism)
    prepare = job.prepare if model else None
    code = run_batch(
        list(inputs), job, verb="decoding", hfc_is_output=False, jobs=workers, prepare=prepare, threads=threads,
        as_json=as_json, fork=fork,
    )
    sys.exit(code) if code else None


def plan_outputs(inputs: tuple[str, ...], output: str | None, as_json: bool) -> dict[str, str]:
    """Check the inputs and name every output image before anything loads (usage errors, exit 2)."""
    preflight.check_inputs(inputs)
    targets = preflight.plan(inputs, output, option="-o", default=preflight.decoded_name,
                             in_dir=preflight.image_name)
    preflight.check_outputs(inputs, targets)
    preflight.check_image_names(targets.values(), "-o")
    preflight.check_stdout(targets, "image data", as_json)
    return targets


def header_models(inputs: tuple[str, ...]) -> list[str]:
    """The model ids in the headers of the readable .hfc inputs (unreadable ones fail later, per file)."""
    from hificli import container
    from hificli.errors import HificError

    names = set()
    for path in inputs:
        try:
            names.add(container.read_file(path).header.model_id)
        except (OSError, HificError):
            continue
    return sorted(names)


def load_models_once(inputs: tuple[str, ...], model: str | None, loader: ModelLoader) -> None:
    """Before -j workers fork: load ``model`` or every model the inputs' headers name, here, so that
    the workers inherit them. Failures are left to the workers, which report them per file."""
    from hificli.errors import HificError

    for name in [model] if model else header_models(inputs):
        try:
            loader.get(name, from_header=not model)
        except HificError:
            continue


def fetch_models_once(inputs: tuple[str, ...], model: str | None, offline: bool | None, cache_dir: str | None) -> None:
    """Before -j workers start: download, here and with progress, any registry model the inputs need
    (``model`` or each readable file's header). Workers would otherwise wait silently on the cache lock
    while one of them fetches it. Failures are left to the workers, which report them per file."""
    from hificli.errors import HificError
    from hificli.zoo.resolve import resolve_model

    for name in [model] if model else header_models(inputs):
        try:
            resolve_model(name, offline=offline, cache_dir=cache_dir, progress=show_progress(), from_header=not model)
        except HificError:
            continue


@dataclass
class DecodeJob(ModelJob):
    """Decode one input with the model named in its header, or with ``model`` when set: its latents with
    the model's integer half (no torch: a damaged file is refused before torch is imported), then its
    pixels with the float network, at ``realism`` (hificli.models.realism)."""

    realism: float = 0.0

    def __call__(self, path: str) -> JobResult:
        from hificli import container, fileio
        from hificli.codec import decode_latents
        from hificli.imageio import output_format

        target = self.targets[path]
        output_format(target)  # an unknown extension fails before any work
        fileio.check_writable(target, self.force)
        raw = read_nonempty(path, max_memory=self.models.tiling.max_memory, size_of=container.declared_size)
        in_bytes = len(raw)
        hfc = container.unpack(raw)
        header = hfc.header
        name, from_header = (self.model, False) if self.model else (header.model_id, True)
        latent, loading = self.load(name, from_header=from_header, latent=True)
        if self.realism and latent.info.realism_fingerprint is None:  # before any work
            from hificli.errors import ModelMismatchError

            raise ModelMismatchError(f"model {latent.model_id!r} has no realism decoder",
                                     "decode without --realism, or train one: hific train --stage realism")
        y_hat = decode_latents(hfc, latent)
        codec_model, seconds = self.load(name, from_header=from_header)
        loading += seconds
        details = self.details(codec_model, header.width, header.height, "trunk", hfc)
        del raw, hfc
        pixels = codec_model.synthesise(y_hat, header.width, header.height, self.realism)
        del y_hat
        out_bytes = self.write_image(target, pixels, header)
        return JobResult(path, target, in_bytes, out_bytes, header.width, header.height, model_seconds=loading,
                         device=codec_model.device, model=codec_model.model_id, **details)
