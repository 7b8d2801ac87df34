"""The CLI as people use it (issue #15): no lost photos, instant usage errors, a quick start that works,
output for scripts and logs, exit codes and messages, and the docs saying what the code does."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from model_fixtures import make_tiny_weights, sample_image
from PIL import Image

from hificli import container
from hificli.cli.app import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(args: list[str], capsys: pytest.CaptureFixture[str], cwd: Path | None = None) -> tuple[int, str, str]:
    """The CLI in this process through main() (the console script's exit-code mapping)."""
    old = os.getcwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as exc:
            main(args)
    finally:
        os.chdir(old)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def hific(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, list[str], float, list[str]]:
    """A real `hific` process under ``-X importtime``: (exit code, stderr lines without the import log,
    seconds, names of the modules it imported)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "hificli", *args],
        cwd=cwd, capture_output=True, text=True, env=env, timeout=120,
    )
    seconds = time.perf_counter() - start
    lines = proc.stderr.splitlines()
    imported = [line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")]
    return proc.returncode, [line for line in lines if not line.startswith("import time:")], seconds, imported


def assert_instant_usage_error(code: int, lines: list[str], seconds: float, imported: list[str],
                               message: str, exit_code: int = 2) -> None:
    assert code == exit_code, lines
    assert lines and lines[0].startswith("error: ") and message in lines[0], lines
    assert all(line.startswith("hint: ") for line in lines[1:]) and len(lines) <= 2, lines
    assert not any(name == "torch" or name.startswith("torch.") for name in imported), "torch was imported"
    assert seconds < 5.0, f"{seconds:.2f} s"  # about 0.1-0.3 s on a quiet machine


# ---------------------------------------------------------------------------------------------- 1. data loss


def test_output_equal_to_an_input_is_refused_even_with_force(tmp_path: Path) -> None:
    photo = tmp_path / "t.png"
    sample_image(40, 30).save(photo)
    before = digest(photo)
    os.link(photo, tmp_path / "hard.png")
    (tmp_path / "soft.png").symlink_to(photo)
    for args in (
        ["encode", "t.png", "-o", "t.png", "-f"],
        ["encode", "t.png", "-o", "./sub/../t.png", "-f"],
        ["encode", "t.png", "-o", "hard.png", "-f"],  # another name of the same inode
        ["encode", "t.png", "-o", "soft.png", "-f"],
        ["encode", "t.png", "--reconstruct", "t.png", "-f"],
    ):
        (tmp_path / "sub").mkdir(exist_ok=True)
        result = hific(*args, cwd=tmp_path)
        assert_instant_usage_error(*result, "refusing to write")
        assert "it is the input t.png" in result[1][0]
    assert digest(photo) == before and not (tmp_path / "t.hfc").exists()
    hfc = tmp_path / "a.hfc"
    hfc.write_bytes(b"\x89HFC" + bytes(40))
    assert_instant_usage_error(*hific("decode", "a.hfc", "-o", "a.hfc", "-f", cwd=tmp_path), "refusing to write")
    assert hfc.read_bytes() == b"\x89HFC" + bytes(40)


def test_two_inputs_writing_one_output_are_refused(tmp_path: Path) -> None:
    for folder in ("d1", "d2", "out"):
        (tmp_path / folder).mkdir()
    for name in ("d1/x.png", "d2/x.png", "x.png", "x.jpg"):
        sample_image(20, 20).save(tmp_path / name)
    result = hific("encode", "d1/x.png", "d2/x.png", "-o", "out", cwd=tmp_path)
    assert_instant_usage_error(*result, "d1/x.png and d2/x.png would both be written to out/x.hfc")
    assert_instant_usage_error(*hific("encode", "x.png", "x.jpg", cwd=tmp_path), "would both be written to x.hfc")
    assert_instant_usage_error(*hific("encode", "x.png", "./x.png", "-o", "out", cwd=tmp_path), "same file")
    assert list((tmp_path / "out").iterdir()) == [] and not (tmp_path / "x.hfc").exists()


def test_hfc_data_under_an_image_name_gets_a_warning(tmp_path: Path, tiny: Path, capsys) -> None:
    sample_image(48, 32).save(tmp_path / "a.jpg")
    (tmp_path / "out").mkdir()
    code, _, err = run(["encode", str(tmp_path / "a.jpg"), "-m", str(tiny), "-o", str(tmp_path / "out/a.png")], capsys)
    assert code == 0, err
    assert f"warning: {tmp_path / 'out/a.png'}: writing .hfc data under a name that does not end in .hfc" in err
    assert container.read_file(tmp_path / "out/a.png").header.width == 48  # .hfc bytes, as warned
    code, _, err = run(["encode", str(tmp_path / "a.jpg"), "-m", str(tiny)], capsys)
    assert code == 0 and "warning" not in err


# ---------------------------------------------------------------------------------------------- 2. usage errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["encode", "missing.png"], "missing.png: no such file"),
        (["decode", "missing.hfc"], "missing.hfc: no such file"),
        (["encode", "folder"], "folder: is a directory"),
        (["encode", "p.png", "-o", "nodir/p.hfc"], "nodir: directory does not exist"),
        (["encode", "p.png", "q.png", "-o", "single.hfc"], "-o single.hfc: several inputs need a directory"),
        (["encode", "p.png", "q.png", "-o", "newdir"], "newdir: directory does not exist"),
        (["encode", "p.png", "q.png", "--reconstruct", "folder/x.png"], "--reconstruct folder/x.png: several"),
        (["encode", "p.png", "--reconstruct", "r.xyz"], "cannot write images with extension '.xyz'"),
        (["decode", "p.hfc", "-o", "x.xyz"], "-o x.xyz: cannot write images with extension '.xyz'"),
        (["decode", "p.hfc", "-o", "x"], "cannot write images with extension '(none)'"),
        (["encode", "p.png", "--max-memory", "1K"], "--max-memory 1 KiB is below the 364 MiB"),
        (["encode", "big0.png", "big1.png", "-o", "folder", "-j", "2", "--max-memory", "500M"], "shared by 2 workers"),
        (["encode", "p.png", "-o", "-", "--json"], "--json prints to stdout, which -o - already uses"),
        (["encode", "-", "-"], "- (stdin) can be given only once"),
    ],
)
def test_usage_errors_are_instant_and_load_no_torch(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "folder").mkdir()
    for name in ("p.png", "q.png"):
        sample_image(16, 16).save(tmp_path / name)
    for name in ("big0.png", "big1.png"):  # enough pixels for two -j workers (hificli.cli.batch.PIXELS_PER_WORKER)
        Image.new("RGB", (1536, 1024)).save(tmp_path / name)
    (tmp_path / "p.hfc").write_bytes(b"\x89HFC" + bytes(40))
    before = {p.name for p in tmp_path.rglob("*")}
    assert_instant_usage_error(*hific(*args, cwd=tmp_path), message)
    assert {p.name for p in tmp_path.rglob("*")} == before  # nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_input_is_a_usage_error(tmp_path: Path) -> None:
    photo = tmp_path / "p.png"
    sample_image(16, 16).save(photo)
    photo.chmod(0)
    assert_instant_usage_error(*hific("encode", "p.png", cwd=tmp_path), "p.png: permission denied")


def test_unknown_or_unavailable_model_fails_before_torch(tmp_path: Path) -> None:
    sample_image(16, 16).save(tmp_path / "p.png")
    env = {**os.environ, "HIFIC_CACHE_DIR": str(tmp_path / "cache")}
    result = hific("encode", "p.png", "-m", "no-such-model", cwd=tmp_path, env=env)
    assert_instant_usage_error(*result, "unknown model 'no-such-model'", exit_code=4)
    env.pop("HIFIC_OFFLINE", None)
    result = hific("encode", "p.png", "-m", "hific-med", "--offline", cwd=tmp_path, env=env)
    assert_instant_usage_error(*result, "hific-med is not installed and hific is offline (--offline)", exit_code=4)
    result = hific("encode", "p.png", "-m", "hific-med", cwd=tmp_path, env={**env, "HIFIC_OFFLINE": "1"})
    assert_instant_usage_error(*result, "offline (HIFIC_OFFLINE=1)", exit_code=4)


def test_all_outputs_existing_fails_without_loading_a_model(tmp_path: Path) -> None:
    for name in ("a.png", "b.png"):
        sample_image(16, 16).save(tmp_path / name)
        (tmp_path / name).with_suffix(".hfc").write_bytes(b"old")
    code, lines, _, imported = hific("encode", "a.png", "b.png", cwd=tmp_path)
    assert code == 5 and "torch" not in imported
    assert lines[0] == "error: a.png: a.hfc exists" and "error: b.png: b.hfc exists" in lines
    assert lines[-1] == "error: summary: 2 of 2 files failed"
    assert (tmp_path / "a.hfc").read_bytes() == b"old"


# ---------------------------------------------------------------------------------------------- 3. quick start


def _quick_start_commands() -> list[list[str]]:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    lines = [line.split("#", 1)[0].strip() for line in blocks[-1].splitlines()]
    return [shlex.split(line) for line in lines if line]


def test_readme_quick_start_says_how_to_run_hific() -> None:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "source .venv/bin/activate" in section and ".venv/bin/hific" in section
    assert README.index("## Set-up: two commands") < README.index("## Quick start") < README.index("## Usage")


def test_readme_quick_start_works_the_first_time(tmp_path: Path, capsys) -> None:
    """The README's first flow, as written, with the default model: every step exits 0, the original is
    untouched and the decoded image is next to it."""
    commands = _quick_start_commands()
    assert [c[:2] for c in commands if c[0] == "hific"] == [["hific", "encode"], ["hific", "info"], ["hific", "decode"]]
    for command in commands:
        if command[0] == "cp":
            shutil.copy(ROOT / command[1], tmp_path / command[2])
            original = tmp_path / command[2]
            before = digest(original)
            continue
        code, _, err = run(command[1:], capsys, cwd=tmp_path)
        assert code == 0, (command, err)
    assert digest(original) == before
    decoded = Image.open(original.with_suffix(".decoded.png"))
    assert decoded.size == Image.open(original).size
    assert "photo.decoded.png" in README and "NAME.decoded.png" in README


def test_decode_default_name_next_to_the_original(tmp_path: Path, tiny: Path, capsys) -> None:
    photo = tmp_path / "flower.png"
    sample_image(64, 40).save(photo)
    before = digest(photo)
    assert run(["encode", str(photo), "-m", str(tiny)], capsys)[0] == 0
    code, _, err = run(["decode", str(tmp_path / "flower.hfc"), "-m", str(tiny)], capsys)
    assert code == 0, err
    assert digest(photo) == before and Image.open(tmp_path / "flower.decoded.png").size == (64, 40)
    (tmp_path / "out").mkdir()
    assert run(["decode", str(tmp_path / "flower.hfc"), "-m", str(tiny), "-o", str(tmp_path / "out")], capsys)[0] == 0
    assert (tmp_path / "out" / "flower.png").is_file()


# ---------------------------------------------------------------------------------------------- 4. output


def test_off_tty_output_keeps_full_paths_one_line_warnings_totals_and_model(tmp_path: Path, tiny: Path, capsys) -> None:
    deep = tmp_path / ("a-rather-long-directory-name-" * 4)
    deep.mkdir()
    sample_image(64, 48, seed=1).save(deep / "first-photo-with-a-long-name.png")
    rgba = sample_image(32, 32).convert("RGBA")
    rgba.putalpha(Image.new("L", (32, 32), 100))
    rgba.save(deep / "see-through.png")
    inputs = [str(deep / "first-photo-with-a-long-name.png"), str(deep / "see-through.png")]
    code, _, err = run(["encode", *inputs, "-m", str(tiny), "-o", str(deep)], capsys)
    assert code == 0, err
    lines = err.splitlines()
    warning = next(line for line in lines if line.startswith("warning:"))
    assert warning == f"warning: {inputs[1]}: transparency flattened onto white (hific stores no alpha channel)"
    rows = {line.split()[0]: line for line in lines if line.startswith(str(deep))}
    outputs = [Path(p).with_suffix(".hfc") for p in inputs]
    for source, target in zip(inputs, outputs, strict=True):
        assert source in rows and str(target) in rows[source].split()  # whole paths, no "..."
    total = next(line for line in lines if line.startswith("total (2 files)"))
    hfc_bytes = sum(p.stat().st_size for p in outputs)
    assert f"{8 * hfc_bytes / (64 * 48 + 32 * 32):.3f}" in total.split()
    assert lines[-1] == "model: test-tiny"


def test_json_lines_for_encode_and_decode(tmp_path: Path, tiny: Path, capsys) -> None:
    sample_image(64, 48).save(tmp_path / "a.png")
    (tmp_path / "bad.png").write_bytes(b"not an image")
    code, out, err = run(["encode", str(tmp_path / "a.png"), str(tmp_path / "bad.png"), "-m", str(tiny),
                          "-o", str(tmp_path), "--json"], capsys)
    assert code == 3
    good, bad = (json.loads(line) for line in out.splitlines())
    hfc = tmp_path / "a.hfc"
    assert good["ok"] and good["input"] == str(tmp_path / "a.png") and good["output"] == str(hfc)
    assert good["output_bytes"] == hfc.stat().st_size and good["input_bytes"] == (tmp_path / "a.png").stat().st_size
    assert good["bpp"] == pytest.approx(8 * hfc.stat().st_size / (64 * 48))
    assert good["model"] == "test-tiny" and good["width"] == 64 and good["seconds"] >= 0
    assert "quality" not in good  # a fixed-rate model codes at no quality
    assert not bad["ok"] and bad["exit_code"] == 3 and "not an image" in bad["error"] and bad["bpp"] is None
    assert "input  " not in err  # the table is left out
    code, out, _ = run(["decode", str(hfc), "-m", str(tiny), "-o", str(tmp_path / "a.webp"), "--json"], capsys)
    [record] = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and record["ok"] and record["output_bytes"] == (tmp_path / "a.webp").stat().st_size
    assert record["input_bytes"] == hfc.stat().st_size and record["bpp"] == pytest.approx(good["bpp"])


def test_verbose_shows_weights_load_time_tiles_and_threads(tmp_path: Path, tiny: Path, capsys) -> None:
    sample_image(64, 48).save(tmp_path / "a.png")
    code, _, err = run(["-v", "encode", str(tmp_path / "a.png"), "-m", str(tiny), "--tile", "64"], capsys)
    assert code == 0, err
    assert re.search(rf"model test-tiny: {re.escape(str(tiny))} \(fp32, fingerprint [0-9a-f]{{16}}\), "
                     r"loaded in \d+\.\d\d s", err), err
    assert f"{tmp_path / 'a.png'}: 4 tiles (--tile 64 px)" in err  # 128x128 padded -> 2x2 tiles of 64 px
    assert re.search(r"compute: cpu, \d+ threads?", err), err
    code, _, err = run(["-vv", "encode", str(tmp_path / "a.png"), "-m", str(tiny), "-f"], capsys)
    size = (tmp_path / "a.hfc").stat().st_size
    assert code == 0 and f"total {size:,} B" in err and "1 tile (automatic under --max-memory 3 GiB)" in err
    code, _, quiet = run(["encode", str(tmp_path / "a.png"), "-m", str(tiny), "-f"], capsys)
    assert code == 0 and "loaded in" not in quiet and "tile" not in quiet


def _with_terminal_stderr(args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run hific with stderr on a pseudo-terminal and stdout on a pipe: (exit code, stdout, terminal text)."""
    import pty
    import threading

    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hificli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    chunks: list[bytes] = []

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO once the process has closed the terminal
                return
            if not chunk:
                return
            chunks.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    out = proc.communicate(timeout=120)[0].decode()
    reader.join(timeout=30)
    os.close(master)
    return proc.returncode, out, b"".join(chunks).decode(errors="replace")


def test_status_line_while_the_model_loads_in_a_terminal(tmp_path: Path, tiny: Path) -> None:
    sample_image(32, 32).save(tmp_path / "a.png")
    code, _, text = _with_terminal_stderr(["encode", "a.png", "-m", str(tiny)], tmp_path)
    assert code == 0, text
    assert f"loading model {tiny} ..." in text and "\r\x1b[K" in text, text
    assert text.index("loading model") < text.index("input")  # erased before the summary
    sample_image(40, 32).save(tmp_path / "b.png")
    code, out, text = _with_terminal_stderr(["encode", "a.png", "b.png", "-m", str(tiny), "-f", "--json"], tmp_path)
    assert code == 0, text
    assert [json.loads(line)["input"] for line in out.splitlines()] == ["a.png", "b.png"]  # not onto the bar
    assert '"input"' not in text


# ---------------------------------------------------------------------------------------------- 5. exit codes


def test_truncated_and_empty_files_say_so(tmp_path: Path, tiny: Path, capsys) -> None:
    sample_image(64, 48).save(tmp_path / "a.png")
    assert run(["encode", str(tmp_path / "a.png"), "-m", str(tiny)], capsys)[0] == 0
    data = (tmp_path / "a.hfc").read_bytes()
    (tmp_path / "cut.hfc").write_bytes(data[:-20])
    code, _, err = run(["decode", str(tmp_path / "cut.hfc"), "-m", str(tiny), "-o", str(tmp_path / "x.png")], capsys)
    assert code == 3 and f"truncated .hfc file: {len(data) - 20} of {len(data)} bytes" in err
    (tmp_path / "blank.png").write_bytes(b"")
    (tmp_path / "empty.hfc").write_bytes(b"")
    code_e, _, err_e = run(["encode", str(tmp_path / "blank.png"), "-m", str(tiny)], capsys)
    code_d, _, err_d = run(["decode", str(tmp_path / "empty.hfc"), "-m", str(tiny)], capsys)
    assert code_e == code_d == 3
    assert err_e == f"error: {tmp_path / 'blank.png'}: the file is empty (0 bytes)\n"
    assert err_d == f"error: {tmp_path / 'empty.hfc'}: the file is empty (0 bytes)\n"


def test_click_usage_errors_are_one_line_and_bare_hific_is_help(tmp_path: Path) -> None:
    code, lines, _, _ = hific("encode", "--no-such-option", cwd=tmp_path)
    assert code == 2 and len(lines) == 2, lines
    assert lines[0].startswith("error: no such option '--no-such-option'")
    assert lines[1] == "hint: see 'hific encode --help'"
    code, lines, _, _ = hific("encode", cwd=tmp_path)
    assert code == 2 and lines == ["error: missing argument 'IMAGE...'", "hint: see 'hific encode --help'"]
    proc = subprocess.run([sys.executable, "-m", "hificli"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "Commands:" in proc.stdout and proc.stderr == ""


# ---------------------------------------------------------------------------------------------- 6. small things


def test_srgb_icc_profile_is_kept(tmp_path: Path, tiny: Path, capsys) -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    sample_image(40, 30).save(tmp_path / "p.png", icc_profile=icc)
    assert run(["encode", str(tmp_path / "p.png"), "-m", str(tiny)], capsys)[0] == 0
    code, out, _ = run(["info", "--json", str(tmp_path / "p.hfc")], capsys)
    assert code == 0 and json.loads(out)[0]["icc_bytes"] == len(icc)
    assert run(["decode", str(tmp_path / "p.hfc"), "-m", str(tiny)], capsys)[0] == 0
    assert Image.open(tmp_path / "p.decoded.png").info["icc_profile"] == icc


def test_models_verify_checks_the_built_in_models(tmp_path: Path, capsys, monkeypatch) -> None:
    from hificli.zoo import registry

    built_in = [e.name for e in registry.MODELS if e.embedded]
    code, out, err = run(["models", "verify", "--cache-dir", str(tmp_path)], capsys)
    assert code == 0, err
    assert [line.split() for line in out.splitlines()] == [["ok", name] for name in built_in]
    entry = registry.get(registry.DEFAULT_MODEL)
    damaged = tmp_path / "damaged.safetensors"
    data = bytearray(registry.embedded_path(entry).read_bytes())
    data[-5] ^= 0x40  # a tensor byte: the header still parses
    damaged.write_bytes(bytes(data))
    real = registry.embedded_path
    monkeypatch.setattr(registry, "embedded_path", lambda e: damaged if e.name == entry.name else real(e))
    code, out, err = run(["models", "verify", entry.name, "--cache-dir", str(tmp_path)], capsys)
    assert code == 4 and out == f"FAILED  {entry.name}\n"
    assert "tensors hash to fingerprint" in err and "reinstall hific" in err


def test_models_verify_of_a_missing_model_hints_at_pull(tmp_path: Path, capsys) -> None:
    code, _, err = run(["models", "verify", "hific-med", "--cache-dir", str(tmp_path)], capsys)
    assert code == 4
    assert err == "error: hific-med: not installed\nhint: run: hific models pull hific-med\n"


def test_no_lock_files_after_a_failed_fetch_or_an_import(tmp_path: Path, tiny: Path, capsys) -> None:
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k != "HIFIC_OFFLINE"}
    env["HIFIC_MODEL_BASE_URL"] = "http://127.0.0.1:9"  # nothing listens there: the fetch fails
    proc = subprocess.run([sys.executable, "-m", "hificli", "models", "pull", "hific-med", "--cache-dir", str(cache)],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 4, proc.stderr
    assert (cache / "locks").is_dir() and list((cache / "locks").iterdir()) == []
    code, _, err = run(["models", "import", "mine", str(tiny), "--cache-dir", str(cache)], capsys)
    assert code == 0, err
    assert list((cache / "locks").iterdir()) == []


def test_import_reports_the_size_the_list_shows(tmp_path: Path, tiny: Path, capsys) -> None:
    from hificli.zoo.cache import human_size

    code, _, err = run(["models", "import", "mine", str(tiny), "--cache-dir", str(tmp_path)], capsys)
    assert code == 0, err
    printed = re.search(r"mine: installed (\S+ \S+) at", err).group(1)
    code, out, _ = run(["models", "list", "--json", "--cache-dir", str(tmp_path)], capsys)
    mine = next(m for m in json.loads(out)["models"] if m["name"] == "mine")
    assert printed == human_size(mine["size"])
    code, out, _ = run(["models", "list", "--cache-dir", str(tmp_path)], capsys)
    assert printed in next(line for line in out.splitlines() if line.startswith("mine "))


def test_models_list_shows_the_rate_on_photos_not_the_training_target(capsys) -> None:
    from hificli.zoo import registry

    code, out, _ = run(["models"], capsys)
    assert code == 0
    for entry in registry.MODELS:
        row = next(line for line in out.splitlines() if line.startswith(entry.name + " "))
        if entry.rate_range:
            assert f"{entry.rate_range[0]:.2f}-{entry.rate_range[1]:.2f} bpp" in row
            if entry.target_bpp is not None:
                assert f"{entry.target_bpp:.2f}" not in row
        else:
            assert f"~{entry.target_bpp:.2f} bpp (target)" in row


def test_help_shows_whole_command_descriptions() -> None:
    import click

    from hificli.cli.app import cli

    proc = subprocess.run([sys.executable, "-m", "hificli", "--help"], capture_output=True, text=True, timeout=60)
    text = " ".join(proc.stdout.split())
    commands = proc.stdout.split("Commands:", 1)[1]
    assert "..." not in commands.replace("TIFF, ...)", "")
    ctx = click.Context(cli)
    for name in cli.list_commands(ctx):
        first = " ".join(cli.get_command(ctx, name).help.split("\n\n")[0].split())
        assert first in text, name


def test_decode_help_and_readme_list_every_output_format() -> None:
    from hificli.imageio import OUTPUT_FORMATS

    proc = subprocess.run([sys.executable, "-m", "hificli", "decode", "--help"], capture_output=True, text=True,
                          timeout=60)
    formats_line = next(line for line in README.splitlines() if "The output format follows the extension" in line)
    readme = formats_line + README.split(formats_line, 1)[1].split("\n- ", 1)[0]
    for suffix in OUTPUT_FORMATS:
        assert suffix in proc.stdout, suffix
        assert f"`{suffix}`" in readme or f"/`{suffix}`" in readme, suffix


def test_readme_usage_lists_every_encode_and_decode_option() -> None:
    import click

    from hificli.cli.app import cli

    usage = README.split("## Usage", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    blocks = re.split(r"\n  (?=\w)", usage)
    global_options = {"-v", "--verbose", "--quiet", "-h", "--help"}
    for name in ("encode", "decode"):
        block = next(b for b in blocks if b.startswith(name + " "))
        listed = set(re.findall(r"(?<![\w-])(--?[a-z][\w-]*)", block))
        command = cli.get_command(click.Context(cli), name)
        options = [set(p.opts) for p in command.params if isinstance(p, click.Option)]
        missing = [sorted(o) for o in options if not o & (listed | global_options)]
        assert not missing, (name, missing)  # an option of --help that the README does not show
        assert listed <= set().union(*options), (name, listed - set().union(*options))


def test_package_docstring_example_runs() -> None:
    import hificli

    code = "\n".join(line[4:] for line in hificli.__doc__.split("::", 1)[1].splitlines() if line.startswith("    "))
    namespace = {"image": sample_image(40, 24)}
    exec(code, namespace)  # the example as printed: default model, encode, decode
    assert isinstance(namespace["data"], bytes) and namespace["image"].size == (40, 24)


def test_readme_rate_claim_matches_the_measured_photos() -> None:
    from hificli.zoo.registry import DEFAULT_MODEL

    results = ROOT / "benchmarks/results/e15-default-bpp.jsonl"
    records = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(records) == 15 and {r["model"] for r in records} == {DEFAULT_MODEL}
    bpp = [r["bpp"] for r in records]
    claim = re.search(r"came out at ([\d.]+) to ([\d.]+) bits per pixel, median ([\d.]+)", " ".join(README.split()))
    assert claim is not None
    assert [float(v) for v in claim.groups()] == [round(min(bpp), 3), round(max(bpp), 3),
                                                  round(statistics.median(bpp), 3)]
    assert "typically 0.1" not in README
