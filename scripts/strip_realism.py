"""Write a copy of a weights file without its realism decoder (so that a realism run starts G_r afresh
from the Generator): the ``Realism.*`` tensors and their metadata go, the model and its fingerprint stay.

    .venv/bin/python scripts/strip_realism.py hificli/zoo/default/hific-vr2.safetensors \\
        runs/hific-vr2-norealism.safetensors
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()

    from safetensors import safe_open
    from safetensors.numpy import save_file

    from hificli.weights import REALISM_PREFIX, read_verified, read_weights_info

    read_verified(args.source)
    with safe_open(str(args.source), framework="np") as f:
        metadata = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()  # noqa: SIM118 (safe_open is not iterable)
                   if not k.startswith(REALISM_PREFIX)}
    metadata.pop("realism_fingerprint", None)
    meta = json.loads(metadata.get("meta", "{}"))
    meta.pop("realism", None)
    metadata["meta"] = json.dumps(meta, sort_keys=True)
    save_file(tensors, str(args.out), metadata=metadata)
    read_verified(args.out)
    info = read_weights_info(args.out)
    print(f"{args.out}: fingerprint {info.fingerprint.hex()}, realism decoder: none")


if __name__ == "__main__":
    main()
