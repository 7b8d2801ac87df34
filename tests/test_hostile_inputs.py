"""Hostile inputs (issue #16): each reproducer, rebuilt small here and driven through the CLI, gets a
one-line error with its documented exit code (or, for quiet surprises, a one-line warning), with no file
left behind; the memory-hungry ones run together in a subprocess under an address-space limit and must
stay under 1 GB of peak RSS and 2 s each.

Exit codes (hificli/errors.py): 3 invalid input (image, .hfc, stream), 4 model/weights, 5 output.
"""

from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import hostile_samples as hs
import numpy as np
import pytest
from model_fixtures import make_tiny_weights, sample_image
from PIL import Image

from hificli import container, fileio
from hificli.cli.app import main

ROOT = Path(__file__).resolve().parent.parent
GIB = 1024**3


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("model") / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny_file(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A valid .hfc file of a 150x100 image made with the tiny model."""
    from hificli.api import encode, load_model

    return encode(sample_image(150, 100, seed=3), load_model(tiny))


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``hific ARGS`` in-process (the console script's exit-code mapping): (code, stdout, stderr)."""
    capsys.readouterr()
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error:")]


def only(directory: Path) -> list[str]:
    """Names in ``directory``, hidden ones included (leftover temporary files would show)."""
    return sorted(p.name for p in directory.iterdir())


# ---------------------------------------------------------------------------------------------- 1. images


def test_png_bomb_is_refused_from_its_header(tmp_path: Path, tiny: Path, capsys) -> None:
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(hs.png(30000, 30000, rows=1))
    assert bomb.stat().st_size < 200
    start = time.perf_counter()
    code, _, err = run(["encode", str(bomb), "-m", str(tiny)], capsys)
    assert time.perf_counter() - start < 2
    assert code == 3 and len(error_lines(err)) == 1
    assert "reading a 30000x30000 image needs more than" in err and "--max-memory" in err
    assert only(tmp_path) == ["bomb.png"]


def test_large_png_needs_more_memory_said_before_decoding(tmp_path: Path, tiny: Path, capsys) -> None:
    """9000x9000 is within Pillow's limit for 3G, but the tiny model's budget under --max-memory 1G
    refuses it from the header, naming the limit that would do."""
    big = tmp_path / "big.png"
    big.write_bytes(hs.png(9000, 9000, rows=1))
    code, _, err = run(["encode", str(big), "-m", str(tiny), "--max-memory", "1G"], capsys)
    assert code == 3 and "reading a 9000x9000 image needs" in err and "--max-memory 3G" in err
    assert only(tmp_path) == ["big.png"]


def test_truncated_png_is_refused_or_allowed(tmp_path: Path, tiny: Path, capsys) -> None:
    short = tmp_path / "short.png"
    short.write_bytes(hs.png(80, 80, rows=1))  # a complete zlib stream of 1 of 80 rows
    code, _, err = run(["encode", str(short), "-m", str(tiny)], capsys)
    assert code == 3 and "truncated" in err and "--allow-truncated" in err
    assert only(tmp_path) == ["short.png"]
    code, _, err = run(["encode", str(short), "-m", str(tiny), "--allow-truncated"], capsys)
    assert code == 0 and "warning: " in err and "image data ends early" in err
    assert (tmp_path / "short.hfc").is_file()


@pytest.mark.parametrize("keep", [0.3, 0.9, 0.999])
def test_truncated_interlaced_and_sequential_pngs(tmp_path: Path, keep: float) -> None:
    from hificli.errors import BadImageError
    from hificli.imageio import read_image

    for interlace in (0, 1):
        for size in ((67, 45), (64, 40)):  # odd and even heights: the last row comes late either way
            buffer = io.BytesIO()
            sample_image(*size, seed=1).save(buffer, "PNG", interlace=interlace)
            cut = hs.cut_png_stream(buffer.getvalue(), keep)
            Image.open(io.BytesIO(cut)).load()  # Pillow alone accepts it
            with pytest.raises(BadImageError, match="truncated"):
                read_image(cut)


def test_complete_images_in_the_fill_colour_are_not_truncated() -> None:
    """The truncation check pre-fills the buffer: real pixels of that value must not look missing."""
    from hificli.imageio import _SENTINELS, read_image

    for value in _SENTINELS:
        for mode in ("RGB", "L", "RGBA", "P", "I;16"):
            image = Image.new(mode, (33, 17), value if mode != "RGBA" else (value, value, value, 255))
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            assert read_image(buffer.getvalue()).warnings == []
        assert read_image(hs.png(40, 30, fill=value)).pixels.min() == value


def test_wider_than_the_format_is_a_format_error(tmp_path: Path, tiny: Path, capsys) -> None:
    wide = tmp_path / "wide.png"
    wide.write_bytes(hs.png(container.MAX_SIDE + 1, 1))
    code, _, err = run(["encode", str(wide), "-m", str(tiny)], capsys)
    assert code == 3 and "at most 1048576 pixels a side" in err and "--max-memory" not in err


@pytest.mark.parametrize("fmt", ["GIF", "WEBP", "PNG", "TIFF"])
def test_multi_frame_inputs_warn(tmp_path: Path, tiny: Path, fmt: str, capsys) -> None:
    frames = [Image.new("RGB", (32, 24), (60 * i, 20, 200)) for i in range(3)]
    path = tmp_path / f"anim.{fmt.lower()}"
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:])
    code, _, err = run(["encode", str(path), "-m", str(tiny)], capsys)
    assert code == 0 and f"warning: {path}: encoding frame 1 of 3" in err


