"""Batches with -j N: worker processes, input order, failures that do not stop the others, Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from cli_runner import hific
from model_fixtures import make_tiny_weights, sample_image

from hificli import container


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("model") / "tiny.safetensors")


def images(folder: Path, n: int, size: tuple[int, int] = (96, 64)) -> list[str]:
    names = []
    for i in range(n):
        name = f"img{i}.png"
        sample_image(size[0] + 16 * i, size[1], seed=i).save(folder / name)
        names.append(name)
    return names


def summary_rows(stderr: str) -> list[str]:
    """The input column of the summary table, in printed order."""
    lines = stderr.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["input", "output"])
    rows = [line for line in lines[start + 1 :] if line and not line.startswith(("error", "total (", "model: "))]
    return [line.split()[0] for line in rows]


@pytest.fixture
def workers_for_small_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """-j workers even for these few small images (the CLI runs them in-process: PIXELS_PER_WORKER)."""
    monkeypatch.setattr("hificli.cli.batch.PIXELS_PER_WORKER", 1)


@pytest.mark.usefixtures("workers_for_small_inputs")
def test_parallel_encode_keeps_order_and_survives_failures(tmp_path: Path, tiny: Path, capsys) -> None:
    names = images(tmp_path, 4)
    (tmp_path / "broken.png").write_bytes(b"not an image at all")
    (tmp_path / "empty.png").write_bytes(b"")
    inputs = [names[0], "broken.png", names[1], "empty.png", names[2], names[3]]
    code, err = hific("encode", *inputs, "-m", str(tiny), "-j", "2", cwd=tmp_path, capsys=capsys)
    assert code == 3, err
    assert "error: broken.png: not an image" in err
    assert "error: empty.png: the file is empty (0 bytes)" in err
    assert "error: summary: 2 of 6 files failed" in err
    assert summary_rows(err) == names  # successes, in input order
    # Same bytes as a sequential run: workers code exactly what the main process would.
    parallel = {n: (tmp_path / n).with_suffix(".hfc").read_bytes() for n in names}
    sequential = tmp_path / "seq"
    sequential.mkdir()
    code, err = hific("encode", *names, "-m", str(tiny), "-o", str(sequential), cwd=tmp_path, capsys=capsys)
    assert code == 0, err
    for n in names:
        assert (sequential / n).with_suffix(".hfc").read_bytes() == parallel[n]


@pytest.mark.usefixtures("workers_for_small_inputs")
def test_parallel_decode(tmp_path: Path, tiny: Path, capsys) -> None:
    names = images(tmp_path, 3)
    assert hific("encode", *names, "-m", str(tiny), cwd=tmp_path, capsys=capsys)[0] == 0
    hfcs = [str(Path(n).with_suffix(".hfc")) for n in names]
    (tmp_path / "trunc.hfc").write_bytes((tmp_path / hfcs[1]).read_bytes()[:-9])
    out = tmp_path / "out"
    out.mkdir()
    code, err = hific("decode", hfcs[0], "trunc.hfc", *hfcs[1:], "-m", str(tiny), "-j", "0", "-o", str(out),
                      "--tile", "64", cwd=tmp_path, capsys=capsys)
    assert code == 3, err
    size = (tmp_path / hfcs[1]).stat().st_size
    assert f"error: trunc.hfc: truncated .hfc file: {size - 9} of {size} bytes" in err
    assert summary_rows(err) == hfcs
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(n).name for n in names)


def test_jobs_with_stdin_run_in_process(tmp_path: Path, tiny: Path) -> None:
    from click.testing import CliRunner

    from hificli.cli.app import cli

    names = images(tmp_path, 1)
    data = (tmp_path / names[0]).read_bytes()
    result = CliRunner().invoke(cli, ["encode", "-", "-m", str(tiny), "-j", "4"], input=data)
    assert result.exit_code == 0, result.output
    assert container.unpack(result.stdout_bytes).header.width == 96


def processes_with(marker: str) -> list[int]:
    """PIDs of live processes whose environment holds ``marker`` (the CLI and its workers)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as handle:
                if marker.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="needs /proc to find the worker processes")
@pytest.mark.parametrize(
    "whole_group", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["sigint-main", "sigint-group"]
)
def test_ctrl_c_leaves_no_partial_outputs(tmp_path: Path, tiny: Path, whole_group: bool) -> None:
    """SIGINT to the main process (a kill) or to the whole process group (Ctrl-C in a terminal) while
    workers are writing: exit 130, no temporary files, every output that exists is a complete file,
    and no worker is left behind."""
    names = images(tmp_path, 10, size=(640, 480))  # 3.4 megapixels: enough for 2 workers (PIXELS_PER_WORKER)
    marker = f"HIFIC_TEST_RUN={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    (tmp_path / "rec").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "hificli", "encode", *names, "-m", str(tiny), "-j", "2",
         "--reconstruct", "rec"],
        cwd=tmp_path, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while not list(tmp_path.glob("*.hfc")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)  # interrupt once workers are producing outputs
    assert proc.poll() is None, "the batch finished before it could be interrupted"
    if whole_group:
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr, stderr
    leftovers = [p.name for p in tmp_path.rglob("*") if p.name.endswith(".part") or p.name.startswith(".")]
    assert leftovers == []
    done = sorted(tmp_path.glob("*.hfc"))
    assert 1 <= len(done) < len(names)
    for path in done:
        container.read_file(path)  # complete and valid, not a partial write
    deadline = time.monotonic() + 10
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []
