"""Put a realism run's decoder into an embedded model: ``hific decode --realism R`` then works with it.

    .venv/bin/python scripts/ship_realism.py runs/real5 [--model-id hific-vr2]

The run must have been trained on that embedded model (``--init hificli/zoo/default/<model-id>.safetensors``,
same fingerprint). Its ``Realism.*`` tensors replace any in the embedded file; the model's own tensors,
fingerprint, and so every file it wrote, stay the same. Prints the new size and both fingerprints.
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="realism run directory (or its weights.safetensors)")
    parser.add_argument("--model-id", default="hific-vr2")
    args = parser.parse_args()

    from hificli.weights import load_weights, read_weights_info, save_with_realism

    source = args.run / "weights.safetensors" if args.run.is_dir() else args.run
    target = ROOT / "hificli" / "zoo" / "default" / f"{args.model_id}.safetensors"
    network, _, _, info = load_weights(source)
    shipped = read_weights_info(target)
    if getattr(network, "Realism", None) is None:
        raise SystemExit(f"{source} has no realism decoder")
    if info.fingerprint != shipped.fingerprint:
        raise SystemExit(f"{source} was trained on another model than {target.name}")
    meta = dict(info.meta.get("realism", {}), shipped_from=source.parent.name)
    written = save_with_realism(target, network.Realism, target, model_id=args.model_id, meta=meta)
    print(f"{target.relative_to(ROOT)}: {target.stat().st_size / 2**20:.2f} MiB, fingerprint "
          f"{written.fingerprint.hex()}, realism fingerprint {written.realism_fingerprint}, sha256 {written.sha256}")


if __name__ == "__main__":
    main()
