"""`hific eval`: rate-distortion-perception of hific models against classical codecs."""

from __future__ import annotations

import sys
from typing import Any

import click

from hificli.cli.common import settings, stderr_console, verbosity_options
from hificli.cli.deviceopts import device_options
from hificli.cli.modelopts import model_options

BASELINES_HELP = "jpeg, jpeg444, webp, avif, jxl, jpeg2000, heic"  # tests check it lists every baseline


def _notice(message: str) -> None:
    if not settings().quiet:
        stderr_console().print(f"[yellow]notice[/]: {message}")


def _parse_baselines(text: str) -> list[str]:
    from hificli.eval.baselines import BASELINES

    if text.strip().lower() in ("", "none"):
        return []
    if text.strip().lower() == "all":
        return list(BASELINES)
    keys = [k.strip().lower() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in BASELINES]
    if unknown:
        raise click.BadParameter(
            f"unknown baseline(s) {', '.join(unknown)}; choose from {', '.join(BASELINES)}, all, none",
            param_hint="--baselines",
        )
    return list(dict.fromkeys(keys))


def _load_models(
    names: tuple[str, ...], no_hific: bool, offline: bool | None, cache_dir: str | None,
    device: str = "cpu", half: bool = False,
):
    """Load each model once here (failing early); labels are model ids, made unique."""
    import os

    from hificli.api import load_model
    from hificli.errors import ModelError

    if no_hific:
        return {}, {}
    implicit = not names
    loaded: dict[str, Any] = {}
    info: dict[str, dict[str, Any]] = {}
    progress = not settings().quiet and os.isatty(2)
    for name in names or (None,):
        try:
            model = load_model(name, offline=offline, cache_dir=cache_dir, progress=progress, device=device,
                               half=half)
        except ModelError as exc:
            if implicit:
                exc.hint = "choose a model with -m NAME|PATH, or --no-hific to evaluate the baselines only"
            raise
        label, n = model.model_id, 2
        while label in loaded:
            label, n = f"{model.model_id}#{n}", n + 1
        loaded[label] = model
        info[label] = {
            "name": name if name is not None else model.model_id,
            "model_id": model.model_id,
            "fingerprint": model.fingerprint.hex(),
        }
    return loaded, info


