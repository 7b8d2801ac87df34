"""Peak memory and time of `hific encode` and `hific decode` against image size.

Each run is a fresh `python -m hificli` process (what a user starts); its peak RSS comes from wait4()
(the kernel's ru_maxrss of that child), its time is the wall clock of the whole command, model load
included. Models are random-weight, seeded networks of the named architectures (the trained default
has the ``small`` architecture), saved once as weights files in the work directory. Images are
synthetic 3:2 photos-like PNGs. A "load" row (64x64 image) shows the fixed cost of starting the
process and loading the model.

    .venv/bin/python benchmarks/bench_memory.py --arch small,full --mp 1,4,12,24 [--max-memory 3G]
        [--tile PIXELS] [--threads N] [--workdir DIR] [--timeout S]

Prints a markdown table (and appends each row to DIR/results.jsonl as it is measured).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_weights(arch: str, workdir: Path) -> Path:
    """Seeded random weights of an architecture preset (built once, reused)."""
    path = workdir / f"random-{arch}.safetensors"
    if not path.exists():
        import torch

        from hificli.models.config import preset
        from hificli.models.hific import HificModel
        from hificli.weights import save_inference_weights

        torch.manual_seed(0)
        save_inference_weights(HificModel(preset(arch)).eval(), path, model_id=f"random-{arch}")
    return path


def image_size(megapixels: float) -> tuple[int, int]:
    """3:2 landscape size with about ``megapixels`` million pixels (sides even)."""
    width = int(round(math.sqrt(megapixels * 1e6 * 1.5) / 2)) * 2
    return width, int(round(width / 1.5 / 2)) * 2


def make_image(width: int, height: int, path: Path, seed: int = 0) -> Path:
    """Smooth colour waves plus noise, generated in strips (the parent stays small), saved as PNG."""
    if path.exists():
        return path
    from PIL import Image

    rng = np.random.default_rng(seed)
    freqs = rng.uniform(0.002, 0.02, (3, 2))
    out = np.empty((height, width, 3), dtype=np.uint8)
    xx = np.arange(width, dtype=np.float32)[None, :]
    for top in range(0, height, 256):
        yy = np.arange(top, min(height, top + 256), dtype=np.float32)[:, None]
        for c in range(3):
            wave = 127 + 90 * np.sin(freqs[c, 0] * xx + c) * np.cos(freqs[c, 1] * yy)
            noise = rng.normal(0, 8, wave.shape).astype(np.float32)
            out[top : top + yy.shape[0], :, c] = np.clip(wave + noise, 0, 255).astype(np.uint8)
    Image.fromarray(out, "RGB").save(path, compress_level=1)
    return path


def run(args: list[str], threads: int | None, timeout: float) -> tuple[float, float, int]:
    """(seconds, peak RSS MiB, exit status) of ``python -m hificli ARGS`` in a fresh process."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "hificli", *args], env=env, cwd=ROOT)
    deadline = start + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            return math.inf, usage.ru_maxrss / 1024, -9
        time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - start, usage.ru_maxrss / 1024, proc.returncode


def measure(arch: str, mp: float, opts: argparse.Namespace, weights: Path) -> dict:
    width, height = image_size(mp) if mp else (64, 64)
    workdir = opts.workdir
    image = make_image(width, height, workdir / f"img-{width}x{height}.png")
    hfc = workdir / f"{arch}-{width}x{height}.hfc"
    recon = workdir / f"{arch}-{width}x{height}.out.png"
    limits = ["--max-memory", opts.max_memory] + (["--tile", str(opts.tile)] if opts.tile is not None else [])
    common = ["-m", str(weights), "-f", "--quiet", *limits]
    load_start = os.getloadavg()[0]
    enc_s, enc_mb, enc_rc = run(["encode", str(image), "-o", str(hfc), *common], opts.threads, opts.timeout)
    dec_s, dec_mb, dec_rc = math.inf, math.nan, -1
    if enc_rc == 0:
        decode = ["decode", str(hfc), "-o", str(recon), *common]
        dec_s, dec_mb, dec_rc = run(decode, opts.threads, opts.timeout)
    row = {
        "arch": arch, "mp": round(width * height / 1e6, 2), "width": width, "height": height,
        "encode_s": enc_s, "encode_mb": enc_mb, "encode_rc": enc_rc,
        "decode_s": dec_s, "decode_mb": dec_mb, "decode_rc": dec_rc,
        "bytes": hfc.stat().st_size if enc_rc == 0 else None,
        "max_memory": opts.max_memory, "tile": opts.tile, "threads": opts.threads or os.cpu_count(),
        "load": os.getloadavg()[0], "load_start": load_start,
    }
    with open(workdir / "results.jsonl", "a") as log:
        log.write(json.dumps(row) + "\n")
    for path in (recon,):
        path.unlink(missing_ok=True)
    return row


def fmt_row(r: dict) -> str:
    def t(s: float, rc: int) -> str:
        return f"{s:.1f}" if rc == 0 else ("timeout" if rc == -9 else f"exit {rc}")

    size = "load (64x64)" if r["width"] == 64 else f"{r['mp']:.1f} MP ({r['width']}x{r['height']})"
    return (
        f"| {r['arch']} | {size} | {t(r['encode_s'], r['encode_rc'])} | {r['encode_mb']:.0f} "
        f"| {t(r['decode_s'], r['decode_rc'])} | {r['decode_mb']:.0f} | {r['load_start']:.1f}-{r['load']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="small,full", help="comma-separated architecture presets")
    parser.add_argument("--mp", default="1,4,12,24", help="comma-separated image sizes in megapixels")
    parser.add_argument("--max-memory", default="3G", help="passed to hific (default 3G, hific's default)")
    parser.add_argument("--tile", type=int, default=None, help="pass --tile PIXELS to hific (0 = untiled)")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS for the runs")
    parser.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".bench_memory")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds per command")
    parser.add_argument("--no-load-row", action="store_true", help="skip the 64x64 model-load row")
    opts = parser.parse_args()
    opts.workdir.mkdir(parents=True, exist_ok=True)

    import torch

    print(
        f"# hific {sys.argv[1:]}: torch {torch.__version__}, {os.cpu_count()} cores, "
        f"threads {opts.threads or 'default'}, max-memory {opts.max_memory}, tile {opts.tile}",
        flush=True,
    )
    print(f"# load average (1 min) at start: {os.getloadavg()[0]:.2f}")
    print("| arch (random weights) | image | encode s | encode peak MiB | decode s | decode peak MiB | load (1 min) |")
    print("|---|---|---:|---:|---:|---:|---|", flush=True)
    sizes = [float(v) for v in opts.mp.split(",") if v]
    for arch in opts.arch.split(","):
        weights = make_weights(arch, opts.workdir)
        for mp in ([0.0] if not opts.no_load_row else []) + sizes:
            print(fmt_row(measure(arch, mp, opts, weights)), flush=True)


if __name__ == "__main__":
    main()
