"""`hific models`: list, pull, import, verify and remove pretrained models (a shell over hificli.zoo).

Listing, ``path`` and ``rm`` are offline and never import torch; ``pull`` and ``import`` convert
checkpoints and import it then, as ``verify`` does to re-hash the models shipped in the package.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hificli.cli.common import print_error, settings
from hificli.errors import HificError

F = TypeVar("F", bound=Callable[..., Any])
_CACHE_KEY = "hific.models.cache_dir"


def _cache_option(func: F) -> F:
    return click.option(
        "--cache-dir",
        type=click.Path(file_okay=False, path_type=Path),
        default=None,
        help="Model cache directory (default: $HIFIC_CACHE_DIR, else the user cache directory).",
    )(func)


def _root(cache_dir: Path | None) -> Path:
    """The cache root: the subcommand's --cache-dir, else the group's, else env/platform default."""
    from hificli.zoo.cache import cache_root

    ctx = click.get_current_context()
    return cache_root(cache_dir or ctx.meta.get(_CACHE_KEY))


def _info(message: str) -> None:
    if not settings().quiet:
        sys.stderr.write(message + "\n")


def _human(n: int) -> str:
    from hificli.zoo.cache import human_size

    return human_size(n)


def _exit_for(failures: list[int]) -> None:
    if failures:
        click.get_current_context().exit(max(failures))


@click.group("models", invoke_without_command=True)
@_cache_option
@click.option("--json", "as_json", is_flag=True, help="With no subcommand: print the list as JSON.")
@click.pass_context
def command(ctx: click.Context, cache_dir: Path | None, as_json: bool) -> None:
    """Pretrained models: list them (the default), pull, import, verify, rm, path.

    \b
    Registered models are downloaded on first use (about 2.2 GB each) into the cache and converted to
    inference weights. On machines without network access, copy the checkpoint over and run
    'hific models import NAME FILE'.
    \b
    Environment: HIFIC_CACHE_DIR (cache location), HIFIC_MODEL_BASE_URL (mirror of https://zenodo.org),
    HIFIC_OFFLINE=1 (never download).
    """
    ctx.meta[_CACHE_KEY] = cache_dir
    if ctx.invoked_subcommand is None:
        _print_list(_root(None), as_json)


@command.command("list")
@_cache_option
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def list_command(cache_dir: Path | None, as_json: bool) -> None:
    """List known models: target bpp, status, size on disk, source.

    Offline and fast (the same as plain 'hific models')."""
    _print_list(_root(cache_dir), as_json)


def _rows(root: Path) -> list[dict[str, Any]]:
    from hificli.zoo import cache, registry

    rows = []
    for entry in registry.MODELS:
        row: dict[str, Any] = {
            "name": entry.name,
            "target_bpp": entry.target_bpp,
            "rate_range": list(entry.rate_range) if entry.rate_range else None,
            "description": entry.description,
            "source": entry.source,
            "license": entry.license,
            "url": registry.file_url(entry) if entry.remote_file else None,
            "download_size": entry.approx_download or None,
        }
        if entry.embedded:
            path = registry.embedded_path(entry)
            row.update(
                status="built in" if path else "not built yet",
                installed=path is not None,
                size=path.stat().st_size if path else 0,
                path=str(path) if path else None,
                half=None,
            )
        else:
            row.update(_cache_state(root, entry.name, "not installed"))
        rows.append(row)
    for name in cache.installed_names(root):
        if registry.find(name) is None:
            manifest = cache.read_manifest(root, name)
            row = {
                "name": name,
                "target_bpp": None,
                "rate_range": None,
                "description": "imported with 'hific models import'",
                "source": manifest.source_url if manifest else "",
                "license": "",
                "url": None,
                "download_size": None,
            }
            row.update(_cache_state(root, name, "not installed"))
            rows.append(row)
    return rows


def _cache_state(root: Path, name: str, absent: str) -> dict[str, Any]:
    from hificli.zoo import cache

    manifest = cache.read_manifest(root, name) if cache.is_installed(root, name) else None
    if manifest is None:
        return {"status": absent, "installed": False, "size": 0, "path": None, "half": None}
    return {
        "status": "installed (fp16)" if manifest.half else "installed",
        "installed": True,
        "size": cache.size_on_disk(root, name),
        "path": str(cache.weights_path(root, name)),
        "half": manifest.half,
        "fingerprint": manifest.fingerprint,
    }


def _rate(row: dict[str, Any]) -> str:
    """What a model gives on photos: its measured range, else its training target."""
    if row["rate_range"]:
        low, high = row["rate_range"]
        return f"{low:.2f}-{high:.2f} bpp"
    if row["target_bpp"] is not None:
        return f"~{row['target_bpp']:.2f} bpp (target)"
    return "-"


def _print_list(root: Path, as_json: bool) -> None:
    rows = _rows(root)
    if as_json:
        click.echo(json.dumps({"cache_dir": str(root), "models": rows}, indent=2))
        return
    header = ("NAME", "RATE ON PHOTOS", "STATUS", "ON DISK", "DOWNLOAD", "SOURCE")
    table = [header]
    for row in rows:
        table.append(
            (
                row["name"],
                _rate(row),
                row["status"],
                _human(row["size"]) if row["size"] else "-",
                f"~{_human(row['download_size'])}" if row["download_size"] and not row["installed"] else "-",
                row["source"],
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header) - 1)]
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line[:-1], widths, strict=True)]
        click.echo("  ".join([*cells, line[-1]]).rstrip())
    if settings().verbose:
        click.echo("")
        for row in rows:
            licence = f"; licence {row['license']}" if row["license"] else ""
            click.echo(f"{row['name']}: {row['description']}{licence}")
    click.echo(f"\ncache: {root}")


@command.command("pull")
@click.argument("names", nargs=-1, required=True)
@click.option("--half", is_flag=True, help="Store fp16 weights (half the size on disk).")
@click.option("--keep-original", is_flag=True, help="Keep the downloaded checkpoint as original.pt.")
@click.option("-f", "--force", is_flag=True, help="Download and install again even if installed.")
@_cache_option
def pull_command(
    names: tuple[str, ...], half: bool, keep_original: bool, force: bool, cache_dir: Path | None
) -> None:
    """Download and install registered models (~2.2 GB each).

    The transfer resumes after an interruption; the file is checked against the md5 the Zenodo
    record publishes and converted to inference weights before anything is installed.
    """
    from hificli.zoo import cache
    from hificli.zoo.download import pull

    root = _root(cache_dir)
    failures = []
    for name in names:
        try:
            result = pull(
                name, cache_dir=root, half=half, keep_original=keep_original, force=force,
                progress=not settings().quiet,
            )
        except HificError as exc:
            print_error(exc.message, exc.hint)
            failures.append(exc.exit_code)
            continue
        if result.changed:
            _info(f"{name}: installed {_human(cache.size_on_disk(root, name))} at {result.weights}")
        else:
            _info(f"{name}: already installed at {result.weights} (use --force to fetch it again)")
    _exit_for(failures)


@command.command("import")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, path_type=Path))
@click.option("--half", is_flag=True, help="Store fp16 weights (half the size on disk).")
@click.option("--keep-original", is_flag=True, help="Keep a copy of FILE next to the weights.")
@click.option("-f", "--force", is_flag=True, help="Replace an installed model of that name.")
@_cache_option
def import_command(
    name: str, file: Path, half: bool, keep_original: bool, force: bool, cache_dir: Path | None
) -> None:
    """Install FILE as model NAME without network access.

    FILE is a checkpoint in the earlier PyTorch port's layout (.pt, e.g. a Google Drive copy of
    hific_med.pt), hific inference weights (.safetensors), or a training run directory holding them.
    """
    from hificli.zoo import cache
    from hificli.zoo.download import import_model

    root = _root(cache_dir)
    result = import_model(name, file, cache_dir=root, half=half, keep_original=keep_original, force=force)
    _info(f"{name}: installed {_human(cache.size_on_disk(root, name))} at {result.weights}")


@command.command("rm")
@click.argument("names", nargs=-1, required=True)
@_cache_option
def rm_command(names: tuple[str, ...], cache_dir: Path | None) -> None:
    """Remove installed models (and partial downloads) from the cache."""
    from hificli.errors import ModelError, UnknownModelError
    from hificli.zoo import cache, registry

    root = _root(cache_dir)
    failures = []
    for name in names:
        try:
            registry.check_name(name)
            entry = registry.find(name)
            if entry is not None and entry.embedded:
                raise ModelError(f"{name} is built into hific and cannot be removed")
            if entry is None and not cache.model_dir(root, name).exists():
                raise UnknownModelError(f"{name} is not installed and not a known model")
            with cache.model_lock(root, name):
                removed = cache.remove(root, name)
        except HificError as exc:
            print_error(exc.message, exc.hint)
            failures.append(exc.exit_code)
            continue
        _info(f"{name}: removed" if removed else f"{name}: not installed, nothing to remove")
    _exit_for(failures)


@command.command("path")
@click.argument("name", required=False)
@_cache_option
def path_command(name: str | None, cache_dir: Path | None) -> None:
    """Print the cache directory, or the weights file of model NAME."""
    from hificli.errors import ModelUnavailableError, UnknownModelError
    from hificli.zoo import cache, registry

    root = _root(cache_dir)
    if name is None:
        click.echo(str(root))
        return
    entry = registry.find(name)
    if entry is not None and entry.embedded:
        path = registry.embedded_path(entry)
        if path is None:
            raise ModelUnavailableError(f"the built-in model {name} is not built yet in this hific")
        click.echo(str(path))
        return
    registry.check_name(name)
    if cache.is_installed(root, name):
        click.echo(str(cache.weights_path(root, name)))
        return
    if entry is None:
        raise UnknownModelError(f"unknown model {name!r}", f"known models: {', '.join(registry.names())}")
    raise ModelUnavailableError(f"{name} is not installed", f"run: hific models pull {name}")


@command.command("verify")
@click.argument("names", nargs=-1)
@_cache_option
def verify_command(names: tuple[str, ...], cache_dir: Path | None) -> None:
    """Re-hash models (default: the built-in ones and every installed one).

    Installed models are checked against their manifests, built-in ones against the fingerprint their
    weights file states."""
    from hificli.errors import ModelMismatchError
    from hificli.zoo import cache, registry

    root = _root(cache_dir)
    targets = list(names) or [e.name for e in registry.MODELS if e.embedded] + cache.installed_names(root)
    failures = []
    for name in targets:
        try:
            _verify_one(root, name)
        except HificError as exc:
            if isinstance(exc, ModelMismatchError):
                click.echo(f"FAILED  {name}")
            print_error(exc.message, exc.hint)
            failures.append(exc.exit_code)
            continue
        click.echo(f"ok      {name}")
    _exit_for(failures)


def _verify_one(root: Path, name: str) -> None:
    """Check one model; a HificError says what is wrong and what to do."""
    from hificli import weights
    from hificli.errors import ModelMismatchError, ModelUnavailableError, UnknownModelError
    from hificli.zoo import cache, registry

    entry = registry.find(name)
    if entry is not None and entry.embedded:
        path = registry.embedded_path(entry)
        if path is None:
            raise ModelUnavailableError(f"{name}: the built-in model is missing from this installation")
        try:
            weights.check_fingerprint(path)
        except ModelMismatchError as exc:
            raise ModelMismatchError(f"{name}: {exc.message}", "the package is damaged: reinstall hific") from None
        return
    registry.check_name(name)
    if not cache.model_dir(root, name).exists():
        if entry is None:
            known = ", ".join(registry.names())
            raise UnknownModelError(f"{name}: not installed and not a known model", f"known models: {known}")
        raise ModelUnavailableError(f"{name}: not installed", f"run: hific models pull {name}")
    result = cache.verify(root, name)
    if not result.ok:
        hint = f"reinstall it: hific models pull --force {name}"
        raise ModelMismatchError(f"{name}: {'; '.join(result.problems)}", hint)