def test_pillow_warnings_become_one_line_warnings(tmp_path: Path, tiny: Path, capsys) -> None:
    path = tmp_path / "exif.png"
    path.write_bytes(hs.png_with_exif(hs.CORRUPT_EXIF))
    code, _, err = run(["encode", str(path), "-m", str(tiny)], capsys)
    assert code == 0
    assert f"warning: {path}: image decoder: Corrupt EXIF data" in err
    assert "UserWarning" not in err and "warnings.warn" not in err


# ---------------------------------------------------------------------------------------------- 2. streams


def test_empty_streams_of_a_huge_image_are_damaged(tmp_path: Path, capsys) -> None:
    """65 bytes naming the embedded model, claiming 7680x4320, both streams empty."""
    from hificli import weights
    from hificli.zoo import registry

    info = weights.read_weights_info(registry.embedded_path(registry.get("hific-compact")))
    data = hs.empty_streams_file(
        info.model_id, info.fingerprint, info.config.hyper_channels, info.config.latent_channels, 7680, 4320
    )
    assert len(data) < 80
    path = tmp_path / "empty.hfc"
    path.write_bytes(data)
    code, _, err = run(["decode", str(path)], capsys)  # (time and memory: the subprocess test below)
    lines = error_lines(err)
    assert code == 3 and len(lines) == 1 and lines[0].startswith(f"error: {path}: damaged stream 'z'")
    assert only(tmp_path) == ["empty.hfc"]


@pytest.mark.parametrize("stream", ["z", "y"])
def test_all_ones_or_empty_stream_is_damaged(tmp_path: Path, tiny: Path, tiny_file: bytes, stream: str,
                                             capsys) -> None:
    for payload in (b"\xff" * len(container.unpack(tiny_file).stream(stream)), b""):
        path = tmp_path / "bad.hfc"
        path.write_bytes(hs.with_streams(tiny_file, **{stream: payload}))
        code, _, err = run(["decode", str(path), "-m", str(tiny), "-o", str(tmp_path / "out.png")], capsys)
        assert code == 3 and f"damaged stream {stream!r}" in err
    assert only(tmp_path) == ["bad.hfc"]


def test_resealed_payload_bit_flips_are_refused(tiny: Path, tiny_file: bytes) -> None:
    """Every single-bit flip of a payload, CRC recomputed: ANS has no redundancy, but a stream that does
    not decode exactly (words left over, or run out before the symbols) is refused. Flips that keep the
    coder in step are valid codes of other symbols; they stay rare."""
    from hificli.api import load_model
    from hificli.codec import decode_file
    from hificli.errors import CorruptFileError

    model = load_model(tiny)
    hfc = container.unpack(tiny_file)
    decoded = total = 0
    for name in ("z", "y"):
        payload = hfc.stream(name)
        for bit in range(0, 8 * len(payload), 3):
            flipped = bytearray(payload)
            flipped[bit // 8] ^= 1 << (bit % 8)
            total += 1
            try:
                decode_file(hs.with_streams(tiny_file, **{name: bytes(flipped)}), model)
                decoded += 1
            except CorruptFileError as exc:
                assert "damaged stream" in exc.message
    assert total > 100 and decoded <= 0.05 * total, (decoded, total)


def test_free_bits_of_valid_streams_are_small(tiny: Path) -> None:
    """The damage rule never refuses real encodes: noise, flat and tiny images, with escapes."""
    from hificli.api import encode, load_model
    from hificli.codec import decode_file

    model = load_model(tiny)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)), Image.new("RGB", (1, 1)),
              Image.new("RGB", (200, 64), (128, 128, 128)), sample_image(77, 55, seed=2)]
    for image in images:
        pixels, header = decode_file(encode(image, model), model)  # a refusal raises CorruptFileError
        assert pixels.shape == (header.height, header.width, 3)


