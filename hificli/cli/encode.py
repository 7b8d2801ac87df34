"""`hific encode`: images -> .hfc files."""

from __future__ import annotations

import sys
from dataclasses import dataclass

import click

from hificli.cli.batch import (
    JobResult,
    ModelLoader,
    effective_jobs,
    make_tiling,
    output_targets,
    performance_options,
    run_batch,
    show_progress,
)
from hificli.cli.common import verbosity_options
from hificli.cli.modelopts import model_options


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
@performance_options
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
    jobs: int,
    tile: int | None,
    max_memory: int,
) -> None:
    """Compress images (PNG, JPEG, WebP, TIFF, ...) into .hfc files.

    \b
    photo.png -> photo.hfc next to the input unless -o says otherwise; - reads stdin / writes stdout.
    Existing files are never overwritten without -f.
    """
    from hificli import fileio

    targets = output_targets(inputs, output, ".hfc", "a .hfc file")
    many = len(inputs) > 1
    recon_targets = {p: fileio.output_path(p, ".png", reconstruct, many) for p in inputs} if reconstruct else {}
    workers = effective_jobs(jobs, inputs)
    loader = ModelLoader(offline, cache_dir, make_tiling(tile, max_memory, workers), progress=show_progress())
    name = model
    loaded = loader.get(name)  # load (or fail) once, before touching any file
    if workers > 1 and loaded.path is not None:  # workers load the resolved file, without downloading
        name, loader = str(loaded.path), ModelLoader(True, cache_dir, loader.tiling)
    del loaded
    job = EncodeJob(targets, recon_targets, force, name, loader)
    code = run_batch(
        list(inputs), job, verb="encoding", hfc_is_output=True, jobs=workers, prepare=job.prepare
    )
    sys.exit(code) if code else None


@dataclass
class EncodeJob:
    """Encode one input (picklable, for -j workers)."""

    targets: dict[str, str]
    recon_targets: dict[str, str]
    force: bool
    model: str | None
    models: ModelLoader

    def prepare(self) -> None:
        self.models.get(self.model)

    def __call__(self, path: str) -> JobResult:
        from hificli import fileio
        from hificli.codec import decode_file, encode_source, to_pil
        from hificli.imageio import encode_image, output_format, read_image

        target = self.targets[path]
        fileio.check_writable(target, self.force)
        if path in self.recon_targets:
            fileio.check_writable(self.recon_targets[path], self.force)
        raw = fileio.read_input(path)
        source = read_image(raw)
        codec_model = self.models.get(self.model)
        data = encode_source(source, codec_model)
        fileio.write_output(target, data, self.force)
        if path in self.recon_targets:
            recon_path = self.recon_targets[path]
            pixels, header = decode_file(data, codec_model)
            image_bytes = encode_image(to_pil(pixels, header), output_format(recon_path), header.icc_profile)
            fileio.write_output(recon_path, image_bytes, self.force)
        return JobResult(
            path, target, len(raw), len(data), source.width, source.height, warnings=source.warnings
        )
