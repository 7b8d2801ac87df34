"""`hific encode`: images -> .hfc files."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

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
@device_options
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
    device: str,
    half: bool,
    threads: int | None,
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
    loader = ModelLoader(offline, cache_dir, make_tiling(tile, max_memory, workers), progress=show_progress(),
                         device=device, half=half)
    name = model
    loaded = loader.get(name)  # load (or fail) once, before touching any file
    if workers > 1 and loaded.path is not None:  # workers load the resolved file, without downloading
        name, loader = str(loaded.path), ModelLoader(True, cache_dir, loader.tiling, device=loaded.device, half=half)
    del loaded
    job = EncodeJob(targets, force, name, loader, recon_targets=recon_targets)
    code = run_batch(
        list(inputs), job, verb="encoding", hfc_is_output=True, jobs=workers, prepare=job.prepare,
        threads=threads,
    )
    sys.exit(code) if code else None


@dataclass
class EncodeJob(ModelJob):
    """Encode one input; with ``recon_targets``, also write its reconstruction."""

    recon_targets: dict[str, str] = field(default_factory=dict)

    def __call__(self, path: str) -> JobResult:
        from hificli import fileio
        from hificli.codec import decode_file, encode_source
        from hificli.imageio import read_image

        target = self.targets[path]
        recon_target = self.recon_targets.get(path)
        for out in (target, recon_target) if recon_target else (target,):
            fileio.check_writable(out, self.force)
        raw = fileio.read_input(path)
        source = read_image(raw)
        codec_model, loading = self.load(self.model)
        data = encode_source(source, codec_model)
        fileio.write_output(target, data, self.force)
        if recon_target:
            self.write_image(recon_target, *decode_file(data, codec_model))
        return JobResult(path, target, len(raw), len(data), source.width, source.height,
                         warnings=source.warnings, model_seconds=loading, device=codec_model.device)
