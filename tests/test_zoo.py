"""hificli.zoo: registry, cache, downloads (against a loopback server), pull/import and resolve_model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from http_fixtures import ModelServer

from hificli.errors import (
    ModelMismatchError,
    ModelUnavailableError,
    OutputExistsError,
    UnknownModelError,
)
from hificli.zoo import cache, download, registry
from hificli.zoo.resolve import resolve_model

MED = "hific_med.pt"


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, online, with the model base URL pointing nowhere until a server is set."""
    root = tmp_path / "cache"
    monkeypatch.setenv("HIFIC_CACHE_DIR", str(root))
    monkeypatch.setenv("HIFIC_OFFLINE", "0")
    monkeypatch.setenv("HIFIC_MODEL_BASE_URL", "http://127.0.0.1:9")
    return root


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    with ModelServer() as srv:
        monkeypatch.setenv("HIFIC_MODEL_BASE_URL", srv.base_url)
        yield srv


@pytest.fixture(scope="module")
def port_ckpt(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Bytes of a tiny checkpoint in the earlier port's exact layout (regime med)."""
    from port_fixtures import make_port_checkpoint

    path = tmp_path_factory.mktemp("port") / "hific_med.pt"
    make_port_checkpoint(path, regime="med")
    return path.read_bytes()


def leftovers(root: Path) -> list[str]:
    """Files in the cache's tmp area (partial downloads, staging folders)."""
    tmp = cache.tmp_dir(root)
    return sorted(p.name for p in tmp.iterdir()) if tmp.exists() else []


# --- registry -----------------------------------------------------------------------------------------


def test_registry_table() -> None:
    assert registry.names() == [
        "hific-vr2", "hific-perceptual", "hific-vr", "hific-compact", "hific-low", "hific-med", "hific-high"
    ]
    high = registry.get("hific-high")
    assert high.remote_file == "hific_hi.pt" and high.target_bpp == 0.45
    assert registry.get("hific-low").target_bpp == 0.14 and registry.get("hific-med").target_bpp == 0.30
    assert registry.file_url(high, "https://zenodo.org") == (
        "https://zenodo.org/record/4026003/files/hific_hi.pt?download=1"
    )
    assert registry.records_api_url("https://m.example/") == "https://m.example/api/records/4026003"
    assert registry.get("hific-compact").embedded and not high.embedded
    assert all("Apache-2.0" in e.license for e in registry.MODELS)
    assert all(e.approx_download > 2e9 for e in registry.MODELS if e.remote_file)
    with pytest.raises(UnknownModelError, match="hific-low, hific-med"):
        registry.get("hific-huge")


def test_base_url_and_offline_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HIFIC_MODEL_BASE_URL", raising=False)
    assert registry.base_url() == "https://zenodo.org"
    monkeypatch.setenv("HIFIC_MODEL_BASE_URL", "http://mirror.local/")
    assert registry.file_url(registry.get("hific-med")).startswith("http://mirror.local/record/4026003/")
    for value, expected in (("1", True), ("true", True), ("0", False), ("", False), ("false", False)):
        monkeypatch.setenv("HIFIC_OFFLINE", value)
        assert registry.is_offline() is expected
    assert registry.is_offline(True) and not registry.is_offline(False)


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".", "..", "x" * 65, "-x"])
def test_bad_cache_names_rejected(bad: str) -> None:
    with pytest.raises(UnknownModelError):
        registry.check_name(bad)


