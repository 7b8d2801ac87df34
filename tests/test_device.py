"""--device / --half: CPU runs, the automatic fallback, the errors for a missing GPU, and that the device
never changes what a decoder parses. The GPU path itself needs hardware (scripts/gpu_check.sh)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import hific
from model_fixtures import make_tiny_weights, sample_image

from hificli import container
from hificli.api import load_model
from hificli.codec import decode_latents
from hificli.device import DeviceUnavailableError, parse_device, resolve_device

CUDA = torch.cuda.is_available()
no_cuda = pytest.mark.skipif(CUDA, reason="checks the behaviour of a machine without CUDA")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("img") / "photo.png"
    sample_image(200, 136, seed=3).save(path)
    return path


@pytest.mark.parametrize(("text", "name"), [("auto", "auto"), ("CPU", "cpu"), ("cuda", "cuda"), ("cuda:1", "cuda:1"),
                                            (" cuda:12 ", "cuda:12")])
def test_device_names_are_normalised(text: str, name: str) -> None:
    assert parse_device(text) == name


@pytest.mark.parametrize("text", ["gpu", "cpu:0", "auto:1", "cuda:", "cuda:x", "cuda:-1", "mps", ""])
def test_unknown_device_names_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="choose auto\\|cpu\\|cuda"):
        parse_device(text)


def test_unknown_device_is_a_usage_error(tmp_path: Path, tiny: Path, photo: Path, capsys) -> None:
    code, err = hific("encode", str(photo), "-m", str(tiny), "--device", "gpu", cwd=tmp_path, capsys=capsys)
    assert code == 2
    assert "unknown device 'gpu'" in err
    assert not list(tmp_path.iterdir())


@no_cuda
def test_auto_falls_back_to_cpu_and_cuda_fails_in_one_line() -> None:
    assert resolve_device("auto") == "cpu"
    for name in ("cuda", "cuda:1"):
        with pytest.raises(DeviceUnavailableError) as exc:
            resolve_device(name)
        assert exc.value.exit_code == 2
        assert exc.value.message.startswith(f"--device {name}: ")


@no_cuda
@pytest.mark.parametrize("command", ["encode", "decode", "eval"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_is_a_one_line_usage_error(
    command: str, device: str, tmp_path: Path, tiny: Path, photo: Path, capsys
) -> None:
    source = str(photo)
    if command == "decode":
        assert hific("encode", source, "-m", str(tiny), "-o", "in.hfc", cwd=tmp_path, capsys=capsys)[0] == 0
        source = "in.hfc"
    before = sorted(p.name for p in tmp_path.iterdir())
    extra = {"encode": ["-o", "out.hfc"], "decode": ["-o", "out.png"], "eval": ["-b", "none", "--lpips", "none"]}
    extra = extra[command]
    code, err = hific(command, source, "-m", str(tiny), "--device", device, *extra, cwd=tmp_path, capsys=capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[0] == f"error: --device {device}: this torch build has no CUDA" or lines[0].startswith(
        f"error: --device {device}: no CUDA GPU")
    assert lines[1:] == ["hint: use --device cpu (or auto)"]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


def test_api_refuses_a_missing_gpu_before_loading(tmp_path: Path) -> None:
    if CUDA:
        pytest.skip("this machine has CUDA")
    with pytest.raises(DeviceUnavailableError):
        load_model(tmp_path / "does-not-exist.safetensors", device="cuda")  # the device fails first


def _encode(tmp_path: Path, capsys, photo: Path, tiny: Path, name: str, *extra: str) -> bytes:
    code, err = hific("encode", str(photo), "-m", str(tiny), "-o", name, *extra, cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    return (tmp_path / name).read_bytes()


def test_cpu_and_default_devices_write_and_decode_identically(tmp_path: Path, tiny: Path, photo: Path, capsys) -> None:
    default = _encode(tmp_path, capsys, photo, tiny, "default.hfc")
    cpu = _encode(tmp_path, capsys, photo, tiny, "cpu.hfc", "--device", "cpu")
    if not CUDA:  # auto is the CPU here: the very same file
        assert cpu == default
    model = load_model(tiny)
    ref = decode_latents(container.unpack(cpu), model.latent)
    for device in ("cpu", "auto"):
        placed = load_model(tiny, device=device)
        assert np.array_equal(decode_latents(container.unpack(cpu), placed.latent), ref)
    for device, name in (("cpu", "cpu.png"), ("auto", "auto.png")):
        code, err = hific("decode", "cpu.hfc", "-m", str(tiny), "--device", device, "-o", name, cwd=tmp_path,
                          capsys=capsys)
        assert code == 0, err
    if not CUDA:
        assert (tmp_path / "cpu.png").read_bytes() == (tmp_path / "auto.png").read_bytes()


def test_verbose_says_where_it_ran(tmp_path: Path, tiny: Path, photo: Path, capsys) -> None:
    code, err = hific("-v", "encode", str(photo), "-m", str(tiny), "--device", "cpu", "--threads", "1", cwd=tmp_path,
                      capsys=capsys)
    assert code == 0, err
    assert "compute: cpu, 1 thread, OMP_WAIT_POLICY=" in err


def test_half_keeps_files_and_latents_and_changes_pixels_by_rounding_only(
    tmp_path: Path, tiny: Path, photo: Path, capsys
) -> None:
    plain = _encode(tmp_path, capsys, photo, tiny, "plain.hfc")
    half = _encode(tmp_path, capsys, photo, tiny, "half.hfc", "--half")
    assert half == plain  # the encoder always runs in fp32
    full_model, half_model = load_model(tiny), load_model(tiny, half=True)
    assert half_model.half == "bfloat16"
    hfc = container.unpack(plain)
    y_full, y_half = decode_latents(hfc, full_model.latent), decode_latents(hfc, half_model.latent)
    assert np.array_equal(y_full, y_half)
    pixels = []
    for name, extra in (("full.png", ()), ("half.png", ("--half",))):
        code, err = hific("decode", "plain.hfc", "-m", str(tiny), "-o", name, *extra, cwd=tmp_path, capsys=capsys)
        assert code == 0, err
        from PIL import Image

        pixels.append(np.asarray(Image.open(tmp_path / name)).astype(np.int16))
    diff = np.abs(pixels[0] - pixels[1])
    assert diff.max() <= 16 and diff.mean() < 2.0  # bf16 rounding, not a different image
    assert diff.max() > 0  # --half really ran in reduced precision