# ---------------------------------------------------------------------------------------------- 3. endless input


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
@pytest.mark.parametrize("command", [["decode", "/dev/zero"], ["encode", "/dev/zero"], ["info", "/dev/zero"]])
def test_endless_devices_stop_at_once(tmp_path: Path, tiny: Path, command: list[str], capsys) -> None:
    args = [*command, "-o", str(tmp_path / "out.x.png")] if command[0] != "info" else command
    args += ["-m", str(tiny)] if command[0] == "encode" else []
    start = time.perf_counter()
    code, _, err = run(args, capsys)
    assert time.perf_counter() - start < 2 and code == 3 and len(error_lines(err)) == 1
    assert "not an image" in err or "not a .hfc file" in err
    assert only(tmp_path) == []


class Endless(io.RawIOBase):
    """A stream that yields ``head`` and then zeros forever (counting what was read)."""

    def __init__(self, head: bytes = b"") -> None:
        self.head, self.read_bytes = head, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = len(buffer)
        chunk = self.head[self.read_bytes : self.read_bytes + n]
        buffer[: len(chunk)] = chunk
        buffer[len(chunk) : n] = bytes(n - len(chunk))
        self.read_bytes += n
        return n


def test_pipes_read_only_what_the_header_declares(tiny_file: bytes) -> None:
    from hificli.errors import CorruptFileError, InputTooLargeError

    source = Endless(tiny_file)
    with pytest.raises(CorruptFileError):  # the head holds more than the 246 bytes declared
        container.read_stream(io.BufferedReader(source))
    assert source.read_bytes < 2 * fileio.HEAD_BYTES
    assert container.read_stream(io.BytesIO(tiny_file)).size == len(tiny_file)
    source = Endless()
    with pytest.raises(CorruptFileError, match="not a .hfc file"):
        container.read_stream(io.BufferedReader(source))
    assert source.read_bytes < 2 * fileio.HEAD_BYTES
    with pytest.raises(InputTooLargeError, match="over the limit of 1000000 bytes"):
        fileio.read_bounded(io.BufferedReader(Endless(b"\x89PNG")), 1_000_000)


def test_declared_size_of_valid_and_broken_heads(tiny_file: bytes) -> None:
    from hfc_samples import sample_file

    with_icc = sample_file(64, 48, icc=b"profile" * 300)
    for data in (tiny_file, with_icc):
        assert container.declared_size(data + bytes(100)) == len(data)
    assert container.declared_size(tiny_file[:20]) == 20  # cut inside the header: what is at hand
    assert container.declared_size(b"\0" * 64) == 64


def test_info_allocates_only_what_the_file_holds(tmp_path: Path, tiny_file: bytes) -> None:
    import tracemalloc

    path = tmp_path / "a.hfc"
    path.write_bytes(tiny_file)
    tracemalloc.start()
    try:
        assert container.read_file(path).size == len(tiny_file)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024


def test_inputs_over_a_quarter_of_max_memory_are_refused_before_reading(tmp_path: Path, tiny: Path,
                                                                        capsys) -> None:
    path = tmp_path / "huge.png"
    with open(path, "wb") as handle:
        handle.write(hs.png(8, 8))
        handle.truncate(300 * 1024**2)  # sparse
    code, _, err = run(["encode", str(path), "-m", str(tiny), "--max-memory", "1G"], capsys)
    assert code == 3 and "over the limit of 268435456 bytes" in err and "--max-memory" in err


# ---------------------------------------------------------------------------------------------- 4. model ids


