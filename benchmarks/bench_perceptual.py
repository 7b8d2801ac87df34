"""Cost of the perceptual term per training step, where it goes, and how well the cheaper forms agree.

A training step scores the batch's reconstructions against its crops and backpropagates into the
reconstructions only (the network is frozen). Measured here, all in one run with the load beside:

1. Seconds per step of that forward + backward (``--batch`` crops of ``--crop`` px, random images) for
   the network as first written (``perceptual.PLAIN``), each exact optimisation added in turn up to the
   default (``perceptual.FAST``), the training-only approximations (bf16; a random window as
   ``--perceptual-crop P`` scores), and thread counts; variants measured alternately. Then one
   evaluation comparison (no gradient) of a ``--eval-size`` image pair.
2. Where the time goes: a torch.profiler breakdown of one step (PLAIN and FAST) by layer and op kind.
3. Agreement on real photos (random crops of ``--photos``, JPEG and blur distortions): FAST and PLAIN
   against a float64 evaluation (the exact settings change rounding only); bf16 against FAST (values,
   gradient cosine); windows against the whole crop (correlation over image pairs, mean ratio, and the
   cosine of the window's gradient with the whole-crop gradient inside the window, and away from its edge).

    .venv/bin/python benchmarks/bench_perceptual.py                        # batch 8, 256 px crops
    .venv/bin/python benchmarks/bench_perceptual.py --batch 4 --repeats 2 --no-agreement
    .venv/bin/python benchmarks/bench_perceptual.py --no-steps --no-breakdown   # agreement only
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import describe, interleaved, load_average, load_note  # noqa: E402

from hificli import perceptual as P  # noqa: E402
from hificli.train.loop import _perceptual_window  # noqa: E402
from hificli.train.options import TrainOptions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
EXACT_STEPS = {  # cumulative: each adds one exact optimisation to the one before
    "as first written (PLAIN)": P.PLAIN,
    "+ reference under no_grad, own pass": dataclasses.replace(P.PLAIN, split_reference=True),
    "+ channels-last layout": dataclasses.replace(P.FAST, fused_stem=False),
    "+ fused conv1+blur1 stem (FAST, default)": P.FAST,
}
BF16 = "FAST under bf16 autocast (as --amp bf16 runs it)"


def training_pair(batch: int, crop: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, x): random crops and a noisy version of them, (batch, 3, crop, crop) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, crop, crop, generator=g)
    return (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1), x


def step_fn(net: torch.nn.Module, execution: P.Execution, x_hat: torch.Tensor, x: torch.Tensor,
            window: int = 0, threads: int | None = None, bf16: bool = False) -> Callable[[], torch.Tensor]:
    """One training step's perceptual term: distance of (windows of) x_hat and x, mean, backward."""
    options = TrainOptions(data_dir="", out="", perceptual_crop=window)

    def run() -> torch.Tensor:
        if threads:
            torch.set_num_threads(threads)
        net.execution = execution
        a = x_hat.detach().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            d = net(*_perceptual_window(a, x, 0, 0, options))
        d.float().mean().backward()
        return a.grad

    return run


def step_table(net: torch.nn.Module, args: argparse.Namespace) -> None:
    x_hat, x = training_pair(args.batch, args.crop)
    full = torch.get_num_threads()
    variants = {name: step_fn(net, ex, x_hat, x, threads=full) for name, ex in EXACT_STEPS.items()}
    variants[BF16] = step_fn(net, P.FAST, x_hat, x, threads=full, bf16=True)
    for p in args.windows:
        variants[f"FAST, {p} px window (--perceptual-crop {p})"] = step_fn(net, P.FAST, x_hat, x, p, full)
    if full > 1:
        variants["FAST, 1 thread"] = step_fn(net, P.FAST, x_hat, x, threads=1)
    for fn in variants.values():  # warm-up (oneDNN primitive creation, allocator)
        fn()
    results = interleaved(variants, args.repeats)
    torch.set_num_threads(full)
    plain = results["as first written (PLAIN)"][0]
    print(f"\n### Perceptual term per training step: {net.kind}, batch {args.batch}, {args.crop} px crops, "
          f"forward of both images + backward into the reconstruction; median of {args.repeats}\n")
    print("| variant | s/step | vs PLAIN | load |")
    print("|---|---|---|---|")
    for name, (seconds, loads) in results.items():
        print(f"| {name} | {seconds:.3f} | {plain / seconds:.2f}x | {load_note(loads)} |")


