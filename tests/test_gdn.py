"""The "gdn" transform (preset ``compact``, the default model's): GDN layer, config identity, network
shapes, and a tiny GDN model trained and used through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import make_tiny_network, sample_image
from PIL import Image

from hificli.cli.app import main
from hificli.layers import GDN
from hificli.models.config import PRESETS, ArchConfig
from hificli.models.hific import HificModel


def test_gdn_matches_its_formula_and_igdn_multiplies() -> None:
    torch.manual_seed(0)
    layer = GDN(4)
    with torch.no_grad():
        layer.beta.uniform_(0.5, 2.0)
        layer.gamma.uniform_(0.0, 0.5)
    x = torch.randn(2, 4, 5, 6)
    beta = layer.beta.detach() ** 2 - GDN.PEDESTAL
    gamma = layer.gamma.detach() ** 2 - GDN.PEDESTAL
    norm = beta.view(1, 4, 1, 1) + torch.einsum("ij,njhw->nihw", gamma, x * x)
    assert torch.allclose(layer(x), x / torch.sqrt(norm), atol=1e-6)
    layer.inverse = True
    assert torch.allclose(layer(x), x * torch.sqrt(norm), atol=1e-6)


def test_gdn_starts_near_identity_and_stays_well_defined() -> None:
    layer = GDN(3)
    x = torch.full((1, 3, 2, 2), 0.1)
    assert torch.allclose(layer(x), x / (1 + 0.1 * 0.01) ** 0.5, atol=1e-6)
    # A descent step pushing beta far below zero leaves it at its floor: no division by zero or NaN.
    with torch.no_grad():
        layer.beta.fill_(-5.0)
        layer.gamma.fill_(-5.0)
    out = layer(torch.zeros(1, 3, 2, 2))
    assert torch.isfinite(out).all()


def test_transform_is_in_the_config_json_only_when_not_the_original() -> None:
    """Weights of HiFiC-transform models written before the field existed keep their fingerprints."""
    assert "transform" not in json.loads(PRESETS["small"].to_json())
    compact = PRESETS["compact"]
    assert json.loads(compact.to_json())["transform"] == "gdn"
    assert ArchConfig.from_json(compact.to_json()) == compact
    assert ArchConfig.from_json(PRESETS["small"].to_json()) == PRESETS["small"]
    with pytest.raises(ValueError, match="transform"):
        ArchConfig(transform="resnet")


def test_compact_preset_size_and_shapes() -> None:
    with torch.device("meta"):
        model = HificModel(PRESETS["compact"])
    counts = model.count_parameters()
    assert counts["total"] == 2_759_043  # documented in MODELS.md and the README
    assert not any(k.startswith("Generator.resblock") for k in model.state_dict())
    net = make_tiny_network(0, "tiny-gdn")
    out = net(torch.rand(2, 3, 128, 192))
    assert out.x_hat.shape == (2, 3, 128, 192) and out.y.shape == (2, 6, 8, 12) and out.z.shape == (2, 5, 2, 3)
    assert out.bpp.item() > 0


def test_a_gdn_model_trains_and_codes_through_the_cli(tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    sample_image(200, 160, seed=1).save(images / "a.png")
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as info:
        main(["--quiet", "train", str(images), "--arch", "tiny-gdn", "--crop", "128", "--batch-size", "2",
              "--workers", "0", "--threads", "1", "--steps", "30", "--out", str(run), "--perceptual", "none",
              "--overfit", "--lr", "3e-3", "--log-every", "1", "--save-every", "0"])
    assert info.value.code == 0, capsys.readouterr().err
    losses = [r["loss"] for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == "train"]
    assert len(losses) == 30 and np.mean(losses[-5:]) < 0.7 * np.mean(losses[:5])

    source = tmp_path / "in.png"
    sample_image(150, 130, seed=7).save(source)
    hfc, png = tmp_path / "in.hfc", tmp_path / "out.png"
    for args in (["encode", "-m", str(run), str(source), "-o", str(hfc)],
                 ["decode", "-m", str(run), str(hfc), "-o", str(png), "--tile", "64"]):
        with pytest.raises(SystemExit) as info:
            main(args)
        assert info.value.code == 0, capsys.readouterr().err
    with Image.open(png) as image:
        assert image.size == (150, 130)


def test_loading_a_gdn_model_does_not_import_dynamo() -> None:
    """Building GDN layers on the meta device must not run meta arithmetic (it imports torch._dynamo,
    1.4 s of every model load)."""
    import subprocess
    import sys

    code = "import sys, hificli; hificli.load_model(None); print('torch._dynamo' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
