"""The realism decoder (issue #14): model, weights files, ``hific train --stage realism``.

Tiny seeded GDN models on 128 px crops of synthetic images (one thread, a few steps).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import make_tiny_network, make_tiny_weights, sample_image
from PIL import Image
from safetensors.numpy import load_file, save_file

from hificli.cli.app import main
from hificli.models.realism import BlendedGenerator, RealismGenerator, blend
from hificli.weights import read_verified, read_weights_info

FAST = ["--crop", "128", "--batch-size", "2", "--workers", "0", "--threads", "1", "--perceptual", "none"]


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(["--quiet", *args])
    return int(info.value.code or 0), capsys.readouterr().err


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("realism-images")
    for seed in (1, 2, 3):
        sample_image(160, 150, seed=seed).save(root / f"{seed}.png")
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A variable-rate tiny GDN model (the kind the embedded models are)."""
    return make_tiny_weights(tmp_path_factory.mktemp("base") / "base.safetensors", seed=3, model_id="test-gdn",
                             preset="tiny-gdn", rate_levels=3)


@pytest.fixture(scope="module")
def realism_run(images: Path, base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A realism run that fits one batch by MSE alone (beta 0, no perceptual term, no grid penalty): 30 steps."""
    out = tmp_path_factory.mktemp("runs") / "realism"
    with pytest.raises(SystemExit) as info:
        main(["--quiet", "train", str(images), "--stage", "realism", "--init", str(base), *FAST, "--steps", "30",
              "--beta", "0", "--k-grid", "0", "--overfit", "--lr", "3e-3", "--log-every", "1", "--save-every", "0",
              "--val", str(images), "--val-every", "0", "--out", str(out)])
    assert info.value.code == 0
    return out


def test_a_new_realism_generator_is_the_generator_at_every_realism() -> None:
    network = make_tiny_network(1, "tiny-gdn")
    realistic = RealismGenerator(network.config)
    realistic.start_from(network.Generator)
    y = torch.randn(2, network.config.latent_channels, 3, 4)
    with torch.no_grad():
        x0 = network.Generator(y)
        for r in (0.0, 0.3, 1.0):
            assert torch.allclose(realistic(y, torch.full((2,), r)), x0, atol=1e-6)
        realistic.shift[0].fill_(0.5)
        x1 = realistic(y, torch.ones(2))
        assert not torch.allclose(x1, x0, atol=1e-3)  # modulation reaches the output
        assert torch.equal(blend(x0, x1, torch.zeros(2)), x0)  # realism 0: the Generator's output exactly
        blended = BlendedGenerator(network.Generator, realistic, 0.25)
        quarter = realistic(y, torch.full((2,), 0.25))
        assert torch.allclose(blended(y), x0 + 0.25 * (quarter - x0), atol=1e-6)
    with pytest.raises(ValueError, match="realism must be in"):
        BlendedGenerator(network.Generator, realistic, 0.0)


def test_only_gdn_models_get_a_realism_decoder() -> None:
    with pytest.raises(ValueError, match="'gdn' transform"):
        RealismGenerator(make_tiny_network(1, "tiny").config)


def test_realism_stage_trains_g_r_and_keeps_the_model(realism_run: Path, base: Path) -> None:
    train = records(realism_run, "train")
    assert [r["step"] for r in train] == list(range(1, 31))
    early, late = (sum(r["loss"] for r in part) / 5 for part in (train[:5], train[-5:]))
    assert late < early  # G_r fits the batch better than the Generator
    assert all(0.0 <= r["realism"] <= 1.0 and r["d_loss"] == 0 for r in train)  # beta 0: D is not trained
    assert all(r["grid"] >= 0 for r in train) and train[-1]["grid"] > 0  # G_r's grid-locked change is measured
    assert len({round(r["realism"], 6) for r in train}) > 10  # drawn per batch (--realism-sampling uniform)
    val = records(realism_run, "val")
    assert [r["step"] for r in val] == [30] and val[0]["psnr_0"] > 0 and val[0]["psnr_1"] > 0

    weights = realism_run / "weights.safetensors"
    info, base_info = read_weights_info(weights), read_weights_info(base)
    assert info.fingerprint == base_info.fingerprint and info.model_id == "test-gdn"
    assert info.realism_fingerprint is not None and base_info.realism_fingerprint is None
    assert info.meta["realism"]["steps"] == 30
    arrays, _ = read_verified(weights)
    base_arrays, _ = read_verified(base)
    assert {k for k in arrays if not k.startswith("Realism.")} == set(base_arrays)
    for key, value in base_arrays.items():  # the model itself is untouched
        assert (arrays[key] == value).all(), key
    trained = arrays["Realism.transform.0.weight"]
    assert not (trained == base_arrays["Generator.transform.0.weight"]).all()


def test_realism_run_resumes_where_it_stopped(images: Path, base: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "r"
    common = ["train", str(images), "--stage", "realism", "--init", str(base), *FAST, "--log-every", "1",
              "--save-every", "0", "--val-every", "0", "--out", str(out)]
    code, err = run_cli([*common, "--steps", "2"], capsys)
    assert code == 0, err
    code, err = run_cli(["train", "--resume", str(out), "--steps", "4"], capsys)
    assert code == 0, err
    assert [r["step"] for r in records(out, "train")] == [1, 2, 3, 4]
    assert all(r["d_loss"] > 0 for r in records(out, "train"))  # default beta: D is trained
    state = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert state["steps"] == 4 and state["stage"] == "realism"
    code, err = run_cli(["train", "--resume", str(out), "--steps", "5", "--beta", "1"], capsys)
    assert code != 0 and "cannot change --beta" in err
    code, err = run_cli([*common, "--steps", "1"], capsys)
    assert code != 0 and "already holds a training run" in err
    code, err = run_cli([*common, "--steps", "1", "--force"], capsys)  # a new run: the old log is gone
    assert code == 0, err
    assert [r["step"] for r in records(out, "train")] == [1]


def test_realism_one_trains_the_full_realism_decoder(images: Path, base: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "one"
    code, err = run_cli(["train", str(images), "--stage", "realism", "--init", str(base), *FAST, "--steps", "2",
                         "--log-every", "1", "--save-every", "0", "--val-every", "0", "--realism-sampling", "one",
                         "--out", str(out)], capsys)
    assert code == 0, err
    assert [r["realism"] for r in records(out, "train")] == [1.0, 1.0]


def test_realism_stage_needs_a_gdn_init(images: Path, tmp_path: Path, capsys) -> None:
    hific_layers = make_tiny_weights(tmp_path / "tiny.safetensors", preset="tiny")
    code, err = run_cli(["train", str(images), "--stage", "realism", "--init", str(hific_layers), *FAST,
                         "--steps", "1", "--out", str(tmp_path / "x")], capsys)
    assert code != 0 and "'gdn' model" in err
    code, err = run_cli(["train", str(images), "--stage", "realism", *FAST, "--steps", "1",
                         "--out", str(tmp_path / "y")], capsys)
    assert code != 0 and "needs --init" in err


def test_a_changed_realism_tensor_is_refused(realism_run: Path, tmp_path: Path) -> None:
    from hificli.errors import ModelMismatchError

    source = realism_run / "weights.safetensors"
    tensors = load_file(str(source))
    tensors["Realism.shift.0"] = tensors["Realism.shift.0"] + 0.25
    with open(source, "rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
    tampered = tmp_path / "tampered.safetensors"
    save_file(tensors, str(tampered), metadata=header["__metadata__"])
    with pytest.raises(ModelMismatchError, match="realism decoder does not match"):
        read_verified(tampered)


# -- decoding and evaluating through the CLI ------------------------------------------------------------


@pytest.fixture(scope="module")
def coded(base: Path, realism_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A photo-like image encoded with the base model and with the realism run (same fingerprint)."""
    folder = tmp_path_factory.mktemp("coded")
    sample_image(200, 136, seed=9).save(folder / "in.png")
    paths = {"image": folder / "in.png"}
    for name, weights in (("base", base), ("run", realism_run / "weights.safetensors")):
        paths[name] = folder / f"{name}.hfc"
        with pytest.raises(SystemExit) as info:
            main(["--quiet", "encode", "-m", str(weights), str(folder / "in.png"), "-q", "60", "-o", str(paths[name])])
        assert info.value.code == 0
    return paths


def decoded_pixels(capsys, hfc: Path, weights: Path, out: Path, *extra: str) -> np.ndarray:
    code, err = run_cli(["decode", "-m", str(weights), str(hfc), "-o", str(out), *extra], capsys)
    assert code == 0, err
    with Image.open(out) as image:
        return np.asarray(image.convert("RGB"))


def test_one_file_decodes_faithfully_or_with_realism(coded: dict[str, Path], base: Path, realism_run: Path,
                                                     tmp_path: Path, capsys) -> None:
    weights = realism_run / "weights.safetensors"
    assert coded["base"].read_bytes() == coded["run"].read_bytes()  # the encoder is the base model's
    faithful = decoded_pixels(capsys, coded["base"], base, tmp_path / "base.png")
    at_zero = decoded_pixels(capsys, coded["base"], weights, tmp_path / "r0.png", "--realism", "0")
    default = decoded_pixels(capsys, coded["base"], weights, tmp_path / "default.png")
    assert np.array_equal(at_zero, faithful) and np.array_equal(default, faithful)
    full = decoded_pixels(capsys, coded["base"], weights, tmp_path / "r1.png", "--realism", "1")
    half = decoded_pixels(capsys, coded["base"], weights, tmp_path / "r05.png", "--realism", "0.5")
    assert full.shape == faithful.shape == (136, 200, 3)
    differs = np.abs(full.astype(int) - faithful.astype(int))
    assert differs.max() > 2  # the trained realism decoder changes the pixels
    between = np.abs(half.astype(int) - faithful.astype(int))
    assert 0 < between.mean() < differs.mean()  # R blends: half way is closer to the faithful decode
    tiled = decoded_pixels(capsys, coded["base"], weights, tmp_path / "tiled.png", "--realism", "1", "--tile", "64")
    assert np.abs(tiled.astype(int) - full.astype(int)).max() <= 1  # float rounding only


def test_realism_needs_a_realism_decoder_and_a_value_in_range(coded: dict[str, Path], base: Path,
                                                             tmp_path: Path, capsys) -> None:
    code, err = run_cli(["decode", "-m", str(base), str(coded["base"]), "-o", str(tmp_path / "x.png"),
                         "--realism", "0.5"], capsys)
    assert code == 4 and "has no realism decoder" in err and not (tmp_path / "x.png").exists()
    code, err = run_cli(["decode", "-m", str(base), str(coded["base"]), "-o", str(tmp_path / "y.png"),
                         "--realism", "1.5"], capsys)
    assert code == 2 and "--realism" in err


def test_eval_reports_each_realism_on_the_same_files(coded: dict[str, Path], realism_run: Path, tmp_path: Path,
                                                    capsys) -> None:
    report = tmp_path / "report.json"
    code, err = run_cli(["eval", str(coded["image"]), "-m", str(realism_run / "weights.safetensors"), "-b", "none",
                         "--lpips", "none", "--qualities", "20,80", "--realism", "1", "-o", str(report)], capsys)
    assert code == 0, err
    image = json.loads(report.read_text())["per_image"][0]
    faithful, real = image["hific"]["test-gdn"], image["hific"]["test-gdn@r1"]
    assert real["bytes"] == faithful["bytes"] and real["psnr-rgb"] != faithful["psnr-rgb"]
    curve = image["curves"]["test-gdn@r1"]
    assert [p["bytes"] for p in curve] == [p["bytes"] for p in image["curves"]["test-gdn"]]
    code, err = run_cli(["eval", str(coded["image"]), "-m", str(realism_run / "weights.safetensors"), "-b", "none",
                         "--realism", "2"], capsys)
    assert code == 2 and "realism values must be in (0, 1]" in err


def test_eval_realism_needs_a_realism_decoder(coded: dict[str, Path], base: Path, capsys) -> None:
    code, err = run_cli(["eval", str(coded["image"]), "-m", str(base), "-b", "none", "--lpips", "none",
                         "--realism", "1"], capsys)
    assert code == 4 and "has no realism decoder" in err


def test_the_grid_pattern_is_what_repeats_at_every_latent_position() -> None:
    from hificli.train.losses import grid_pattern

    stamp = torch.randn(3, 16, 16)
    stamped = stamp.repeat(1, 4, 5)[None].repeat(2, 1, 1, 1)  # the same 16 x 16 pattern everywhere
    assert torch.allclose(grid_pattern(stamped), stamp, atol=1e-6)
    torch.manual_seed(0)
    detail = torch.randn(8, 3, 128, 128)  # changes that do not repeat with the grid average out
    assert float(grid_pattern(detail).pow(2).mean()) < 0.01
    assert float(grid_pattern(torch.full((1, 3, 40, 40), 2.0)).mean()) == 2.0  # a colour shift counts too


def test_the_grid_penalty_keeps_g_r_from_stamping_a_pattern(images: Path, base: Path, realism_run: Path,
                                                            tmp_path: Path, capsys) -> None:
    out = tmp_path / "grid"
    code, err = run_cli(["train", str(images), "--stage", "realism", "--init", str(base), *FAST, "--steps", "30",
                         "--beta", "0", "--k-grid", "30", "--overfit", "--lr", "3e-3", "--log-every", "1",
                         "--save-every", "0", "--val-every", "0", "--out", str(out)], capsys)
    assert code == 0, err
    free, penalized = (sum(r["grid"] for r in records(run, "train")[-5:]) for run in (realism_run, out))
    assert penalized < 0.5 * free


def test_init_with_a_realism_decoder_trains_it_further(images: Path, realism_run: Path, tmp_path: Path,
                                                       capsys) -> None:
    out = tmp_path / "more"
    code, err = run_cli(["train", str(images), "--stage", "realism", "--init", str(realism_run), *FAST, "--steps",
                         "1", "--lr", "1e-12", "--beta", "0", "--save-every", "0", "--val-every", "0",
                         "--out", str(out)], capsys)
    assert code == 0, err
    before, _ = read_verified(realism_run / "weights.safetensors")
    after, _ = read_verified(out / "weights.safetensors")
    key = "Realism.transform.0.weight"
    assert not np.allclose(before[key], before["Generator.transform.0.weight"])  # the first run trained it
    assert np.allclose(after[key], before[key], atol=1e-6)  # started from it, not from the Generator


def test_the_default_model_ships_a_realism_decoder(tmp_path: Path, capsys) -> None:
    """The embedded default decodes one file faithfully (R = 0, the plain decode) and with synthesised detail."""
    src = tmp_path / "photo.png"
    sample_image(128, 96, seed=5).save(src)
    code, err = run_cli(["encode", str(src), "-o", str(tmp_path / "photo.hfc")], capsys)
    assert code == 0, err
    outputs = {}
    for name, extra in (("plain", []), ("zero", ["--realism", "0"]), ("one", ["--realism", "1"]),
                        ("half", ["--realism", "0.5"])):
        out = tmp_path / f"{name}.png"
        code, err = run_cli(["decode", str(tmp_path / "photo.hfc"), "-o", str(out), *extra], capsys)
        assert code == 0, err
        outputs[name] = np.asarray(Image.open(out)).astype(np.int16)
    assert np.array_equal(outputs["zero"], outputs["plain"])
    assert not np.array_equal(outputs["one"], outputs["plain"])
    # R blends linearly between the two decodes (up to 8-bit rounding and clipping)
    assert np.abs(outputs["half"] - (outputs["plain"] + outputs["one"]) / 2).max() <= 1.5


def test_the_discriminator_can_judge_texture_at_a_gain() -> None:
    from hificli.models.discriminator import Discriminator

    config = make_tiny_network(1, "tiny-gdn").config
    torch.manual_seed(0)
    plain = Discriminator(config).eval()
    textured = Discriminator(config, input_gain=8.0, high_pass=True).eval()
    gained = Discriminator(config, input_gain=8.0).eval()
    assert set(textured.state_dict()) == set(plain.state_dict())  # the port's keys: options are not tensors
    textured.load_state_dict(plain.state_dict())
    gained.load_state_dict(plain.state_dict())
    x = torch.rand(2, 3, 64, 64)
    y = torch.randn(2, config.latent_channels, 4, 4)
    shifted = x + torch.tensor([0.1, -0.2, 0.05]).reshape(1, 3, 1, 1)  # the same texture, other colours
    with torch.no_grad():
        assert torch.allclose(gained(x, y), plain(8.0 * x, y), atol=1e-5)
        assert torch.allclose(textured(shifted, y), textured(x, y), atol=1e-5)  # high-pass: colour is gone
        assert not torch.allclose(plain(shifted, y), plain(x, y), atol=1e-3)
        assert not torch.allclose(textured(x.flip(-1), y), textured(x, y), atol=1e-3)  # texture is not


def test_realism_stage_takes_discriminator_input_options(images: Path, base: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "d"
    common = ["train", str(images), "--stage", "realism", "--init", str(base), *FAST, "--log-every", "1",
              "--save-every", "0", "--val-every", "0", "--overfit", "--out", str(out)]
    code, err = run_cli([*common, "--steps", "12", "--d-gain", "32", "--d-high-pass"], capsys)
    assert code == 0, err
    options = json.loads((out / "options.json").read_text())
    assert options["d_gain"] == 32 and options["d_high_pass"] is True
    d_loss = [r["d_loss"] for r in records(out, "train")]
    assert np.mean(d_loss[-3:]) < np.mean(d_loss[:3]) - 0.1  # D separates real from decoded crops
    plain = tmp_path / "plain"  # the same seeded run without the options: they reach D
    code, err = run_cli([*common[:-1], str(plain), "--steps", "12"], capsys)
    assert code == 0, err
    assert [r["d_loss"] for r in records(plain, "train")] != d_loss
    code, err = run_cli(["train", "--resume", str(out), "--steps", "13", "--d-gain", "1"], capsys)
    assert code != 0 and "cannot change --d-gain" in err
    code, err = run_cli([*common, "--steps", "1", "--d-gain", "0", "--force"], capsys)
    assert code == 2 and "--d-gain must be > 0" in err
    code, err = run_cli(["train", str(images), "--stage", "base", "--d-high-pass", *FAST, "--steps", "1",
                         "--out", str(tmp_path / "base")], capsys)
    assert code == 2 and "discriminator of --stage gan or realism" in err


# -- residual blocks at latent resolution ---------------------------------------------------------------


def test_new_residual_blocks_start_as_the_identity() -> None:
    network = make_tiny_network(1, "tiny-gdn")
    deeper = RealismGenerator(network.config, blocks=2, block_width=16)
    deeper.start_from(network.Generator)
    y = torch.randn(1, network.config.latent_channels, 3, 4)
    with torch.no_grad():
        assert torch.allclose(deeper(y, torch.ones(1)), network.Generator(y), atol=1e-6)
        deeper.blocks[1].body[-1].bias.fill_(0.1)
        assert not torch.allclose(deeper(y, torch.ones(1)), network.Generator(y), atol=1e-3)
    assert BlendedGenerator(network.Generator, deeper, 1.0).trunk_radius == 4  # two 3x3 layers per block


def test_realism_blocks_train_resume_and_decode_whatever_the_tiling(images: Path, base: Path, tmp_path: Path,
                                                                   capsys) -> None:
    out = tmp_path / "blocks"
    common = ["train", str(images), "--stage", "realism", "--init", str(base), *FAST, "--beta", "0", "--lr", "3e-3",
              "--realism-sampling", "one", "--save-every", "0", "--val-every", "0", "--out", str(out)]
    code, err = run_cli([*common, "--steps", "6", "--realism-blocks", "2"], capsys)
    assert code == 0, err
    code, err = run_cli(["train", "--resume", str(out), "--steps", "8"], capsys)
    assert code == 0, err
    arrays, _ = read_verified(out / "weights.safetensors")
    assert {k for k in arrays if k.startswith("Realism.blocks.")} == {
        f"Realism.blocks.{i}.body.{j}.{p}" for i in (0, 1) for j in (0, 2) for p in ("weight", "bias")}
    assert np.abs(arrays["Realism.blocks.1.body.2.weight"]).max() > 0  # trained away from the identity

    sample_image(200, 136, seed=4).save(tmp_path / "in.png")
    weights = out / "weights.safetensors"
    hfc = tmp_path / "in.hfc"
    code, err = run_cli(["encode", "-m", str(weights), str(tmp_path / "in.png"), "-o", str(hfc)], capsys)
    assert code == 0, err
    whole = decoded_pixels(capsys, hfc, weights, tmp_path / "whole.png", "--realism", "1", "--tile", "0")
    tiled = decoded_pixels(capsys, hfc, weights, tmp_path / "tiled.png", "--realism", "1", "--tile", "64")
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1  # float rounding only
    code, err = run_cli(["train", str(images), "--steps", "1", "--realism-blocks", "1", *FAST,
                         "--out", str(tmp_path / "base-stage")], capsys)
    assert code == 2 and "--realism-blocks" in err


@pytest.mark.parametrize("grain", [False, True])
def test_tiles_read_the_halo_that_the_latent_part_needs(grain: bool) -> None:
    """Strong random residual blocks (and grain): any tile that read too narrow a window would differ."""
    from hificli import tiling

    network = make_tiny_network(1, "tiny-gdn")
    realistic = RealismGenerator(network.config, blocks=2, block_width=16, grain=grain)
    realistic.start_from(network.Generator)
    torch.manual_seed(0)
    with torch.no_grad():
        for block in realistic.blocks:
            block.body[-1].weight.normal_(0, 0.3)
        if grain:
            realistic.grain.energy[-1].weight.normal_(0, 0.5)
            realistic.grain.energy[-1].bias.fill_(-6.0)
    blended = BlendedGenerator(network.Generator, realistic, 1.0)
    y = torch.randn(1, network.config.latent_channels, 9, 11)

    def generate(policy: tiling.Tiling) -> np.ndarray:
        return tiling.generate_image(network, y, 176, 144, policy, generator=blended).astype(int)

    whole = generate(tiling.Tiling(tile=0))
    assert np.abs(whole - generate(tiling.Tiling(tile=48))).max() <= 1
    blended.trunk_radius = 0  # the check can fail: a window without the latent part's halo
    assert np.abs(whole - generate(tiling.Tiling(tile=48))).max() > 1


def test_strip_realism_leaves_the_model_without_its_realism_decoder(realism_run: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "stripped.safetensors"
    done = subprocess.run([sys.executable, str(root / "scripts" / "strip_realism.py"),
                           str(realism_run / "weights.safetensors"), str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before, after = read_weights_info(realism_run / "weights.safetensors"), read_weights_info(out)
    assert after.fingerprint == before.fingerprint and after.model_id == before.model_id
    assert before.realism_fingerprint is not None and after.realism_fingerprint is None
    arrays, _ = read_verified(out)
    assert arrays and not any(k.startswith("Realism.") for k in arrays)