def eval_table(net: torch.nn.Module, args: argparse.Namespace) -> None:
    h, w = args.eval_size
    g = torch.Generator().manual_seed(1)
    a, b = torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g)

    def scored(execution: P.Execution) -> Callable[[], None]:
        def run() -> None:
            net.execution = execution
            with torch.inference_mode():
                net(a, b)
        return run

    variants = {"PLAIN": scored(P.PLAIN), "FAST (two passes)": scored(P.FAST),
                "FAST, one batch of both": scored(dataclasses.replace(P.FAST, split_reference=False))}
    for fn in variants.values():
        fn()
    results = interleaved(variants, args.repeats)
    print(f"\n### Evaluation (no gradient): one {w}x{h} pair, median of {args.repeats}\n")
    print("| variant | s/pair | load |")
    print("|---|---|---|")
    for name, (seconds, loads) in results.items():
        print(f"| {name} | {seconds:.3f} | {load_note(loads)} |")


# -- where the time goes ---------------------------------------------------------------------------------

_CONV_OPS = ("convolution", "conv2d")


def _family(name: str) -> str | None:
    low = name.rsplit(": ", 1)[-1].lower().replace("_", "")
    if "maxpool" in low:
        return "max pool (3x3, stride 1)"
    if "reflection" in low:
        return "reflect padding (blur)"
    if any(k in low for k in ("cat", "pixelunshuffle", "copy", "constantpad", "clone", "contiguous", "narrow")):
        return "copies, padding, layout"
    return None


def _layer_names(net: torch.nn.Module) -> dict[tuple[int, ...], str]:
    """Convolution weight shape -> layer name (ST-AlexNet's blur1 and blur2 share a shape)."""
    names = {tuple(p.shape): n.removesuffix(".weight").removesuffix(".filt")
             for n, p in [*net.trunk.named_parameters(), *net.trunk.named_buffers()] if p.dim() == 4}
    names.update({tuple(p.shape): "head (1x1 lins)" for p in net.lins.parameters()})
    if net.kind == "stlpips-alex":
        names[(64, 3, 11, 11)] = "conv1 (11x11, stride 1; FAST: border strips only)"
        names[(64, 1, 3, 3)] = "blur1, blur2 (depthwise 3x3, stride 2)"
        names[(64, 12, 7, 7)] = "stem (fused conv1+blur1, 2x2 phases)"
        names[(64, 1, 3, 1)] = names[(64, 1, 1, 3)] = "stem border strips (blur)"
    return names


def _label(event, names: dict[tuple[int, ...], str]) -> str:
    """The layer of a convolution event or of its convolution ancestor (by weight shape), else an op kind."""
    family = None
    while event is not None:
        if any(k in event.name for k in _CONV_OPS):
            for shape in event.input_shapes or ():
                if tuple(shape) in names:
                    return names[tuple(shape)]
        family = family or _family(event.name)
        event = event.cpu_parent
    return family or "elementwise (scaling, relu, normalise, head)"


def breakdown(net: torch.nn.Module, args: argparse.Namespace) -> None:
    from torch.autograd.profiler import record_function
    from torch.profiler import ProfilerActivity, profile

    x_hat, x = training_pair(args.batch, args.crop)
    names = _layer_names(net)
    print(f"\n### Where one step's time goes (torch.profiler, self CPU ms; batch {args.batch}, {args.crop} px)\n")
    tables: dict[str, dict[tuple[str, str], float]] = {}
    totals: dict[str, float] = {}
    loads = [load_average()]
    for title, execution in (("PLAIN", P.PLAIN), ("FAST", P.FAST)):
        net.execution = execution
        step_fn(net, execution, x_hat, x)()  # warm-up
        a = x_hat.detach().requires_grad_(True)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            with record_function("forward"):
                d = net(a, x).mean()
            with record_function("backward"):
                d.backward()
        loads.append(load_average())
        events = prof.events()
        scopes = {e.name: e.time_range for e in events if e.name in ("forward", "backward")}
        table: dict[tuple[str, str], float] = {}
        for e in events:
            if e.name in scopes or e.self_cpu_time_total <= 0:
                continue
            phase = next((p for p, r in scopes.items() if r.start <= e.time_range.start <= r.end), "other")
            key = (_label(e, names), phase)
            table[key] = table.get(key, 0.0) + e.self_cpu_time_total / 1e3
        tables[title], totals[title] = table, sum(table.values())
    parts = sorted({k[0] for t in tables.values() for k in t},
                   key=lambda k: -max(sum(v for (n, _), v in t.items() if n == k) for t in tables.values()))
    print("| part | PLAIN forward | PLAIN backward | FAST forward | FAST backward |")
    print("|---|---|---|---|---|")
    for part in parts:
        cells = [f"{tables[t].get((part, ph), 0.0):.0f}" for t in ("PLAIN", "FAST") for ph in ("forward", "backward")]
        print(f"| {part} | " + " | ".join(cells) + " |")
    print(f"| **total** | {totals['PLAIN']:.0f} (all phases) | | {totals['FAST']:.0f} (all phases) | |")
    print(f"\n({load_note(loads)}; profiled ops add some overhead to the totals)")


