"""hific train --widen: a GDN model's hidden layers grow without changing what it computes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from model_fixtures import make_tiny_network, make_tiny_weights, sample_image

from hificli.cli.app import main
from hificli.models.hific import HificModel
from hificli.models.widen import widen_state, widened_config
from hificli.weights import read_weights_info

FAST = ["--crop", "128", "--batch-size", "2", "--workers", "0", "--threads", "1", "--perceptual", "none",
        "--log-every", "1", "--save-every", "0", "--val-every", "0"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(["--quiet", *args])
    return int(info.value.code or 0), capsys.readouterr().err


def test_a_widened_model_computes_what_the_original_did() -> None:
    network = make_tiny_network(2, "tiny-gdn", rate_levels=3)
    with torch.no_grad():  # give every GDN coupling a value, so a leak into the new channels would show
        for name, p in network.named_parameters():
            if name.endswith("gamma"):
                p.add_(0.05 * torch.rand_like(p))
    config, state = widen_state(network.state_dict(), network.config, (9, 12, 16), seed=1)
    assert config.encoder_channels[1:4] == (9, 12, 16)
    wide = HificModel(config).eval()
    wide.load_state_dict(state)
    x = torch.rand(2, 3, 64, 48)
    with torch.no_grad():
        y, y_wide = network.Encoder(x), wide.Encoder(x)
        assert torch.allclose(y, y_wide, atol=1e-5)
        y_hat = torch.round(y)
        assert torch.allclose(network.Generator(y_hat), wide.Generator(y_hat), atol=1e-5)
        hidden = wide.Encoder.transform[:2](x)  # the new channels carry signal (they can learn)
        assert float(hidden[:, 6:].abs().mean()) > 0
    assert sum(p.numel() for p in wide.parameters()) > sum(p.numel() for p in network.parameters())


def test_only_wider_gdn_layers() -> None:
    gdn = make_tiny_network(0, "tiny-gdn").config
    with pytest.raises(ValueError, match="each >= the current"):
        widened_config(gdn, (4, 8, 8))
    with pytest.raises(ValueError, match="only 'gdn'"):
        widened_config(make_tiny_network(0, "tiny").config, (8, 8, 8))


def test_train_widen_trains_the_wider_model(tmp_path: Path, capsys) -> None:
    images = tmp_path / "images"
    images.mkdir()
    for seed in (1, 2):
        sample_image(160, 144, seed=seed).save(images / f"{seed}.png")
    base = make_tiny_weights(tmp_path / "base.safetensors", seed=4, model_id="test-gdn", preset="tiny-gdn")
    out = tmp_path / "wide"
    code, err = run_cli(["train", str(images), "--init", str(base), "--widen", "8,10,12", *FAST, "--steps", "2",
                         "--out", str(out)], capsys)
    assert code == 0, err
    info = read_weights_info(out / "weights.safetensors")
    assert info.config.encoder_channels[1:4] == (8, 10, 12)
    code, err = run_cli(["train", "--resume", str(out), "--steps", "3"], capsys)  # resumes at the new widths
    assert code == 0, err
    code, err = run_cli(["encode", str(images / "1.png"), "-m", str(out), "-o", str(tmp_path / "1.hfc")], capsys)
    assert code == 0, err
    code, err = run_cli(["decode", str(tmp_path / "1.hfc"), "-m", str(out), "-o", str(tmp_path / "1.png")], capsys)
    assert code == 0 and (tmp_path / "1.png").exists(), err

    code, err = run_cli(["train", str(images), "--init", str(base), "--widen", "2,10,12", *FAST, "--steps", "1",
                         "--out", str(tmp_path / "narrow")], capsys)
    assert code != 0 and "--widen" in err and "each >= the current" in err
    code, err = run_cli(["train", str(images), "--widen", "8,10,12", *FAST, "--steps", "1",
                         "--out", str(tmp_path / "noinit")], capsys)
    assert code != 0 and "--widen needs --init" in err
    code, err = run_cli(["train", str(images), "--init", str(base), "--widen", "8,x", *FAST, "--steps", "1",
                         "--out", str(tmp_path / "bad")], capsys)
    assert code == 2 and "three comma-separated integers" in err
    code, err = run_cli(["train", str(images), "--stage", "realism", "--init", str(base), "--widen", "8,10,12",
                         *FAST, "--steps", "1", "--out", str(tmp_path / "realism")], capsys)
    assert code != 0 and "takes no --widen" in err


def test_widening_an_init_keeps_its_discriminator() -> None:
    from hificli.train.loop import widen_init

    network = make_tiny_network(1, "tiny-gdn")
    disc = {"conv_out.weight": torch.ones(1, 4, 1, 1)}  # D sees the latents, not the transforms' widths
    config, state, kept = widen_init((network.config, network.state_dict(), disc), (8, 10, 12), seed=0)
    assert config.encoder_channels[1:4] == (8, 10, 12) and kept is disc
    assert state["Encoder.transform.0.weight"].shape[0] == 8