def test_a_header_never_names_a_path(tmp_path: Path, tiny: Path, monkeypatch, capsys) -> None:
    """A file whose model id is 'port-ok', decoded where ./port-ok, ./port_ok.pt and a folder named
    like it exist: the header resolves among registry and installed names only (exit 4)."""
    port = make_tiny_weights(tmp_path / "w.safetensors", model_id="port-ok")
    sub = tmp_path / "sub"
    sub.mkdir()
    sample_image(40, 30).save(sub / "x.png")
    assert run(["encode", str(sub / "x.png"), "-m", str(port)], capsys)[0] == 0
    for name in ("port-ok", "port_ok.pt"):  # in the working directory
        (tmp_path / name).write_bytes(port.read_bytes())
    (sub / "port-ok").mkdir()  # and a folder of that name next to the file
    (sub / "port-ok" / "weights.safetensors").write_bytes(port.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HIFIC_CACHE_DIR", str(tmp_path / "cache"))
    start = time.perf_counter()
    code, _, err = run(["decode", "sub/x.hfc", "-o", "y.png"], capsys)
    assert time.perf_counter() - start < 2
    assert code == 4 and "unknown model 'port-ok' (named by the file)" in err and "-m PATH" in err
    assert not (tmp_path / "y.png").exists()
    assert run(["decode", "sub/x.hfc", "-o", "y.png", "-m", "port-ok"], capsys)[0] == 0  # -m may name a path


# ---------------------------------------------------------------------------------------------- 5. checkpoints


def test_zip_bomb_checkpoint_is_refused_before_unpacking(tmp_path: Path, capsys) -> None:
    bomb = tmp_path / "bomb.pt"
    bomb.write_bytes(hs.zip_bomb())
    assert bomb.stat().st_size < 4 * 1024**2
    image = tmp_path / "x.png"
    sample_image(16, 16).save(image)
    start = time.perf_counter()
    code, _, err = run(["encode", str(image), "-m", str(bomb)], capsys)
    assert time.perf_counter() - start < 2
    assert code == 4 and "archive/data.pkl inflates to 3221225472 bytes" in err


def test_stride_zero_tensors_are_refused_before_copying(tmp_path: Path) -> None:
    from hificli.checkpoint import read_port_checkpoint
    from hificli.errors import ModelMismatchError

    small = hs.stride_zero_checkpoint(tmp_path / "s.pt", elements=1 << 20, count=1)
    assert small.stat().st_size < 4096
    with pytest.raises(ModelMismatchError, match="claims more data than it holds"):
        read_port_checkpoint(small)
    huge = hs.stride_zero_checkpoint(tmp_path / "h.pt", elements=1 << 30, count=1)
    with pytest.raises(ModelMismatchError, match="1073741824 elements"):
        read_port_checkpoint(huge)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"n_residual_blocks": 10**5}, "at most 64 residual blocks"),
     ({"encoder_channels": [2**40] * 5}, "widths up to 4096"),
     ({"latent_channels": 6.5}, "must be integers")],
)
def test_huge_architecture_metadata_is_refused(tmp_path: Path, tiny: Path, changes: dict, message: str,
                                               capsys) -> None:
    bad = hs.rewrite_weights(tiny, tmp_path / "bad.safetensors", arch=hs.arch_with(tiny, **changes))
    image = tmp_path / "x.png"
    sample_image(16, 16).save(image)
    start = time.perf_counter()
    code, _, err = run(["encode", str(image), "-m", str(bad)], capsys)
    assert time.perf_counter() - start < 2
    assert code == 4 and "damaged weights metadata" in err and message in err


def test_nested_json_header_is_a_model_error(tmp_path: Path, capsys) -> None:
    nested = hs.nested_json_weights(tmp_path / "nested.safetensors")
    image = tmp_path / "x.png"
    sample_image(16, 16).save(image)
    code, _, err = run(["encode", str(image), "-m", str(nested)], capsys)
    assert code == 4 and len(error_lines(err)) == 1 and "RecursionError" not in err


