"""Running the CLI in the test process from a given working directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hificli.cli import main


def hific(*args: str, cwd: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``hific ARGS`` through main() (exit-code mapping included) in ``cwd``; -j workers are real
    spawned processes. Returns (exit code, stderr)."""
    old = os.getcwd()
    os.chdir(cwd)
    try:
        with pytest.raises(SystemExit) as exc:
            main(list(args))
    finally:
        os.chdir(old)
    return int(exc.value.code or 0), capsys.readouterr().err


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``hific ARGS`` through main() in this process: (exit code, stdout, stderr)."""
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err