# -- agreement on real photos ----------------------------------------------------------------------------


def photo_pairs(folders: list[Path], count: int, crop: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(x_hat, x): ``count`` random crops of the photos, distorted by JPEG q15/q40 and blur r1/r2 in turn."""
    from PIL import Image, ImageFilter

    files = sorted(p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg"))
    if not files:
        sys.exit(f"no photos under {', '.join(map(str, folders))}")
    rng = np.random.default_rng(seed)
    distortions = (("jpeg q15", 15), ("jpeg q40", 40), ("blur r1", 1.0), ("blur r2", 2.0))
    refs, tests = [], []
    for i in range(count):
        image = Image.open(files[rng.integers(len(files))]).convert("RGB")
        if min(image.size) < crop:
            image = image.resize((max(crop, image.width), max(crop, image.height)))
        left, top = rng.integers(0, image.width - crop + 1), rng.integers(0, image.height - crop + 1)
        ref = image.crop((int(left), int(top), int(left) + crop, int(top) + crop))
        label, value = distortions[i % len(distortions)]
        if label.startswith("jpeg"):
            buf = io.BytesIO()
            ref.save(buf, "JPEG", quality=int(value))
            test = Image.open(buf).convert("RGB")
        else:
            test = ref.filter(ImageFilter.GaussianBlur(value))
        refs.append(np.asarray(ref))
        tests.append(np.asarray(test))

    def stack(arrays: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0

    return stack(tests), stack(refs)


def _scores_and_grads(net: torch.nn.Module, execution: P.Execution, x_hat: torch.Tensor, x: torch.Tensor,
                      window: int = 0, step: int = 0, bf16: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """Per-pair distances (float64 numpy) and the gradient of their sum w.r.t. x_hat, 4 pairs at a time."""
    options = TrainOptions(data_dir="", out="", perceptual_crop=window)
    net.execution = execution
    scores, grads = [], []
    for i in range(0, x.shape[0], 4):
        a = x_hat[i:i + 4].detach().requires_grad_(True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            d = net(*_perceptual_window(a, x[i:i + 4], step, 0, options)).float()
        d.sum().backward()
        scores.append(d.detach().double().numpy())
        grads.append(a.grad)
    return np.concatenate(scores), torch.cat(grads)


def _cosines(g: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    return F.cosine_similarity(g.flatten(1).double(), ref.flatten(1).double(), dim=1).numpy()


def _ranks(v: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(v)).astype(float)


def agreement(net: torch.nn.Module, args: argparse.Namespace) -> None:
    x_hat, x = photo_pairs(args.photos, args.pairs, args.crop)
    loads = [load_average()]
    fast, g_fast = _scores_and_grads(net, P.FAST, x_hat, x)
    plain, g_plain = _scores_and_grads(net, P.PLAIN, x_hat, x)
    net.double()
    exact, g_exact = _scores_and_grads(net, P.PLAIN, x_hat.double(), x.double())
    net.float()
    loads.append(load_average())
    print(f"\n### Agreement on {args.pairs} real photo crops ({args.crop} px; JPEG q15/q40, blur r1/r2; "
          f"ST-LPIPS {exact.min():.3f}-{exact.max():.3f})\n")
    print("| against float64 | max abs. difference | max relative difference (distance >= 0.01) | "
          "min gradient cosine |")
    print("|---|---|---|---|")
    big = exact >= 0.01
    for name, s, g in (("PLAIN (float32)", plain, g_plain), ("FAST (float32, default)", fast, g_fast)):
        print(f"| {name} | {np.max(np.abs(s - exact)):.1e} | {np.max(np.abs(s - exact)[big] / exact[big]):.1e} | "
              f"{_cosines(g, g_exact).min():.7f} |")

    bf16, g_bf16 = _scores_and_grads(net, P.FAST, x_hat, x, bf16=True)
    rel, cos = (np.abs(bf16 - fast) / fast)[big], _cosines(g_bf16, g_fast)
    print(f"\n{BF16} against FAST: distance relative difference (distance >= 0.01) median {np.median(rel):.1e}, "
          f"max {rel.max():.1e}; Pearson {np.corrcoef(bf16, fast)[0, 1]:.5f}; gradient cosine median "
          f"{np.median(cos):.4f}, 10th percentile {np.percentile(cos, 10):.4f}, min {cos.min():.4f}")
    m = args.margin
    print("\n| window (--perceptual-crop) | Pearson r | Spearman rho | mean window / whole | "
          f"gradient cosine in the window (median, min) | the same, over the window less {m} px each side |")
    print("|---|---|---|---|---|---|")
    for p in args.windows:
        rows = []
        for step in range(args.window_draws):  # a window per draw, as training steps draw them
            score, g = _scores_and_grads(net, P.FAST, x_hat, x, p, step)
            g, ref = _perceptual_window(g, g_fast, step, 0, TrainOptions(data_dir="", out="", perceptual_crop=p))
            inner = (..., slice(m, p - m), slice(m, p - m))
            rows.append((score, _cosines(g, ref), _cosines(g[inner], ref[inner])))
        scores, cos, inner_cos = (np.concatenate(r) for r in zip(*rows, strict=True))
        whole = np.tile(fast, args.window_draws)
        print(f"| {p} px | {np.corrcoef(scores, whole)[0, 1]:.3f} | "
              f"{np.corrcoef(_ranks(scores), _ranks(whole))[0, 1]:.3f} | {scores.mean() / whole.mean():.3f} | "
              f"{np.median(cos):.3f}, {cos.min():.3f} | {np.median(inner_cos):.3f}, {inner_cos.min():.3f} |")
    print(f"\n({args.window_draws} window draws per pair.) The stride-2 blur pools make the gradient depend on the "
          "window's offset modulo the trunk's stride, 8 px: one window near the centre, at an offset that is a "
          "multiple of 8 and 1 px further, gradient cosine with the whole crop's less the edge margin (median):\n")
    print("| window | offset multiple of 8 | 1 px further |")
    print("|---|---|---|")
    for p in args.windows:
        cells = []
        for extra in (0, 1):
            o = (x.shape[-1] - p) // 16 * 8 + extra
            window = (..., slice(o, o + p), slice(o, o + p))
            net.execution = P.FAST
            a = x_hat[window].detach().requires_grad_(True)
            net(a, x[window]).sum().backward()
            inner = (..., slice(m, p - m), slice(m, p - m))
            cells.append(np.median(_cosines(a.grad[inner], g_fast[window][inner])))
        print(f"| {p} px | {cells[0]:.3f} | {cells[1]:.3f} |")
    loads.append(load_average())
    print(f"\n({load_note(loads)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kind", default="stlpips-alex", choices=[k for k in P.KINDS if k not in ("auto", "none")])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--crop", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--windows", type=int, nargs="*", default=[192, 128, 96])
    parser.add_argument("--eval-size", type=int, nargs=2, default=[512, 768], metavar=("H", "W"))
    parser.add_argument("--photos", type=Path, nargs="+", default=[ROOT / "data" / "train", ROOT / "data" / "eval"])
    parser.add_argument("--pairs", type=int, default=32, help="photo crops for the agreement figures")
    parser.add_argument("--window-draws", type=int, default=4)
    parser.add_argument("--margin", type=int, default=32, help="window edge left out of the inner gradient cosine")
    parser.add_argument("--no-steps", action="store_true", help="skip the timings (steps and evaluation)")
    parser.add_argument("--no-breakdown", action="store_true")
    parser.add_argument("--no-agreement", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(describe())
    net = P.load_perceptual(args.kind)
    if not args.no_steps:
        step_table(net, args)
        eval_table(net, args)
    if not args.no_breakdown:
        breakdown(net, args)
    if not args.no_agreement:
        agreement(net, args)


if __name__ == "__main__":
    main()
