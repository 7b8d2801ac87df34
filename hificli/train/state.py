"""Training checkpoints: our own format, loadable with ``torch.load(weights_only=True)``.

``RUN_DIR/checkpoint.pt`` is a plain dict of tensors and primitives:

- ``format`` = ``hific-train``, ``format_version``;
- ``model_state_dict``: the network under the port's key names (``Encoder.*``, ``Generator.*``,
  ``Hyperprior.*``, and ``Discriminator.*`` in the GAN stage), so port-checkpoint readers accept it;
- ``compression_optimizer_state_dict`` (E, G, hyper-analysis/synthesis), ``hyperprior_optimizer_state_dict``
  (the hyperlatent density), ``discriminator_optimizer_state_dict`` (GAN stage), ``grad_scaler``;
- ``steps`` (completed updates), ``epoch``;
- ``args``: port-style run facts (``regime``, ``likelihood_type``, ``normalize_input_image``,
  ``n_residual_blocks``, ...) plus ``hific_arch`` (ArchConfig JSON), ``hific_train`` (all options),
  ``schedule`` and ``perceptual`` (the network the run was trained with);
- ``rng``: one entry per process (python, numpy, torch CPU and CUDA generator states).
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hificli.checkpoint import ARCH_ARG_KEY
from hificli.errors import ModelMismatchError
from hificli.models.config import ArchConfig

CHECKPOINT_FORMAT = "hific-train"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "weights.safetensors"
LOG_NAME = "log.jsonl"
DISCRIMINATOR_PREFIX = "Discriminator."


def capture_rng(device: torch.device) -> dict[str, Any]:
    """Every generator a training step draws from, as weights-only-loadable values."""
    key, mt, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"key": key, "mt": torch.from_numpy(mt.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    """Inverse of :func:`capture_rng`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["key"], n["mt"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def port_args(config: ArchConfig, options: dict[str, Any], schedule: dict[str, Any], perceptual: str) -> dict:
    """The ``args`` dict: the port's names for what a port reader needs, plus our full settings."""
    crop = options["crop"]
    return {
        "model_type": "compression_gan" if options["stage"] == "gan" else "compression",
        "model_mode": "training",
        "regime": options["regime"],
        "likelihood_type": config.likelihood,
        "normalize_input_image": config.normalize_input,
        "n_residual_blocks": config.n_residual_blocks,
        "latent_channels": config.latent_channels,
        "use_channel_norm": True,
        "use_latent_mixture_model": False,
        "sample_noise": False,
        "noise_dim": 0,
        "gan_loss_type": "non_saturating",
        "discriminator_steps": 1 if options["stage"] == "gan" else 0,
        "batch_size": options["batch_size"],
        "crop_size": crop,
        "image_dims": (3, crop, crop),
        "latent_dims": (config.latent_channels, crop // 16, crop // 16),
        "n_steps": options["steps"],
        "learning_rate": schedule["lr"],
        "target_rate": schedule["target_bpp"],
        "lambda_A": schedule["lambda_a"],
        "lambda_B": schedule["lambda_b"],
        "k_M": schedule["k_m"],
        "k_P": schedule["k_p"],
        "beta": schedule["beta"],
        "name": options.get("name") or "",
        "warmstart": options.get("init") is not None,
        "timestamp": time.strftime("%Y_%m_%d_%H:%M"),
        ARCH_ARG_KEY: config.to_json(),
        "hific_train": options,
        "schedule": schedule,
        "perceptual": perceptual,
    }


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_run_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load one of our checkpoints (a run directory or its checkpoint.pt) on CPU, weights-only."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise ModelMismatchError(f"{path}: no checkpoint there", "is this a run directory of 'hific train'?")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # refused pickles, truncated zips, not a torch file
        raise ModelMismatchError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ModelMismatchError(f"{path}: not a 'hific train' checkpoint")
    if int(data.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise ModelMismatchError(f"{path}: checkpoint format {data['format_version']} is newer than this hific")
    return data
