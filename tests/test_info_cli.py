"""`hific info`: tables, --json schema, bpp, several files, stdin, damaged files, no torch import."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap

import pytest
from hfc_samples import raw_fields, raw_file, sample_file, small_file, varint

from hificli.cli.app import main

SCHEMA = {
    "path": str, "ok": bool, "error": type(None), "file_bytes": int, "format_version": str, "model": str,
    "quality": type(None),  # fixed-rate files; a float for variable-rate ones
    "fingerprint": str, "width": int, "height": int, "padded_width": int, "padded_height": int,
    "channels": int, "icc_bytes": int, "coder": str, "coder_id": int, "coder_version": str, "streams": list,
    "header_bytes": int, "bpp": float,
}


def run_main(args: list[str], capsys) -> tuple[int, str, str]:
    """``hific ARGS`` in-process through main() (which maps errors to exit codes)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def run_cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hificli", *args]
    return subprocess.run(command, input=stdin, capture_output=True, timeout=60)


@pytest.fixture
def files(tmp_path):
    good = tmp_path / "photo.hfc"
    good.write_bytes(sample_file(768, 512, model_id="hific-small", z_channels=96, y_channels=96))
    tiny = tmp_path / "tiny.hfc"
    tiny.write_bytes(small_file(icc=b"icc!" * 25, channels=1))
    bad = tmp_path / "bad.hfc"
    bad.write_bytes(small_file()[:-3])
    return good, tiny, bad


def test_table_shows_every_field(files, capsys) -> None:
    good, _, _ = files
    code, out, err = run_main(["info", str(good)], capsys)
    assert (code, err) == (0, "")
    size = good.stat().st_size
    for text in ("photo.hfc", "1.0", "hific-small", "0123456789abcdef", "768 x 512", "3 (RGB)", "none",
                 "constriction-ans32 0.5", "96 x 8 x 12, 300 bytes", "96 x 32 x 48, 9000 bytes",
                 "58 bytes", f"{size} bytes", f"{8 * size / (768 * 512):.4f}"):
        assert text in out, text


def test_json_schema_and_values(files, capsys) -> None:
    good, tiny, _ = files
    code, out, err = run_main(["info", "--json", str(good), str(tiny)], capsys)
    assert (code, err) == (0, "")
    records = json.loads(out)
    assert [r["path"] for r in records] == [str(good), str(tiny)]
    for record in records:
        assert set(record) == set(SCHEMA)
        for key, kind in SCHEMA.items():
            assert isinstance(record[key], kind), key
        for stream in record["streams"]:
            assert set(stream) == {"name", "shape", "bytes"}
    photo, small = records
    assert photo["file_bytes"] == good.stat().st_size
    assert photo["bpp"] == pytest.approx(8 * good.stat().st_size / (768 * 512))
    assert photo["streams"] == [{"name": "z", "shape": [96, 8, 12], "bytes": 300},
                                {"name": "y", "shape": [96, 32, 48], "bytes": 9000}]
    assert (photo["header_bytes"], photo["icc_bytes"], photo["channels"]) == (58, 0, 3)
    assert [small[k] for k in ("width", "height", "padded_width", "padded_height")] == [40, 24, 64, 64]
    assert (small["icc_bytes"], small["channels"], small["model"]) == (100, 1, "test-tiny")
    assert small["header_bytes"] == 50 + 1 + 100  # header fields, ICC length varint, ICC profile
    assert small["bpp"] == pytest.approx(8 * tiny.stat().st_size / (40 * 24))


def test_bad_file_among_good_ones(files, capsys) -> None:
    good, tiny, bad = files
    missing = bad.with_name("missing.hfc")
    code, out, err = run_main(["info", "--json", str(good), str(bad), str(missing), str(tiny)], capsys)
    assert code == 3
    assert err.splitlines() == [
        f"error: {bad}: truncated .hfc file: 63 of 66 bytes (the end is missing)",
        f"error: {missing}: No such file or directory",
    ]
    records = json.loads(out)
    assert [r["ok"] for r in records] == [True, False, False, True]
    assert records[1]["error"] == "truncated .hfc file: 63 of 66 bytes (the end is missing)"
    assert records[1]["file_bytes"] == bad.stat().st_size and records[2]["file_bytes"] is None
    assert all(records[1][k] is None for k in SCHEMA if k not in ("path", "ok", "error", "file_bytes"))
    code, out, err = run_main(["info", str(good), str(bad), str(tiny)], capsys)
    assert code == 3 and "photo.hfc" in out and "tiny.hfc" in out and str(bad) in err


