"""Fabricate checkpoints in the earlier PyTorch port's file layout (PORT_FACTS.md 3) for tests.

Stable API (other test modules import it):

- ``port_args(regime, **overrides) -> dict``: a plausible ``args`` dict of primitives.
- ``make_port_checkpoint(path, *, config=None, regime="med", with_optimizer=True, seed=0,
  drop_key=None, extra_key=None, bad_shape_key=None) -> Path``: a small seeded checkpoint.
- ``make_full_size_port_checkpoint(path, regime="med", *, manifest=None, seed=0) -> Path``: the 737 MB
  full-size state_dict from the reference JSON manifest (slow tests and benchmarks only).
- ``make_malicious_checkpoint(path, *, marker=None) -> Path``: a pickle that runs ``touch marker``
  when unpickled unsafely; ``malicious_marker(path)`` is the default marker path.
- ``find_port_manifest(regime) -> Path | None``: where the reference ``hific_state_dict_<regime>.json``
  lives (``$HIFIC_PORT_REFERENCE``, ``tests/data/``, ``/work/shared/reference/``), if anywhere.
- Constants ``PORT_STEPS``, ``PORT_EPOCH`` (the counters written), ``REGIMES``.
"""

from __future__ import annotations

import json
import os
import shlex
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from hificli.models.config import PRESETS, ArchConfig
from hificli.models.discriminator import Discriminator
from hificli.models.hific import HificModel

PORT_STEPS = 200_000
PORT_EPOCH = 3

#: Per regime: loss weights and the flags the released models were trained with (PORT_FACTS 1.1, 1.9).
REGIMES: dict[str, dict[str, Any]] = {
    name: {"target_rate": rate, "lambda_A": lam, "likelihood_type": lik, "normalize_input_image": norm}
    for name, rate, lam, lik, norm in [
        ("low", 0.14, 2.0, "gaussian", True),
        ("med", 0.3, 1.0, "logistic", False),
        ("high", 0.45, 0.5, "gaussian", True),
    ]
}

_REFERENCE_DIRS = (Path(__file__).parent / "data", Path("/work/shared/reference"))


def port_args(regime: str = "med", **overrides: Any) -> dict[str, Any]:
    """The ``args`` dict train.py stores (keys of PORT_FACTS 3; values str/int/float/bool/None/tuple/
    list/dict), for a full-size ``compression_gan`` run of ``regime``; ``overrides`` replace entries."""
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {sorted(REGIMES)}, got {regime!r}")
    r = REGIMES[regime]
    args: dict[str, Any] = {
        "batch_size": 8,
        "beta": 0.15,
        "crop_size": 256,
        "dataset": "openimages",
        "dataset_path": "data/openimages",
        "discriminator_steps": 1,
        "gan_loss_type": "non_saturating",
        "gpu": 0,
        "image_dims": (3, 256, 256),
        "k_M": 0.075 * 2**-5,
        "k_P": 1.0,
        "lambda_A": r["lambda_A"],
        "lambda_A_map": {"low": 2.0, "med": 1.0, "high": 0.5},
        "lambda_B": 2**-4,
        "lambda_schedule": {"vals": [2.0, 1.0], "steps": [50000]},
        "latent_channels": 220,
        "latent_channels_DLMM": 64,
        "latent_dims": (220, 16, 16),
        "learning_rate": 1e-4,
        "likelihood_type": r["likelihood_type"],
        "log_interval": 1000,
        "lr_schedule": {"vals": [1.0, 0.1], "steps": [500000]},
        "mixture_components": 4,
        "model_mode": "training",
        "model_type": "compression_gan",
        "multigpu": False,
        "n_data": 1_000_000,
        "n_epochs": 8,
        "n_residual_blocks": 9,
        "n_steps": 1_000_000,
        "name": "hific_v0.1",
        "noise_dim": 0,
        "normalize_input_image": r["normalize_input_image"],
        "regime": regime,
        "sample_noise": False,
        "save": "experiments",
        "save_interval": 50000,
        "shuffle": True,
        "silent": False,
        "target_rate": r["target_rate"],
        "target_rate_map": {"low": 0.14, "med": 0.3, "high": 0.45},
        "target_schedule": {"vals": [0.2 / 0.14, 1.0], "steps": [50000]},
        "use_channel_norm": True,
        "use_latent_mixture_model": False,
        "weight_decay": 1e-6,
        "force_set_gpu": False,
        "warmstart": True,
        "warmstart_ckpt": "experiments/hific_base/checkpoints/base.pt",
        "ignore_schedule": True,
        "snapshot": "experiments/hific_v0.1/snapshot",
        "checkpoints_save": "experiments/hific_v0.1/checkpoints",
        "figures_save": "experiments/hific_v0.1/figures",
        "storage_save": "experiments/hific_v0.1/storage",
        "tensorboard_runs": "experiments/hific_v0.1/tensorboard",
        "timestamp": "2020_09_10_12:00",
    }
    args.update(overrides)
    return args


def _adam_state(params: list[torch.nn.Parameter], gen: torch.Generator) -> dict[str, Any]:
    """A torch.optim.Adam state_dict after one step with random gradients."""
    opt = torch.optim.Adam(params, lr=1e-4)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    opt.step()
    for p in params:
        p.grad = None
    return opt.state_dict()