def test_zoo_imports_no_torch() -> None:
    code = (
        "import sys, hificli.zoo, hificli.zoo.registry, hificli.zoo.cache, hificli.zoo.resolve,"
        " hificli.zoo.download; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --- cache --------------------------------------------------------------------------------------------


def test_cache_root_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HIFIC_CACHE_DIR", str(tmp_path / "env"))
    assert cache.cache_root() == tmp_path / "env"
    assert cache.cache_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("HIFIC_CACHE_DIR")
    import platformdirs

    assert cache.cache_root() == Path(platformdirs.user_cache_dir("hific", appauthor=False))


def test_lock_makes_second_holder_wait(tmp_path: Path) -> None:
    events: list[str] = []
    got_it = threading.Event()

    def second() -> None:
        with cache.model_lock(tmp_path, "m", on_wait=lambda: events.append("waiting")):
            events.append("acquired")
            got_it.set()

    with cache.model_lock(tmp_path, "m"):
        thread = threading.Thread(target=second)
        thread.start()
        assert not got_it.wait(0.3)
        assert events == ["waiting"]
    thread.join(5)
    assert events == ["waiting", "acquired"]


# --- download -----------------------------------------------------------------------------------------


def test_download_whole_file(tmp_path: Path, server: ModelServer) -> None:
    data = os.urandom(300_000)
    server.add_file(MED, data)
    dest = tmp_path / "x.part"
    size = download.download(registry.file_url(registry.get("hific-med")), dest, expected_size=len(data))
    assert size == len(data) and dest.read_bytes() == data
    assert [r.range for r in server.file_requests(MED)] == [None]


def test_download_resumes_after_dropped_connection(tmp_path: Path, server: ModelServer) -> None:
    data = os.urandom(200_000)
    server.add_file(MED, data)
    server.drop_once_after(MED, 70_000)
    dest = tmp_path / "x.part"
    url = registry.file_url(registry.get("hific-med"))
    download.download(url, dest, expected_size=len(data), backoff=0.01)
    assert dest.read_bytes() == data
    ranges = [r.range for r in server.file_requests(MED)]
    assert ranges[0] is None and len(ranges) == 2
    assert ranges[1] == "bytes=70000-"


def test_download_gives_up_and_keeps_partial(tmp_path: Path, server: ModelServer) -> None:
    data = os.urandom(100_000)
    server.add_file(MED, data)
    server.drop_once_after(MED, 40_000)
    dest = tmp_path / "x.part"
    url = registry.file_url(registry.get("hific-med"))
    with pytest.raises(ModelUnavailableError, match="closed after 40000 bytes"):
        download.download(url, dest, expected_size=len(data), retries=0)
    assert dest.stat().st_size == 40_000
    download.download(url, dest, expected_size=len(data), retries=0)
    assert dest.read_bytes() == data
    assert server.file_requests(MED)[-1].range == "bytes=40000-"


def test_download_restarts_when_server_ignores_range(tmp_path: Path, server: ModelServer) -> None:
    data = os.urandom(50_000)
    server.add_file(MED, data)
    server.set_honor_range(False)
    dest = tmp_path / "x.part"
    dest.write_bytes(b"stale bytes from another file")
    download.download(registry.file_url(registry.get("hific-med")), dest, expected_size=len(data))
    assert dest.read_bytes() == data


def test_download_404_is_not_retried(tmp_path: Path, server: ModelServer) -> None:
    url = registry.file_url(registry.get("hific-low"))
    with pytest.raises(ModelUnavailableError, match="HTTP 404"):
        download.download(url, tmp_path / "x.part", retries=3, backoff=5.0)
    assert len(server.file_requests("hific_low.pt")) == 1


def test_fetch_record(server: ModelServer) -> None:
    server.add_file(MED, b"abc")
    remote = download.fetch_record(registry.get("hific-med"))
    assert remote.md5 == hashlib.md5(b"abc").hexdigest() and remote.size == 3
    assert remote.url == f"{server.base_url}/record/4026003/files/hific_med.pt?download=1"
    with pytest.raises(ModelUnavailableError, match="no md5 checksum for hific_hi.pt") as info:
        download.fetch_record(registry.get("hific-high"))
    assert "hific models import hific-high FILE" in info.value.hint


def test_unreachable_host_suggests_import(env: Path) -> None:
    with pytest.raises(ModelUnavailableError) as info:
        download.pull("hific-med", progress=False, timeout=2)
    assert "hific models import hific-med FILE" in info.value.hint
    assert not cache.is_installed(env, "hific-med") and leftovers(env) == []


# --- pull ---------------------------------------------------------------------------------------------


def test_pull_installs_inference_weights(env: Path, server: ModelServer, port_ckpt: bytes) -> None:
    from hificli.weights import load_weights, read_weights_info

    server.add_file(MED, port_ckpt)
    result = download.pull("hific-med", progress=False)
    assert result.changed and result.weights == env / "models" / "hific-med" / "weights.safetensors"
    model, _, _, info = load_weights(result.weights)
    assert info.model_id == "hific-med" and not info.half
    manifest = json.loads((result.weights.parent / "manifest.json").read_text())
    assert manifest["sha256"] == hashlib.sha256(result.weights.read_bytes()).hexdigest()
    assert manifest["size"] == result.weights.stat().st_size
    assert manifest["source_md5"] == hashlib.md5(port_ckpt).hexdigest()
    assert manifest["source_url"].endswith("/record/4026003/files/hific_med.pt?download=1")
    assert manifest["fingerprint"] == read_weights_info(result.weights).fingerprint_hex
    assert manifest["half"] is False and manifest["hific_version"] and manifest["created"]
    assert sorted(p.name for p in result.weights.parent.iterdir()) == ["manifest.json", "weights.safetensors"]
    assert leftovers(env) == []
    assert cache.verify(env, "hific-med").ok
    again = download.pull("hific-med", progress=False)  # installed: no second download
    assert not again.changed and len(server.file_requests(MED)) == 1
    assert resolve_model("hific-med") == result.weights


def test_pull_half_keep_original(env: Path, server: ModelServer, port_ckpt: bytes) -> None:
    from hificli.weights import read_weights_info

    server.add_file(MED, port_ckpt)
    result = download.pull("hific-med", half=True, keep_original=True, progress=False)
    assert read_weights_info(result.weights).half and result.manifest.half
    assert (result.weights.parent / "original.pt").read_bytes() == port_ckpt
    assert result.manifest.original == "original.pt"
    assert cache.verify(env, "hific-med").ok


def test_pull_resumes_a_partial_from_an_earlier_run(env: Path, server: ModelServer, port_ckpt: bytes) -> None:
    server.add_file(MED, port_ckpt)
    server.drop_once_after(MED, len(port_ckpt) // 3)
    with pytest.raises(ModelUnavailableError) as info:
        download.pull("hific-med", progress=False, retries=0)
    assert "resume" in info.value.hint
    assert leftovers(env) == ["hific-med.part", "hific-med.part.json"]
    download.pull("hific-med", progress=False)
    assert server.file_requests(MED)[-1].range == f"bytes={len(port_ckpt) // 3}-"
    assert cache.verify(env, "hific-med").ok and leftovers(env) == []


def test_wrong_md5_installs_nothing(env: Path, server: ModelServer, port_ckpt: bytes) -> None:
    server.add_file(MED, port_ckpt, md5="0" * 32)
    stale = cache.tmp_dir(env) / "hific-med.4242.0123abcd.staging"  # left by a killed process
    stale.mkdir(parents=True)
    with pytest.raises(ModelUnavailableError, match="checksum mismatch"):
        download.pull("hific-med", progress=False)
    assert not cache.model_dir(env, "hific-med").exists() and leftovers(env) == []


def test_wrong_structure_installs_nothing(env: Path, server: ModelServer, tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "bad.pt"
    torch.save({"model_state_dict": {"Encoder.x": torch.zeros(2)}, "epoch": 1, "steps": 2, "args": {}}, bad)
    server.add_file(MED, bad.read_bytes())
    with pytest.raises(ModelMismatchError):
        download.pull("hific-med", progress=False)
    assert not cache.model_dir(env, "hific-med").exists() and leftovers(env) == []


def test_malicious_pickle_is_refused(env: Path, server: ModelServer, tmp_path: Path) -> None:
    from port_fixtures import make_malicious_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    make_malicious_checkpoint(evil, marker=marker)
    server.add_file(MED, evil.read_bytes())
    with pytest.raises(ModelMismatchError):
        download.pull("hific-med", progress=False)
    with pytest.raises(ModelMismatchError):
        download.import_model("hific-med", evil)
    assert not marker.exists()
    assert not cache.model_dir(env, "hific-med").exists() and leftovers(env) == []


def test_two_processes_pull_one_copy(env: Path, server: ModelServer, port_ckpt: bytes) -> None:
    server.add_file(MED, port_ckpt)
    server.set_rate(len(port_ckpt) / 2.0)  # a 2 s transfer: the second process starts during it
    code = "from hificli.zoo.download import pull; pull('hific-med', progress=True)"
    child_env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=child_env, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    assert sum("waiting for another hific process" in e for e in errors) == 1, errors
    assert len([r for r in server.file_requests(MED) if r.range is None]) == 1
    assert cache.verify(env, "hific-med").ok and leftovers(env) == []
    assert cache.installed_names(env) == ["hific-med"]


# --- import -------------------------------------------------------------------------------------------


def test_import_port_checkpoint_offline(env: Path, tmp_path: Path, port_ckpt: bytes, monkeypatch) -> None:
    monkeypatch.setenv("HIFIC_OFFLINE", "1")
    src = tmp_path / "hific-med.pt"
    src.write_bytes(port_ckpt)
    result = download.import_model("hific-med", src)
    assert result.manifest.source_url == src.resolve().as_uri()
    assert result.manifest.source_md5 == hashlib.md5(port_ckpt).hexdigest()
    assert resolve_model("hific-med") == result.weights and src.exists()
    with pytest.raises(OutputExistsError):
        download.import_model("hific-med", src)
    assert download.import_model("hific-med", src, force=True).changed
    assert leftovers(env) == []


def test_import_weights_and_run_dir(env: Path, tmp_path: Path) -> None:
    from model_fixtures import make_tiny_weights

    from hificli.weights import read_weights_info

    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    older = make_tiny_weights(run / "checkpoints" / "a.safetensors", seed=1, model_id="run-a")
    newer = make_tiny_weights(run / "checkpoints" / "b.safetensors", seed=2, model_id="run-b")
    os.utime(older, (time.time() - 100, time.time() - 100))
    result = download.import_model("my-run", run)
    info = read_weights_info(result.weights)
    assert info.model_id == "my-run"  # stored under the name it was imported as
    assert info.fingerprint == read_weights_info(newer).fingerprint
    same = download.import_model("same-id", make_tiny_weights(tmp_path / "s.safetensors", model_id="same-id"))
    assert same.weights.read_bytes() == (tmp_path / "s.safetensors").read_bytes()  # copied as is
    assert resolve_model("my-run") == result.weights
    with pytest.raises(ModelUnavailableError, match="built into hific"):
        download.import_model("hific-compact", newer)


def test_import_rejects_other_files(env: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelMismatchError):
        download.import_model("junk", junk)
    with pytest.raises(ModelUnavailableError, match="no .safetensors"):
        download.import_model("empty", _empty_dir(tmp_path))
    assert cache.installed_names(env) == [] and leftovers(env) == []


def _empty_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "empty"
    folder.mkdir()
    return folder


# --- verify -------------------------------------------------------------------------------------------


def test_verify_detects_tampering(env: Path, tmp_path: Path) -> None:
    from model_fixtures import make_tiny_weights

    result = download.import_model("t", make_tiny_weights(tmp_path / "t.safetensors", model_id="t"))
    assert cache.verify(env, "t").ok
    data = bytearray(result.weights.read_bytes())
    data[-1] ^= 0xFF
    result.weights.write_bytes(bytes(data))
    outcome = cache.verify(env, "t")
    assert not outcome.ok and "sha256" in outcome.problems[0]


# --- resolve ------------------------------------------------------------------------------------------


def test_resolve_paths(env: Path, tmp_path: Path) -> None:
    from model_fixtures import make_tiny_weights

    weights = make_tiny_weights(tmp_path / "w.safetensors")
    assert resolve_model(str(weights)) == weights
    folder = tmp_path / "run"
    folder.mkdir()
    with pytest.raises(ModelUnavailableError, match="no weights.safetensors"):
        resolve_model(folder)
    a = make_tiny_weights(folder / "a.safetensors")
    os.utime(a, (time.time() - 50, time.time() - 50))
    b = make_tiny_weights(folder / "b.safetensors", seed=3)
    assert resolve_model(folder) == b
    preferred = make_tiny_weights(folder / "weights.safetensors", seed=4)
    os.utime(preferred, (time.time() - 500, time.time() - 500))
    assert resolve_model(folder) == preferred


def test_resolve_errors(env: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        resolve_model("no-such-model")
    assert "hific-med" in info.value.hint and "hific-compact" in info.value.hint
    with pytest.raises(ModelUnavailableError) as info:
        resolve_model("hific-med", offline=True)
    assert "offline" in info.value.message and "hific models import hific-med FILE" in info.value.hint
    assert resolve_model("hific-compact").name == "hific-compact.safetensors"  # shipped in the package


def test_resolve_pulls_on_first_use(env: Path, server: ModelServer, port_ckpt: bytes, monkeypatch) -> None:
    server.add_file(MED, port_ckpt)
    monkeypatch.setenv("HIFIC_OFFLINE", "1")
    with pytest.raises(ModelUnavailableError):
        resolve_model("hific-med", progress=False)  # HIFIC_OFFLINE=1 is honoured
    assert server.file_requests(MED) == []
    path = resolve_model("hific-med", offline=False, progress=False)
    assert path == cache.weights_path(env, "hific-med") and len(server.file_requests(MED)) == 1
