"""`-j` scaling: the whole `hific encode` / `hific decode` command over N photos of 768x512 with -j 1 and
-j 2 (and any other counts), run alternately so that a change of load hits every variant alike.

Each run is a fresh `python -m hificli` process, model load included (what a user waits for). The ratio
is between figures of this run only; the 1-minute load average is printed beside them. ``--policy``
adds variants with an explicit OMP_WAIT_POLICY (e.g. ACTIVE: the spinning default of OpenMP) to show
what the CLI's passive default changes.

    .venv/bin/python benchmarks/bench_jobs.py [--photos 8] [--jobs 1,2] [--repeats 3] [-m MODEL]
        [--command decode|encode|both] [--policy ACTIVE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cores, describe, load_average, load_note  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_photos(folder: Path, count: int) -> list[str]:
    """``count`` 768x512 PNGs from data/eval (cycled; the sample photo if there is none)."""
    from PIL import Image

    sources = sorted((ROOT / "data" / "eval").glob("*.png")) or [ROOT / "hificli" / "assets" / "chelsea.png"]
    names = []
    for i in range(count):
        with Image.open(sources[i % len(sources)]) as image:
            photo = image.convert("RGB").resize((768, 512), Image.LANCZOS)
        if i >= len(sources):  # a repeated source: mirror it so that no two inputs are the same
            photo = photo.transpose(Image.FLIP_LEFT_RIGHT)
        name = f"photo{i:02d}.png"
        photo.save(folder / name)
        names.append(name)
    return names


def hific(folder: Path, args: list[str], policy: str | None) -> float:
    """Wall seconds of one fresh `hific` command in ``folder``."""
    env = {**os.environ, "HIFIC_OFFLINE": "1"}
    env.pop("OMP_NUM_THREADS", None)  # the CLI divides the cores itself
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    else:
        env.pop("OMP_WAIT_POLICY", None)  # the CLI's default
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "hificli", "--quiet", *args], cwd=folder, env=env,
                         capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if run.returncode:
        raise SystemExit(f"hific {' '.join(args)} failed:\n{run.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=int, default=8)
    parser.add_argument("--jobs", default="1,2", help="comma-separated -j values (the first is the reference)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("-m", "--model", default=None, help="model name or path (default: the default model)")
    parser.add_argument("--command", choices=("decode", "encode", "both"), default="both")
    parser.add_argument("--policy", action="append", default=[], help="also run with this OMP_WAIT_POLICY")
    args = parser.parse_args()

    print(describe())
    folder = Path(tempfile.mkdtemp(prefix="hific-jobs-"))
    photos = make_photos(folder, args.photos)
    model = ["-m", args.model] if args.model else []
    hific(folder, ["encode", *photos, *model, "-f"], None)  # the .hfc inputs of decode
    hfcs = [p.replace(".png", ".hfc") for p in photos]
    commands = {"encode": ["encode", *photos, "-o", "out", "-f"], "decode": ["decode", *hfcs, "-o", "out", "-f"]}
    (folder / "out").mkdir()
    chosen = ["encode", "decode"] if args.command == "both" else [args.command]
    variants = [(j, None) for j in (int(v) for v in args.jobs.split(","))]
    variants += [(j, p) for p in args.policy for j, _ in list(variants)]

    print(f"\n{args.photos} photos of 768x512, model {args.model or 'default'}, {cores()} CPUs, "
          f"median of {args.repeats} alternating runs (whole command, fresh process)\n")
    print(f"| command | -j | OMP_WAIT_POLICY | seconds | speed vs -j {variants[0][0]} (same run) | load (1 min) |")
    print("|---|---|---|---|---|---|")
    for command in chosen:
        times: dict[tuple[int, str | None], list[float]] = {v: [] for v in variants}
        loads = [load_average()]
        for _ in range(args.repeats):
            for jobs, policy in variants:
                times[(jobs, policy)].append(hific(folder, [*commands[command], *model, "-j", str(jobs)], policy))
                loads.append(load_average())
        reference = statistics.median(times[variants[0]])
        for jobs, policy in variants:
            t = statistics.median(times[(jobs, policy)])
            print(f"| {command} | {jobs} | {policy or 'CLI default (PASSIVE)'} | {t:.2f} | "
                  f"{reference / t:.2f}x | {load_note(loads)} |")


if __name__ == "__main__":
    main()
