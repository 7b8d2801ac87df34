"""`hific models ...` through the CLI (subprocesses for exit codes and imports, CliRunner elsewhere)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from http_fixtures import ModelServer

from hificli.cli.app import cli, main

ROOT = Path(__file__).resolve().parent.parent


def hific(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``python -m hificli ARGS`` in a subprocess with ``env`` added to the environment."""
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
    command = [sys.executable, "-m", "hificli", *args]
    return subprocess.run(command, capture_output=True, text=True, env=full_env, timeout=300)


@pytest.fixture
def cache_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A private cache, offline (the suite's default) unless a test says otherwise."""
    env = {
        "HIFIC_CACHE_DIR": str(tmp_path / "cache"),
        "HIFIC_OFFLINE": "1",
        "HIFIC_MODEL_BASE_URL": "http://127.0.0.1:9",  # never the internet, even if offline mode broke
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture(scope="module")
def port_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from port_fixtures import make_port_checkpoint

    path = tmp_path_factory.mktemp("port") / "hific_med.pt"
    make_port_checkpoint(path, regime="med")
    return path


def invoke(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def run_main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the console entry point in-process (exit-code mapping included): (code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    else:
        code = 0
    out, err = capsys.readouterr()
    return code, out, err


def test_models_list_is_offline_and_torch_free(cache_env: dict[str, str]) -> None:
    code = (
        "import sys\nfrom hificli.cli.app import main\n"
        "try:\n    main(['models'])\nexcept SystemExit as e:\n    code = e.code\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code)"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HIFIC_MODEL_BASE_URL": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    lines = out.stdout.splitlines()
    assert lines[-1] == "NO-TORCH 0", out.stderr
    table = "\n".join(lines)
    for name, bpp in (("hific-low", "0.14"), ("hific-med", "0.30"), ("hific-high", "0.45")):
        row = next(line for line in lines if line.startswith(name + " "))
        assert f"{bpp} bpp" in row and "not installed" in row and "~2.2 GB" in row and "Zenodo" in row
    assert "hific-compact" in table and f"cache: {cache_env['HIFIC_CACHE_DIR']}" in table


def test_list_same_as_models_and_json(cache_env: dict[str, str]) -> None:
    plain = invoke("models")
    listed = invoke("models", "list")
    assert plain.exit_code == listed.exit_code == 0 and plain.output == listed.output
    data = json.loads(invoke("models", "list", "--json").output)
    assert data == json.loads(invoke("models", "--json").output)
    assert data["cache_dir"] == cache_env["HIFIC_CACHE_DIR"]
    med = next(m for m in data["models"] if m["name"] == "hific-med")
    assert med["installed"] is False and med["target_bpp"] == 0.30 and med["size"] == 0
    assert med["url"].endswith("/record/4026003/files/hific_med.pt?download=1")
    assert "Apache-2.0" in med["license"] and med["download_size"] > 2e9


def test_import_list_path_verify_rm(cache_env: dict[str, str], port_file: Path, capsys) -> None:
    root = Path(cache_env["HIFIC_CACHE_DIR"])
    code, _, err = run_main(capsys, "models", "import", "hific-med", str(port_file))
    assert code == 0, err
    weights = root / "models" / "hific-med" / "weights.safetensors"
    assert weights.is_file() and "installed" in err

    data = json.loads(invoke("models", "list", "--json").output)
    med = next(m for m in data["models"] if m["name"] == "hific-med")
    assert med["installed"] and med["status"] == "installed" and med["size"] >= weights.stat().st_size
    row = next(line for line in invoke("models").output.splitlines() if line.startswith("hific-med "))
    assert " installed " in row and "not installed" not in row

    assert invoke("models", "path").stdout.strip() == str(root)
    assert invoke("models", "path", "hific-med").stdout.strip() == str(weights)
    checked = invoke("models", "verify")
    assert checked.exit_code == 0 and "ok      hific-med" in checked.output

    code, _, err = run_main(capsys, "models", "rm", "hific-med")
    assert code == 0 and "removed" in err and not weights.parent.exists()
    missing = hific("models", "path", "hific-med", env=cache_env)  # the real process's exit code
    assert missing.returncode == 4 and "hific models pull hific-med" in missing.stderr
    code, _, err = run_main(capsys, "models", "rm", "hific-med")
    assert code == 0 and "not installed" in err


def test_verify_detects_tampered_file(cache_env: dict[str, str], tmp_path: Path, capsys) -> None:
    from model_fixtures import make_tiny_weights

    src = make_tiny_weights(tmp_path / "mine.safetensors", model_id="mine")
    assert invoke("models", "import", "mine", str(src)).exit_code == 0
    weights = Path(invoke("models", "path", "mine").stdout.strip())
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    code, out, err = run_main(capsys, "models", "verify", "mine")
    assert code == 4
    assert "FAILED  mine" in out and "error: mine:" in err and "sha256" in err
    listed = invoke("models").output  # an imported model under a new name is listed too
    assert any(line.startswith("mine ") and "installed" in line for line in listed.splitlines())


def test_cache_dir_option_overrides_env(cache_env: dict[str, str], tmp_path: Path, capsys) -> None:
    from model_fixtures import make_tiny_weights

    other = tmp_path / "other-cache"
    src = make_tiny_weights(tmp_path / "w.safetensors", model_id="w")
    assert invoke("models", "--cache-dir", str(other), "import", "w", str(src)).exit_code == 0
    assert (other / "models" / "w" / "weights.safetensors").is_file()
    assert invoke("models", "path", "--cache-dir", str(other)).stdout.strip() == str(other)
    assert invoke("models", "path", "w", "--cache-dir", str(other)).exit_code == 0
    assert run_main(capsys, "models", "path", "w")[0] == 4  # not in the env's cache


def test_error_exit_codes(cache_env: dict[str, str], tmp_path: Path, capsys) -> None:
    code, _, err = run_main(capsys, "models", "path", "hific-giant")
    assert code == 4 and "hific-med" in err
    code, _, err = run_main(capsys, "models", "pull", "hific-low")  # HIFIC_OFFLINE=1
    assert code == 4 and "hific models import hific-low FILE" in err
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 but not really a zip")
    code, _, err = run_main(capsys, "models", "import", "junk", str(junk))
    assert code == 4 and err.startswith("error: ")
    assert run_main(capsys, "models", "rm", "hific-compact")[0] == 4
    assert run_main(capsys, "models", "rm", "never-heard-of")[0] == 4
    assert run_main(capsys, "models", "verify", "hific-high")[0] == 4
    assert run_main(capsys, "models", "verify")[0] == 0  # nothing installed, nothing wrong
    assert run_main(capsys, "models", "import", "x", str(tmp_path / "absent.pt"))[0] == 2  # usage
    assert not (Path(cache_env["HIFIC_CACHE_DIR"]) / "models" / "junk").exists()


def test_import_refuses_malicious_checkpoint(cache_env: dict[str, str], tmp_path: Path) -> None:
    from port_fixtures import make_malicious_checkpoint

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    make_malicious_checkpoint(evil, marker=marker)
    result = hific("models", "import", "hific-med", str(evil), env=cache_env)
    assert result.returncode == 4 and not marker.exists()
    assert not (Path(cache_env["HIFIC_CACHE_DIR"]) / "models" / "hific-med").exists()


def test_pull_then_encode_decode_with_registered_name(
    cache_env: dict[str, str], port_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from model_fixtures import sample_image

    with ModelServer() as server:
        server.add_file("hific_med.pt", port_file.read_bytes())
        monkeypatch.setenv("HIFIC_OFFLINE", "0")
        monkeypatch.setenv("HIFIC_MODEL_BASE_URL", server.base_url)
        code, _, err = run_main(capsys, "models", "pull", "hific-med")
        assert code == 0, err
        assert "downloading hific-med" in err and "installed" in err
        assert run_main(capsys, "models", "pull", "hific-med")[2].count("already installed") == 1
        assert len(server.file_requests("hific_med.pt")) == 1
    image = tmp_path / "in.png"
    sample_image(48, 40).save(image)
    # offline from now on: the installed model is used without any network
    encoded = hific("encode", "-m", "hific-med", str(image), "-o", str(tmp_path / "in.hfc"), env=cache_env)
    assert encoded.returncode == 0, encoded.stderr
    decoded = hific(
        "decode", "-m", "hific-med", str(tmp_path / "in.hfc"), "-o", str(tmp_path / "out.png"), env=cache_env
    )
    assert decoded.returncode == 0, decoded.stderr
    from PIL import Image

    assert Image.open(tmp_path / "out.png").size == (48, 40)


def test_encode_with_missing_model_offline_says_how_to_import(cache_env: dict[str, str], tmp_path) -> None:
    from model_fixtures import sample_image

    image = tmp_path / "in.png"
    sample_image(40, 40).save(image)
    result = hific("encode", "-m", "hific-high", str(image), env=cache_env)
    assert result.returncode == 4
    assert "offline" in result.stderr and "hific models import hific-high FILE" in result.stderr
    assert not (tmp_path / "in.hfc").exists()


def test_parallel_decode_downloads_the_files_model_once(
    cache_env: dict[str, str], port_file: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    """decode -j: the model named in the headers is fetched once, in the parent with its progress shown
    (workers show none), before the workers start."""
    from model_fixtures import sample_image

    monkeypatch.setenv("HIFIC_CACHE_DIR", cache_env["HIFIC_CACHE_DIR"])
    assert run_main(capsys, "models", "import", "hific-med", str(port_file))[0] == 0
    names = []
    for i in range(3):
        sample_image(48, 40, seed=i).save(tmp_path / f"in{i}.png")
        names.append(str(tmp_path / f"in{i}.hfc"))
        assert run_main(capsys, "encode", "-m", "hific-med", str(tmp_path / f"in{i}.png"), "-o", names[-1])[0] == 0
    assert run_main(capsys, "models", "rm", "hific-med")[0] == 0
    with ModelServer() as server:
        server.add_file("hific_med.pt", port_file.read_bytes())
        monkeypatch.setenv("HIFIC_OFFLINE", "0")
        monkeypatch.setenv("HIFIC_MODEL_BASE_URL", server.base_url)
        (tmp_path / "out").mkdir()
        monkeypatch.setattr("hificli.cli.decode.show_progress", lambda: True)  # as on a terminal
        monkeypatch.setattr("hificli.cli.batch.PIXELS_PER_WORKER", 1)  # workers even for these small files
        code, _, err = run_main(capsys, "decode", *names, "-j", "2", "-o", str(tmp_path / "out"))
        assert code == 0, err
        assert len(server.file_requests("hific_med.pt")) == 1
        assert err.count("downloading hific-med") == 1
    assert all((tmp_path / "out" / f"in{i}.png").exists() for i in range(3))