def dead_pid() -> int:
    """The id of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_staging_left_by_a_killed_import_is_cleaned(tmp_path: Path, tiny: Path, capsys) -> None:
    cache = tmp_path / "cache"
    stale = cache / "tmp" / f"other.{dead_pid()}.0123abcd.staging"
    stale.mkdir(parents=True)
    (stale / "weights.safetensors").write_bytes(b"partial")
    live = cache / "tmp" / f"busy.{os.getpid()}.0123abcd.staging"  # a live process: kept
    live.mkdir()
    code, _, err = run(["models", "import", "mine", str(tiny), "--cache-dir", str(cache)], capsys)
    assert code == 0, err
    assert only(cache / "tmp") == [live.name]


def test_models_rm_of_a_linked_model_leaves_no_link_and_keeps_its_target(tmp_path: Path, tiny: Path,
                                                                          capsys) -> None:
    cache = tmp_path / "cache"
    assert run(["models", "import", "mine", str(tiny), "--cache-dir", str(cache)], capsys)[0] == 0
    elsewhere = tmp_path / "elsewhere"
    os.replace(cache / "models" / "mine", elsewhere)
    os.symlink(elsewhere, cache / "models" / "mine")
    code, _, err = run(["models", "rm", "mine", "--cache-dir", str(cache)], capsys)
    assert code == 0, err
    assert not os.path.lexists(cache / "models" / "mine") and only(cache / "tmp") == []
    assert (elsewhere / "weights.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- 6. fingerprints


def test_tampered_weights_are_refused(tmp_path: Path, tiny: Path, capsys) -> None:
    from safetensors.torch import load_file

    key = next(k for k in load_file(str(tiny)) if k.startswith("Generator."))
    tensor = load_file(str(tiny))[key]
    tampered = hs.rewrite_weights(tiny, tmp_path / "t.safetensors", tensors={key: tensor + 0.5})
    image = tmp_path / "x.png"
    sample_image(16, 16).save(image)
    code, _, err = run(["encode", str(image), "-m", str(tampered)], capsys)
    assert code == 4 and "do not match their fingerprint" in err
    code, _, err = run(["models", "import", "evil", str(tampered), "--cache-dir", str(tmp_path / "c")], capsys)
    assert code == 4 and "do not match their fingerprint" in err
    assert not (tmp_path / "c" / "models" / "evil").exists()


NO_TORCH_SCRIPT = textwrap.dedent("""
    import json, sys
    from hificli.cli.app import main
    codes = []
    for args in json.loads(sys.argv[1]):
        try:
            main(args)
            codes.append(0)
        except SystemExit as exc:
            codes.append(exc.code)
    print(json.dumps({"codes": codes, "torch": "torch" in sys.modules}))
