"""Helper run in subprocesses: encode images or decode .hfc files and print latent hashes as JSON.

    python tests/latent_hashes.py encode MODEL THREADS OUT_DIR IMAGE...
    python tests/latent_hashes.py encode:Q[,Q...] MODEL THREADS OUT_DIR IMAGE...   (variable-rate, qualities)
    python tests/latent_hashes.py decode MODEL THREADS FILE.hfc...
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path


def latent_hash(data: bytes, model) -> str:
    """sha256 of the decoded latents y_hat (float32 bytes) of a .hfc file."""
    import numpy as np

    from hificli import container
    from hificli.codec import decode_latents

    y_hat = decode_latents(container.unpack(data), model.latent)
    return hashlib.sha256(np.ascontiguousarray(y_hat).tobytes()).hexdigest()


def run_hashes(*args: str) -> dict:
    """Run this script in a fresh process (``OMP_NUM_THREADS`` = its THREADS argument) and parse its JSON."""
    import os
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": args[2]}
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def main(argv: list[str]) -> None:
    import torch

    mode, model_path, threads, *rest = argv
    torch.set_num_threads(int(threads))
    import hificli
    from hificli.codec import encode_source
    from hificli.entropy.rate import quality_code
    from hificli.imageio import read_image

    model = hificli.load_model(model_path)
    hashes = {}
    if mode.startswith("encode"):
        _, _, qualities = mode.partition(":")
        out_dir, images = Path(rest[0]), rest[1:]
        for quality in qualities.split(","):
            code = quality_code(float(quality)) if quality else None
            for image in images:
                data = encode_source(read_image(image), model, code)
                suffix = f"-q{quality}" if quality else ""
                target = out_dir / (Path(image).stem + suffix + ".hfc")
                target.write_bytes(data)
                hashes[target.name] = latent_hash(data, model)
    else:
        for path in rest:
            hashes[Path(path).name] = latent_hash(Path(path).read_bytes(), model)
    print(json.dumps({"threads": torch.get_num_threads(), "hashes": hashes}))


if __name__ == "__main__":
    main(sys.argv[1:])
