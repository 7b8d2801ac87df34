"""The realism decoder's grain head (hificli.models.grain): position-keyed noise, training, decoding.

Tiny seeded GDN models on 128 px crops of synthetic images (one thread, a few steps).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import make_tiny_network, make_tiny_weights, sample_image
from PIL import Image

from hificli.cli.app import main
from hificli.models.grain import (
    ENERGY_FLOOR,
    INITIAL_GAIN,
    GrainHead,
    high_pass_energy,
    missing_energy,
    noise_field,
    position_noise,
)
from hificli.models.realism import RealismGenerator
from hificli.weights import read_verified

FAST = ["--crop", "128", "--batch-size", "2", "--workers", "0", "--threads", "1", "--perceptual", "none",
        "--beta", "0", "--save-every", "0", "--val-every", "0", "--log-every", "1"]

#: position_noise at (row, col) = (0, 0), (0, 1), (1, 0), (7, 3), (2**20, 5): a change here changes the
#: pixels every grain decoder writes, so it needs a new realism decoder, not a silent edit.
GOLDEN = [-0.9896496534347534, 0.8465021848678589, -0.3762284517288208, -0.03418540954589844, 0.6719008684158325]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(["--quiet", *args])
    return int(info.value.code or 0), capsys.readouterr().err


def test_position_noise_is_a_fixed_function_of_position() -> None:
    rows = torch.tensor([0, 0, 1, 7, 1 << 20])
    cols = torch.tensor([0, 1, 0, 3, 5])
    assert position_noise(rows, cols).tolist() == GOLDEN
    field = noise_field(torch.tensor([[0, 0]]), 256, 256)[0, 0]
    assert field.min() >= -1.0 and field.max() < 1.0
    assert abs(float(field.mean())) < 0.01 and abs(float(field.std()) - 3 ** -0.5) < 0.01  # uniform on [-1, 1)
    right = torch.corrcoef(torch.stack([field[:, :-1].flatten(), field[:, 1:].flatten()]))[0, 1]
    down = torch.corrcoef(torch.stack([field[:-1].flatten(), field[1:].flatten()]))[0, 1]
    assert abs(float(right)) < 0.02 and abs(float(down)) < 0.02  # white: neighbours uncorrelated
    assert not torch.equal(field[:16, :16], field[16:32, :16])  # no period at the latent grid


def test_a_tile_of_the_noise_field_is_the_whole_field_cropped() -> None:
    whole = noise_field(torch.tensor([[0, 0]]), 96, 80)
    tiles = noise_field(torch.tensor([[32, 16], [48, 0]]), 32, 48)
    assert tiles.shape == (2, 1, 34, 50)  # one pixel of margin on every side for the 3x3 filter
    assert torch.equal(tiles[0, 0], whole[0, 0, 32:66, 16:66])
    assert torch.equal(tiles[1, 0], whole[0, 0, 48:82, 0:50])


def test_a_new_grain_head_starts_at_next_to_no_grain() -> None:
    network = make_tiny_network(1, "tiny-gdn")
    grainy = RealismGenerator(network.config, grain=True)
    grainy.start_from(network.Generator)
    y = torch.randn(2, network.config.latent_channels, 4, 4)
    with torch.no_grad():
        without = grainy(y, torch.ones(2), with_grain=False)
        change = grainy(y, torch.ones(2)) - without
        assert torch.allclose(without, network.Generator(y), atol=1e-6)
    assert 0 < float(change.abs().max()) <= INITIAL_GAIN * ENERGY_FLOOR ** 0.5 * 1.0001
    head = GrainHead(8)
    with pytest.raises(ValueError, match="does not fit"):
        head(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 8, 8))


def test_missing_energy_is_the_texture_a_decode_lacks() -> None:
    torch.manual_seed(0)
    flat = torch.full((1, 3, 32, 48), 0.5)
    textured = flat.clone()
    textured[..., 17:, :] += 0.2 * (torch.rand(1, 3, 15, 48) - 0.5)  # texture in the bottom row of blocks
    lacking = missing_energy(textured, flat)
    assert lacking.shape == (1, 1, 2, 3)
    assert torch.allclose(lacking[..., 0, :], torch.tensor(math.log(ENERGY_FLOOR)))  # nothing is missing
    assert torch.allclose(lacking[..., 1, :].exp(), high_pass_energy(textured)[..., 1, :] + ENERGY_FLOOR)
    assert torch.allclose(missing_energy(flat, textured), torch.tensor(math.log(ENERGY_FLOOR)))  # never negative


@pytest.fixture(scope="module")
def grain_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny GDN model, a realism run without grain, and one that fits a grain head to it (20 steps each)."""
    root = tmp_path_factory.mktemp("grain")
    images = root / "images"
    images.mkdir()
    for seed in (1, 2):
        sample_image(160, 150, seed=seed).save(images / f"{seed}.png")
    base = make_tiny_weights(root / "base.safetensors", seed=3, model_id="test-gdn", preset="tiny-gdn", rate_levels=3)
    for name, init, extra in (("plain", base, []), ("grain", root / "plain", ["--grain-fit"])):
        with pytest.raises(SystemExit) as info:
            main(["--quiet", "train", str(images), "--stage", "realism", "--init", str(init), *FAST, "--steps", "20",
                  "--lr", "3e-3", "--realism-sampling", "one", "--out", str(root / name), *extra])
        assert info.value.code == 0
    return {"root": root, "images": images, "base": base, "plain": root / "plain", "grain": root / "grain"}


