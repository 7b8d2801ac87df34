"""Tiny seeded models and synthetic images for tests (no network, no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_tiny_network(seed: int = 0, preset: str = "tiny", *, context_std: float = 0.05, **overrides):
    """A seeded random HificModel of a unit-test preset ("tiny" or "tiny-gdn"; eval mode); a context's
    last layers are drawn with ``context_std`` (larger: a worse calibrated context)."""
    import torch

    from hificli.models.config import PRESETS
    from hificli.models.hific import HificModel

    torch.manual_seed(seed)
    config = PRESETS[preset].with_(**overrides) if overrides else PRESETS[preset]
    model = HificModel(config)
    with torch.no_grad():  # spread the hyper-synthesis a bit so latents get varied scales
        for module in (model.Hyperprior.synthesis_std, model.Hyperprior.synthesis_mu):
            module.conv3.bias.add_(0.5)
    if model.has_context:  # each context net's last layer starts at zero: give it an effect to test
        from hificli.models.context import ContextNet

        with torch.no_grad():
            for net in (m for m in model.Context.modules() if isinstance(m, ContextNet)):
                net.param_conv3.weight.normal_(0.0, context_std)
                net.param_conv3.bias.normal_(0.0, context_std)
    if model.variable_rate:  # steps from x2.8 (level 0) down to x0.35 (last level), unit steps in the middle
        levels = config.rate_levels
        model.RateSteps.initialize([4.0 ** (k - (levels - 1) / 2) for k in range(levels)], reference=1.0)
    return model.eval()


def numpy_state(module) -> dict:
    """A torch module's state as numpy arrays (what the integer decoder is built from)."""
    return {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}


def make_tiny_weights(
    path: str | Path, *, seed: int = 0, model_id: str = "test-tiny", preset: str = "tiny", **overrides
) -> Path:
    """Save a seeded random unit-test model (see make_tiny_network, which takes ``overrides``) as a hific
    weights file."""
    from hificli.weights import save_inference_weights

    path = Path(path)
    save_inference_weights(make_tiny_network(seed, preset, **overrides), path, model_id=model_id)
    return path


def sample_image(width: int, height: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Smooth synthetic content with some texture (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    channels = []
    for c in range(3):
        fx, fy, phase = rng.uniform(0.01, 0.08), rng.uniform(0.01, 0.08), rng.uniform(0, 6.28)
        channels.append(127 + 90 * np.sin(fx * xx + phase) * np.cos(fy * yy + c))
    pixels = np.stack(channels, axis=2) + rng.normal(0, 6, (height, width, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    return image.convert(mode) if mode != "RGB" else image


def assert_coded_size_matches_estimate(weights: Path, image: Path, qualities: tuple[float, ...]) -> None:
    """The streams of a variable-rate model's files are within 1 % (+64 bytes) of its float rate estimate."""
    import hificli
    from hificli import container
    from hificli.codec import encode_source, estimate_bits
    from hificli.entropy.rate import quality_code
    from hificli.imageio import read_image

    model = hificli.load_model(weights)
    source = read_image(image)
    for q in qualities:
        code = quality_code(q)
        hfc = container.unpack(encode_source(source, model, code))
        coded = sum(s.length for s in hfc.header.streams)
        estimate = estimate_bits(source, model, code)["total"] / 8
        assert abs(coded - estimate) <= 0.01 * estimate + 64, (q, coded, estimate)

