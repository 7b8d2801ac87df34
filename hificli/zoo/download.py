"""Getting models into the cache: download a registered checkpoint, or import a local file.

A pull streams the checkpoint into ``tmp/<name>.part`` (resumed with an HTTP Range request after an
interruption, with timeouts and retries), checks its size and the md5 the Zenodo records API publishes,
converts it to inference weights with the strict structure check, and installs the result with one
atomic rename, all under the model's lock. Any failure other than a network interruption leaves the cache
as it was. torch is imported only by the conversion step.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from hificli import __version__
from hificli.errors import ModelMismatchError, ModelUnavailableError, OutputExistsError
from hificli.zoo import cache, registry
from hificli.zoo.registry import ModelEntry

if TYPE_CHECKING:
    from hificli.weights import WeightsInfo

CHUNK = 1 << 20
USER_AGENT = f"hific/{__version__}"


@dataclass(frozen=True)
class RemoteFile:
    """A checkpoint as the records API describes it."""

    url: str
    md5: str
    size: int | None


@dataclass(frozen=True)
class InstallResult:
    """An installed model: its weights path, manifest, and whether this call installed it."""

    name: str
    weights: Path
    manifest: cache.Manifest
    changed: bool


class _Retryable(Exception):
    """A transfer failure worth another try (connection reset, timeout, 5xx, short body)."""

    def __init__(self, reason: str, progressed: bool = False) -> None:
        super().__init__(reason)
        self.progressed = progressed


def import_hint(entry_or_name: ModelEntry | str) -> str:
    """How to install a model without network access."""
    entry = registry.find(entry_or_name) if isinstance(entry_or_name, str) else entry_or_name
    name = entry.name if entry else str(entry_or_name)
    what = "it"
    if entry is not None and entry.remote_file:
        what = f"{entry.remote_file} (Zenodo record {registry.ZENODO_RECORD})"
    return f"copy {what} to this machine and run: hific models import {name} FILE"


def fetch_record(entry: ModelEntry, *, base: str | None = None, timeout: float = 30.0) -> RemoteFile:
    """Ask the records API for the md5 and size of ``entry``'s checkpoint."""
    api = registry.records_api_url(base)
    request = urllib.request.Request(api, headers={"User-Agent": USER_AGENT, "Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            record = json.loads(response.read())
    except (OSError, http.client.HTTPException, ValueError) as exc:
        message = f"cannot fetch {entry.name}: {api}: {_reason(exc)}"
        raise ModelUnavailableError(message, import_hint(entry)) from None
    files = record.get("files") if isinstance(record, dict) else None
    for item in files if isinstance(files, list) else []:
        if isinstance(item, dict) and item.get("key") == entry.remote_file:
            checksum = str(item.get("checksum", ""))
            algorithm, _, digest = checksum.partition(":")
            if algorithm != "md5" or len(digest) != 32:
                break
            size = item.get("size")
            size = size if isinstance(size, int) else None
            return RemoteFile(registry.file_url(entry, base), digest.lower(), size)
    raise ModelUnavailableError(
        f"cannot fetch {entry.name}: {api} lists no md5 checksum for {entry.remote_file}", import_hint(entry)
    )


def download(
    url: str,
    dest: Path,
    *,
    expected_size: int | None = None,
    progress: bool = False,
    label: str = "",
    retries: int = 3,
    timeout: float = 30.0,
    backoff: float = 0.5,
) -> int:
    """Stream ``url`` into ``dest``, resuming from the bytes already in ``dest``; returns its final size.

    A dropped connection, timeout or 5xx is retried up to ``retries`` times in a row (waiting
    ``backoff * 2**k`` seconds); an attempt that received data resets the count. The partial file stays
    on failure (ModelUnavailableError) so the next call resumes it.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    bar = _Bar(label or dest.name, progress)
    failures = 0
    try:
        while True:
            have = dest.stat().st_size if dest.exists() else 0
            if expected_size is not None and have >= expected_size:
                if have == expected_size:
                    return have
                dest.unlink()
                continue
            try:
                return _fetch_once(url, dest, have, timeout, bar)
            except _Retryable as exc:
                failures = 1 if exc.progressed else failures + 1
                if failures > retries:
                    raise ModelUnavailableError(f"download of {url} failed: {exc}") from None
                delay = backoff * 2 ** (failures - 1)
                bar.note(f"{exc}; retrying in {delay:.1f} s")
                time.sleep(delay)
    finally:
        bar.close()


def _fetch_once(url: str, dest: Path, have: int, timeout: float, bar: _Bar) -> int:
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # our range starts past the end: the partial file is stale
            dest.unlink()
            raise _Retryable("the server rejected the resume range; starting over", progressed=True) from None
        if exc.code in (408, 429) or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code}") from None
        raise ModelUnavailableError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (OSError, http.client.HTTPException) as exc:
        raise _Retryable(_reason(exc)) from None
    with response:
        start = _resume_offset(response, have)
        length = response.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        bar.start(start + expected if expected is not None else None, start)
        received = 0
        with open(dest, "r+b" if start else "wb") as out:
            out.seek(start)
            out.truncate()
            while True:
                try:
                    block = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise _Retryable(_reason(exc), progressed=received > 0) from None
                if not block:
                    break
                out.write(block)
                received += len(block)
                bar.advance(len(block))
    if expected is not None and received < expected:
        raise _Retryable(f"connection closed after {start + received} bytes", progressed=received > 0)
    return start + received


def _resume_offset(response: http.client.HTTPResponse, have: int) -> int:
    """Where the body goes in the file: ``have`` for a matching 206, 0 when the server sent it all."""
    if response.status != 206:
        return 0
    content_range = response.headers.get("Content-Range", "")
    try:
        first = int(content_range.split()[1].split("-")[0])
    except (IndexError, ValueError):
        raise _Retryable(f"bad Content-Range {content_range!r}") from None
    if first != have:
        raise _Retryable(f"server resumed at byte {first}, expected {have}")
    return have


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason or exc) or type(exc).__name__


def pull(
    name: str,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    half: bool = False,
    keep_original: bool = False,
    force: bool = False,
    offline: bool | None = None,
    progress: bool = True,
    retries: int = 3,
    timeout: float = 30.0,
) -> InstallResult:
    """Download, verify, convert and install a registered model (no-op when installed, unless ``force``).

    Another process pulling the same model holds its lock: we wait, then find it installed.
    Errors: UnknownModelError, ModelUnavailableError (offline, network, checksum), ModelMismatchError.
    """
    entry = registry.get(name)
    if entry.remote_file is None:
        raise ModelUnavailableError(f"{name} is built into hific; there is nothing to download")
    root = cache.cache_root(cache_dir)
    if not force and cache.is_installed(root, name):
        return _installed(root, name)
    if registry.is_offline(offline):
        raise ModelUnavailableError(
            f"{name} is not installed and hific is offline ({registry.offline_reason(offline)})",
            import_hint(entry),
        )

    def waiting() -> None:
        if progress:
            _say(f"waiting for another hific process that is fetching {name} ...")

    with cache.model_lock(root, name, on_wait=waiting):
        if not force and cache.is_installed(root, name):
            return _installed(root, name)
        cache.clean_stale(root, name)
        remote = fetch_record(entry, base=base_url, timeout=timeout)
        part = _prepare_partial(root, name, remote)
        try:
            download(
                remote.url, part, expected_size=remote.size, progress=progress, label=name,
                retries=retries, timeout=timeout,
            )
        except ModelUnavailableError as exc:
            if part.exists() and part.stat().st_size:
                exc.hint = exc.hint or f"run the pull again to resume it, or {import_hint(entry)}"
            else:
                _drop_partial(root, name)
                exc.hint = exc.hint or import_hint(entry)
            raise
        try:
            _check_download(part, remote, name)
            staging = cache.new_staging_dir(root, name)
        except BaseException:
            _drop_partial(root, name)
            raise
        try:
            if progress:
                _say(f"converting {name} to inference weights ...")
            from hificli.weights import convert_port_checkpoint

            info = convert_port_checkpoint(part, staging / cache.WEIGHTS_NAME, model_id=name, half=half)
            original = None
            if keep_original:
                os.replace(part, staging / cache.ORIGINAL_NAME)
                original = cache.ORIGINAL_NAME
            manifest = _manifest(name, info, remote.url, remote.md5, original)
            (staging / cache.MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
            cache.install(root, name, staging)
        finally:
            _drop_partial(root, name)
            shutil.rmtree(staging, ignore_errors=True)
    return InstallResult(name, cache.weights_path(root, name), manifest, True)


def _prepare_partial(root: Path, name: str, remote: RemoteFile) -> Path:
    """The partial download path; a leftover from another URL or checksum is discarded first."""
    part = cache.partial_path(root, name)
    meta_path = cache.partial_meta_path(root, name)
    wanted = {"url": remote.url, "md5": remote.md5, "size": remote.size}
    try:
        previous = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        previous = None
    if previous != wanted and part.exists():
        part.unlink()
    part.parent.mkdir(parents=True, exist_ok=True)
    meta_path.write_text(json.dumps(wanted), encoding="utf-8")
    return part


def _drop_partial(root: Path, name: str) -> None:
    for path in (cache.partial_path(root, name), cache.partial_meta_path(root, name)):
        if path.exists():
            path.unlink()


def _check_download(part: Path, remote: RemoteFile, name: str) -> None:
    size = part.stat().st_size
    if remote.size is not None and size != remote.size:
        raise ModelUnavailableError(f"{name}: downloaded {size} bytes, the record says {remote.size}")
    digest = cache.file_digest(part, "md5")
    if digest != remote.md5:
        raise ModelUnavailableError(
            f"{name}: checksum mismatch (md5 {digest}, the record says {remote.md5}); nothing was installed",
            "the download was damaged or the mirror serves another file; run the pull again",
        )


def _manifest(
    name: str, info: WeightsInfo, source_url: str, source_md5: str | None, original: str | None
) -> cache.Manifest:
    return cache.Manifest(
        name=name,
        sha256=info.sha256,
        size=info.size,
        fingerprint=info.fingerprint_hex,
        source_url=source_url,
        source_md5=source_md5,
        half=info.half,
        hific_version=__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        model_id=info.model_id,
        original=original,
    )


def _installed(root: Path, name: str) -> InstallResult:
    manifest = cache.read_manifest(root, name)
    assert manifest is not None
    return InstallResult(name, cache.weights_path(root, name), manifest, False)


def find_importable(source: Path) -> Path:
    """The file to import from ``source``: the file itself, or in a directory (training run) its
    ``weights.safetensors``, else the newest ``*.safetensors``, else the newest ``*.pt`` below it."""
    if source.is_file():
        return source
    if not source.is_dir():
        raise ModelUnavailableError(f"{source}: no such file or directory")
    if (source / cache.WEIGHTS_NAME).is_file():
        return source / cache.WEIGHTS_NAME
    for pattern in ("*.safetensors", "*.pt"):
        found = [p for p in source.rglob(pattern) if p.is_file()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
    raise ModelUnavailableError(f"{source}: no .safetensors weights or .pt checkpoint in this directory")


def import_model(
    name: str,
    source: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    half: bool = False,
    keep_original: bool = False,
    force: bool = False,
) -> InstallResult:
    """Install weights obtained some other way under ``name`` (no network).

    ``source``: a port-layout .pt checkpoint (converted, structure-checked), hific .safetensors inference
    weights (loaded strictly, stored under ``name``), or a training run directory holding one of them.
    Any registered name except the built-in model, or a new name, may be used.
    """
    registry.check_name(name)
    entry = registry.find(name)
    if entry is not None and entry.embedded:
        raise ModelUnavailableError(f"{name} is built into hific and cannot be replaced; pick another name")
    src = find_importable(Path(source))
    root = cache.cache_root(cache_dir)
    with cache.model_lock(root, name):
        if cache.is_installed(root, name) and not force:
            raise OutputExistsError(f"{name} is already installed", "use --force to replace it")
        cache.clean_stale(root, name)
        from hificli import weights

        staging = cache.new_staging_dir(root, name)
        try:
            target = staging / cache.WEIGHTS_NAME
            source_md5 = cache.file_digest(src, "md5")
            if weights.is_weights_file(src):
                info = _import_weights(src, target, name, half)
            elif weights.is_port_checkpoint(src):
                info = weights.convert_port_checkpoint(src, target, model_id=name, half=half)
            else:
                raise ModelMismatchError(
                    f"{src}: neither hific weights (.safetensors) nor a checkpoint in the port's layout (.pt)"
                )
            original = None
            if keep_original:
                original = cache.ORIGINAL_NAME if src.suffix != ".safetensors" else "original.safetensors"
                shutil.copyfile(src, staging / original)
            manifest = _manifest(name, info, src.resolve().as_uri(), source_md5, original)
            (staging / cache.MANIFEST_NAME).write_text(manifest.to_json(), encoding="utf-8")
            cache.install(root, name, staging)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return InstallResult(name, cache.weights_path(root, name), manifest, True)


def _import_weights(src: Path, target: Path, name: str, half: bool) -> WeightsInfo:
    """Strictly load hific weights; copy them as they are, or re-save under ``name`` / in fp16."""
    from hificli import weights

    model, z_table, y_table, info = weights.load_weights(src)
    if info.model_id == name and (info.half or not half):
        shutil.copyfile(src, target)
        return weights.read_weights_info(target, with_hash=True)
    return weights.save_inference_weights(
        model, target, model_id=name, half=half or info.half, meta=info.meta, tables=(z_table, y_table)
    )


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class _Bar:
    """Download progress on stderr: a rich bar (bytes, speed, ETA) on a terminal, one line otherwise."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self._progress = None
        self._task = None
        self._announced = False

    def start(self, total: int | None, completed: int) -> None:
        if not self.enabled:
            return
        from rich.console import Console

        console = Console(stderr=True, highlight=False)
        if not console.is_terminal:
            if not self._announced:
                size = f" ({cache.human_size(total)})" if total else ""
                resumed = f", resuming at {cache.human_size(completed)}" if completed else ""
                _say(f"downloading {self.label}{size}{resumed} ...")
                self._announced = True
            return
        if self._progress is None:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), DownloadColumn(),
                TransferSpeedColumn(), TimeRemainingColumn(), console=console, transient=False,
            )
            self._progress.start()
            self._task = self._progress.add_task(self.label, total=total, completed=completed)
        else:
            self._progress.update(self._task, total=total, completed=completed)

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        if self._progress is not None:
            self._progress.console.print(f"{self.label}: {message}")
        else:
            _say(f"{self.label}: {message}")

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
