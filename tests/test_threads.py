"""Thread policy of inference: a passive OpenMP wait policy unless the user chose one, and -j N dividing
the threads among the workers (--threads overrides), as the worker processes report them; workers forked
from the command's process (no hang, the same bytes as one process) and only where they can pay."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from model_fixtures import make_tiny_weights, sample_image

from hificli.cli.batch import PIXELS_PER_WORKER, effective_jobs
from hificli.device import set_passive_wait_policy, worker_threads

COMPUTE = re.compile(r"^compute: (\S+), (?:(\d+) processes x )?(\d+) threads?, OMP_WAIT_POLICY=(\S+)$", re.M)


#: Two images of this size are enough input for two -j workers (PIXELS_PER_WORKER each).
SIDES = (1536, 1024)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[str]]:
    """A tiny model and two .hfc files made with it, in one folder (from img0.png and img1.png, large
    enough for two workers; small.png is not)."""
    folder = tmp_path_factory.mktemp("threads")
    tiny = make_tiny_weights(folder / "tiny.safetensors")
    assert SIDES[0] * SIDES[1] >= PIXELS_PER_WORKER
    names = []
    for i in range(2):
        sample_image(*SIDES, seed=i).save(folder / f"img{i}.png")
        names.append(f"img{i}.png")
    sample_image(96, 64, seed=2).save(folder / "small.png")
    run = _hific(folder, {}, "encode", *names, "-m", str(tiny))
    assert run.returncode == 0, run.stderr
    return folder, tiny, [n.replace(".png", ".hfc") for n in names]


def _hific(cwd: Path, env: dict[str, str | None], *args: str) -> subprocess.CompletedProcess[str]:
    """A fresh `hific` process with ``env`` applied to this one's environment (None removes a variable)."""
    environ = dict(os.environ)
    for key, value in env.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value
    return subprocess.run([sys.executable, "-m", "hificli", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)


def _compute(stderr: str) -> tuple[str, int, int, str]:
    match = COMPUTE.search(stderr)
    assert match, stderr
    device, processes, threads, policy = match.groups()
    return device, int(processes or 1), int(threads), policy


def test_worker_threads_divide_the_default_and_never_reach_zero() -> None:
    assert worker_threads(8, 2) == 4
    assert worker_threads(8, 3) == 2
    assert worker_threads(2, 4) == 1
    assert worker_threads(2, 1) == 2
    assert worker_threads(8, 2, threads=3) == 3


def test_passive_policy_is_set_only_when_the_user_chose_none() -> None:
    env: dict[str, str] = {}
    set_passive_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": ""}
    set_passive_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    set_passive_wait_policy(env)
    assert env == {"OMP_WAIT_POLICY": "ACTIVE"}


def _torch_default_threads(env: dict[str, str | None]) -> int:
    """torch's thread count in a fresh process with ``env`` ($OMP_NUM_THREADS or the cores, capped)."""
    environ = {k: v for k, v in {**os.environ, **env}.items() if v is not None}
    out = subprocess.run([sys.executable, "-c", "import torch; print(torch.get_num_threads())"], env=environ,
                         capture_output=True, text=True, check=True)
    return int(out.stdout)


@pytest.mark.parametrize("omp_threads", [None, "2"])
def test_workers_share_the_threads_and_wait_passively(files: tuple[Path, Path, list[str]], omp_threads) -> None:
    folder, tiny, hfcs = files
    env = {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": omp_threads}
    default = _torch_default_threads(env)
    run = _hific(folder, env, "-v", "decode", *hfcs, "-m", str(tiny), "-j", "2", "-f", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert _compute(run.stderr) == ("cpu", 2, max(1, default // 2), "PASSIVE")
    run = _hific(folder, env, "-v", "decode", hfcs[0], "-m", str(tiny), "-f")
    assert _compute(run.stderr)[1:] == (1, default, "PASSIVE")  # one process keeps torch's default


def test_threads_option_and_the_users_policy_win(files: tuple[Path, Path, list[str]]) -> None:
    folder, tiny, hfcs = files
    run = _hific(folder, {"OMP_WAIT_POLICY": "ACTIVE"},
                 "-v", "decode", *hfcs, "-m", str(tiny), "-j", "2", "--threads", "3", "-f")
    assert run.returncode == 0, run.stderr
    assert _compute(run.stderr)[1:] == (2, 3, "ACTIVE")


def test_threads_option_applies_in_process_and_to_encode(files: tuple[Path, Path, list[str]]) -> None:
    folder, tiny, _ = files
    run = _hific(folder, {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": None},
                 "-v", "encode", "img0.png", "-m", str(tiny), "--threads", "3", "-f", "-o", "one.hfc")
    assert run.returncode == 0, run.stderr
    assert _compute(run.stderr)[1:] == (1, 3, "PASSIVE")


def test_workers_only_where_the_input_can_pay_for_them() -> None:
    sizes = {"a": PIXELS_PER_WORKER, "b": PIXELS_PER_WORKER, "c": 0, "small": 1000}
    assert effective_jobs(2, ["a", "b"], sizes.get) == 2
    assert effective_jobs(8, ["a", "b", "c"], sizes.get) == 2  # one per PIXELS_PER_WORKER
    assert effective_jobs(2, ["a", "small"], sizes.get) == 1
    assert effective_jobs(2, ["small"] * 50, sizes.get) == 1
    assert effective_jobs(2, ["a", "b"]) == 2  # no sizes: the file count only
    assert effective_jobs(2, ["a", "-"], sizes.get) == 1


def test_small_inputs_run_in_process_even_with_j(files: tuple[Path, Path, list[str]]) -> None:
    folder, tiny, _ = files
    (folder / "few").mkdir(exist_ok=True)
    run = _hific(folder, {"OMP_WAIT_POLICY": None}, "-v", "encode", "small.png", "img0.png", "-m", str(tiny),
                 "-j", "2", "-f", "-o", "few")
    assert run.returncode == 0, run.stderr
    assert _compute(run.stderr)[1] == 1  # 1.6 megapixels: no worker would pay


def test_forked_workers_write_what_one_process_writes(files: tuple[Path, Path, list[str]]) -> None:
    """-j 2 (forked workers, one thread each) and -j 1 (two threads): byte-identical .hfc files and
    decoded images, and the workers report 1 thread each (no hang: the command's process never ran a
    parallel region before forking)."""
    folder, tiny, _ = files
    outputs = {}
    for jobs in ("1", "2"):
        out = folder / f"j{jobs}"
        out.mkdir()
        env = {"OMP_WAIT_POLICY": None, "OMP_NUM_THREADS": "2"}
        run = _hific(folder, env, "-v", "encode", "img0.png", "img1.png", "-m", str(tiny), "-j", jobs, "-o", str(out))
        assert run.returncode == 0, run.stderr
        assert _compute(run.stderr)[1:3] == ((2, 1) if jobs == "2" else (1, 2))
        hfcs = [str(out / "img0.hfc"), str(out / "img1.hfc")]
        run = _hific(folder, env, "-v", "decode", *hfcs, "-m", str(tiny), "-j", jobs, "-o", str(out))
        assert run.returncode == 0, run.stderr
        assert _compute(run.stderr)[1:3] == ((2, 1) if jobs == "2" else (1, 2))
        outputs[jobs] = {p.name: p.read_bytes() for p in sorted(out.iterdir())}
    assert sorted(outputs["1"]) == ["img0.hfc", "img0.png", "img1.hfc", "img1.png"]
    assert outputs["1"] == outputs["2"]