""")


def test_damaged_streams_and_tampered_weights_are_refused_before_torch(tmp_path: Path, tiny: Path,
                                                                       tiny_file: bytes) -> None:
    """Every stream is decoded with numpy (tables, exact hyper-synthesis and context: hificli.latent) and
    the fingerprint checked with numpy before torch is imported: the 65-byte empty-stream file, a z or
    y stream of 0xFF, the last context stream of the default model all 0xFF (issue #16's slowest case)
    and tampered weights are refused without it."""
    from safetensors.numpy import load_file

    from hificli import weights
    from hificli.zoo import registry

    info = weights.read_weights_info(registry.embedded_path(registry.get("hific-compact")))
    arch = info.config
    (tmp_path / "empty.hfc").write_bytes(
        hs.empty_streams_file(info.model_id, info.fingerprint, arch.hyper_channels, arch.latent_channels, 7680, 4320)
    )
    z = container.unpack(tiny_file).stream("z")
    (tmp_path / "zff.hfc").write_bytes(hs.with_streams(tiny_file, z=b"\xff" * len(z)))
    key = next(k for k in load_file(str(tiny)) if k.startswith("Generator."))
    import torch

    tensor = torch.from_numpy(load_file(str(tiny))[key])
    tampered = hs.rewrite_weights(tiny, tmp_path / "t.safetensors", tensors={key: tensor + 0.5})
    sample_image(16, 16).save(tmp_path / "x.png")
    from hificli.api import encode, load_model

    ctx = make_tiny_weights(tmp_path / "ctx.safetensors", preset="tiny-gdn", context="checkerboard",
                            context_channels=8)
    ctx_file = encode(sample_image(150, 100, seed=3), load_model(ctx))
    assert container.unpack(ctx_file).header.spatial_context
    (tmp_path / "ctx.hfc").write_bytes(hs.with_streams(ctx_file, z=b""))
    y = container.unpack(tiny_file).stream("y")
    (tmp_path / "yff.hfc").write_bytes(hs.with_streams(tiny_file, y=b"\xff" * len(y)))
    default_file = encode(sample_image(300, 200, seed=4), load_model())
    last = container.unpack(default_file).header.streams[-1]
    assert last.name == "y3"  # the default model codes four channel slices
    (tmp_path / "y3ff.hfc").write_bytes(hs.with_streams(default_file, y3=b"\xff" * last.length))
    d = str(tmp_path)
    plan = [
        ["decode", f"{d}/empty.hfc", "-o", f"{d}/o1.png"],
        ["decode", f"{d}/zff.hfc", "-m", str(tiny), "-o", f"{d}/o2.png"],
        ["encode", f"{d}/x.png", "-m", str(tampered), "-o", f"{d}/o3.hfc"],
        ["decode", f"{d}/zff.hfc", "-m", str(tampered), "-o", f"{d}/o4.png"],  # the weights' error first
        ["decode", f"{d}/ctx.hfc", "-m", str(ctx), "-o", f"{d}/o5.png"],  # streams z, ya, yb
        ["decode", f"{d}/yff.hfc", "-m", str(tiny), "-o", f"{d}/o6.png"],
        ["decode", f"{d}/y3ff.hfc", "-o", f"{d}/o7.png"],  # the model the header names
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", NO_TORCH_SCRIPT, json.dumps(plan)], env=env, capture_output=True,
                            text=True, timeout=120)
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"codes": [3, 3, 4, 4, 3, 3, 3], "torch": False}
    lines = error_lines(result.stderr)
    assert len(lines) == 7, result.stderr
    assert all("damaged stream 'z'" in lines[i] for i in (0, 1, 4))
    assert "do not match their fingerprint" in lines[2] and "do not match their fingerprint" in lines[3]
    assert "damaged stream 'y'" in lines[5] and "damaged stream 'y3'" in lines[6]
    assert only(tmp_path) == ["ctx.hfc", "ctx.safetensors", "empty.hfc", "t.safetensors", "x.png", "y3ff.hfc",
                              "yff.hfc", "zff.hfc"]


def test_numpy_fingerprint_is_the_torch_one(tiny: Path) -> None:
    """The check before torch hashes numpy arrays: the same bytes as torch's float16 rounding."""
    from safetensors.numpy import load_file

    from hificli import weights
    from hificli.zoo import registry

    for path in (tiny, registry.embedded_path(registry.get("hific-compact"))):
        info = weights.read_weights_info(path)
        arrays = load_file(str(path))
        tables = {k: v for k, v in arrays.items() if k.startswith("tables.")}
        state = {k: v for k, v in arrays.items() if not k.startswith("tables.")}
        import torch

        tensors = {k: torch.from_numpy(v) for k, v in state.items()}
        assert weights.fingerprint(state, tables, info.config) == info.fingerprint
        assert weights.fingerprint(tensors, tables, info.config) == info.fingerprint
    odd = np.array([1e-8, 65520.0, -0.0, 2.0**-24, 3.0e-5, np.inf, 1 / 3], dtype=np.float32)  # subnormal, overflow
    assert weights._float16_bits(odd)[1].tolist() == torch.from_numpy(odd).half().view(torch.int16).tolist()


@pytest.mark.parametrize("model_id", ["x" * 200, "../../evil", "Upper"])
def test_bad_model_ids_in_weights_are_refused_at_load(tmp_path: Path, tiny: Path, model_id: str, capsys) -> None:
    bad = hs.rewrite_weights(tiny, tmp_path / "b.safetensors", model_id=model_id)
    image = tmp_path / "x.png"
    sample_image(16, 16).save(image)
    code, _, err = run(["encode", str(image), "-m", str(bad)], capsys)
    assert code == 4 and "bad model id" in err and len(error_lines(err)) == 1
    assert only(tmp_path) == ["b.safetensors", "x.png"]


def test_checkpoint_file_names_become_valid_model_ids() -> None:
    from hificli.api import checkpoint_model_id

    assert checkpoint_model_id(Path("My_Model v2.pt")) == "my-model-v2"
    assert checkpoint_model_id(Path("__.pt")) == "checkpoint"
    assert container.is_model_id(checkpoint_model_id(Path("é" * 300 + ".pt")))


# ---------------------------------------------------------------------------------------------- 7. outputs


@pytest.mark.parametrize("kind", ["fifo", "link-to-null", "link-to-fifo", "directory"])
def test_special_outputs_are_never_replaced(tmp_path: Path, tiny: Path, kind: str, capsys) -> None:
    image = tmp_path / "x.png"
    sample_image(16, 16).save(image)
    target = tmp_path / ("x.hfc" if kind == "directory" else "out.hfc")  # -o DIR would write into it
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "link-to-null":
        os.symlink(os.devnull, target)
    elif kind == "link-to-fifo":
        os.mkfifo(tmp_path / "pipe")
        os.symlink(tmp_path / "pipe", target)
    else:
        target.mkdir()
    before = os.lstat(target)
    output = [] if kind == "directory" else ["-o", str(target)]
    code, _, err = run(["encode", str(image), "-m", str(tiny), *output, "-f"], capsys)
    assert code == 5 and "not a regular file" in err and len(error_lines(err)) == 1
    after = os.lstat(target)
    assert (stat.S_IFMT(after.st_mode), after.st_ino) == (stat.S_IFMT(before.st_mode), before.st_ino)
    assert not [n for n in only(tmp_path) if n.endswith(".part")]


def test_writer_never_writes_one_name_twice_in_a_command(tmp_path: Path) -> None:
    import click

    from hificli.errors import OutputExistsError

    target = str(tmp_path / "x.hfc")
    with click.Context(click.Command("t")):
        fileio.write_output(target, b"first", force=True)
        with pytest.raises(OutputExistsError, match="already written by this command"):
            fileio.write_output(target, b"second", force=True)
    assert Path(target).read_bytes() == b"first"
    fileio.write_output(target, b"third", force=True)  # another command (no context): allowed


def test_duplicate_output_names_keep_both_or_fail(tmp_path: Path, tiny: Path, capsys) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        sample_image(16, 16, seed=ord(folder)).save(tmp_path / folder / "x.png")
    out = tmp_path / "out"
    out.mkdir()
    args = ["encode", str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), "-o", str(out), "-f"]
    code, _, err = run([*args, "-m", str(tiny)], capsys)
    assert code != 0 and error_lines(err)
    assert [n for n in only(out) if not n.endswith(".part")] in ([], ["x.hfc"])


