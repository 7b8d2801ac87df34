"""encode/decode through the CLI, the way users run them: sizes, colour policy, safety, stdin/stdout."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from model_fixtures import make_tiny_weights, sample_image
from PIL import Image

from hificli import container
from hificli.cli.app import main


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def other_tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("model2") / "other.safetensors", seed=1, model_id="test-tiny")


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process through main() (same exit-code mapping as the console script)."""
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "hificli", *args], input=stdin, capture_output=True, timeout=120
    )


@pytest.mark.parametrize("size", [(1, 1), (17, 33), (640, 479)])
def test_round_trip_sizes(tmp_path: Path, tiny: Path, size: tuple[int, int], capsys) -> None:
    src = tmp_path / "img.png"
    sample_image(*size).save(src)
    code, _, err = run(["encode", str(src), "-m", str(tiny)], capsys)
    assert code == 0, err
    hfc = container.read_file(tmp_path / "img.hfc")
    assert (hfc.header.width, hfc.header.height) == size
    assert hfc.header.model_id == "test-tiny"
    code, _, err = run(["decode", str(tmp_path / "img.hfc"), "-o", str(tmp_path / "out.png")], capsys)
    assert code == 4 and "unknown model 'test-tiny'" in err  # the header's model is not registered
    code, _, err = run(["decode", str(tmp_path / "img.hfc"), "-m", str(tiny), "-o", str(tmp_path / "out.png")], capsys)
    assert code == 0, err
    out = Image.open(tmp_path / "out.png")
    assert out.size == size and out.mode == "RGB"


def test_summary_table_reports_real_bpp(tmp_path: Path, tiny: Path, capsys) -> None:
    src = tmp_path / "a.png"
    sample_image(96, 64).save(src)
    code, _, err = run(["encode", str(src), "-m", str(tiny)], capsys)
    assert code == 0
    size = (tmp_path / "a.hfc").stat().st_size
    assert f"{8 * size / (96 * 64):.3f}" in err
    code, _, err = run(["--quiet", "encode", str(src), "-m", str(tiny), "-f"], capsys)
    assert code == 0 and err == ""


def test_summary_time_leaves_out_model_loading(tmp_path: Path, capsys, monkeypatch) -> None:
    """decode loads the model named by the first file's header inside that file's job; the time column
    reports the decoding alone (as encode's, whose model loads before any file)."""
    import re

    import hificli.api

    src = tmp_path / "a.png"
    sample_image(96, 64).save(src)
    code, _, err = run(["encode", str(src)], capsys)
    assert code == 0, err  # the embedded default model
    real_load = hificli.api.load_model

    def slow_load(*args, **kwargs):
        time.sleep(1.5)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(hificli.api, "load_model", slow_load)
    start = time.perf_counter()
    code, _, err = run(["decode", str(tmp_path / "a.hfc"), "-o", str(tmp_path / "b.png")], capsys)
    assert code == 0 and time.perf_counter() - start >= 1.5, err
    seconds = [float(t) for t in re.findall(r"(\d+\.\d+)s\b", err)]
    assert len(seconds) == 1 and seconds[0] < 1.5, err


def test_grayscale_decodes_to_grayscale(tmp_path: Path, tiny: Path, capsys) -> None:
    src = tmp_path / "g.png"
    sample_image(70, 50, mode="L").save(src)
    assert run(["encode", str(src), "-m", str(tiny)], capsys)[0] == 0
    assert container.read_file(tmp_path / "g.hfc").header.channels == 1
    assert run(["decode", str(tmp_path / "g.hfc"), "-m", str(tiny), "-o", str(tmp_path / "o.png")], capsys)[0] == 0
    assert Image.open(tmp_path / "o.png").mode == "L"


def test_sixteen_bit_input(tmp_path: Path, tiny: Path, capsys) -> None:
    src = tmp_path / "deep.png"
    values = (np.arange(40 * 30, dtype=np.uint16).reshape(30, 40) * 50).astype(np.uint16)
    Image.fromarray(values).save(src)  # uint16 -> mode I;16
    assert Image.open(src).mode.startswith("I")
    assert run(["encode", str(src), "-m", str(tiny)], capsys)[0] == 0
    assert container.read_file(tmp_path / "deep.hfc").header.channels == 1


def test_alpha_is_flattened_with_a_warning(tmp_path: Path, tiny: Path, capsys) -> None:
    rgba = sample_image(48, 40).convert("RGBA")
    alpha = np.full((40, 48), 255, np.uint8)
    alpha[:, :10] = 0
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(tmp_path / "t.png")
    code, _, err = run(["encode", str(tmp_path / "t.png"), "-m", str(tiny)], capsys)
    assert code == 0 and "transparency flattened onto white" in err
    opaque = sample_image(48, 40).convert("RGBA")
    opaque.save(tmp_path / "o.png")
    code, _, err = run(["encode", str(tmp_path / "o.png"), "-m", str(tiny)], capsys)
    assert code == 0 and "transparency" not in err


def test_exif_orientation_is_applied(tmp_path: Path, tiny: Path, capsys) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    sample_image(40, 20).save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert run(["encode", str(tmp_path / "rot.jpg"), "-m", str(tiny)], capsys)[0] == 0
    header = container.read_file(tmp_path / "rot.hfc").header
    assert (header.width, header.height) == (20, 40)
    assert run(["decode", str(tmp_path / "rot.hfc"), "-m", str(tiny), "-o", str(tmp_path / "r.png")], capsys)[0] == 0
    assert Image.open(tmp_path / "r.png").size == (20, 40)


def test_never_overwrites_without_force(tmp_path: Path, tiny: Path, capsys) -> None:
    photo = tmp_path / "photo.png"
    sample_image(64, 48).save(photo)
    original = photo.read_bytes()
    assert run(["encode", str(photo), "-m", str(tiny)], capsys)[0] == 0
    hfc_bytes = (tmp_path / "photo.hfc").read_bytes()
    code, _, err = run(["encode", str(photo), "-m", str(tiny)], capsys)
    assert code == 5 and "exists" in err and "--force" in err
    # Decoding next to the original photo does not clobber it: the default name is photo.decoded.png.
    code, _, err = run(["decode", str(tmp_path / "photo.hfc"), "-m", str(tiny)], capsys)
    assert code == 0 and (tmp_path / "photo.decoded.png").is_file(), err
    assert photo.read_bytes() == original
    code, _, err = run(["decode", str(tmp_path / "photo.hfc"), "-m", str(tiny), "-o", str(photo)], capsys)
    assert code == 5 and "photo.png exists" in err
    assert photo.read_bytes() == original
    assert (tmp_path / "photo.hfc").read_bytes() == hfc_bytes
    assert run(["decode", str(tmp_path / "photo.hfc"), "-m", str(tiny), "-o", str(photo), "-f"], capsys)[0] == 0
    assert photo.read_bytes() != original
    assert not list(tmp_path.glob(".*.part"))


def test_stdin_stdout_pipeline(tmp_path: Path, tiny: Path) -> None:
    buffer = io.BytesIO()
    sample_image(50, 30).save(buffer, format="PNG")
    encoded = cli("encode", "-", "-o", "-", "-m", str(tiny), stdin=buffer.getvalue())
    assert encoded.returncode == 0, encoded.stderr
    assert container.unpack(encoded.stdout).header.width == 50
    decoded = cli("decode", "-", "-o", "-", "-m", str(tiny), stdin=encoded.stdout)
    assert decoded.returncode == 0, decoded.stderr
    assert Image.open(io.BytesIO(decoded.stdout)).size == (50, 30)


def test_wrong_weights_are_refused(tmp_path: Path, tiny: Path, other_tiny: Path, capsys) -> None:
    sample_image(64, 64).save(tmp_path / "a.png")
    assert run(["encode", str(tmp_path / "a.png"), "-m", str(tiny)], capsys)[0] == 0
    args = ["decode", str(tmp_path / "a.hfc"), "-m", str(other_tiny), "-o", str(tmp_path / "x.png")]
    code, _, err = run(args, capsys)
    assert code == 4 and "weights" in err
    assert not (tmp_path / "x.png").exists()


