"""Average weights files of one architecture (checkpoint averaging along a training run).

    .venv/bin/python scripts/average_weights.py OUT.safetensors A.safetensors B.safetensors ... [--model-id ID]

Snapshots taken along a fine-tuning run lie in one basin; their mean is usually better than each of
them, because small-batch noise averages out (as in stochastic weight averaging). Network tensors are
averaged arithmetically, a variable-rate model's quantization steps geometrically (the mean of their
logs); the integer entropy tables are rebuilt from the averaged model, as training does. Writes fp32
weights (ship them with scripts/ship_default_model.py, which stores fp16).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("inputs", type=Path, nargs="+")
    parser.add_argument("--model-id", default=None, help="model id of the result (default: the first input's)")
    args = parser.parse_args()

    import numpy as np
    import torch

    from hificli.checkpoint import load_strict
    from hificli.models.hific import HificModel
    from hificli.weights import load_weights, save_inference_weights

    loaded = [load_weights(path) for path in args.inputs]
    configs = {info.config for _, _, _, info in loaded}
    if len(configs) != 1:
        raise SystemExit("error: the weights files have different architectures")
    config = configs.pop()
    states = [network.inference_state_dict() for network, _, _, _ in loaded]
    mean = {key: torch.stack([s[key].float() for s in states]).mean(dim=0) for key in states[0]}
    model = HificModel(config)
    load_strict(model, mean, ignore_prefixes=("RateSteps.",))
    if model.variable_rate:
        logs = np.mean([np.log(net.RateSteps.fixed().astype(np.float64)) for net, _, _, _ in loaded], axis=0)
        from hificli.entropy.rate import STEP_FRAC

        with torch.no_grad():
            model.RateSteps.log_step.copy_(torch.from_numpy(logs - STEP_FRAC * np.log(2.0)).float())
    model.eval()
    first = loaded[0][3]
    meta = dict(first.meta, averaged=[str(p) for p in args.inputs])
    info = save_inference_weights(model, args.out, model_id=args.model_id or first.model_id, meta=meta)
    print(f"{args.out}: mean of {len(args.inputs)} weights files, fingerprint {info.fingerprint_hex}")


if __name__ == "__main__":
    main()
