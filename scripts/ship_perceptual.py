"""Ship a second model that shares an embedded model's entropy model: the encoder and decoder of a
``hific train --freeze-prior`` run (or the tensor mean of several of its snapshots), stored alone.

    .venv/bin/python scripts/ship_perceptual.py runs/perc1/snap-{2000,2500,3000}.safetensors \\
        --base hificli/zoo/default/hific-vr2.safetensors --model-id hific-perceptual

Every source must keep the base's hyperprior and context exactly (float16 rounding; what a frozen prior
trained from the base gives): they decide how bits are parsed and come from the base at load time. The
result (float16 ``Encoder.*`` and ``Generator.*`` only) is written beside the base as
``<model-id>.safetensors`` unless ``--out`` names another place; the base must lie beside it there too.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TRAINED = ("Encoder.", "Generator.")


def trained_mean(sources: list[Path], base: Path) -> dict:
    """Tensor mean of the sources' encoder and decoder (float64 accumulation), each source read once;
    a source whose hyperprior or context differs from the base's (float16 rounding) is refused."""
    import numpy as np

    from hificli.weights import read_verified, split_tensors

    reference, _, _ = split_tensors(read_verified(base)[0])
    total: dict = {}
    for source in sources:
        network, _, _ = split_tensors(read_verified(source)[0])
        for key, value in network.items():
            if key.startswith(TRAINED):
                total[key] = total.get(key, 0) + value.astype(np.float64)
            elif not np.array_equal(value.astype(np.float16), reference[key].astype(np.float16)):
                raise SystemExit(f"{source}: {key} differs from {base}'s (train with --freeze-prior --init BASE)")
    return {key: (value / len(sources)).astype(np.float32) for key, value in total.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path, nargs="+", help="weights files of one --freeze-prior run")
    parser.add_argument("--base", type=Path, default=ROOT / "hificli/zoo/default/hific-vr2.safetensors")
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from hificli.weights import save_sharing

    trained = trained_mean(args.sources, args.base)
    out = args.out or args.base.parent / f"{args.model_id}.safetensors"
    meta = {"stage": "perceptual (encoder + decoder; entropy model shared)",
            "sources": [str(s) for s in args.sources]}
    info = save_sharing(args.base, trained, out, model_id=args.model_id, meta=meta)
    print(f"{out}: {info.model_id}, fingerprint {info.fingerprint_hex}, {info.size / 2**20:.2f} MiB "
          f"(shares {args.base.name})")


if __name__ == "__main__":
    main()