def _realism_values(value: str | None) -> tuple[float, ...]:
    """Parse ``--realism R,R,...`` (usage error unless every value is in (0, 1])."""
    if value is None:
        return ()
    try:
        values = tuple(float(v) for v in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated numbers in (0, 1]") from None
    if any(not 0.0 < v <= 1.0 for v in values):
        raise click.BadParameter("realism values must be in (0, 1] (0 is the model's own decoder, always run)")
    return values


def _realism_labels(
    loaded: dict[str, Any], info: dict[str, dict[str, Any]], values: tuple[float, ...],
) -> tuple[tuple[str, str, float], ...]:
    """(label, model label, realism) per model and value; adds the labels to ``info``. A model without a
    realism decoder is refused (hificli.errors.ModelMismatchError)."""
    from hificli.errors import ModelMismatchError

    labels = []
    for label, model in list(loaded.items()):
        if not values:
            break
        if not model.has_realism:
            raise ModelMismatchError(f"--realism: model {label!r} has no realism decoder",
                                     "train one with hific train --stage realism --init MODEL")
        for value in values:
            name = f"{label}@r{value:g}"
            labels.append((name, label, value))
            info[name] = {**info[label], "realism": value}
    return tuple(labels)


def _check_images(paths: list[str]) -> None:
    """Open every image's header before any work, so a bad input fails fast (exit 3)."""
    from PIL import Image, UnidentifiedImageError

    from hificli.errors import BadImageError

    for path in paths:
        try:
            with Image.open(path) as image:
                image.size  # noqa: B018 (reading the header is the check)
        except FileNotFoundError:
            raise BadImageError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise BadImageError(f"{path}: is a directory") from None
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise BadImageError(f"{path}: not an image Pillow can read ({exc})") from None


def _qualities(value: str | None) -> tuple[float, ...] | None:
    """Parse ``--qualities 10,30,50`` (sorted, unique, each in 0-100; usage error otherwise)."""
    if value is None:
        return None
    try:
        values = sorted({float(v) for v in value.split(",")})
    except ValueError:
        raise click.BadParameter(f"{value!r}: expected comma-separated numbers") from None
    if len(values) < 2 or values[0] < 0 or values[-1] > 100:
        raise click.BadParameter("need 2 or more qualities in 0-100")
    return tuple(values)


@click.command("eval")
@click.argument("inputs", nargs=-1, required=True, metavar="DIR_OR_FILES...")
@click.option("-m", "--model", "models", multiple=True, metavar="NAME|PATH",
              help="hific model to evaluate (repeatable; default: the default model).")
@click.option("--no-hific", is_flag=True, help="Evaluate the baselines only.")
@click.option("-b", "--baselines", default="all", show_default=True, metavar="LIST",
              help=f"Comma-separated classical codecs: {BASELINES_HELP}; or all, none.")
@click.option("--lpips", "lpips_kind", default="auto", show_default=True, metavar="KIND",
              help="LPIPS network: stlpips-alex, stlpips-vgg, lpips-alex (weights named by "
                   "$HIFIC_LPIPS_WEIGHTS), none; auto: lpips-alex when its weights are given, "
                   "else stlpips-alex.")
@click.option("--sweep-lpips/--no-sweep-lpips", default=True, show_default=True,
              help="Also measure LPIPS on every point of the baselines' quality sweeps; --no-sweep-lpips "
                   "measures it only for hific and the bpp-matched baselines (much faster on CPU; no "
                   "LPIPS BD-rate then).")
@click.option("-o", "--output", metavar="results.json", help="Write the JSON report (CompressAI schema).")
@click.option("--compressai-dir", metavar="DIR",
              help="Also write one CompressAI results file per codec into DIR.")
@click.option("--plot", metavar="rd.png",
              help="Plot bpp vs PSNR, MS-SSIM and LPIPS (.png, .pdf, .svg; needs matplotlib).")
@click.option("--save-images", metavar="DIR",
              help="Write hific's and each baseline's reconstructions at matched bpp into DIR/<image>/.")
@click.option("-j", "--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Images evaluated in parallel (processes).")
@click.option("--curves", is_flag=True, help="Also print each baseline's (and variable-rate model's) averaged sweep.")
@click.option("--qualities", callback=lambda ctx, param, value: _qualities(value), metavar="Q,Q,...",
              help="Qualities a variable-rate model is swept over for its curve and BD-rates "
                   "[0,20,40,60,80,100].")
@click.option("--realism", callback=lambda ctx, param, value: _realism_values(value), metavar="R,R,...",
              help="Also decode each model's files with its realism decoder at these realism values in (0, 1] "
                   "(label MODEL@rR; same files, so same bpp); models without one are refused.")
@click.option("-f", "--force", is_flag=True, help="Overwrite existing output files.")
@device_options
@model_options
@verbosity_options
def command(
    inputs: tuple[str, ...],
    models: tuple[str, ...],
    no_hific: bool,
    baselines: str,
    lpips_kind: str,
    sweep_lpips: bool,
    output: str | None,
    compressai_dir: str | None,
    plot: str | None,
    save_images: str | None,
    jobs: int,
    curves: bool,
    qualities: tuple[float, ...] | None,
    realism: tuple[float, ...],
    force: bool,
    offline: bool | None,
    cache_dir: str | None,
    device: str,
    half: bool,
    threads: int | None,
) -> None:
    """Rate-distortion-perception report: hific models against classical codecs.

    \b
    For every image (directories: their image files, not recursive) and codec: bpp from the real
    encoded size, PSNR (RGB), MS-SSIM and LPIPS. Baselines run a quality sweep and are matched to each
    hific model's bpp per image (binary search on quality). A variable-rate model is also swept over
    --qualities, and its BD-rates come from that curve (a fixed-rate model has one point per image).
    Prints per-image results, mean and median, and BD-rates (per image, then mean / median); -o
    writes everything as JSON.
    """
    from hificli import fileio
    from hificli.eval import baselines as bl
    from hificli.eval import runner

    if models and no_hific:
        raise click.UsageError("-m and --no-hific exclude each other")
    keys = _parse_baselines(baselines)
    if save_images and no_hific:
        raise click.UsageError("--save-images compares with hific at matched bpp; it needs a model")
    paths = runner.find_images(inputs)
    if not paths:
        raise click.UsageError("no images found in " + ", ".join(inputs))
    if plot:
        from hificli.eval.plot import check_plot_path, require_matplotlib

        check_plot_path(plot)
        require_matplotlib()
    for target in (output, plot):
        if target:
            fileio.check_writable(target, force)
    _check_images(paths)

    skipped: dict[str, str] = {}
    for key in list(keys):
        reason = bl.unavailable_reason(key)
        if reason:
            skipped[key] = reason
            keys.remove(key)
            _notice(f"skipping {key}: {reason}")

    from hificli.device import check_device

    check_device(device)
    loaded, model_info = _load_models(models, no_hific, offline, cache_dir, device, half)
    device = next(iter(loaded.values())).device if loaded else "cpu"  # auto, resolved once
    realism_labels = _realism_labels(loaded, model_info, realism)
    if compressai_dir:
        for stem in [runner.safe_name(label) for label in model_info] + keys:
            fileio.check_writable(f"{compressai_dir}/{stem}.json", force)

    from hificli.eval.metrics import load_lpips

    lpips_metric, lpips_note = load_lpips(lpips_kind)
    if lpips_metric is None and lpips_kind not in ("auto", "none"):
        from hificli.errors import HificError

        raise HificError(f"--lpips {lpips_kind}: {lpips_note}", "use --lpips auto or --lpips none")
    if lpips_metric is None and lpips_kind == "auto":
        _notice(f"LPIPS will be null: {lpips_note}")

    spec = runner.EvalSpec(
        models=tuple((label, model_info[label]["name"]) for label in loaded),
        realism=realism_labels,
        baselines=tuple(keys),
        lpips=lpips_metric.kind if lpips_metric is not None else "none",
        sweep_lpips=sweep_lpips,
        offline=offline,
        cache_dir=cache_dir,
        save_dir=save_images,
        device=device,
        half=half,
        threads=threads,
        qualities=qualities or runner.DEFAULT_EVAL_QUALITIES,
    )
    image_jobs = runner.image_jobs(paths)
    if save_images and not force:
        for job in image_jobs:
            for path in runner.saved_files(spec, job).values():
                fileio.check_writable(path, force)

    evaluator = runner.Evaluator(spec, loaded, lpips_metric) if jobs == 1 else None
    results = _run(image_jobs, spec, jobs, evaluator)
    failures = _report_problems(results)

    from hificli.eval.report import build_report, compressai_files, print_tables, to_json

    report = build_report(
        results,
        models=model_info,
        baselines=keys,
        skipped=skipped,
        lpips_note=lpips_note,
        lpips_kind=lpips_metric.kind if lpips_metric is not None else None,
    )
    if output:
        fileio.write_output(output, to_json(report), force)
    if compressai_dir:
        from pathlib import Path

        Path(compressai_dir).mkdir(parents=True, exist_ok=True)
        for stem, data in compressai_files(report).items():
            fileio.write_output(f"{compressai_dir}/{runner.safe_name(stem)}.json", data, force)
    if plot:
        from hificli.eval.plot import write_plot

        write_plot(report, plot, force=force)
    if not settings().quiet:
        from rich.console import Console

        console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)
        print_tables(report, console, curves=curves or settings().verbose > 0)
    if failures:
        from hificli.errors import EXIT_ERROR

        sys.exit(EXIT_ERROR)


def _run(image_jobs: list, spec: Any, jobs: int, evaluator: Any) -> list:
    from hificli.eval.runner import run_eval

    if settings().quiet or not sys.stderr.isatty():
        return run_eval(image_jobs, spec, workers=jobs, evaluator=evaluator)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=stderr_console(), transient=True,
    ) as progress:
        task = progress.add_task("eval", total=len(image_jobs))
        return run_eval(
            image_jobs, spec, workers=jobs, evaluator=evaluator, on_result=lambda i, r: progress.advance(task)
        )


def _report_problems(results: list) -> int:
    """Print each image's warnings and codec failures on stderr; return the number of failures."""
    from hificli.cli.common import print_file_error

    failures = 0
    for result in results:
        for warning in result.warnings:
            if not settings().quiet:
                stderr_console().print(f"[yellow]warning[/]: {result.path}: {warning}")
        for codec, message in result.errors.items():
            print_file_error(result.path, f"{codec} failed: {message}")
            failures += 1
    return failures
