"""Running one job per input file: progress bar, per-file errors that do not stop the batch, summary.

With ``-j N`` the jobs run in N worker processes; results are still reported in input order. On the
CPU the workers are forked from the command's process once it has imported torch and loaded the models
(with one torch thread, so that no OpenMP pool is inherited: hificli.device.threads_before_fork), so a
worker costs a fork, not an import and a model load; elsewhere (CUDA) they are spawned and load their
models themselves. Ctrl-C cancels what has not
started and interrupts running jobs, whose atomic writes (fileio.atomic_target) then delete their
temporary files: no partial output is left.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import click

from hificli.cli import report
from hificli.cli.common import print_file_error, settings, status_line, stderr_console
from hificli.errors import EXIT_ERROR, HificError, InvalidInputError
from hificli.tiling import Tiling, parse_size


@dataclass
class JobResult:
    """What one file's job reports for the summary table."""

    source: str
    target: str
    in_bytes: int
    out_bytes: int
    width: int
    height: int
    seconds: float = 0.0
    warnings: list[str] = field(default_factory=list)
    #: Time spent loading a model during this job; the summary's time column leaves it out.
    model_seconds: float = 0.0
    model: str = ""  #: id of the model that coded the file
    quality: float | None = None  #: the quality a variable-rate model coded at (None: fixed-rate)
    tiles: int = 0  #: tiles of the widest stage (1: untiled), for -v
    tiling: str = ""  #: the tiling policy in words, for -v
    layout: str = ""  #: the .hfc file's streams and header bytes, for -vv
    device: str = ""  #: where the job's networks ran (hificli.device), for -v


# ---------------------------------------------------------------------------------------------- options