def test_stdin(files) -> None:
    good, _, bad = files
    result = run_cli("info", "--json", "-", stdin=good.read_bytes())
    assert result.returncode == 0, result.stderr
    [record] = json.loads(result.stdout)
    assert (record["path"], record["model"]) == ("-", "hific-small")
    assert record["file_bytes"] == good.stat().st_size
    result = run_cli("info", "-", stdin=bad.read_bytes())
    assert result.returncode == 3
    assert result.stderr.decode() == "error: -: truncated .hfc file: 63 of 66 bytes (the end is missing)\n"


def _assert_one_line_error(code: int, err: str, path: str) -> None:
    assert code == 3, err
    lines = err.splitlines()
    assert lines[0].startswith(f"error: {path}: ") and len(lines[0]) < 200, lines
    assert all(line.startswith("hint: ") for line in lines[1:]) and len(lines) <= 2, lines
    assert "Traceback" not in err


def test_every_truncation_is_rejected_through_the_cli(tmp_path, capsys) -> None:
    data = small_file()
    path = tmp_path / "cut.hfc"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        code, out, err = run_main(["info", str(path)], capsys)
        _assert_one_line_error(code, err, str(path))
        assert out == ""


def test_random_bit_flips_are_rejected_through_the_cli(tmp_path, capsys) -> None:
    data = small_file(icc=b"profile")
    rng = random.Random(1234)
    path = tmp_path / "flip.hfc"
    for bit in rng.sample(range(len(data) * 8), 300):
        flipped = bytearray(data)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        code, _, err = run_main(["info", str(path)], capsys)
        _assert_one_line_error(code, err, str(path))


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("truncated", small_file()[:30], "truncated .hfc file: 30 of at least 54 bytes (the header is cut)"),
        ("flipped", bytes([small_file()[0]]) + bytes([small_file()[1] ^ 4]) + small_file()[2:], "not a .hfc"),
        ("hostile", raw_file(tail=bytes(13)), "trailing bytes"),
        ("newer", raw_file(major=2), "made by a newer hific (format 2.0); upgrade hific"),
        ("port", bytes(22) + b"\x46\xe2\x84\x92" + bytes(30), "earlier PyTorch HiFiC port"),
        ("missing", None, "No such file or directory"),
    ],
    ids=lambda value: value if isinstance(value, str) and value.isalpha() else "",
)
def test_real_process_exit_codes(tmp_path, name: str, content: bytes | None, message: str) -> None:
    path = tmp_path / f"{name}.hfc"
    if content is not None:
        path.write_bytes(content)
    result = run_cli("info", str(path))
    assert result.returncode == 3
    err = result.stderr.decode()
    _assert_one_line_error(result.returncode, err, str(path))
    assert message in err and result.stdout == b""


def test_minor_versions_and_the_quality_field_are_shown(tmp_path, capsys) -> None:
    rate = 0x02  # FLAG_RATE: the quality code follows the stream entries
    for minor, flags, fields, version, quality in (
        (1, rate, raw_fields() + varint(5025), "1.1", 50.25),
        (1, 0, raw_fields(), "1.1", None),  # 1.1 without a rate parameter
        (4, rate, raw_fields() + varint(0) + b"\x07\x07", "1.4", 0.0),  # a newer minor: appended fields skipped
    ):
        path = tmp_path / f"v1{minor}-{flags}.hfc"
        path.write_bytes(raw_file(fields, minor=minor, flags=flags))
        code, out, _ = run_main(["info", "--json", str(path)], capsys)
        record = json.loads(out)[0]
        assert code == 0 and record["format_version"] == version and record["quality"] == quality
        code, out, _ = run_main(["info", str(path)], capsys)
        assert code == 0 and ("fixed-rate" in out if quality is None else f"{quality:g}" in out)


def test_info_and_help_do_not_import_torch(files) -> None:
    good, _, _ = files
    script = textwrap.dedent(f"""
        import json, sys, time
        from hificli.cli.app import main
        timings = []
        for args in (["--help"], ["info", {str(good)!r}], ["info", "--json", {str(good)!r}]):
            start = time.perf_counter()
            try:
                main(args)
            except SystemExit as exc:
                assert not exc.code, (args, exc.code)
            timings.append(time.perf_counter() - start)
        sys.stderr.write(json.dumps({{"torch": "torch" in sys.modules, "timings": timings}}) + "\\n")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stderr.strip().splitlines()[-1])
    assert report["torch"] is False
    # Measured about 0.02-0.06 s per command here; the bound is generous for a loaded 2-core machine.
    assert max(report["timings"]) < 1.0, report
