"""The `hific` shell itself: version, help, global options, one-line errors and exit codes."""

from __future__ import annotations

import subprocess
import sys

from hificli import __version__

COMMANDS = ("encode", "decode", "info", "models", "train", "eval")


def hific(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hificli", *args], capture_output=True, text=True, timeout=60)


def test_version_and_help_list_every_command() -> None:
    result = hific("--version")
    assert result.returncode == 0 and __version__ in result.stdout
    result = hific("--help")
    assert result.returncode == 0
    for name in COMMANDS:
        assert f"  {name}" in result.stdout
    assert "Exit codes" in result.stdout
    for name in COMMANDS:
        sub = hific(name, "--help")
        assert sub.returncode == 0 and "Usage: hific " + name in sub.stdout


def test_usage_errors_exit_2() -> None:
    assert hific("no-such-command").returncode == 2
    assert hific("encode", "--no-such-option").returncode == 2


def test_errors_are_one_line_and_verbose_adds_the_traceback(tmp_path) -> None:
    missing = str(tmp_path / "missing.hfc")
    result = hific("decode", missing)
    assert result.returncode == 2  # a usage error, found before any model loads
    assert result.stderr.strip().splitlines() == [f"error: {missing}: no such file"]
    junk = tmp_path / "junk.hfc"
    junk.write_bytes(b"\x89HFC" + b"\x00" * 40)
    result = hific("decode", str(junk))
    assert result.returncode == 3 and len(result.stderr.strip().splitlines()) == 1
    photo = tmp_path / "p.png"
    photo.write_bytes(b"")
    result = hific("-v", "encode", str(photo), "-m", "hific-none")
    assert result.returncode == 4 and "Traceback" in result.stderr
    result = hific("encode", str(photo), "-m", "hific-none")
    assert result.returncode == 4 and "Traceback" not in result.stderr
    assert result.stderr.startswith("error: unknown model 'hific-none'")
