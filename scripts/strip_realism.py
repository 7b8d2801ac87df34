"""Write a copy of a weights file without its realism decoder (so that a realism run starts G_r afresh
from the Generator): the ``Realism.*`` tensors and their metadata go, the model and its fingerprint stay.

    .venv/bin/python scripts/strip_realism.py hificli/zoo/default/hific-vr2.safetensors \\
        runs/hific-vr2-norealism.safetensors
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path)
    parser.add_argument("out", type=Path)
    args = parser.parse_args()

    from hificli.weights import save_without_realism

    info = save_without_realism(args.source, args.out)
    print(f"{args.out}: fingerprint {info.fingerprint.hex()}, realism decoder: none")


if __name__ == "__main__":
    main()
