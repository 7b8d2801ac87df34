"""Codec speed on this machine: the full-size HiFiC architecture with random weights on a 768x512 photo.

Prints a markdown table of stage times (encoder, hyperprior, entropy coding, generator), entropy-coding
throughput, compress/decompress totals, cold start to first decode (a fresh process), `hific info`
time, peak RSS, next to the earlier port's numbers measured on the same 2 cores.

    .venv/bin/python benchmarks/bench_codec.py [--arch full] [--image PATH] [--repeats 3]
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

ROOT = Path(__file__).resolve().parents[1]
PORT = {  # the earlier PyTorch port, random weights, 768x512, these 2 cores (task brief)
    "rans_encode_msym_s": 1.2,
    "rans_decode_msym_s": 0.28,
    "compress_s": 1.78,
    "decompress_s": 5.43,
    "generator_s": 3.81,
    "cold_start_s": 20.0,
}


def median_time(fn, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def default_image() -> Path:
    candidates = sorted((ROOT / "data" / "eval").glob("*.png"))
    return candidates[0] if candidates else ROOT / "hificli" / "assets" / "chelsea.png"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="full")
    parser.add_argument("--image", type=Path, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--weights", type=Path, default=None, help="use these weights instead of random ones")
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    import hificli
    from hificli import container
    from hificli.codec import _pad, decode_file, encode_source, padded_size
    from hificli.entropy.coder import decode_symbols, encode_symbols
    from hificli.imageio import to_source_image
    from hificli.models.config import preset
    from hificli.models.hific import HificModel
    from hificli.weights import save_inference_weights

    image_path = args.image or default_image()
    image = Image.open(image_path).convert("RGB")
    if image.size != (768, 512):
        image = image.resize((768, 512), Image.LANCZOS)
    source = to_source_image(image)
    tmp = Path(tempfile.mkdtemp(prefix="hific-bench-"))
    if args.weights is None:
        torch.manual_seed(0)
        weights = tmp / "random.safetensors"
        save_inference_weights(HificModel(preset(args.arch)).eval(), weights, model_id=f"bench-{args.arch}")
    else:
        weights = args.weights
    model = hificli.load_model(weights)
    threads = torch.get_num_threads()
    r = args.repeats

    pw, ph = padded_size(source.width, source.height)
    pixels = _pad(source.pixels, pw, ph)
    x = model.network.preprocess(torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255)
    with torch.inference_mode():
        t_enc, y = median_time(lambda: model.network.encode_latents(x), r)
        t_ana, z = median_time(lambda: model.network.Hyperprior.analysis(y), r)
    z_hat = torch.floor(z + 0.5)
    t_syn, (mu, y_idx) = median_time(lambda: model.latent_parameters(z_hat), r)
    y_sym = np.clip(torch.floor(y[0].double() - mu[0] + 0.5).numpy(), -2**31 + 1, 2**31 - 1).astype(np.int32)
    y_idx = y_idx.reshape(y_sym.shape)
    t_yenc, y_bytes = median_time(lambda: encode_symbols(y_sym, y_idx, model.y_table), r)
    t_ydec, _ = median_time(lambda: decode_symbols(y_bytes, y_idx, model.y_table), r)
    t_compress, data = median_time(lambda: encode_source(source, model), r)
    t_decompress, _ = median_time(lambda: decode_file(data, model), r)
    y_hat = torch.from_numpy(y_sym.astype(np.float64))[None] + mu
    t_gen, _ = median_time(lambda: model.synthesise(y_hat.float(), source.width, source.height), r)
    hfc_path = tmp / "bench.hfc"
    hfc_path.write_bytes(data)

    env = {**os.environ, "HIFIC_OFFLINE": "1"}
    start = time.perf_counter()
    cold = subprocess.run(
        [sys.executable, "-m", "hificli", "-q", "decode", str(hfc_path), "-m", str(weights), "-o",
         str(tmp / "cold.png"), "-f"], env=env, capture_output=True, text=True,
    )
    t_cold = time.perf_counter() - start
    if cold.returncode:
        print(cold.stderr, file=sys.stderr)
    info_times = []
    for _ in range(3):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hificli", "info", str(hfc_path)], capture_output=True, env=env)
        info_times.append(time.perf_counter() - start)
    peak = _peak_rss_child([sys.executable, "-m", "hificli", "-q", "decode", str(hfc_path), "-m", str(weights),
                            "-o", str(tmp / "peak.png"), "-f"], env)

    n_y = y_sym.size
    hfc = container.unpack(data)
    print(f"\nhific {hificli.__version__}, model {model.model_id} ({model.info.n_params / 1e6:.1f} M params), "
          f"{source.width}x{source.height} from {image_path.name}, torch threads {threads}, median of {r}\n")
    rows = [
        ("encoder (analysis transform)", f"{t_enc:.3f} s", ""),
        ("hyper-analysis", f"{t_ana:.3f} s", ""),
        ("exact hyper-synthesis (mu, sigma, indexes)", f"{t_syn:.3f} s", ""),
        ("latent entropy encode", f"{t_yenc * 1e3:.1f} ms ({n_y / t_yenc / 1e6:.1f} M sym/s)",
         f"{PORT['rans_encode_msym_s']} M sym/s ({n_y / t_yenc / 1e6 / PORT['rans_encode_msym_s']:.0f}x)"),
        ("latent entropy decode", f"{t_ydec * 1e3:.1f} ms ({n_y / t_ydec / 1e6:.1f} M sym/s)",
         f"{PORT['rans_decode_msym_s']} M sym/s ({n_y / t_ydec / 1e6 / PORT['rans_decode_msym_s']:.0f}x)"),
        ("generator", f"{t_gen:.3f} s", f"{PORT['generator_s']} s"),
        ("compress (image -> .hfc bytes)", f"{t_compress:.3f} s", f"{PORT['compress_s']} s"),
        ("decompress (.hfc bytes -> pixels)", f"{t_decompress:.3f} s",
         f"{PORT['decompress_s']} s (ratio {t_decompress / PORT['decompress_s']:.2f})"),
        ("cold start to first decode (new process)", f"{t_cold:.2f} s",
         f"{PORT['cold_start_s']} s (ratio {t_cold / PORT['cold_start_s']:.2f})"),
        ("`hific info` (new process)", f"{statistics.median(info_times):.3f} s", ""),
        ("peak RSS of a decode process", f"{peak / 2**20:.0f} MiB", "~1.2 GB + 1.1 GB/MP"),
        ("file size", f"{hfc.size} bytes ({8 * hfc.size / (source.width * source.height):.3f} bpp)", ""),
    ]
    print("| stage | hific | earlier port |\n|---|---|---|")
    for name, ours, port in rows:
        print(f"| {name} | {ours} | {port} |")


def _peak_rss_child(cmd: list[str], env: dict[str, str]) -> int:
    """Peak RSS in bytes of a child process (Linux ru_maxrss is in KiB)."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    subprocess.run(cmd, env=env, capture_output=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(after, before) * 1024


if __name__ == "__main__":
    main()