def test_part_files_of_killed_runs_are_cleaned_by_the_next_run(tmp_path: Path, tiny: Path, capsys) -> None:
    target = tmp_path / "x.hfc"
    kill = textwrap.dedent(f"""
        import os, signal
        from hificli.fileio import atomic_target
        tmp = atomic_target({str(target)!r}).__enter__()
        open(tmp, "wb").write(b"half")
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", kill], env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == -signal.SIGKILL
    left = [n for n in only(tmp_path) if n.endswith(".part")]
    assert len(left) == 1
    old = time.time() - 10
    os.utime(tmp_path / left[0], (old, old))
    old_style = tmp_path / ".x.hfc.ab12cd34.part"  # no process id: cleaned by age only
    old_style.write_bytes(b"")
    os.utime(old_style, (time.time() - 2 * fileio.PART_MAX_AGE,) * 2)
    mine = tmp_path / f".x.hfc.{os.getpid()}.zz99yy88.part"  # a live process's: kept
    mine.write_bytes(b"")
    image = tmp_path / "x.png"
    sample_image(16, 16).save(image)
    code, _, err = run(["encode", str(image), "-m", str(tiny), "-o", str(target)], capsys)
    assert code == 0, err
    assert only(tmp_path) == sorted([mine.name, "x.hfc", "x.png"])


# ---------------------------------------------------------------------------------------------- memory


MEMORY_SCRIPT = textwrap.dedent("""
    import io, json, resource, sys, time
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from hificli.cli.app import main
    results = []
    for args, stdin in json.loads(sys.argv[2]):
        sys.stdin = io.TextIOWrapper(open(stdin, "rb")) if stdin else sys.stdin
        sys.stderr = io.StringIO()
        start = time.perf_counter()
        try:
            main(args)
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        seconds = time.perf_counter() - start
        results.append({"args": args, "code": code, "seconds": seconds, "err": sys.stderr.getvalue()})
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sys.__stdout__.write(json.dumps({"results": results, "peak": peak}))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS and /dev/zero: Linux")
def test_reproducers_run_in_bounded_memory_and_time(tmp_path: Path) -> None:
    """The memory-hungry reproducers, with the default model, in one process under a 2.5 GiB
    address-space limit (hific itself needs about 1.5): each fails cleanly within 2 s, and the process
    peaks under 1 GB of RSS (before #16 they took 1.85-6 GiB)."""
    (tmp_path / "bomb.png").write_bytes(hs.png(30000, 30000, rows=1))
    (tmp_path / "big.png").write_bytes(hs.png(12000, 12000, rows=1))
    (tmp_path / "zip.pt").write_bytes(hs.zip_bomb())
    hs.stride_zero_checkpoint(tmp_path / "stride.pt")
    sample_image(16, 16).save(tmp_path / "ok.png")
    from hificli import weights
    from hificli.zoo import registry

    info = weights.read_weights_info(registry.embedded_path(registry.get("hific-compact")))
    arch = info.config
    (tmp_path / "empty.hfc").write_bytes(
        hs.empty_streams_file(info.model_id, info.fingerprint, arch.hyper_channels, arch.latent_channels, 7680, 4320)
    )
    (tmp_path / "small.hfc").write_bytes(
        hs.empty_streams_file(info.model_id, info.fingerprint, arch.hyper_channels, arch.latent_channels, 8, 8)
    )
    d = str(tmp_path)
    cases = [
        (["encode", f"{d}/ok.png", "-o", f"{d}/warm.hfc"], None, 0, ""),  # imports torch, loads the model
        (["encode", f"{d}/bomb.png", "-o", f"{d}/o1.hfc"], None, 3, "needs more than"),
        (["encode", f"{d}/big.png", "-o", f"{d}/o2.hfc"], None, 3, "--max-memory 7G"),
        (["decode", f"{d}/empty.hfc", "-o", f"{d}/o3.png"], None, 3, "damaged stream"),
        (["decode", "/dev/zero", "-o", f"{d}/o4.png"], None, 3, "not a .hfc file"),
        (["encode", "/dev/zero", "-o", f"{d}/o5.hfc"], None, 3, "not an image"),
        (["encode", "-", "-o", f"{d}/o6.hfc"], "/dev/zero", 3, "not an image"),
        (["info", f"{d}/small.hfc"], None, 0, ""),
        (["encode", f"{d}/ok.png", "-m", f"{d}/zip.pt", "-o", f"{d}/o7.hfc"], None, 4, "inflates to"),
        (["encode", f"{d}/ok.png", "-m", f"{d}/stride.pt", "-o", f"{d}/o8.hfc"], None, 4, "claims more data"),
    ]
    plan = json.dumps([[args, stdin] for args, stdin, _, _ in cases])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HIFIC_CACHE_DIR": str(tmp_path / "cache")}
    result = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, str(int(2.5 * GIB)), plan], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    for (_, _, code, text), got in zip(cases, report["results"], strict=True):
        assert got["code"] == code and text in got["err"], got
        assert len(error_lines(got["err"])) == (1 if code else 0), got
    assert all(got["seconds"] < 2 for got in report["results"][1:]), report["results"]
    assert report["peak"] < GIB, report["peak"]
    assert sorted(n for n in only(tmp_path) if n.startswith("o") or n.endswith(".part")) == ["ok.png"]


