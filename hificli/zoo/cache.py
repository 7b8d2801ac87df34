"""The model cache on disk: layout, manifests, per-model locks, atomic install and removal (no torch).

Layout under the cache root::

    models/<name>/weights.safetensors   inference weights (what resolve_model returns)
    models/<name>/manifest.json         name, sha256/size of the weights, fingerprint, source, ...
    models/<name>/original.pt           the downloaded checkpoint, only with --keep-original
    tmp/                                partial downloads (kept for resuming) and staging folders
    locks/<name>.lock                   flock'ed while a process installs or removes <name>
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hificli.fileio import process_alive
from hificli.zoo.registry import check_name

CACHE_ENV = "HIFIC_CACHE_DIR"
WEIGHTS_NAME = "weights.safetensors"
MANIFEST_NAME = "manifest.json"
ORIGINAL_NAME = "original.pt"
MANIFEST_VERSION = 1


def cache_root(override: str | os.PathLike[str] | None = None) -> Path:
    """The cache directory: ``override`` (``--cache-dir``), else ``HIFIC_CACHE_DIR``, else the user cache
    directory for ``hific`` (platformdirs). Not created here."""
    if override:
        return Path(override).expanduser()
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("hific", appauthor=False))


def models_dir(root: Path) -> Path:
    return root / "models"


def tmp_dir(root: Path) -> Path:
    return root / "tmp"


def model_dir(root: Path, name: str) -> Path:
    return models_dir(root) / check_name(name)


def weights_path(root: Path, name: str) -> Path:
    return model_dir(root, name) / WEIGHTS_NAME


def partial_path(root: Path, name: str) -> Path:
    """Where the download of ``name`` accumulates; kept after an interruption so the next pull resumes."""
    return tmp_dir(root) / f"{check_name(name)}.part"


@dataclass
class Manifest:
    """What was installed, written next to the weights as manifest.json.

    sha256/size describe weights.safetensors; source_md5 is the md5 of the checkpoint it came from.
    """

    name: str
    sha256: str
    size: int
    fingerprint: str
    source_url: str
    source_md5: str | None
    half: bool
    hific_version: str
    created: str
    model_id: str = ""
    original: str | None = None  # file name of the kept original checkpoint, if any
    version: int = MANIFEST_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("manifest is not a JSON object")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def read_manifest(root: Path, name: str) -> Manifest | None:
    """The manifest of an installed model; None when absent or unreadable."""
    path = model_dir(root, name) / MANIFEST_NAME
    try:
        return Manifest.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError, RecursionError):  # RecursionError: absurdly nested JSON
        return None


def is_installed(root: Path, name: str) -> bool:
    """True when ``name`` has both its weights and a readable manifest in the cache."""
    return weights_path(root, name).is_file() and read_manifest(root, name) is not None


def installed_names(root: Path) -> list[str]:
    """Names of all models installed in the cache, sorted."""
    base = models_dir(root)
    if not base.is_dir():
        return []
    out = []
    for child in sorted(base.iterdir()):
        try:
            if child.is_dir() and is_installed(root, child.name):
                out.append(child.name)
        except Exception:  # a stray folder with an odd name is not a model
            continue
    return out


def size_on_disk(root: Path, name: str) -> int:
    """Bytes used by an installed model's folder (0 when not installed)."""
    folder = model_dir(root, name)
    if not folder.is_dir():
        return 0
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def file_digest(path: Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def model_lock(root: Path, name: str, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an exclusive per-model lock (``locks/<name>.lock``) across processes.

    ``on_wait``: optional callable run once if another process holds the lock and we have to wait.
    The holder deletes the lock file when it is done (no lock files stay behind, whatever happened);
    a waiter that then holds the lock of a deleted file locks the current one instead.
    """
    lock_dir = root / "locks"
    path = lock_dir / f"{check_name(name)}.lock"
    while True:
        lock_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            _acquire(fd, on_wait)
        except BaseException:
            os.close(fd)
            raise
        if _is_current(fd, path):
            break
        os.close(fd)
        on_wait = None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):  # Windows cannot delete an open file: it stays
            os.unlink(path)
        os.close(fd)  # closing the descriptor releases the lock


def _is_current(fd: int, path: Path) -> bool:
    """True if the locked descriptor is still the file at ``path`` (not one its holder deleted)."""
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _acquire(fd: int, on_wait: Callable[[], None] | None) -> None:
    try:
        import fcntl
    except ImportError:  # Windows: byte-range lock on the first byte, polled
        import msvcrt

        waited = False
        while True:
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if not waited and on_wait is not None:
                    on_wait()
                waited = True
                time.sleep(0.2)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if on_wait is not None:
            on_wait()
        fcntl.flock(fd, fcntl.LOCK_EX)


def new_staging_dir(root: Path, name: str) -> Path:
    """A fresh, uniquely named folder in the cache's tmp area (same filesystem as models/)."""
    path = tmp_dir(root) / f"{check_name(name)}.{os.getpid()}.{uuid.uuid4().hex[:8]}.staging"
    path.mkdir(parents=True)
    return path


def install(root: Path, name: str, staging: Path) -> Path:
    """Move a complete staging folder into place as ``models/<name>`` (replacing an older install).

    The rename is atomic: readers see either the old folder, no folder, or the new one, never a half
    written one. Call it while holding :func:`model_lock`.
    """
    target = model_dir(root, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(target):
        _discard(root, target)
    os.replace(staging, target)
    return target


def remove(root: Path, name: str) -> bool:
    """Delete an installed model and any partial download of it; True if something was removed.

    Call it while holding :func:`model_lock`.
    """
    removed = False
    target = model_dir(root, name)
    if os.path.lexists(target):  # a link (even a dangling one) is removed, not followed
        _discard(root, target)
        removed = True
    clean_stale(root, name)
    for stray in (partial_path(root, name), partial_meta_path(root, name)):
        if stray.exists():
            stray.unlink()
            removed = True
    return removed


def partial_meta_path(root: Path, name: str) -> Path:
    """Sidecar of the partial download: which URL and checksum the bytes belong to."""
    return tmp_dir(root) / f"{check_name(name)}.part.json"


_LEFTOVER_RE = re.compile(r"^(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.(staging|trash)$")


def clean_stale(root: Path, name: str) -> list[str]:
    """Delete staging/trash folders left by killed processes: every one of ``name`` (call it holding
    the lock of ``name``: no live process stages it then), and those of other names whose process is
    gone (a killed ``hific models import`` of any name is cleaned by the next install). Partial
    downloads are kept (they resume). Returns the names deleted."""
    tmp = tmp_dir(root)
    if not tmp.is_dir():
        return []
    removed = []
    for child in tmp.iterdir():
        match = _LEFTOVER_RE.match(child.name)
        if match and (match["name"] == check_name(name) or not process_alive(int(match["pid"]))):
            _delete(child)
            removed.append(child.name)
    return removed


def _delete(path: Path) -> None:
    """Remove a file, a folder tree or a link (never what a link points to)."""
    if path.is_symlink() or not path.is_dir():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def human_size(n: int) -> str:
    """Decimal byte size with one decimal: 742.3 MB, 2.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def _discard(root: Path, folder: Path) -> None:
    """Move a folder out of the way atomically, then delete it."""
    trash = tmp_dir(root) / f"{folder.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.trash"
    trash.parent.mkdir(parents=True, exist_ok=True)
    os.replace(folder, trash)
    _delete(trash)  # a models/<name> that is a link: the link goes, what it points to stays


@dataclass
class VerifyResult:
    """Outcome of re-hashing one installed model."""

    name: str
    ok: bool
    problems: list[str]


def verify(root: Path, name: str) -> VerifyResult:
    """Re-hash an installed model's files against its manifest (size, sha256; md5 of a kept original)."""
    manifest = read_manifest(root, name)
    weights = weights_path(root, name)
    if manifest is None:
        return VerifyResult(name, False, ["manifest.json is missing or unreadable"])
    problems = []
    if not weights.is_file():
        problems.append(f"{WEIGHTS_NAME} is missing")
    else:
        size = weights.stat().st_size
        if size != manifest.size:
            problems.append(f"{WEIGHTS_NAME} has {size} bytes, manifest says {manifest.size}")
        digest = file_digest(weights)
        if digest != manifest.sha256:
            problems.append(f"{WEIGHTS_NAME} sha256 {digest[:12]}... differs from {manifest.sha256[:12]}...")
    if manifest.original and manifest.source_md5:
        original = model_dir(root, name) / manifest.original
        if not original.is_file():
            problems.append(f"{manifest.original} is missing")
        elif file_digest(original, "md5") != manifest.source_md5:
            problems.append(f"{manifest.original} md5 does not match the source checksum")
    return VerifyResult(name, not problems, problems)
