"""`hific encode`: images -> .hfc files."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import click

from hificli.cli import preflight, report
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
from hificli.cli.rateopts import check_model_takes, family_names, rate_options, rate_request
from hificli.device import can_fork_workers, threads_before_fork


@click.command("encode")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE...")
@rate_options
@click.option("-o", "--output", metavar="OUT|DIR", help="Output file, directory, or - for stdout.")
@click.option("-m", "--model", metavar="NAME|PATH", help="Registry name, weights file, checkpoint or run dir.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@click.option(
    "--reconstruct",
    metavar="OUT.png|DIR",
    help="Also decode and write the reconstruction (a directory when encoding several files).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per file on stdout, no table.")
@click.option(
    "--allow-truncated", is_flag=True,
    help="Encode an image whose data ends early (missing pixels black) instead of refusing it.",
)
@performance_options
@device_options
@model_options
@verbosity_options
def command(
    inputs: tuple[str, ...],
    quality: float | None,
    target_bpp: float | None,
    target_size: int | None,
    output: str | None,
    model: str | None,
    force: bool,
    reconstruct: str | None,
    as_json: bool,
    allow_truncated: bool,
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
    photo.png -> photo.hfc next to the input; -o DIR writes DIR/photo.hfc, -o FILE names the output of
    one input; - reads stdin / writes stdout. Existing files are never overwritten without -f, and an
    output that is one of the inputs is refused even with -f. --json prints one object per file.

    \b
    Rate: -q 0-100 (default 50, about 0.3 bpp on typical photos), or a target: --bpp 0.2 or
    --size 20k give the largest file not above it (exit 6 naming the smallest size if even -q 0 is
    larger). With a fixed-rate HiFiC model (-m hific-low|med|high) a target chooses among the
    installed members of that family.
    """
    request = rate_request(quality, target_bpp, target_size)
    targets, recon_targets = plan_outputs(inputs, output, reconstruct, as_json)
    preflight.check_model(model, cache_dir, offline)
    workers = effective_jobs(jobs, inputs, preflight.image_pixels)
    preflight.check_memory(max_memory, workers)
    preflight.check_image_header(inputs, max_memory)
    if not force and preflight.all_exist(inputs, targets, recon_targets):  # nothing to do: no model needed
        refuse = preflight.ExistingOutputs(targets, recon_targets)
        sys.exit(run_batch(list(inputs), refuse, verb="encoding", hfc_is_output=True, as_json=as_json))
    verbose = settings().verbose
    fork = workers > 1 and can_fork_workers(device)
    if fork:  # the workers inherit the models loaded below; each uses this many threads
        threads = threads_before_fork(workers, threads)
    loader = ModelLoader(offline, cache_dir, make_tiling(tile, max_memory, workers), progress=show_progress(),
                         device=device, half=half, verbose=verbose)
    name = model
    loaded = loader.get(name)  # load (or fail) once, before touching any file
    check_model_takes(request, loaded, model)
    family = family_names(request, model, cache_dir)
    for member in family:
        loader.get(member)
    if workers > 1 and not fork and loaded.path is not None:  # spawned workers load the resolved file
        name = str(loaded.path)
        loader = ModelLoader(True, cache_dir, loader.tiling, device=loaded.device, half=half, verbose=verbose)
    del loaded
    job = EncodeJob(targets, force, name, loader, recon_targets=recon_targets, request=request, family=family,
                    allow_truncated=allow_truncated)
    code = run_batch(
        list(inputs), job, verb="encoding", hfc_is_output=True, jobs=workers, prepare=job.prepare,
        threads=threads, as_json=as_json, fork=fork,
    )
    sys.exit(code) if code else None


def plan_outputs(
    inputs: tuple[str, ...], output: str | None, reconstruct: str | None, as_json: bool
) -> tuple[dict[str, str], dict[str, str]]:
    """Check the inputs and name every output (.hfc files, --reconstruct images) before anything loads;
    a problem is a usage error (exit 2). Warns about .hfc data under another extension."""
    preflight.check_inputs(inputs)
    name = preflight.encoded_name
    targets = preflight.plan(inputs, output, option="-o", default=name, in_dir=name)
    recon = {}
    if reconstruct is not None:
        recon = preflight.plan(inputs, reconstruct, option="--reconstruct", default=preflight.image_name,
                               in_dir=preflight.image_name)
    preflight.check_outputs(inputs, targets, recon)
    preflight.check_image_names(recon.values(), "--reconstruct")
    preflight.check_stdout(targets, "a .hfc file", as_json)
    preflight.check_stdout(recon, "image data", as_json)
    if not settings().quiet:
        for warning in preflight.hfc_name_warnings(targets.values()):
            report.warn(warning)
    return targets, recon


@dataclass
class EncodeJob(ModelJob):
    """Encode one input; with ``recon_targets``, also write its reconstruction."""

    recon_targets: dict[str, str] = field(default_factory=dict)
    request: Any = None  #: hificli.ratecontrol.RateRequest (None: the model's default)
    family: list[str] = field(default_factory=list)  #: other fixed-rate models a target may choose
    allow_truncated: bool = False  #: encode images whose data ends early instead of refusing them

    @staticmethod
    def size_check(model: Any, input_bytes: int) -> Any:
        """What imageio runs on an image's header size before decoding it: the memory rule for reading
        and coding it with ``model`` (hificli.tiling.check_source_fits)."""
        from hificli import tiling
        from hificli.imageio import READ_BYTES_PER_PIXEL

        def check(width: int, height: int) -> None:
            tiling.check_source_fits(model.size, width, height, model.tiling, input_bytes=input_bytes,
                                     read_bytes_per_pixel=READ_BYTES_PER_PIXEL)

        return check

    def __call__(self, path: str) -> JobResult:
        from hificli import fileio
        from hificli.codec import decode_file
        from hificli.imageio import image_signature, pixel_limit, read_image
        from hificli.ratecontrol import RateRequest, encode_with

        target = self.targets[path]
        recon_target = self.recon_targets.get(path)
        for out in (target, recon_target) if recon_target else (target,):
            fileio.check_writable(out, self.force)
        codec_model, loading = self.load(self.model)  # loaded already: its size sets the image budget
        raw = read_nonempty(path, max_memory=codec_model.tiling.max_memory, size_of=image_signature)
        source = read_image(raw, max_pixels=pixel_limit(codec_model.tiling.max_memory),
                            check_size=self.size_check(codec_model, len(raw)), allow_truncated=self.allow_truncated)
        others = []
        for name in self.family:
            member, seconds = self.load(name)
            others.append(member)
            loading += seconds
        result = encode_with(source, codec_model, self.request or RateRequest(), others)
        data, codec_model = result.data, result.model
        notes = [f"chose {codec_model.model_id}: the largest file within the target among "
                 f"{', '.join([self.model or '', *self.family])}"] if self.family else []
        details = self.details(codec_model, source.width, source.height, "encoder", data)
        fileio.write_output(target, data, self.force)
        if recon_target:
            self.write_image(recon_target, *decode_file(data, codec_model))
        return JobResult(path, target, len(raw), len(data), source.width, source.height,
                         warnings=source.warnings + notes, model_seconds=loading, device=codec_model.device,
                         model=codec_model.model_id, **details,
                         quality=None if result.quality_code is None else result.quality_code / 100)