def make_port_checkpoint(
    path: str | Path,
    *,
    config: ArchConfig | None = None,
    regime: str = "med",
    with_optimizer: bool = True,
    seed: int = 0,
    drop_key: str | None = None,
    extra_key: str | None = None,
    bad_shape_key: str | None = None,
) -> Path:
    """Write a port-layout checkpoint of ``config`` (default: the tiny preset with the likelihood and
    input normalisation of ``regime``) with seeded random weights (every tensor perturbed, so a layer
    left at its init is detectable). ``args`` records the config's likelihood/normalisation, latent
    channels and block count and the regime's loss weights. The file holds model_state_dict (Encoder,
    Generator, Hyperprior and Discriminator keys), epoch, steps, args, discriminator_state_dict and,
    with ``with_optimizer``, the three Adam optimizer state_dicts.

    Corruptions for tests: ``drop_key`` removes a model_state_dict key, ``extra_key`` adds one (a
    (2,) float tensor), ``bad_shape_key`` grows the key's first dimension by one.
    """
    path = Path(path)
    if regime not in REGIMES:
        raise ValueError(f"regime must be one of {sorted(REGIMES)}, got {regime!r}")
    r = REGIMES[regime]
    if config is None:
        config = PRESETS["tiny"].with_(
            likelihood=r["likelihood_type"], normalize_input=r["normalize_input_image"]
        )
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = HificModel(config)
        disc = Discriminator(config)
    with torch.no_grad():
        for p in list(model.parameters()) + list(disc.parameters()):
            p.add_(torch.randn(p.shape, generator=gen) * 0.05)

    ckpt: dict[str, Any] = {}
    if with_optimizer:
        hp = model.Hyperprior
        amortization = [*model.Encoder.parameters(), *model.Generator.parameters()]
        for net in (hp.analysis_net, hp.synthesis_mu, hp.synthesis_std):
            amortization += list(net.parameters())
        ckpt["compression_optimizer_state_dict"] = _adam_state(amortization, gen)
        density = list(hp.hyperlatent_likelihood.parameters())
        ckpt["hyperprior_optimizer_state_dict"] = _adam_state(density, gen)
        ckpt["discriminator_optimizer_state_dict"] = _adam_state(list(disc.parameters()), gen)

    sd: OrderedDict[str, torch.Tensor] = OrderedDict()
    for k, v in model.state_dict().items():
        sd[k] = v.detach().clone()
    for k, v in disc.state_dict().items():
        sd["Discriminator." + k] = v.detach().clone()
    for key in (drop_key, bad_shape_key):
        if key is not None and key not in sd:
            raise KeyError(f"{key!r} is not a key of this checkpoint")
    if drop_key is not None:
        del sd[drop_key]
    if bad_shape_key is not None:
        t = sd[bad_shape_key]
        shape = (t.shape[0] + 1, *t.shape[1:]) if t.dim() else (2,)
        sd[bad_shape_key] = torch.randn(shape, generator=gen)
    if extra_key is not None:
        sd[extra_key] = torch.randn(2, generator=gen)

    ckpt.update(
        model_state_dict=sd,
        discriminator_state_dict=OrderedDict((k, v.detach().clone()) for k, v in disc.state_dict().items()),
        epoch=PORT_EPOCH,
        steps=PORT_STEPS,
        args=port_args(
            regime,
            likelihood_type=config.likelihood,
            normalize_input_image=config.normalize_input,
            latent_channels=config.latent_channels,
            n_residual_blocks=config.n_residual_blocks,
            latent_dims=(config.latent_channels, 16, 16),
        ),
    )
    torch.save(ckpt, path)
    return path


def find_port_manifest(regime: str = "med") -> Path | None:
    """Path of the reference ``hific_state_dict_<regime>.json`` (key -> shape), or None if absent."""
    dirs = [Path(os.environ["HIFIC_PORT_REFERENCE"])] if os.environ.get("HIFIC_PORT_REFERENCE") else []
    for d in (*dirs, *_REFERENCE_DIRS):
        candidate = d / f"hific_state_dict_{regime}.json"
        if candidate.is_file():
            return candidate
    return None


def make_full_size_port_checkpoint(
    path: str | Path, regime: str = "med", *, manifest: str | Path | None = None, seed: int = 0
) -> Path:
    """Write a full-size (~737 MB) port checkpoint: model_state_dict with every key and shape of the
    reference manifest (random float32 values, N(0, 0.02^2); not a working model), epoch, steps and
    ``port_args(regime)``; no optimizer states. Raises FileNotFoundError without a manifest."""
    manifest = Path(manifest) if manifest is not None else find_port_manifest(regime)
    if manifest is None or not manifest.is_file():
        raise FileNotFoundError(f"no reference manifest hific_state_dict_{regime}.json found")
    shapes: dict[str, list[int]] = json.loads(manifest.read_text())
    gen = torch.Generator().manual_seed(seed)
    sd = OrderedDict((k, torch.randn(shape, generator=gen) * 0.02) for k, shape in shapes.items())
    ckpt = {"model_state_dict": sd, "epoch": PORT_EPOCH, "steps": PORT_STEPS, "args": port_args(regime)}
    torch.save(ckpt, path)
    return Path(path)


class _RunsShellCommand:
    """Unpickles into ``os.system(command)``: the classic malicious-pickle payload."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.system, (self.command,))


def malicious_marker(path: str | Path) -> Path:
    """The file that unsafely unpickling ``make_malicious_checkpoint(path)`` would create."""
    path = Path(path)
    return path.with_name(path.name + ".executed")


def make_malicious_checkpoint(path: str | Path, *, marker: str | Path | None = None) -> Path:
    """Write a checkpoint-looking dict whose ``args`` unpickles into ``os.system("touch <marker>")``.
    A safe loader refuses it; ``marker`` (default ``malicious_marker(path)``) must never appear."""
    path = Path(path)
    marker = Path(marker) if marker is not None else malicious_marker(path)
    payload = _RunsShellCommand(f"touch {shlex.quote(str(marker))}")
    torch.save({"model_state_dict": {"Encoder.x": torch.zeros(1)}, "args": payload, "steps": 1}, path)
    return path
