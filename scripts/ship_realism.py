"""Put a realism run's decoder (or the mean of several snapshots') into an embedded model.

    .venv/bin/python scripts/ship_realism.py runs/real6 [--model-id hific-vr2]
    .venv/bin/python scripts/ship_realism.py A.safetensors B.safetensors --out runs/avg.safetensors

Every source must have been trained on the same model as the target (``--init
hificli/zoo/default/<model-id>.safetensors``: same fingerprint). With several sources their realism
decoders are averaged tensor by tensor (snapshots of one run; small-batch noise averages out). The
target's ``Realism.*`` tensors are replaced; the model's own tensors and fingerprint, and so every file
it wrote, stay the same. ``--out`` writes a copy instead of the embedded file (to score it first).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sources", type=Path, nargs="+", help="realism run directories or weights files")
    parser.add_argument("--model-id", default="hific-vr2")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of the embedded model")
    args = parser.parse_args()

    import torch

    from hificli.train.realism import base_weights_path
    from hificli.weights import load_weights, read_weights_info, save_with_realism

    target = ROOT / "hificli" / "zoo" / "default" / f"{args.model_id}.safetensors"
    shipped = read_weights_info(target)
    decoders, metas = [], []
    for source in args.sources:
        path = base_weights_path(source)
        network, _, _, info = load_weights(path)
        if getattr(network, "Realism", None) is None:
            raise SystemExit(f"{path} has no realism decoder")
        if info.fingerprint != shipped.fingerprint:
            raise SystemExit(f"{path} was trained on another model than {target.name}")
        decoders.append(network.Realism)
        metas.append(info.meta.get("realism", {}))
    realism = decoders[0]
    if len(decoders) > 1:
        states = [d.state_dict() for d in decoders]
        realism.load_state_dict({k: torch.stack([s[k].float() for s in states]).mean(dim=0) for k in states[0]})
    meta = dict(metas[0], shipped_from=[s.name for s in args.sources], steps=[m.get("steps") for m in metas])
    out = args.out or target
    written = save_with_realism(target, realism, out, model_id=args.model_id, meta=meta)
    print(f"{out}: {out.stat().st_size / 2**20:.2f} MiB, fingerprint {written.fingerprint.hex()}, realism "
          f"fingerprint {written.realism_fingerprint.hex()}, sha256 {written.sha256}")


if __name__ == "__main__":
    main()
