"""Decoding a 768x512 photo's .hfc with the default model, for one or more hific checkouts in one run
(``--root``, e.g. a worktree of an earlier commit, for before/after figures), alternated run by run so
that a change of load hits them alike. Per checkout: the `hific decode` command in a fresh process
(imports, model load, latents, pixels, PNG) and, inside a process that has loaded the model, the latents
alone (entropy decoding + exact hyper-synthesis and context) and the whole decode_file (medians); the
1-minute load average beside them.

    .venv/bin/python benchmarks/bench_decode.py [--runs 5] [--root CHECKOUT]...
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, load_average, load_note  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

#: Makes the sample: the first evaluation photo at 768x512, encoded with the default model.
_MAKE = """
import sys
from pathlib import Path
from PIL import Image
from hificli.api import encode, load_model
photo = sorted(Path(sys.argv[1]).glob("*.png"))[0]
with Image.open(photo) as image:
    image = image.convert("RGB").resize((768, 512), Image.LANCZOS)
Path(sys.argv[2]).write_bytes(encode(image, load_model(progress=False)))
print(photo.name)
"""

#: In-process medians (seconds) of the latents and of decode_file, after one warm-up decode.
_INNER = """
import json, statistics, sys, time
from pathlib import Path
import hificli
from hificli import container
from hificli.codec import decode_file, decode_latents
data = Path(sys.argv[1]).read_bytes()
model = hificli.load_model(progress=False)
latent = getattr(model, "latent", model)  # checkouts before the torch-free latent model took the model
decode_file(data, model)
def median(fn):
    times = []
    for _ in range(int(sys.argv[2])):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
print(json.dumps([median(lambda: decode_latents(container.unpack(data), latent)),
                  median(lambda: decode_file(data, model))]))
"""


def child(root: Path, *args: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(root), "HIFIC_OFFLINE": "1"}
    return subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, check=True).stdout


def cli_seconds(root: Path, folder: Path) -> float:
    """Wall time of one fresh `hific decode` process of ``root``."""
    start = time.perf_counter()
    child(root, "-m", "hificli", "decode", str(folder / "photo.hfc"), "-o", str(folder / "out.png"), "-f")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="alternating rounds (fresh processes each)")
    parser.add_argument("--repeats", type=int, default=3, help="in-process decodes per round")
    parser.add_argument("--root", type=Path, action="append", help="checkouts to time (default: this one)")
    args = parser.parse_args()
    roots = args.root or [ROOT]
    print(describe())
    folder = Path(tempfile.mkdtemp(prefix="hific-decode-"))
    name = child(ROOT, "-c", _MAKE, str(ROOT / "data" / "eval"), str(folder / "photo.hfc")).strip()
    size = (folder / "photo.hfc").stat().st_size
    print(f"\n{name} at 768x512, {size} bytes with the default model; {args.runs} alternating rounds, "
          f"in-process figures the median of {args.repeats} per round\n")
    results: dict[Path, dict[str, list[float]]] = {r: {"cli": [], "latents": [], "decode": []} for r in roots}
    loads = {r: [load_average()] for r in roots}
    for _ in range(args.runs):
        for root in roots:
            results[root]["cli"].append(cli_seconds(root, folder))
            latents, decode = json.loads(child(root, "-c", _INNER, str(folder / "photo.hfc"), str(args.repeats)))
            results[root]["latents"].append(latents)
            results[root]["decode"].append(decode)
            loads[root].append(load_average())
    print("| checkout | `hific decode` (fresh process) | latents (in process) | decode_file (in process) "
          "| load (1 min) |")
    print("|---|---|---|---|---|")
    for root in roots:
        r = results[root]
        print(f"| {root} | {statistics.median(r['cli']):.2f} s ({min(r['cli']):.2f}-{max(r['cli']):.2f}) | "
              f"{statistics.median(r['latents']):.3f} s | {statistics.median(r['decode']):.3f} s | "
              f"{load_note(loads[root])} |")


if __name__ == "__main__":
    main()