class _SizeType(click.ParamType):
    name = "SIZE"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def performance_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add -j/--jobs, --tile and --max-memory (encode and decode)."""
    func = click.option(
        "--max-memory", type=_SizeType(), default="3G", show_default=True, metavar="SIZE",
        help="Peak memory to aim for (e.g. 2G, 512M); large images are split into tiles to stay within "
        "it. Shared between -j workers.",
    )(func)
    func = click.option(
        "--tile", type=click.IntRange(min=0), default=None, metavar="PIXELS",
        help="Tile side in pixels instead of the size --max-memory allows; 0 = never tile.",
    )(func)
    return click.option(
        "-j", "--jobs", type=click.IntRange(min=0), default=1, show_default=True, metavar="N", help=JOBS_HELP,
    )(func)


def make_tiling(tile: int | None, max_memory: int, jobs: int) -> Tiling:
    """The tiling policy of one worker when ``jobs`` of them share ``max_memory``."""
    return Tiling(tile=tile, max_memory=max(1, max_memory // max(1, jobs)), workers=max(1, jobs))


#: -j: at least this many pixels of input per worker process (four 768x512 photos). A worker costs a
#: fork and a cold start (first convolutions, first touches of the shared model) and runs 1/N of the
#: threads; with fewer pixels than this it did not pay on 2 cores (benchmarks/bench_jobs.py, README).
PIXELS_PER_WORKER = 4 * 768 * 512

JOBS_HELP = (
    "Files to process in parallel (worker processes); 0 = one per CPU core. At most one worker per "
    f"{PIXELS_PER_WORKER / 1e6:.1f} megapixels of input (about four 768x512 photos): fewer or smaller "
    "inputs run in this process, where a worker would cost more than it saves."
)


def effective_jobs(jobs: int, inputs: Sequence[str], pixels: Callable[[str], int] | None = None) -> int:
    """Worker count: 0 means one per core; never more than the files, nor more than one per
    :data:`PIXELS_PER_WORKER` of input (``pixels``: an input's pixel count from its header, 0 when it
    cannot tell); stdin (-) runs in-process."""
    n = jobs or os.cpu_count() or 1
    if "-" in inputs:
        return 1
    n = max(1, min(n, len(inputs)))
    if n > 1 and pixels is not None:
        n = max(1, min(n, sum(pixels(path) for path in inputs) // PIXELS_PER_WORKER))
    return n


def show_progress() -> bool:
    """Progress bars (model downloads) only for interactive, non-quiet runs."""
    return not settings().quiet and os.isatty(2)


@dataclass
class ModelLoader:
    """Loads each model at most once per process and applies the tiling policy. Picklable: a worker
    process receives the settings, not the loaded models."""

    offline: bool | None
    cache_dir: str | None
    tiling: Tiling
    progress: bool = False
    device: str = "cpu"  #: hificli.device name (``auto`` resolves in each process)
    half: bool = False
    load_seconds: float = 0.0  #: total time spent loading models in this process
    verbose: int = 0  #: -v: say which weights loaded and how long it took
    _models: dict[str, Any] = field(default_factory=dict, repr=False)
    #: latent models loaded by :meth:`latent` whose float network is not built yet, with their load time
    _latents: dict[str, tuple[Any, float]] = field(default_factory=dict, repr=False)

    def get(self, name: str | None, *, from_header: bool = False) -> Any:
        """The model ``name`` (None: the default); ``from_header``: a .hfc file's model id, resolved among
        registry and installed names only, never as a path (hificli.zoo.resolve)."""
        from hificli.api import load_model

        key, slot = self._slot(name, from_header)
        if slot not in self._models:
            latent, before = self._latents.pop(slot, (None, 0.0))
            model, seconds = self._timed(key, lambda: load_model(
                key, offline=self.offline, cache_dir=self.cache_dir, progress=self.progress, device=self.device,
                half=self.half, from_header=from_header, latent=latent))
            self._models[slot] = model
            if self.verbose:
                report.note(report.model_line(model, before + seconds))
        return self._models[slot]

    def latent(self, name: str | None, *, from_header: bool = False) -> Any:
        """The integer half of the model ``name`` (hificli.latent.LatentModel: a weights file's is read
        without torch), enough to decode a file's latents; :meth:`get` then builds the float network
        from it. Loaded at most once, as :meth:`get`."""
        from hificli.api import load_latent_model

        key, slot = self._slot(name, from_header)
        if slot in self._models:
            return self._models[slot].latent
        if slot not in self._latents:
            self._latents[slot] = self._timed(key, lambda: load_latent_model(
                key, offline=self.offline, cache_dir=self.cache_dir, progress=self.progress,
                from_header=from_header))
        return self._latents[slot][0]

    @staticmethod
    def _slot(name: str | None, from_header: bool) -> tuple[str, str]:
        """(name to load, cache key): -m and headers never meet in one command."""
        from hificli.zoo.registry import DEFAULT_MODEL

        key = name or DEFAULT_MODEL
        return key, f"header:{key}" if from_header else key

    def _timed(self, key: str, load: Callable[[], Any]) -> tuple[Any, float]:
        """Run ``load`` under a status line; (its model with this loader's tiling, seconds taken)."""
        start = time.perf_counter()
        status = self.progress and not _needs_download(key, self.cache_dir)  # downloads show a bar
        with status_line(f"loading model {key} ...", status):
            model = load()
        model.tiling = self.tiling
        seconds = time.perf_counter() - start
        self.load_seconds += seconds
        return model, seconds

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_models": {}, "_latents": {}, "progress": False}


def _needs_download(name: str, cache_dir: str | None) -> bool:
    """True for a registered remote model that is not in the cache yet."""
    from hificli.zoo import cache, registry

    entry = registry.find(name)
    return entry is not None and not entry.embedded and not cache.is_installed(cache.cache_root(cache_dir), name)


@dataclass
class ModelJob:
    """What the encode and decode jobs share (picklable, for -j workers): each input's output path,
    --force, the -m model (None: the default, or the file's for decode) and the per-process loader."""

    targets: dict[str, str]
    force: bool
    model: str | None
    models: ModelLoader

    def prepare(self) -> None:
        """Load the -m model once per worker, before its first file."""
        self.models.get(self.model)

    def load(self, name: str | None, *, from_header: bool = False, latent: bool = False) -> tuple[Any, float]:
        """The model ``name`` (``latent``: only its integer half, :meth:`ModelLoader.latent`) and the seconds
        spent loading it now (0 once it is loaded): a job reports them as ``JobResult.model_seconds`` so
        that the summary's time column leaves them out. ``from_header``: see :meth:`ModelLoader.get`."""
        before = self.models.load_seconds
        load = self.models.latent if latent else self.models.get
        model = load(name, from_header=from_header)
        return model, self.models.load_seconds - before

    def write_image(self, target: str, pixels: Any, header: Any) -> int:
        """Write decoded ``pixels`` to ``target`` (format by extension, the header's ICC profile kept);
        returns the bytes written."""
        from hificli import fileio
        from hificli.codec import to_pil
        from hificli.imageio import encode_image, output_format

        data = encode_image(to_pil(pixels, header), output_format(target), header.icc_profile)
        fileio.write_output(target, data, self.force)
        return len(data)

    def details(self, model: Any, width: int, height: int, stage: str, hfc: Any) -> dict[str, Any]:
        """With -v, the JobResult fields that say how a file was coded: the tiles of ``stage``
        ("encoder" or "trunk") and the tiling policy; with -vv also the layout of ``hfc`` (the .hfc
        bytes or the parsed file)."""
        level = self.models.verbose
        if not level:
            return {}
        return {
            "tiles": tile_count(model, width, height, stage),
            "tiling": describe_tiling(model.tiling),
            "layout": report.layout(hfc) if level >= 2 else "",
        }


def read_nonempty(path: str, *, max_memory: int | None = None, size_of: Callable[[bytes], int | None] | None = None
                  ) -> bytes:
    """An input's bytes (``-``: stdin); an empty one is invalid input, worded alike for encode and decode.
    Reads at most a quarter of ``max_memory`` (fileio.input_limit; ``size_of``: see fileio.read_input)."""
    from hificli import fileio

    limit = fileio.MAX_INPUT_BYTES if max_memory is None else fileio.input_limit(max_memory)
    raw = fileio.read_input(path, max_bytes=limit, size_of=size_of)
    if not raw:
        raise InvalidInputError(EMPTY_INPUT)
    return raw


EMPTY_INPUT = "the file is empty (0 bytes)"


def tile_count(model: Any, width: int, height: int, stage: str) -> int:
    """How many tiles ``stage`` ("encoder" or the generator's "trunk") uses for an image of this size:
    the same plan hificli.tiling makes when it codes it."""
    from hificli import tiling
    from hificli.codec import padded_size

    padded_width, padded_height = padded_size(width, height)
    grid = (padded_height // tiling.LATENT, padded_width // tiling.LATENT)
    trunk_halo = model.network.Generator.trunk_radius + tiling.UPSAMPLE_HALO
    halo = tiling.ENCODER_HALO if stage == "encoder" else trunk_halo
    tiles = tiling.stage_plan(stage, model.size, model.tiling, grid, unit_px=tiling.LATENT, halo=halo,
                              latent_positions=grid[0] * grid[1])
    return len(tiles)


def describe_tiling(policy: Tiling) -> str:
    """The tiling policy in words (-v)."""
    if policy.tile == 0:
        return "never tiled: --tile 0"
    if policy.tile is not None:
        return f"--tile {policy.tile} px"
    share = f" per worker, {policy.workers} workers" if policy.workers > 1 else ""
    from hificli.tiling import memory_size

    return f"automatic under --max-memory {memory_size(policy.max_memory)}{share}"


# ---------------------------------------------------------------------------------------------- workers

_job: Callable[[str], JobResult] | None = None
_running = False
_interrupted = False


def _on_sigint(signum: int, frame: Any) -> None:
    """In a worker: interrupt the running job once (its atomic writes clean up); when idle, only
    remember it so that queued jobs do not start."""
    global _running, _interrupted
    _interrupted = True
    if _running:
        _running = False
        raise KeyboardInterrupt


def _init_worker(
    job: Callable[[str], JobResult], jobs: int, prepare: Callable[[], Any] | None, threads: int | None
) -> None:
    from hificli.device import apply_threads

    global _job
    signal.signal(signal.SIGINT, _on_sigint)
    if hasattr(signal, "pthread_sigmask"):  # started with SIGINT blocked (_sigint_held): take it now
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    apply_threads(jobs, threads)  # the cores divided among the workers, or --threads each
    _job = job
    if prepare is not None:
        prepare()


def _run_in_worker(path: str) -> JobResult:
    global _running
    if _interrupted or _job is None:
        raise KeyboardInterrupt
    _running = True
    try:
        return _timed(_job, path)
    finally:
        _running = False


def _timed(job: Callable[[str], JobResult], path: str) -> JobResult:
    start = time.perf_counter()
    result = job(path)
    result.seconds = time.perf_counter() - start - result.model_seconds
    torch = sys.modules.get("torch")  # the threads this process ran with (whatever the job reported)
    result.threads = torch.get_num_threads() if torch is not None else result.threads
    return result


def _outcomes(
    inputs: Sequence[str], job: Callable[[str], JobResult], jobs: int, prepare: Callable[[], Any] | None,
    threads: int | None = None, fork: bool = False,
) -> Iterator[tuple[str, JobResult | BaseException]]:
    """(path, result or the HificError/OSError it raised), in input order. With ``jobs > 1`` the
    workers start now (before the caller starts a progress bar's thread); ``fork``: see run_batch."""
    if jobs <= 1:
        return _in_process(inputs, job, threads)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("fork" if fork else "spawn")
    pool = ProcessPoolExecutor(
        jobs, mp_context=context, initializer=_init_worker, initargs=(job, jobs, prepare, threads)
    )
    try:
        with _sigint_held():  # workers start with SIGINT held until _init_worker sets theirs
            futures = [pool.submit(_run_in_worker, path) for path in inputs]
    except BaseException:
        _interrupt(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    return _pooled(pool, inputs, futures)


def _in_process(
    inputs: Sequence[str], job: Callable[[str], JobResult], threads: int | None
) -> Iterator[tuple[str, JobResult | BaseException]]:
    if threads:
        from hificli.device import apply_threads

        apply_threads(1, threads)
    for path in inputs:
        try:
            yield path, _timed(job, path)
        except (HificError, OSError) as exc:
            yield path, exc


def _pooled(
    pool: Any, inputs: Sequence[str], futures: Sequence[Any]
) -> Iterator[tuple[str, JobResult | BaseException]]:
    from concurrent.futures.process import BrokenProcessPool

    try:
        for path, future in zip(inputs, futures, strict=True):
            try:
                yield path, future.result()
            except (HificError, OSError) as exc:
                yield path, exc
            except BrokenProcessPool:
                died = HificError("a worker process died (killed, or out of memory?)", "try fewer -j workers")
                yield path, died
    except BaseException:
        _interrupt(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _sigint_held() -> Iterator[None]:
    """Hold SIGINT back meanwhile (main thread only), so that processes started now begin with it held
    (until _init_worker installs their handler). POSIX: the signal is blocked, not ignored, so a Ctrl-C
    meanwhile is not lost (ignoring it lost one that came while a loaded parent forked fast workers):
    it is delivered when the block ends, or at once where another thread of this process takes it (the
    caller's ``except BaseException`` then stops the pool). Elsewhere: ignored, as spawned children
    inherit that."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if hasattr(signal, "pthread_sigmask"):
        previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            yield
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _interrupt(pool: Any) -> None:
    """SIGINT the pool's workers: running jobs stop and clean up, queued ones will not start."""
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            with contextlib.suppress(OSError):
                os.kill(process.pid, signal.SIGINT)


# ---------------------------------------------------------------------------------------------- batch


def run_batch(
    inputs: Sequence[str],
    job: Callable[[str], JobResult],
    *,
    verb: str,
    hfc_is_output: bool,
    jobs: int = 1,
    prepare: Callable[[], Any] | None = None,
    threads: int | None = None,
    as_json: bool = False,
    fork: bool = False,
) -> int:
    """Run ``job`` on every input; return the exit code (0, or the first failure's code).

    ``jobs > 1``: in that many worker processes, each with ``threads`` torch threads (default: the
    cores divided among them). Spawned workers import torch anew (``job`` and ``prepare`` must be
    picklable; ``prepare`` runs once per worker, e.g. to load the model); ``fork``: forked from this
    process, they inherit its imports and loaded models (the caller must have run
    hificli.device.threads_before_fork before any torch work, and pass its count as ``threads``).
    Results and errors are reported in input order; ``as_json`` prints one JSON object per file on
    stdout (hificli.cli.report) instead of the summary table.
    """
    opts = settings()
    show_progress = len(inputs) > 1 and not opts.quiet and sys.stderr.isatty()
    results: list[JobResult] = []
    exit_code = 0
    progress = None
    if show_progress:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        progress = Progress(
            TextColumn(f"{verb} [bold]{{task.fields[name]}}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=stderr_console(),
            transient=True,
            redirect_stdout=False,  # stdout carries data (--json lines), never the bar's console
        )
    outcomes = _outcomes(inputs, job, jobs, prepare, threads, fork)  # workers fork before the bar's thread
    if progress is not None:
        progress.start()
        task = progress.add_task(verb, total=len(inputs), name=inputs[0] if inputs else "")
    try:
        for index, (path, outcome) in enumerate(outcomes):
            if as_json:
                target = getattr(job, "targets", {}).get(path)
                report.print_record(report.record(path, target, outcome, hfc_is_output=hfc_is_output))
            if isinstance(outcome, JobResult):
                results.append(outcome)
                for warning in outcome.warnings if not opts.quiet else ():
                    report.warn(f"{path}: {warning}")
                for line in report.verbose_lines(outcome, opts.verbose):
                    report.note(line)
            elif isinstance(outcome, HificError):
                print_file_error(path, outcome.message, outcome.hint)
                exit_code = exit_code or outcome.exit_code
            else:
                print_file_error(path, getattr(outcome, "strerror", None) or str(outcome))
                exit_code = exit_code or EXIT_ERROR
            if progress is not None:
                following = inputs[index + 1] if index + 1 < len(inputs) else ""
                progress.update(task, advance=1, name=following)
    finally:
        outcomes.close()  # an unfinished batch: running jobs interrupted, queued ones cancelled
        if progress is not None:
            progress.stop()
    if results and not opts.quiet and not as_json:
        report.print_summary(results, hfc_is_output=hfc_is_output)
    if results and opts.verbose:
        print_compute(results, jobs)
    failed = len(inputs) - len(results)
    if failed and len(inputs) > 1:
        print_file_error("summary", f"{failed} of {len(inputs)} files failed")
    return exit_code


def print_compute(results: Sequence[JobResult], jobs: int) -> None:
    """With -v: where the jobs ran, e.g. ``compute: cpu, 2 processes x 1 thread, OMP_WAIT_POLICY=PASSIVE``
    (thread counts as the workers saw them)."""
    devices = ", ".join(sorted({r.device for r in results if r.device})) or "?"
    counts = "/".join(str(n) for n in sorted({r.threads for r in results}))
    plural = "s" if counts != "1" else ""
    processes = f"{jobs} processes x " if jobs > 1 else ""
    policy = os.environ.get("OMP_WAIT_POLICY", "unset")
    stderr_console().print(f"compute: {devices}, {processes}{counts} thread{plural}, OMP_WAIT_POLICY={policy}")
