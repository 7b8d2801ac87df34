"""Long fuzzing run of the decoder: N mutated .hfc files (default 10,000), a summary, failing cases kept.

Uses the mutations, seed files and checks of tests/test_fuzz.py (truncations, bit flips, byte edits and
flips with the CRC recomputed, header fields at extremes, consistent geometry changes, payload splices),
plus ``payload_resealed``: edits of one stream's bytes only, the header kept consistent and the CRC
recomputed (a flipped bit, a changed byte or word, a stream of 0xFF or zeros, an empty stream, a word
removed, added or swapped), which reach the entropy decoder's exactness rule (FORMAT.md). Driven by a
seeded random generator, so any case is reproducible from (--seed, its index). Every case must end in a
HificError or a valid decode, within TIME_LIMIT seconds and the traced allocation bound; a case that
breaks a rule is written to --save-dir with its description. Resealed mutations that still decode are
counted (valid codes of other symbols: ANS has no redundancy, the CRC is what catches damage).

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

import hostile_samples  # noqa: E402
import test_fuzz as fuzz  # noqa: E402  (the shared mutations and checks)
from model_fixtures import make_tiny_weights  # noqa: E402

from hificli import container  # noqa: E402

KINDS = (*fuzz.KINDS, "payload_resealed")
RESEALED = ("flip_resealed", "bytes_resealed", "payload_resealed")


def mutate_payload(data: bytes, rnd: random.Random) -> bytes:
    """One edit of one stream's bytes, with the header's lengths and the CRC made consistent."""
    hfc = container.unpack(data)
    name = rnd.choice([s.name for s in hfc.header.streams])
    payload = bytearray(hfc.stream(name))
    words = len(payload) // 4
    how = rnd.choice(["bit", "bit", "byte", "word", "ones", "zeros", "empty", "drop", "add", "swap"])
    if how in ("bit", "byte", "word") and payload:
        pos = rnd.randrange(len(payload))
        if how == "bit":
            payload[pos] ^= 1 << rnd.randrange(8)
        elif how == "byte":
            payload[pos] = rnd.randrange(256)
        else:
            pos -= pos % 4
            payload[pos : pos + 4] = rnd.randbytes(4)
    elif how in ("ones", "zeros"):
        payload = bytearray((b"\xff" if how == "ones" else b"\0") * len(payload))
    elif how == "empty":
        payload = bytearray()
    elif how == "drop" and words:
        pos = 4 * rnd.randrange(words)
        del payload[pos : pos + 4]
    elif how == "add":
        pos = 4 * rnd.randrange(words + 1)
        payload[pos:pos] = rnd.randbytes(4)
    elif how == "swap" and words > 1:
        i, j = sorted(rnd.sample(range(words), 2))
        a, b = payload[4 * i : 4 * i + 4], payload[4 * j : 4 * j + 4]
        payload[4 * i : 4 * i + 4], payload[4 * j : 4 * j + 4] = b, a
    return hostile_samples.with_streams(data, **{name: bytes(payload)})


def payload_changed(data: bytes, seed: bytes) -> bool:
    """Whether a (valid) mutated file's stream bytes differ from its seed's."""
    return container.unpack(data).payloads != container.unpack(seed).payloads


def make_case(seeds: dict[str, bytes], names: list[str], rnd: random.Random, kind: str) -> tuple[str, bytes]:
    seed = rnd.choice(names)
    if kind == "payload_resealed":
        return seed, mutate_payload(seeds[seed], rnd)
    return seed, fuzz.mutate(seeds[seed], rnd, kind, [seeds[n] for n in names if n != seed])


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
    where: collections.Counter[bool] = collections.Counter()  # resealed cases that decoded: payload edited?
    start = time.perf_counter()
    for i in range(args.cases):
        rnd = random.Random(args.seed * 1_000_003 + i)
        kind = KINDS[i % len(KINDS)]
        seed, data = make_case(seeds, names, rnd, kind)
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
            if kind in RESEALED:
                where[payload_changed(data, seeds[seed])] += 1
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} cases, {len(failures)} failures, {time.perf_counter() - start:.0f} s", flush=True)
    elapsed = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    results = sorted({r for _, r in counts})
    print(f"\n{args.cases} cases (seed {args.seed}) in {elapsed:.0f} s, {len(failures)} failures\n")
    print("| mutation | " + " | ".join(results) + " |")
    print("|---|" + "---:|" * len(results))
    for kind in KINDS:
        print(f"| {kind} | " + " | ".join(str(counts[(kind, r)]) for r in results) + " |")
    resealed = sum(n for (kind, _), n in counts.items() if kind in RESEALED)
    silent = sum(counts[(kind, "decoded")] for kind in RESEALED)
    print(f"\nresealed mutations that still decoded: {silent} of {resealed} "
          f"({100 * silent / max(1, resealed):.1f} %); with the stream bytes edited: {where[True]} "
          f"(the others changed only header fields a decoder cannot check: ICC bytes, a size within the padding)")
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