def test_grain_fit_adds_a_grain_head_and_fits_its_energy(grain_run: dict[str, Path]) -> None:
    plain, _ = read_verified(grain_run["plain"] / "weights.safetensors")
    grainy, _ = read_verified(grain_run["grain"] / "weights.safetensors")
    assert not any(k.startswith("Realism.grain.") for k in plain)
    added = {k for k in grainy if k not in plain}
    assert added and all(k.startswith("Realism.grain.") for k in added)
    for key, value in plain.items():  # only the energy net trains
        assert np.array_equal(grainy[key], value), key
    assert np.array_equal(grainy["Realism.grain.gain"], np.full(3, INITIAL_GAIN, dtype=np.float32))
    log = [json.loads(line) for line in (grain_run["grain"] / "log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if r["kind"] == "train"]
    assert len(losses) == 20 and sum(losses[-5:]) < 0.5 * sum(losses[:5])  # the regression fits
    assert json.loads((grain_run["grain"] / "options.json").read_text())["grain"] is True


def test_a_grain_run_resumes_with_its_grain(grain_run: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "resumed"
    common = ["train", str(grain_run["images"]), "--stage", "realism", "--init", str(grain_run["base"]), *FAST,
              "--out", str(out)]
    code, err = run_cli([*common, "--steps", "2", "--grain-fit"], capsys)
    assert code == 0, err
    code, err = run_cli(["train", "--resume", str(out), "--steps", "3"], capsys)
    assert code == 0, err
    state, _ = read_verified(out / "weights.safetensors")
    assert "Realism.grain.filter.weight" in state


def test_grain_belongs_to_the_realism_stage(grain_run: dict[str, Path], tmp_path: Path, capsys) -> None:
    code, err = run_cli(["train", str(grain_run["images"]), "--steps", "1", "--grain", "--out", str(tmp_path / "x"),
                         *FAST], capsys)
    assert code == 2 and "--grain" in err and not (tmp_path / "x").exists()


def test_a_grain_decoder_decodes_one_picture_whatever_the_tiling(grain_run: dict[str, Path], tmp_path: Path,
                                                                capsys) -> None:
    sample_image(200, 136, seed=9).save(tmp_path / "in.png")
    weights = grain_run["grain"] / "weights.safetensors"
    code, err = run_cli(["encode", "-m", str(weights), str(tmp_path / "in.png"), "-o", str(tmp_path / "in.hfc")],
                        capsys)
    assert code == 0, err

    def decode(name: str, *extra: str, model: Path = weights) -> np.ndarray:
        code, err = run_cli(["decode", "-m", str(model), str(tmp_path / "in.hfc"), "-o", str(tmp_path / name),
                             *extra], capsys)
        assert code == 0, err
        with Image.open(tmp_path / name) as image:
            return np.asarray(image.convert("RGB")).astype(int)

    faithful = decode("r0.png")
    whole = decode("r1.png", "--realism", "1", "--tile", "0")
    again = decode("r1-again.png", "--realism", "1", "--tile", "0")
    tiled = decode("r1-tiled.png", "--realism", "1", "--tile", "64")
    assert np.array_equal(whole, again)  # the grain is a function of position, not a random draw
    assert np.abs(tiled - whole).max() <= 1  # the same grain in every tile (float rounding only)
    without = decode("plain-r1.png", "--realism", "1", model=grain_run["plain"] / "weights.safetensors")
    assert np.abs(whole - without).max() > 0  # the grain shows
    assert np.array_equal(decode("r0-again.png", "--realism", "0"), faithful)  # R = 0 stays the faithful decode


def test_grain_only_trains_the_grain_head_alone(grain_run: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "only"
    code, err = run_cli(["train", str(grain_run["images"]), "--stage", "realism", "--init", str(grain_run["plain"]),
                         *FAST, "--steps", "3", "--lr", "1e-2", "--realism-sampling", "one", "--grain-only",
                         "--out", str(out)], capsys)
    assert code == 0, err
    before, _ = read_verified(grain_run["plain"] / "weights.safetensors")
    after, _ = read_verified(out / "weights.safetensors")
    for key, value in before.items():  # the model and the rest of the realism decoder: untouched
        assert np.array_equal(after[key], value), key
    assert not np.allclose(after["Realism.grain.gain"], INITIAL_GAIN)
