"""Codec speed on this machine: the full-size HiFiC architecture with random weights on a 768x512 photo.

Prints a markdown table of stage times (encoder, hyperprior, entropy coding, generator), compress /
decompress totals, cold start to first decode (a fresh process), `hific info` time and peak RSS, each
with the 1-minute load average while it was measured. Ratios are printed only between figures of this
run (decompress with --half against fp32, measured alternately). The earlier port cannot run here: its
numbers appear in their own column as figures measured earlier, on the same kind of machine, and are
never divided into this run's.

    .venv/bin/python benchmarks/bench_codec.py [--arch full] [--image PATH] [--repeats 3] [--device cpu]
        [--weights PATH] [--no-half] [--no-cold]
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
from machine import EARLIER, describe, interleaved, load_average, load_note, timed  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The earlier PyTorch port, random weights, 768x512, measured on 2 cores of this project's machine kind
#: (task brief). Not re-measurable here: shown beside, never divided into, this run's figures.
PORT = {
    "rans_encode": "1.2 M sym/s",
    "rans_decode": "0.28 M sym/s",
    "compress": "1.78 s",
    "decompress": "5.43 s",
    "generator": "3.81 s",
    "cold_start": "20.0 s",
}


def default_image() -> Path:
    candidates = sorted((ROOT / "data" / "eval").glob("*.png"))
    return candidates[0] if candidates else ROOT / "hificli" / "assets" / "chelsea.png"


def random_weights(arch: str, folder: Path) -> Path:
    """Seeded random weights of an architecture preset, saved as a hific weights file."""
    import torch

    from hificli.models.config import preset
    from hificli.models.hific import HificModel
    from hificli.weights import save_inference_weights

    torch.manual_seed(0)
    path = folder / f"random-{arch}.safetensors"
    save_inference_weights(HificModel(preset(arch)).eval(), path, model_id=f"bench-{arch}")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="full")
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--weights", type=Path, default=None, help="use these weights instead of random ones")
    parser.add_argument("--no-half", action="store_true", help="skip the --half comparison")
    parser.add_argument("--no-cold", action="store_true", help="skip the fresh-process measurements")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    import hificli
    from hificli import container, tiling
    from hificli.codec import _pad, decode_file, decode_latents, encode_source, padded_size
    from hificli.entropy.coder import decode_symbols, encode_symbols
    from hificli.entropy.exact import OUT_FRAC
    from hificli.imageio import to_source_image

    print(describe())
    image_path = args.image or default_image()
    image = Image.open(image_path).convert("RGB")
    if image.size != (768, 512):
        image = image.resize((768, 512), Image.LANCZOS)
    source = to_source_image(image)
    tmp = Path(tempfile.mkdtemp(prefix="hific-bench-"))
    weights = args.weights or random_weights(args.arch, tmp)
    model = hificli.load_model(weights, device=args.device)
    r = args.repeats
    rows: list[tuple[str, str, str, str]] = []

    comparable = args.arch == "full" and args.weights is None  # the port's figures are for this case

    def row(name: str, figure: str, loads: list[float], port: str = "") -> None:
        rows.append((name, figure, load_note(loads), port if comparable else ""))

    pw, ph = padded_size(source.width, source.height)
    pixels = _pad(source.pixels, pw, ph)
    x = model.network.preprocess(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255).to(model.device)
    with torch.inference_mode():
        t, loads, y = timed(lambda: model.network.encode_latents(x), r)
        row("encoder (analysis transform)", f"{t:.3f} s", loads)
        t, loads, z = timed(lambda: model.network.Hyperprior.analysis(y), r)
        row("hyper-analysis", f"{t:.3f} s", loads)
    y, z_hat = y.cpu(), torch.floor(z + 0.5).cpu().numpy()
    latent = model.latent
    thresholds = latent.y_table.scale_thresholds_fixed
    t, loads, (mu, y_idx) = timed(
        lambda: tiling.hyper_parameters(latent.size, latent.exact, z_hat, thresholds, latent.tiling), r)
    row("exact hyper-synthesis (mu, sigma, indexes)", f"{t:.3f} s", loads)
    centred = y[0].double().numpy() - mu[0] * 2.0**-OUT_FRAC
    y_sym = np.clip(np.floor(centred + 0.5), -2**31 + 1, 2**31 - 1).astype(np.int32)
    y_idx = y_idx.reshape(y_sym.shape)
    n_y = y_sym.size
    t, loads, y_bytes = timed(lambda: encode_symbols(y_sym, y_idx, latent.y_table), r)
    row(f"latent entropy encode ({n_y:,} symbols)", f"{t * 1e3:.1f} ms ({n_y / t / 1e6:.1f} M sym/s)", loads,
        PORT["rans_encode"])
    t, loads, _ = timed(lambda: decode_symbols(y_bytes, y_idx, latent.y_table), r)
    row("latent entropy decode", f"{t * 1e3:.1f} ms ({n_y / t / 1e6:.1f} M sym/s)", loads, PORT["rans_decode"])
    t, loads, data = timed(lambda: encode_source(source, model), r)
    row("compress (image -> .hfc bytes)", f"{t:.3f} s", loads, PORT["compress"])
    hfc = container.unpack(data)
    t, loads, y_hat = timed(lambda: decode_latents(hfc, latent), r)
    row("parse: entropy decode + exact hyper-synthesis", f"{t:.3f} s", loads)
    t_gen, loads, _ = timed(lambda: model.synthesise(y_hat, source.width, source.height), r)
    row("generator", f"{t_gen:.3f} s", loads, PORT["generator"])
    t_dec, loads, _ = timed(lambda: decode_file(data, model), r)
    row("decompress (.hfc bytes -> pixels)", f"{t_dec:.3f} s", loads, PORT["decompress"])

    same_run: list[tuple[str, str, str]] = []
    if not args.no_half:
        half = hificli.load_model(weights, device=args.device, half=True)
        both = interleaved({"fp32": lambda: decode_file(data, model), "half": lambda: decode_file(data, half)}, r)
        (t32, loads), (t16, _) = both["fp32"], both["half"]
        plain, low = decode_file(data, model)[0].astype(np.int16), decode_file(data, half)[0].astype(np.int16)
        diff = np.abs(plain - low)
        same_run.append((
            f"decompress --half ({half.half}) / fp32, alternating",
            f"{t16:.3f} s / {t32:.3f} s = {t16 / t32:.2f} (pixels differ by at most {diff.max()}, mean "
            f"{diff.mean():.2f} levels; latents identical)",
            load_note(loads),
        ))
    same_run.append(("generator share of decompress", f"{t_gen / t_dec:.2f}", load_note([load_average()])))

    if not args.no_cold:
        hfc_path = tmp / "bench.hfc"
        hfc_path.write_bytes(data)
        env = {**os.environ, "HIFIC_OFFLINE": "1"}
        decode_cmd = [sys.executable, "-m", "hificli", "--quiet", "decode", str(hfc_path), "-m", str(weights),
                      "-o", str(tmp / "cold.png"), "-f", "--device", args.device]
        loads = [load_average()]
        start = time.perf_counter()
        cold = subprocess.run(decode_cmd, env=env, capture_output=True, text=True)
        t_cold = time.perf_counter() - start
        loads.append(load_average())
        if cold.returncode:
            print(cold.stderr, file=sys.stderr)
        row("cold start to first decode (new process)", f"{t_cold:.2f} s", loads, PORT["cold_start"])
        info_times, loads = [], [load_average()]
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "hificli", "info", str(hfc_path)], capture_output=True, env=env)
            info_times.append(time.perf_counter() - start)
        loads.append(load_average())
        row("`hific info` (new process)", f"{statistics.median(info_times):.3f} s", loads)
        loads = [load_average()]
        peak = _peak_rss_child(decode_cmd, env)
        row("peak RSS of a decode process", f"{peak / 2**20:.0f} MiB", loads + [load_average()])

    print(f"\nhific {hificli.__version__}, model {model.model_id} ({model.info.n_params / 1e6:.1f} M params), "
          f"{source.width}x{source.height} from {image_path.name}, device {model.device}, median of {r}; "
          f"file {hfc.size} bytes ({8 * hfc.size / (source.width * source.height):.3f} bpp)\n")
    print(f"| stage | hific, this run | load (1 min) | earlier port: {EARLIER} |\n|---|---|---|---|")
    for name, ours, load, port in rows:
        print(f"| {name} | {ours} | {load} | {port} |")
    print("\n| same-run comparison | result | load (1 min) |\n|---|---|---|")
    for name, result, load in same_run:
        print(f"| {name} | {result} | {load} |")


def _peak_rss_child(cmd: list[str], env: dict[str, str]) -> int:
    """Peak RSS in bytes of a child process (Linux ru_maxrss is in KiB)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, env=env, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) * 1024


if __name__ == "__main__":
    main()