def test_bad_inputs_fail_cleanly_and_batches_go_on(tmp_path: Path, tiny: Path, capsys) -> None:
    sample_image(40, 40).save(tmp_path / "good.png")
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (tmp_path / "empty.png").write_bytes(b"")
    paths = [str(tmp_path / "bad.png"), str(tmp_path / "good.png"), str(tmp_path / "empty.png")]
    code, _, err = run(["encode", *paths, "-o", str(out_dir), "-m", str(tiny)], capsys)
    assert code == 3
    assert "bad.png: not an image" in err and "empty.png: the file is empty (0 bytes)" in err
    assert "2 of 3 files failed" in err
    assert (out_dir / "good.hfc").exists() and not (out_dir / "bad.hfc").exists()
    data = bytearray((out_dir / "good.hfc").read_bytes())
    data[len(data) // 2] ^= 0x10
    (tmp_path / "broken.hfc").write_bytes(bytes(data))
    result = cli("decode", str(tmp_path / "broken.hfc"), "-m", str(tiny), "-o", str(tmp_path / "b.png"))
    assert result.returncode == 3
    assert result.stderr.decode().count("\n") <= 2 and b"Traceback" not in result.stderr
    assert not (tmp_path / "b.png").exists()


def test_reconstruct_and_output_formats(tmp_path: Path, tiny: Path, capsys) -> None:
    sample_image(80, 60).save(tmp_path / "p.png")
    args = ["encode", str(tmp_path / "p.png"), "-m", str(tiny), "--reconstruct", str(tmp_path / "r.png")]
    code, _, err = run(args, capsys)
    assert code == 0, err
    assert Image.open(tmp_path / "r.png").size == (80, 60)
    for ext, fmt in ((".jpg", "JPEG"), (".webp", "WEBP"), (".tif", "TIFF")):
        target = tmp_path / f"out{ext}"
        assert run(["decode", str(tmp_path / "p.hfc"), "-m", str(tiny), "-o", str(target)], capsys)[0] == 0
        assert Image.open(target).format == fmt
    code, _, err = run(["decode", str(tmp_path / "p.hfc"), "-m", str(tiny), "-o", str(tmp_path / "x.xyz")], capsys)
    assert code == 2 and "extension" in err  # a usage error, before the model loads


def test_refuses_binary_to_terminal_and_bad_usage(tmp_path: Path, tiny: Path, capsys) -> None:
    for name in ("a.png", "b.png"):
        sample_image(16, 16).save(tmp_path / name)
    code, _, err = run(["encode", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", "-", "-m", str(tiny)], capsys)
    assert code == 2 and "single input" in err
    code, _, _ = run(["encode"], capsys)
    assert code == 2


def test_outputs_have_normal_permissions(tmp_path: Path, tiny: Path, capsys) -> None:
    sample_image(32, 32).save(tmp_path / "p.png")
    old = os.umask(0o022)
    try:
        assert run(["encode", str(tmp_path / "p.png"), "-m", str(tiny)], capsys)[0] == 0
    finally:
        os.umask(old)
    assert (tmp_path / "p.hfc").stat().st_mode & 0o777 == 0o644


def test_model_path_can_be_a_port_checkpoint_or_a_run_directory(tmp_path: Path, tiny: Path, capsys) -> None:
    import shutil

    from port_fixtures import make_port_checkpoint

    checkpoint = make_port_checkpoint(tmp_path / "hific_med.pt", regime="med", with_optimizer=False)
    sample_image(70, 40).save(tmp_path / "p.png")
    assert run(["encode", str(tmp_path / "p.png"), "-m", str(checkpoint)], capsys)[0] == 0
    header = container.read_file(tmp_path / "p.hfc").header
    assert header.model_id == "hific-med"
    out = tmp_path / "o.png"
    assert run(["decode", str(tmp_path / "p.hfc"), "-m", str(checkpoint), "-o", str(out)], capsys)[0] == 0
    assert Image.open(out).size == (70, 40)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(tiny, run_dir / "weights.safetensors")
    assert run(["encode", str(tmp_path / "p.png"), "-m", str(run_dir), "-o", str(tmp_path / "r.hfc")], capsys)[0] == 0
    assert container.read_file(tmp_path / "r.hfc").header.model_id == "test-tiny"
