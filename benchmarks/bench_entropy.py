"""Entropy-coder throughput on full-model shapes at 768x512; prints a markdown table.

Usage: ``.venv/bin/python benchmarks/bench_entropy.py [--repeats 7]``

Streams: latents y (220 x 32 x 48 = 337,920 symbols, Gaussian, sigma log-uniform in [0.11, 30] around
random means, coded with the default 256-level table) and hyperlatents z (320 x 8 x 12, per-channel
logistic densities with scales in [0.5, 4], factorized tables). Times are medians over the repeats,
after one warm-up call (which builds the cached constriction models; its time is listed as "first").
The earlier port's numbers (1.2 M symbols/s encode, 0.28 M/s decode) were measured earlier on the same
kind of machine; they are shown in their own column, not divided into this run's. Each row carries the
1-minute load average while it was measured.
A second table times the integer-exact hyper-synthesis (mu and sigma, 320 -> 220 channels, z 8x12)
against the same two float32 networks.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import EARLIER, describe, load_average, load_note  # noqa: E402

from hificli.entropy.coder import decode_symbols, encode_symbols
from hificli.entropy.tables import SCALE_FRAC_BITS, CdfTable, factorized_tables, latent_tables

PORT_ENCODE = 1.2e6
PORT_DECODE = 0.28e6


def _timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, Any]:
    """(first call seconds, median of the following ``repeats`` calls, first call's result)."""
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), result


def latent_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, CdfTable]:
    shape = (220, 32, 48)
    table = latent_tables("gaussian")
    sigma = np.exp(rng.uniform(math.log(0.11), math.log(30.0), shape))
    mu = rng.normal(0, 2, shape)
    y = rng.normal(mu, sigma)
    symbols = np.floor(y - mu + 0.5).astype(np.int32)
    fixed = np.floor(sigma * 2**SCALE_FRAC_BITS + 0.5).astype(np.int64)
    idx = np.minimum(np.searchsorted(table.scale_thresholds_fixed, fixed), table.num_rows - 1)
    return symbols, idx, table


def hyper_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, CdfTable]:
    import torch

    channels, shape = 320, (320, 8, 12)
    loc = rng.uniform(-1, 1, channels)
    scale = rng.uniform(0.5, 4.0, channels)

    def pmf(values: torch.Tensor) -> torch.Tensor:
        v = values.double()
        lc = torch.from_numpy(loc).view(1, -1, 1, 1)
        sc = torch.from_numpy(scale).view(1, -1, 1, 1)
        return torch.sigmoid((v + 0.5 - lc) / sc) - torch.sigmoid((v - 0.5 - lc) / sc)

    table = factorized_tables(pmf, channels)
    z = loc[:, None, None] + rng.logistic(0, scale[:, None, None], shape)
    symbols = np.floor(z + 0.5).astype(np.int32)
    idx = np.broadcast_to(np.arange(channels)[:, None, None], shape).copy()
    return symbols, idx, table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    cases = (("latents y 220x32x48", latent_case(rng)), ("hyperlatents z 320x8x12", hyper_case(rng)))
    print(describe())
    for name, (symbols, idx, table) in cases:
        loads = [load_average()]
        encode = lambda s=symbols, i=idx, t=table: encode_symbols(s, i, t)  # noqa: E731
        enc_first, enc_t, data = _timed(encode, args.repeats)
        decode = lambda i=idx, t=table, d=data: decode_symbols(d, i, t)  # noqa: E731
        dec_first, dec_t, out = _timed(decode, args.repeats)
        assert np.array_equal(out, symbols)
        n = symbols.size
        loads.append(load_average())
        rows.append((name, n, len(data), 8 * len(data) / n, n / enc_t, n / dec_t, enc_first, dec_first,
                     load_note(loads)))

    print(f"\nEntropy coder throughput, median of {args.repeats}; first = cold call incl. building "
          f"constriction models\n")
    print("| stream | symbols | bytes | bits/sym | encode M sym/s | decode M sym/s | first enc / dec ms "
          f"| load (1 min) | earlier port enc / dec M sym/s: {EARLIER} |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for name, n, size, bps, enc, dec, ef, df, load in rows:
        print(f"| {name} | {n:,} | {size:,} | {bps:.3f} | {enc / 1e6:.1f} | {dec / 1e6:.1f} "
              f"| {ef * 1e3:.0f} / {df * 1e3:.0f} | {load} | {PORT_ENCODE / 1e6:.2f} / {PORT_DECODE / 1e6:.2f} |")
    exact_synthesis_rows(args.repeats)


def exact_synthesis_rows(repeats: int) -> None:
    import torch
    from torch import nn

    from hificli.entropy.exact import ExactHyperSynthesis

    class Synthesis(nn.Module):
        def __init__(self, n: int, c: int) -> None:
            super().__init__()
            self.conv1 = nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1)
            self.conv2 = nn.ConvTranspose2d(n, n, 5, stride=2, padding=2, output_padding=1)
            self.conv3 = nn.ConvTranspose2d(n, c, 3, stride=1, padding=1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x)))))

    torch.manual_seed(0)
    nets = Synthesis(320, 220), Synthesis(320, 220)
    z = torch.randint(-6, 7, (1, 320, 8, 12)).float()
    t0 = time.perf_counter()
    exact = ExactHyperSynthesis(*({k: v.numpy() for k, v in net.state_dict().items()} for net in nets))
    convert = time.perf_counter() - t0
    z_int = z.numpy()

    def reference() -> None:
        with torch.no_grad():
            nets[0](z), nets[1](z)

    print(f"\nHyper-synthesis mu + sigma, z 320x8x12 -> 220x32x48 (integer-exact: numpy float64; float32 "
          f"reference: torch, {torch.get_num_threads()} threads; weight conversion {convert * 1e3:.0f} ms, once per "
          "model load)\n")
    print("| path | median ms | load (1 min) |")
    print("|---|---:|---|")
    for name, fn in (("integer-exact (float64 on integers)", lambda: exact.fixed(z_int)),
                     ("float32 reference (not deterministic)", reference)):
        loads = [load_average()]
        seconds = _timed(fn, repeats)[1]
        print(f"| {name} | {seconds * 1e3:.0f} | {load_note([*loads, load_average()])} |")


if __name__ == "__main__":
    main()