def test_valid_streams_ending_in_escapes_just_past_the_range_decode() -> None:
    """Escapes of the value just past a row's range have bit count k = 0, the first bin of the uniform
    escape model: many of them at the end of a stream are valid and must not look like a stream that
    ran out (found with the full-size model, whose 768x512 photo ended in 17 such escapes)."""
    from hificli.entropy.coder import decode_symbols, encode_symbols
    from hificli.entropy.tables import latent_tables
    from hificli.errors import CorruptFileError

    table = latent_tables("gaussian", np.array([0.5, 2.0]))
    c = -int(table.offsets[1])  # row 1 covers -c..c
    rng = np.random.default_rng(0)
    symbols = rng.integers(-2, 3, size=400).astype(np.int32)
    indexes = np.ones(400, dtype=np.int32)
    symbols[-40:] = c + 1  # 40 escapes with k = 0, decoded last
    data = encode_symbols(symbols, indexes, table)
    assert np.array_equal(decode_symbols(data, indexes, table), symbols)
    with pytest.raises(CorruptFileError, match="damaged stream"):
        decode_symbols(b"", indexes, table)  # an empty stream still is refused


def test_one_image_bomb_is_refused_before_torch_loads(tmp_path: Path) -> None:
    """A single huge-header input fails in the up-front checks: a fresh process imports no torch."""
    import subprocess
    import sys

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(hs.png(30000, 30000, rows=1))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "hificli", "encode", str(bomb)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    errors = [line for line in lines if line.startswith("error:")]
    assert proc.returncode == 3 and len(errors) == 1 and "needs more than" in errors[0], proc.stderr[-500:]
    assert "torch" not in imported
    assert only(tmp_path) == ["bomb.png"]
