"""Rate control on real photos: how close --size lands to its target, and what it costs.

    .venv/bin/python benchmarks/bench_ratecontrol.py data/eval [-m MODEL] [--repeats 3]

For each image and each target (a byte budget between the sizes at quality 0 and 100, at 20/50/80 %
of the way) it runs :func:`hificli.ratecontrol.encode_to_size` and checks the file lands within
[90 %, 100 %] of the target; it times a plain encode (default quality) and a --size encode of the same
image alternately in the same run (so the ratio compares like with like) and prints the machine load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import describe, interleaved, load_note, timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", type=Path, help="a folder of photos")
    parser.add_argument("-m", "--model", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import hificli
    from hificli.codec import encode_source
    from hificli.entropy.rate import quality_code
    from hificli.imageio import read_image
    from hificli.ratecontrol import encode_to_size

    model = hificli.load_model(args.model)
    print(f"# {describe()}; model {model.model_id}")
    print("| image | target bytes | file bytes | file / target | quality | trials |")
    print("|---|---|---|---|---|---|")
    ratios, hits, total, plain_times, size_times, loads = [], 0, 0, [], [], []
    for path in sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        source = read_image(path)
        low = len(encode_source(source, model, quality_code(0)))
        high = len(encode_source(source, model, quality_code(100)))
        for fraction in (0.2, 0.5, 0.8):
            target = int(low + fraction * (high - low))
            result = encode_to_size(source, model, target)
            ratio = len(result.data) / target
            ratios.append(ratio)
            total += 1
            hits += 0.9 <= ratio <= 1.0
            print(f"| {path.stem} | {target} | {len(result.data)} | {ratio:.3f} | {result.quality_code / 100:g} "
                  f"| {result.trials} |")
        target = int(low + 0.5 * (high - low))
        timing = interleaved({
            "plain": lambda source=source: encode_source(source, model),
            "size": lambda source=source, target=target: encode_to_size(source, model, target),
        }, args.repeats)
        plain_times.append(timing["plain"][0])
        size_times.append(timing["size"][0])
        loads += timing["plain"][1]
    print()
    print(f"targets met within [90 %, 100 %]: {hits} / {total}; file / target: min {min(ratios):.3f}, "
          f"median {statistics.median(ratios):.3f}")
    from hificli.codec import decode_file

    first = read_image(next(p for p in sorted(args.images.iterdir()) if p.suffix.lower() in (".png", ".jpg")))
    for q in (0, 50, 100):
        code = quality_code(q)
        seconds, seen, _ = timed(lambda code=code: decode_file(encode_source(first, model, code), model), args.repeats)
        print(f"encode + decode {first.width}x{first.height} at quality {q}: {seconds:.3f} s ({load_note(seen)})")
    ratio = statistics.median(s / p for s, p in zip(size_times, plain_times, strict=True))
    print(f"median per image, same run, alternating: plain encode {statistics.median(plain_times):.3f} s, "
          f"--size encode {statistics.median(size_times):.3f} s, ratio {ratio:.2f}x ({load_note(loads)})")


if __name__ == "__main__":
    main()
