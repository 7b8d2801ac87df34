"""Copy a training run's weights into the package as the embedded default model (fp16).

    .venv/bin/python scripts/ship_default_model.py runs/vr1 [--model-id hific-vr]

Writes hificli/zoo/default/<model-id>.safetensors (fp16 weights; decoding is bit-exact with the fp32
run weights because the entropy parameters are computed from float16-rounded weights) and prints its
size, fingerprint and sha256.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="run directory (or its weights.safetensors)")
    parser.add_argument("--model-id", default="hific-vr")
    args = parser.parse_args()

    from hificli.weights import load_weights, save_inference_weights

    source = args.run / "weights.safetensors" if args.run.is_dir() else args.run
    network, z_table, y_table, info = load_weights(source)
    meta = dict(info.meta, shipped_from=str(source.parent.name))
    target = ROOT / "hificli" / "zoo" / "default" / f"{args.model_id}.safetensors"
    shipped = save_inference_weights(
        network, target, model_id=args.model_id, half=True, meta=meta, tables=(z_table, y_table)
    )
    print(f"{target.relative_to(ROOT)}: {shipped.size / 2**20:.2f} MiB, fingerprint {shipped.fingerprint_hex}, "
          f"sha256 {shipped.sha256}, {shipped.n_params:,} parameters")


if __name__ == "__main__":
    main()
