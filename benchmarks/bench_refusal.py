"""How long a fresh `hific` process takes to refuse the hostile inputs of issue #16 that need a model:
a 65-byte .hfc file whose z and y streams are empty (hific-compact, claiming 7680x4320), a photo's .hfc
file whose y stream is all 0xFF (the default model), and encoding with tampered weights (one generator
tensor changed, the fingerprint kept). Each is the median of N fresh processes, with the peak RSS;
the 1-minute load average is printed beside them.

    .venv/bin/python benchmarks/bench_refusal.py [--runs 5] [--root CHECKOUT]

``--root`` times another checkout of hific with this one's samples (e.g. a worktree of an earlier commit,
for before/after figures from one run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, load_average, load_note  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def make_samples(folder: Path) -> dict[str, list[str]]:
    """The reproducers in ``folder``; returns the `hific` arguments of each."""
    sys.path.insert(0, str(ROOT / "tests"))
    import hostile_samples as hs
    from PIL import Image
    from safetensors.numpy import load_file

    from hificli import container, weights
    from hificli.api import encode, load_model
    from hificli.zoo import registry

    info = weights.read_weights_info(registry.embedded_path(registry.get("hific-compact")))
    arch = info.config
    empty = hs.empty_streams_file(info.model_id, info.fingerprint, arch.hyper_channels, arch.latent_channels,
                                  7680, 4320)
    (folder / "empty.hfc").write_bytes(empty)
    photo = sorted((ROOT / "data" / "eval").glob("*.png"))[0]
    with Image.open(photo) as image:
        good = encode(image.convert("RGB"), load_model(progress=False))
    last = container.unpack(good).header.streams[-1]  # "y", or the last context group ("y3")
    (folder / "yff.hfc").write_bytes(hs.with_streams(good, **{last.name: b"\xff" * last.length}))
    path = registry.embedded_path(registry.get(registry.DEFAULT_MODEL))
    key = next(k for k in load_file(str(path)) if k.startswith("Generator."))
    import torch

    tensor = torch.from_numpy(load_file(str(path))[key])
    hs.rewrite_weights(path, folder / "tampered.safetensors", tensors={key: tensor + 0.5})
    Image.new("RGB", (16, 16), (90, 120, 150)).save(folder / "x.png")
    return {
        f"empty streams ({len(empty)} B)": ["decode", "empty.hfc", "-o", "o.png"],
        "last latent stream all 0xFF": ["decode", "yff.hfc", "-o", "o.png"],
        "tampered weights": ["encode", "x.png", "-m", "tampered.safetensors", "-o", "o.hfc"],
    }


#: Runs one command and reports its time and peak RSS: a small process of its own, since a child forked
#: from this one (torch imported by describe()) would count this process's memory as its own peak.
_MEASURE = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
run = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
seconds = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
print(json.dumps([seconds, peak, run.returncode, (run.stderr.strip().splitlines() or [""])[0]]))
"""


def run_once(folder: Path, args: list[str], root: Path) -> tuple[float, int, int, str]:
    """(seconds, peak RSS in bytes, exit code, first stderr line) of one fresh `hific` process."""
    env = {**os.environ, "PYTHONPATH": str(root), "HIFIC_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _MEASURE, sys.executable, "-m", "hificli", *args], cwd=folder,
                         env=env, capture_output=True, text=True, check=True).stdout
    seconds, peak, code, first = json.loads(out)
    return seconds, peak, code, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--root", type=Path, default=ROOT, help="the hific checkout to time (default: this one)")
    parser.add_argument("--make-samples", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.make_samples:  # in a child process: this one stays small (a forked child's peak RSS counts it)
        print(json.dumps(make_samples(args.make_samples)))
        return
    print(describe())
    folder = Path(tempfile.mkdtemp(prefix="hific-refusal-"))
    made = subprocess.run([sys.executable, __file__, "--make-samples", str(folder)], capture_output=True, text=True,
                          check=True)
    cases = json.loads(made.stdout.strip().splitlines()[-1])
    print(f"\nfresh `hific` processes of {args.root}, median of {args.runs}\n")
    print("| reproducer | exit | seconds (median) | min - max | peak RSS | error | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    for name, argv in cases.items():
        loads = [load_average()]
        times, peaks, codes, first = [], [], set(), ""
        for _ in range(args.runs):
            seconds, peak, code, first = run_once(folder, argv, args.root)
            times.append(seconds)
            peaks.append(peak)
            codes.add(code)
            loads.append(load_average())
        print(f"| {name} | {'/'.join(map(str, sorted(codes)))} | {statistics.median(times):.2f} | "
              f"{min(times):.2f} - {max(times):.2f} | {max(peaks) / 2**20:.0f} MB | {first[:60]} | "
              f"{load_note(loads)} |")


if __name__ == "__main__":
    main()
