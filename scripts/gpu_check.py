"""GPU check of the --device path: files made on one device decode to identical latents on the other,
pixels agree up to float rounding, and how fast 768x512 and 24 MP go. Prints a markdown report.

Run on a machine with a CUDA GPU through scripts/gpu_check.sh (no network, no installs: it uses the
torch that is there and this checkout). ``--device cpu --quick`` dry-runs every step on a CPU machine.

For each model (the embedded hific-compact, and seeded random full-size HiFiC weights):
  1. encode a 768x512 photo on the GPU and on the CPU;
  2. decode both files on both devices: the latents must be bit-identical across devices (the parse is
     integer-exact on the CPU), the pixels close (PSNR between the devices' reconstructions);
  3. time encode / decode on the GPU (fp32 and --half) and on the CPU at 768x512, and on the GPU at
     24 MP (full-size model only), plus a fresh-process `hific decode --device cuda`.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMPACT = str(ROOT / "hificli" / "zoo" / "default" / "hific-compact.safetensors")  #: a trained model


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return float("nan")


def photo(width: int, height: int):
    """A SourceImage of a photo (data/eval or the sample) resized to width x height."""
    from PIL import Image

    from hificli.imageio import to_source_image

    sources = sorted((ROOT / "data" / "eval").glob("*.png")) or [ROOT / "hificli" / "assets" / "chelsea.png"]
    with Image.open(sources[0]) as image:
        return to_source_image(image.convert("RGB").resize((width, height), Image.LANCZOS))


def random_full(folder: Path) -> Path:
    import torch

    from hificli.models.config import preset
    from hificli.models.hific import HificModel
    from hificli.weights import save_inference_weights

    torch.manual_seed(0)
    path = folder / "random-full.safetensors"
    save_inference_weights(HificModel(preset("full")).eval(), path, model_id="gpu-check-full")
    return path


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def median_seconds(fn, device: str, repeats: int) -> float:
    fn()  # warm-up (cuDNN algorithm choice, allocator)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def psnr(a, b) -> float:
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def check_model(name: str, weights: str, gpu: str, args: argparse.Namespace, lines: list[str]) -> bool:
    """Steps 1-3 for one model; appends report lines; returns whether the cross-device checks passed."""
    import numpy as np
    import torch

    import hificli
    from hificli import container
    from hificli.codec import decode_file, decode_latents, encode_source

    models = {d: hificli.load_model(weights, device=d) for d in ("cpu", gpu)}
    half = hificli.load_model(weights, device=gpu, half=True)
    source = photo(768, 512)
    files = {d: encode_source(source, m) for d, m in models.items()}
    ok = True
    lines.append(f"\n### {name} ({models['cpu'].info.n_params / 1e6:.1f} M parameters), 768x512\n")
    same = files["cpu"] == files[gpu]
    lines.append(f"- files encoded on cpu and {gpu}: {len(files['cpu'])} / {len(files[gpu])} bytes, "
                 f"{'identical' if same else 'different (the encoders float latents differ; allowed)'}")
    for made_on, data in files.items():
        hfc = container.unpack(data)
        latents = {d: decode_latents(hfc, m.latent) for d, m in models.items()}
        identical = np.array_equal(latents["cpu"], latents[gpu])
        ok &= identical
        pixels = {d: decode_file(data, m)[0] for d, m in models.items()}
        half_pixels = decode_file(data, half)[0]
        diff = np.abs(pixels["cpu"].astype(np.int16) - pixels[gpu].astype(np.int16))
        lines.append(
            f"- file made on {made_on}: latents decoded on cpu and {gpu} "
            f"{'IDENTICAL' if identical else 'DIFFER (bug)'}; pixels cpu vs {gpu}: PSNR "
            f"{psnr(pixels['cpu'], pixels[gpu]):.1f} dB, max diff {diff.max()}; {gpu} --half ({half.half}) vs "
            f"cpu: PSNR {psnr(pixels['cpu'], half_pixels):.1f} dB"
        )
    r = args.repeats
    rows = []
    for label, model in ((f"{gpu} fp32", models[gpu]), (f"{gpu} --half", half), ("cpu fp32", models["cpu"])):
        device = model.device
        encode = median_seconds(lambda m=model: encode_source(source, m), device, r)
        decode = median_seconds(lambda m=model: decode_file(files["cpu"], m), device, r)
        rows.append(f"| {name} | 768x512 | {label} | {encode:.3f} | {decode:.3f} |")
    if weights != COMPACT and not args.quick:  # 24 MP with the full-size model, GPU only
        big = photo(6000, 4000)
        if gpu.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        data = encode_source(big, models[gpu])
        encode = time.perf_counter() - start
        start = time.perf_counter()
        decode_file(data, models[gpu])
        decode = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**30 if gpu.startswith("cuda") else float("nan")
        rows.append(f"| {name} | 6000x4000 (24 MP), one run | {gpu} fp32 | {encode:.2f} | {decode:.2f} "
                    f"(GPU peak {peak:.1f} GiB) |")
    lines.append("\n| model | image | device | encode s | decode s |\n|---|---|---|---|---|\n" + "\n".join(rows))
    return ok


def cold_start(weights: str, gpu: str, folder: Path) -> str:
    """Wall time of a fresh `hific decode --device GPU` of a 768x512 file (model load included)."""
    import hificli
    from hificli.codec import encode_source

    model = hificli.load_model(weights)
    path = folder / "cold.hfc"
    path.write_bytes(encode_source(photo(768, 512), model))
    cmd = [sys.executable, "-m", "hificli", "--quiet", "decode", str(path), "-o", str(folder / "cold.png"), "-f",
           "--device", gpu, "-m", weights]
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HIFIC_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    status = "" if run.returncode == 0 else f" (FAILED: {run.stderr.strip()[-300:]})"
    return f"- cold start to first decode on {gpu} (fresh process, {Path(weights).stem}): {seconds:.2f} s{status}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="the accelerator to check (cuda, cuda:N; cpu: dry run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="hific-compact only, no 24 MP (a dry run)")
    args = parser.parse_args()

    import torch

    sys.path.insert(0, str(ROOT))
    import hificli
    from hificli.device import resolve_device

    gpu = resolve_device(args.device)
    name = torch.cuda.get_device_name(gpu) if gpu.startswith("cuda") else "none (dry run on the CPU)"
    lines = [
        f"## GPU check: hific {hificli.__version__}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
        f"GPU {name}, {os.cpu_count()} CPUs, torch CPU threads {torch.get_num_threads()}, "
        f"load average (1 min) {load_average():.2f}"
    ]
    folder = Path(tempfile.mkdtemp(prefix="hific-gpu-check-"))
    full = None if args.quick else str(random_full(folder))
    ok, printed = True, 0
    for label, weights in (("hific-compact", COMPACT), ("full-size HiFiC, random weights", full)):
        if label.startswith("full") and full is None:
            continue
        try:
            ok &= check_model(label, weights, gpu, args, lines)
            lines.append(cold_start(weights, gpu, folder))
        except Exception as exc:  # report and go on with the next model
            ok = False
            lines.append(f"\n- {label}: FAILED with {type(exc).__name__}: {exc}")
        printed = _flush(lines, printed)  # as it goes, in case a later step runs out of time
    lines.append(f"\nload average (1 min) at the end: {load_average():.2f}; "
                 f"{'every check passed' if ok else 'a check FAILED (see above)'}")
    _flush(lines, printed)
    return 0 if ok else 1


def _flush(lines: list[str], printed: int) -> int:
    """Print the report lines not printed yet and rewrite $OUT/gpu_check.md (if $OUT is set) with all."""
    print("\n".join(lines[printed:]), flush=True)
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.md").write_text("\n".join(lines) + "\n")
    return len(lines)


if __name__ == "__main__":
    sys.exit(main())
