"""Long fuzzing run of the decoder: N mutated .hfc files (default 10,000), a summary, failing cases kept.

Uses the mutations, seed files and checks of tests/test_fuzz.py (truncations, bit flips, byte edits and
flips with the CRC recomputed, header fields at extremes, consistent geometry changes, payload splices),
driven by a seeded random generator, so any case is reproducible from (--seed, its index). Every case
must end in a HificError or a valid decode, within TIME_LIMIT seconds and the traced allocation bound;
a case that breaks a rule is written to --save-dir with its description.

    .venv/bin/python scripts/fuzz_long.py [--cases 10000] [--seed 0] [--save-dir fuzz-failures]

Exit status 0 when every case passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import random
import resource
import sys
import tempfile
import time
import traceback
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_fuzz as fuzz  # noqa: E402  (the shared mutations and checks)
from model_fixtures import make_tiny_weights  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--save-dir", type=Path, default=Path("fuzz-failures"))
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        model = fuzz.fuzz_model(make_tiny_weights(Path(tmp) / "tiny.safetensors"))
    seeds = fuzz.make_seeds(model)
    names = sorted(seeds)
    tracemalloc.start()
    counts: collections.Counter[tuple[str, str]] = collections.Counter()
    failures = []
    slowest = (0.0, -1, "")
    peak_alloc = (0, -1, "")
    largest_decode = 0
    start = time.perf_counter()
    for i in range(args.cases):
        rnd = random.Random(args.seed * 1_000_003 + i)
        kind = fuzz.KINDS[i % len(fuzz.KINDS)]
        seed = rnd.choice(names)
        data = fuzz.mutate(seeds[seed], rnd, kind, [seeds[n] for n in names if n != seed])
        try:
            outcome = fuzz.run_case(data, model)
        except BaseException as exc:  # noqa: BLE001  (anything else is a finding)
            if isinstance(exc, KeyboardInterrupt):
                raise
            counts[(kind, "FAILED")] += 1
            failures.append((i, kind, seed, data, "".join(traceback.format_exception(exc))))
            continue
        counts[(kind, outcome.result)] += 1
        slowest = max(slowest, (outcome.seconds, i, kind))
        peak_alloc = max(peak_alloc, (outcome.traced_peak, i, kind))
        if outcome.result == "decoded":
            largest_decode = max(largest_decode, outcome.claimed_pixels)
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} cases, {len(failures)} failures, {time.perf_counter() - start:.0f} s", flush=True)
    elapsed = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    results = sorted({r for _, r in counts})
    print(f"\n{args.cases} cases (seed {args.seed}) in {elapsed:.0f} s, {len(failures)} failures\n")
    print("| mutation | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for kind in fuzz.KINDS:
        print(f"| {kind} | " + " | ".join(str(counts[(kind, r)]) for r in results) + " |")
    print(f"\nslowest case: {slowest[0] * 1000:.0f} ms (#{slowest[1]}, {slowest[2]}); "
          f"largest traced allocation: {peak_alloc[0] / 2**20:.1f} MiB (#{peak_alloc[1]}, {peak_alloc[2]}); "
          f"largest claim decoded: {largest_decode} padded pixels; process peak RSS {rss:.0f} MiB")
    print(f"limits: {fuzz.TIME_LIMIT:.0f} s per case, traced allocation < "
          f"{fuzz.ALLOC_BASE / 2**20:.0f} MiB + {fuzz.ALLOC_PER_PIXEL} B per claimed pixel, "
          f"claims above {fuzz.MAX_CLAIM_PIXELS} px refused")
    if failures:
        args.save_dir.mkdir(parents=True, exist_ok=True)
        for i, kind, seed, data, text in failures:
            (args.save_dir / f"case{i:05d}-{kind}-{seed}.hfc").write_bytes(data)
            (args.save_dir / f"case{i:05d}-{kind}-{seed}.txt").write_text(text)
        print(f"failing cases written to {args.save_dir}/")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
