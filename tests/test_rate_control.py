"""Rate control: -q/--quality, --bpp and --size through the CLI, the integer rate parameters, the
quality field of the container, and variable-rate golden files."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli as run
from hfc_samples import reseal as hfc_reseal
from latent_hashes import latent_hash, run_hashes
from model_fixtures import assert_coded_size_matches_estimate, make_tiny_weights, sample_image
from PIL import Image

from hificli import container
from hificli.entropy import rate
from hificli.errors import HificError

HERE = Path(__file__).parent
EXPECTED = HERE / "expected"
SAMPLE = HERE.parent / "hificli" / "assets" / "chelsea.png"
QUALITIES = (0, 20, 40, 60, 80, 100)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """Real photos: the bundled sample and two differently sized crops of it."""
    folder = tmp_path_factory.mktemp("photos")
    image = Image.open(SAMPLE).convert("RGB")
    paths = [folder / "chelsea.png"]
    image.save(paths[0])
    w, h = image.size
    for name, box in (("crop-a.png", (0, 0, w // 2, h // 2)), ("crop-b.png", (w // 4, h // 3, w, h))):
        image.crop(box).save(folder / name)
        paths.append(folder / name)
    return paths


@pytest.fixture(scope="module")
def vr_tiny(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("m") / "vr.safetensors", seed=2, model_id="test-vr",
                             preset="tiny-gdn", rate_levels=4)


def _bpp(path: Path) -> float:
    h = container.read_file(path).header
    return 8 * path.stat().st_size / (h.width * h.height)


# -- integer rate parameters -------------------------------------------------------------------------

def test_steps_interpolate_in_integers_between_levels() -> None:
    levels = np.array([[4 << 16, 3 << 16], [2 << 16, 2 << 16], [1 << 16, 1 << 15]], dtype=np.int64)
    assert rate.steps_at(levels, 0).tolist() == levels[0].tolist()
    assert rate.steps_at(levels, rate.QUALITY_CODE_MAX).tolist() == levels[2].tolist()
    assert rate.steps_at(levels, rate.QUALITY_CODE_MAX // 2).tolist() == levels[1].tolist()
    quarter = rate.steps_at(levels, rate.QUALITY_CODE_MAX // 4)
    assert quarter.tolist() == [3 << 16, 5 << 15]
    codes = range(0, rate.QUALITY_CODE_MAX + 1, 7)
    steps = np.stack([rate.steps_at(levels, c) for c in codes])
    assert np.all(np.diff(steps, axis=0) <= 0)  # never coarser at a higher quality
    with pytest.raises(ValueError):
        rate.steps_at(levels, rate.QUALITY_CODE_MAX + 1)


def test_level_tables_are_validated() -> None:
    good = np.array([[2 << 16], [1 << 16]])
    assert rate.check_levels(good, 1).dtype == np.int64
    for bad in (np.array([[1 << 16], [2 << 16]]), np.array([[1 << 30], [1 << 16]]), np.array([[1.0], [0.5]]),
                np.array([[1 << 16]])):
        with pytest.raises(ValueError):
            rate.check_levels(bad, 1)


def test_scale_on_steps_is_floor_of_the_fixed_point_ratio() -> None:
    scale = np.array([[[[7209 * 4]], [[100000]]]], dtype=np.int64)
    steps = np.array([2 << 16, 3 << 16], dtype=np.int64).reshape(1, 2, 1, 1)
    out = rate.scale_on_steps(scale, steps, 7209)
    assert out.ravel().tolist() == [7209 * 2, 100000 // 3]
    assert rate.quality_code(37.125) == 3712


# -- the container's quality field -------------------------------------------------------------------

def test_quality_field_round_trips_and_fixed_rate_files_stay_1_0() -> None:
    streams = (container.StreamInfo("z", (2, 2, 2), 3), container.StreamInfo("y", (2, 8, 8), 4))
    base = dict(model_id="m", fingerprint=b"\0" * 8, width=100, height=60, padded_width=128,
                padded_height=128, channels=3, streams=streams)
    payloads = [b"abc", b"defg"]
    fixed_data = container.pack(container.Header(**base), payloads)
    fixed = container.unpack(fixed_data).header
    assert fixed.version == (1, 0) and fixed.quality is None and fixed_data[8] == 0  # no flags: 1.0 readers read it
    for code in (0, 1234, container.MAX_QUALITY_CODE):
        data = container.pack(container.Header(**base, quality_code=code), payloads)
        header = container.unpack(data).header
        assert header.version == (1, 1) and header.quality_code == code
        assert data[8] == container.FLAG_RATE  # a 1.0 reader refuses the unknown flag instead of misdecoding
    # the rate flag in a file that says 1.0 is damage
    bad = bytearray(container.pack(container.Header(**base, quality_code=5), payloads))
    bad[5] = 0
    with pytest.raises(Exception, match="rate field"):
        container.unpack(hfc_reseal(bytes(bad)))
    with pytest.raises(Exception, match="quality"):
        container.pack(container.Header(**base, quality_code=container.MAX_QUALITY_CODE + 1), payloads)


# -- the CLI -----------------------------------------------------------------------------------------

def test_quality_is_monotonic_on_real_photos_and_info_shows_it(photos: list[Path], tmp_path: Path, capsys) -> None:
    for photo in photos:
        sizes = []
        for q in QUALITIES:
            out = tmp_path / f"{photo.stem}-{q}.hfc"
            code, _, err = run(["encode", str(photo), "-q", str(q), "-o", str(out)], capsys)
            assert code == 0, err
            sizes.append(out.stat().st_size)
            code, text, _ = run(["info", "--json", str(out)], capsys)
            assert json.loads(text)[0]["quality"] == q
        assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes), (photo.name, sizes)
        # decoding at every quality gives an image, and quality buys PSNR
        psnrs = []
        for q in (QUALITIES[0], QUALITIES[-1]):
            rec = tmp_path / f"{photo.stem}-{q}.png"
            assert run(["decode", str(tmp_path / f"{photo.stem}-{q}.hfc"), "-o", str(rec)], capsys)[0] == 0
            a = np.asarray(Image.open(rec).convert("RGB"), dtype=np.float64)
            b = np.asarray(Image.open(photo).convert("RGB"), dtype=np.float64)
            psnrs.append(10 * np.log10(255**2 / np.mean((a - b) ** 2)))
        assert psnrs[1] > psnrs[0] + 3


def test_default_quality_is_recorded(photos: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "d.hfc"
    assert run(["encode", str(photos[0]), "-o", str(out)], capsys)[0] == 0
    assert container.read_file(out).header.quality == rate.DEFAULT_QUALITY


@pytest.mark.parametrize("fraction", [0.35, 0.6, 1.0])
def test_size_and_bpp_land_within_90_to_100_percent_of_the_target(
    photos: list[Path], tmp_path: Path, capsys, fraction: float
) -> None:
    for photo in photos:
        # targets between the lowest and the highest quality's sizes (reachable)
        low, high = tmp_path / "low.hfc", tmp_path / "high.hfc"
        run(["encode", str(photo), "-q", "0", "-o", str(low), "-f"], capsys)
        run(["encode", str(photo), "-q", "100", "-o", str(high), "-f"], capsys)
        target = int(low.stat().st_size + fraction * (high.stat().st_size - low.stat().st_size))
        out = tmp_path / f"{photo.stem}-size.hfc"
        code, _, err = run(["encode", str(photo), "--size", str(target), "-o", str(out), "-f"], capsys)
        assert code == 0, err
        assert 0.9 * target <= out.stat().st_size <= target, (photo.name, target, out.stat().st_size)
        h = container.read_file(out).header
        bpp = 8 * target / (h.width * h.height)
        out_bpp = tmp_path / f"{photo.stem}-bpp.hfc"
        code, _, err = run(["encode", str(photo), "--bpp", f"{bpp:.6f}", "-o", str(out_bpp), "-f"], capsys)
        assert code == 0, err
        assert 0.9 * bpp <= _bpp(out_bpp) <= bpp * 1.000001


def test_size_suffixes(photos: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "k.hfc"
    assert run(["encode", str(photos[0]), "--size", "8k", "-o", str(out)], capsys)[0] == 0
    assert 7200 <= out.stat().st_size <= 8000
    out2 = tmp_path / "kib.hfc"
    assert run(["encode", str(photos[0]), "--size", "8KiB", "-o", str(out2)], capsys)[0] == 0
    assert out2.stat().st_size <= 8192 and out2.stat().st_size >= out.stat().st_size


def test_unreachable_size_names_the_smallest_file(photos: list[Path], tmp_path: Path, capsys) -> None:
    low = tmp_path / "low.hfc"
    run(["encode", str(photos[0]), "-q", "0", "-o", str(low)], capsys)
    out = tmp_path / "x.hfc"
    code, _, err = run(["encode", str(photos[0]), "--size", "100", "-o", str(out)], capsys)
    assert code == 6
    assert str(low.stat().st_size) in err and "smallest" in err
    assert not out.exists()


def test_rate_options_are_usage_errors_when_combined_or_malformed(photos: list[Path], tmp_path: Path, capsys):
    out = tmp_path / "x.hfc"
    for args in (["-q", "50", "--bpp", "0.3"], ["--size", "10k", "--bpp", "0.3"], ["--size", "ten"],
                 ["-q", "101"], ["--bpp", "0"]):
        code, _, err = run(["encode", str(photos[0]), *args, "-o", str(out)], capsys)
        assert code == 2, (args, err)
    assert not out.exists()


def test_quiet_is_long_only_and_q_is_quality(photos: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "quiet.hfc"
    code, out_text, err = run(["encode", str(photos[0]), "--quiet", "-q", "10", "-o", str(out)], capsys)
    assert code == 0 and err == "" and out_text == ""
    assert container.read_file(out).header.quality == 10.0


def test_quality_with_a_fixed_rate_model_is_a_usage_error(photos: list[Path], tmp_path: Path, capsys) -> None:
    fixed = make_tiny_weights(tmp_path / "fixed.safetensors", seed=1)
    out = tmp_path / "x.hfc"
    code, _, err = run(["encode", str(photos[0]), "-m", str(fixed), "-q", "50", "-o", str(out)], capsys)
    assert code == 2 and "fixed-rate" in err and "hific-vr" in err
    assert not out.exists()
    # a target with a fixed-rate model (no family) takes the model's one file when it fits
    code, _, err = run(["encode", str(photos[0]), "-m", str(fixed), "--size", "1M", "-o", str(out)], capsys)
    assert code == 0, err
    assert container.read_file(out).header.quality is None


def test_api_encode_takes_quality_and_targets(vr_tiny: Path) -> None:
    import hificli

    model = hificli.load_model(vr_tiny)
    image = sample_image(200, 150, seed=3)
    sizes = [len(hificli.encode(image, model, quality=q)) for q in (0, 100)]
    assert sizes[0] < sizes[1]
    data = hificli.encode(image, model, target_size=(sizes[0] + sizes[1]) // 2)
    assert sizes[0] <= len(data) <= (sizes[0] + sizes[1]) // 2
    assert container.unpack(data).header.quality is not None
    with pytest.raises(HificError):
        hificli.encode(image, model, quality=50, target_bpp=0.2)


# -- determinism and golden files --------------------------------------------------------------------

GOLDEN_VR_MODEL = EXPECTED / "golden-tiny-vr.safetensors"
GOLDEN_VR_INDEX = EXPECTED / "golden-vr.json"
GOLDEN_VR_QUALITIES = (10.0, 50.0, 90.0)


def _regenerate_vr_golden() -> None:
    """HIFIC_REGEN_GOLDEN_VR=1: rebuild the variable-rate golden model, files and hashes only."""
    import hificli
    from hificli.codec import encode_source
    from hificli.imageio import read_image

    make_tiny_weights(GOLDEN_VR_MODEL, seed=12, model_id="golden-tiny-vr", preset="tiny-gdn", rate_levels=4)
    model = hificli.load_model(GOLDEN_VR_MODEL)
    index = {}
    for q in GOLDEN_VR_QUALITIES:
        data = encode_source(read_image(SAMPLE), model, rate.quality_code(q))
        name = f"golden-vr-q{q:g}.hfc"
        (EXPECTED / name).write_bytes(data)
        index[name] = {"latents": latent_hash(data, model), "file": hashlib.sha256(data).hexdigest()}
    GOLDEN_VR_INDEX.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def test_variable_rate_golden_files_decode_to_recorded_latents() -> None:
    import hificli
    from hificli.codec import encode_source
    from hificli.imageio import read_image

    if os.environ.get("HIFIC_REGEN_GOLDEN_VR") == "1":
        _regenerate_vr_golden()
    model = hificli.load_model(GOLDEN_VR_MODEL)
    index = json.loads(GOLDEN_VR_INDEX.read_text())
    assert sorted(index) == sorted(f"golden-vr-q{q:g}.hfc" for q in GOLDEN_VR_QUALITIES)
    for q in GOLDEN_VR_QUALITIES:
        name = f"golden-vr-q{q:g}.hfc"
        data = (EXPECTED / name).read_bytes()
        assert container.unpack(data).header.quality == q
        assert latent_hash(data, model) == index[name]["latents"], name
        # and today's encoder still writes the same bytes
        assert hashlib.sha256(encode_source(read_image(SAMPLE), model, rate.quality_code(q))).hexdigest() \
            == index[name]["file"], name


def test_variable_rate_latents_identical_across_processes_and_threads(vr_tiny: Path, tmp_path: Path) -> None:
    images = []
    for i, (w, h) in enumerate(((97, 211), (300, 64), (160, 160))):
        path = tmp_path / f"img{i}.png"
        sample_image(w, h, seed=20 + i).save(path)
        images.append(str(path))
    images.append(str(SAMPLE))
    out_dir = tmp_path / "hfc"
    out_dir.mkdir()
    encoded = run_hashes("encode:5,50,95.5", str(vr_tiny), "1", str(out_dir), *images)["hashes"]
    decoded = run_hashes("decode", str(vr_tiny), "2", *map(str, sorted(out_dir.glob("*.hfc"))))
    assert decoded["threads"] == 2
    assert len(encoded) == 3 * len(images)
    assert decoded["hashes"] == encoded


def test_a_target_chooses_among_the_installed_family_members(photos: list[Path], tmp_path: Path, capsys,
                                                             monkeypatch) -> None:
    monkeypatch.setenv("HIFIC_CACHE_DIR", str(tmp_path / "cache"))
    sizes = {}
    for name, channels in (("hific-low", 2), ("hific-med", 6), ("hific-high", 12)):
        weights = make_tiny_weights(tmp_path / f"{name}.safetensors", seed=3, latent_channels=channels)
        assert run(["models", "import", name, str(weights)], capsys)[0] == 0
        out = tmp_path / f"{name}.hfc"
        assert run(["encode", str(photos[0]), "-m", name, "-o", str(out)], capsys)[0] == 0
        sizes[name] = out.stat().st_size
    assert sizes["hific-low"] < sizes["hific-med"] < sizes["hific-high"], sizes
    target = (sizes["hific-med"] + sizes["hific-high"]) // 2
    out = tmp_path / "chosen.hfc"
    code, _, err = run(["encode", str(photos[0]), "-m", "hific-low", "--size", str(target), "-o", str(out)], capsys)
    assert code == 0, err
    assert container.read_file(out).header.model_id == "hific-med" and out.stat().st_size == sizes["hific-med"]
    assert "chose hific-med" in err
    code, _, err = run(["encode", str(photos[0]), "-m", "hific-med", "--size", "10", "-o", str(tmp_path / "no.hfc")],
                       capsys)
    assert code == 6 and str(sizes["hific-low"]) in err
    code, _, err = run(["encode", str(photos[0]), "-m", "hific-med", "-q", "40", "-o", str(tmp_path / "q.hfc")], capsys)
    assert code == 2 and "hific-vr" in err


def test_variable_rate_tiled_and_untiled_decodes_read_the_same_latents(vr_tiny: Path) -> None:
    import hificli
    from hificli import tiling
    from hificli.codec import decode_latents, encode_source
    from hificli.imageio import to_source_image

    model = hificli.load_model(vr_tiny)
    data = encode_source(to_source_image(sample_image(420, 300, seed=9)), model, rate.quality_code(33.3))
    reference = decode_latents(container.unpack(data), model.latent)
    for tile in (64, 128):
        model.tiling = tiling.Tiling(tile=tile)
        assert np.array_equal(decode_latents(container.unpack(data), model.latent), reference), tile


def test_variable_rate_training_from_a_fixed_rate_init_resumes_and_codes(tmp_path: Path, capsys) -> None:
    from hificli.train import state

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(3):
        sample_image(200, 160, seed=30 + i).save(data / f"{i}.png")
    init = make_tiny_weights(tmp_path / "fixed.safetensors", seed=5, preset="tiny-gdn")
    run_dir = tmp_path / "run"
    common = ["--crop", "128", "--batch-size", "2", "--workers", "0", "--threads", "1", "--perceptual", "none",
              "--log-every", "1", "--val-every", "0", "--save-every", "2"]
    code, _, err = run(["--quiet", "train", str(data), "--init", str(init), "--steps", "2", "--out", str(run_dir),
                        "--rate-lambdas", "0.01,0.04,0.16", "--k-m", "0.04", "--val", str(data), *common], capsys)
    assert code == 0, err
    val = [json.loads(line) for line in (run_dir / state.LOG_NAME).read_text().splitlines()][-1]
    assert val["kind"] == "val" and [v["position"] for v in val["levels"]] == [0.0, 1.0, 2.0]
    assert val["levels"][1]["psnr"] == val["psnr"] and val["levels"][0]["bpp"] < val["bpp"] < val["levels"][2]["bpp"]
    assert len(list((run_dir / "val" / "step_0000002").glob("*.png"))) == 3
    import hificli

    model = hificli.load_model(run_dir)
    assert model.variable_rate and model.network.RateSteps.levels_fixed.shape == (3, 6)
    steps = model.network.RateSteps.levels_fixed / 2**16
    assert steps[0].mean() > 1.5 > steps[1].mean() > 0.6 > steps[2].mean()  # sqrt(k_M / lambda) start, 2 steps
    records = [json.loads(line) for line in (run_dir / state.LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2]
    code, _, err = run(["--quiet", "train", "--resume", str(run_dir), "--steps", "3"], capsys)
    assert code == 0, err
    assert json.loads((run_dir / state.LOG_NAME).read_text().splitlines()[-1])["step"] == 3
    photo = tmp_path / "p.png"
    sample_image(150, 130, seed=40).save(photo)
    sizes = []
    for q in ("10", "90"):
        out = tmp_path / f"p{q}.hfc"
        code, _, err = run(["encode", str(photo), "-m", str(run_dir), "-q", q, "-o", str(out)], capsys)
        assert code == 0, err
        assert run(["decode", str(out), "-m", str(run_dir), "-o", str(tmp_path / f"p{q}.png")], capsys)[0] == 0
        sizes.append(out.stat().st_size)
    assert sizes[0] < sizes[1]
    code, _, err = run(["train", str(data), "--init", str(run_dir), "--steps", "1", "--out", str(tmp_path / "r2"),
                        *common], capsys)
    assert code != 0 and "--rate-lambdas" in err


def test_coded_size_matches_the_estimate_at_every_quality(vr_tiny: Path) -> None:
    assert_coded_size_matches_estimate(vr_tiny, SAMPLE, (0.0, 37.5, 100.0))


def test_perceptual_weights_keep_one_ratio_to_the_mse_weight() -> None:
    import torch

    from hificli.train import variable_rate as VR

    lambdas = VR.lambdas_at(torch.tensor([0.0, 1.0, 1.5, 2.0]), [0.01, 0.04, 0.16])
    weights = VR.perceptual_weights(lambdas, 0.04)
    assert weights.dtype == torch.float32
    assert torch.allclose(weights, torch.tensor([0.25, 1.0, 2.0, 4.0]))
    assert torch.allclose(weights / lambdas.float(), torch.full((4,), 25.0))


def test_freeze_prior_trains_only_the_encoder_and_decoder_with_perceptual_and_grid_terms(
    tmp_path: Path, capsys
) -> None:
    from hificli.weights import read_verified, split_tensors

    data = tmp_path / "imgs"
    data.mkdir()
    for i in range(2):
        sample_image(160, 160, seed=50 + i).save(data / f"{i}.png")
    init = make_tiny_weights(tmp_path / "vr.safetensors", seed=6, preset="tiny-gdn", rate_levels=3,
                             context="channel", context_channels=8)
    common = ["--crop", "128", "--batch-size", "2", "--workers", "0", "--threads", "1", "--log-every", "1",
              "--val-every", "0", "--save-every", "0", "--steps", "2", "--lr", "1e-3", "--perceptual", "stlpips-alex",
              "--rate-lambdas", "0.01,0.04,0.16", "--k-m", "0.04", "--init", str(init)]
    run_dir = tmp_path / "run"
    code, _, err = run(["--quiet", "train", str(data), "--out", str(run_dir), "--freeze-prior",
                        "--perceptual-per-lambda", "--perceptual-relative", "--k-grid", "0.3", *common], capsys)
    assert code == 0, err
    assert json.loads((run_dir / "options.json").read_text())["perceptual_relative"] is True
    before, _, _ = split_tensors(read_verified(init)[0])
    after, _, _ = split_tensors(read_verified(run_dir / "weights.safetensors")[0])
    moved = {k.split(".")[0] for k in before if not np.array_equal(before[k], after[k])}
    assert moved == {"Encoder", "Generator"}
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert all(r["perceptual"] > 0 for r in records if r["kind"] == "train")
    plain_dir = tmp_path / "plain"  # the same seed without --perceptual-relative: other weights
    code, _, err = run(["--quiet", "train", str(data), "--out", str(plain_dir), "--freeze-prior",
                        "--perceptual-per-lambda", "--k-grid", "0.3", *common], capsys)
    assert code == 0, err
    plain, _, _ = split_tensors(read_verified(plain_dir / "weights.safetensors")[0])
    assert any(not np.array_equal(plain[k], after[k]) for k in after if k.startswith("Generator."))
    code, _, err = run(["train", str(data), "--out", str(tmp_path / "r2"), "--perceptual-per-lambda",
                        *[a for a in common if a not in ("--rate-lambdas", "0.01,0.04,0.16")]], capsys)
    assert code != 0 and "--rate-lambdas" in err
    code, _, err = run(["train", str(data), "--out", str(tmp_path / "r2"), "--perceptual-relative",
                        *[a for a in common if a not in ("--rate-lambdas", "0.01,0.04,0.16")]], capsys)
    assert code != 0 and "--perceptual-relative" in err and "--rate-lambdas" in err
    code, _, err = run(["train", str(data), "--out", str(tmp_path / "r2"), "--perceptual-relative",
                        *["none" if a == "stlpips-alex" else a for a in common]], capsys)
    assert code != 0 and "--perceptual-relative" in err and "--perceptual none" in err
    code, _, err = run(["train", str(data), "--out", str(tmp_path / "r3"), "--stage", "realism", "--freeze-prior",
                        *common], capsys)
    assert code != 0 and "--freeze-prior" in err
