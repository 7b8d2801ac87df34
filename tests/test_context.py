"""Checkerboard context models: two latent streams, exact integer context, determinism, golden files,
tiling and banding, training a context into a model, and the CLI round trip."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hfc_samples import reseal
from latent_hashes import latent_hash
from model_fixtures import make_tiny_network, make_tiny_weights, sample_image

from hificli import container
from hificli.cli import main
from hificli.entropy import rate

HERE = Path(__file__).parent
EXPECTED = HERE / "expected"
SAMPLE = HERE.parent / "hificli" / "assets" / "chelsea.png"
GOLDEN_MODEL = EXPECTED / "golden-tiny-ctx.safetensors"
GOLDEN_INDEX = EXPECTED / "golden-ctx.json"
GOLDEN_QUALITIES = (10.0, 50.0, 90.0)
CONTEXT = {"preset": "tiny-gdn", "context": "checkerboard", "context_channels": 8}


def run(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def ctx_vr(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("m") / "ctx.safetensors", seed=4, model_id="test-ctx",
                             rate_levels=4, **CONTEXT)


@pytest.fixture(scope="module")
def ctx_fixed(tmp_path_factory) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("m") / "ctx-fixed.safetensors", seed=5,
                             model_id="test-ctx-fixed", **CONTEXT)


# -- layout and configuration ------------------------------------------------------------------------


def test_anchor_split_and_merge_are_inverse_and_follow_the_checkerboard() -> None:
    from hificli.entropy.context import merge_anchors, split_anchors, split_mask

    values = np.arange(3 * 4 * 6).reshape(3, 4, 6)
    anchors, others = split_anchors(values)
    assert anchors.shape == others.shape == (3, 4, 3)
    assert np.array_equal(merge_anchors(anchors, others), values)
    mask = split_mask(4, 6).astype(bool)
    assert np.array_equal(anchors.reshape(3, -1), values[:, mask]) and np.array_equal(others.reshape(3, -1),
                                                                                       values[:, ~mask])


def test_context_fields_are_validated_and_absent_from_old_fingerprints() -> None:
    from hificli.models.config import PRESETS, ArchConfig

    assert '"context"' not in PRESETS["compact"].to_json()  # old weights keep their fingerprints
    with pytest.raises(ValueError):
        ArchConfig(context="checkerboard")  # needs a width
    with pytest.raises(ValueError):
        ArchConfig(context_channels=8)  # a width without a context
    with pytest.raises(ValueError):
        ArchConfig(context="sideways", context_channels=8)
    config = PRESETS["tiny-gdn"].with_(context="checkerboard", context_channels=8)
    assert ArchConfig.from_json(config.to_json()) == config


def test_a_new_context_starts_as_the_model_without_it() -> None:
    """The context's last layer is zero: (mu, scale) are the hyperprior's until it has learnt."""
    import torch

    from hificli.models.hific import HificModel

    plain = make_tiny_network(6, "tiny-gdn")
    torch.manual_seed(1)
    grown = HificModel(plain.config.with_(context="checkerboard", context_channels=8)).eval()
    grown.load_state_dict(plain.state_dict(), strict=False)
    x = torch.from_numpy(np.array(sample_image(128, 192, seed=1))).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        a, b = plain(x), grown(x)
    assert torch.equal(a.mu, b.mu) and torch.equal(a.scale, b.scale) and torch.equal(a.bpp, b.bpp)


def test_exact_context_matches_the_float_network(ctx_vr: Path) -> None:
    """The integer path computes the float model's context parameters up to fixed-point rounding."""
    import torch

    import hificli
    from hificli.codec import _mu_fixed, _pad, _quantize, _step_tensor, padded_size
    from hificli.entropy.exact import OUT_FRAC
    from hificli.entropy.tables import SCALE_MIN_FIXED
    from hificli.imageio import to_source_image

    model = hificli.load_model(ctx_vr)
    source = to_source_image(sample_image(200, 130, seed=7))
    y, z_hat = model.analyse(_pad(source.pixels, *padded_size(200, 130)))
    mu, scale_fixed = model.mean_scale(z_hat)
    steps = model.steps_fixed(rate.quality_code(40))
    symbols = _quantize(y, mu, steps)
    mu_c, scale_c = model.context.parameters(_mu_fixed(mu), scale_fixed, symbols[None], steps)
    with torch.no_grad():
        ref_mu, ref_scale = model.network.context_parameters(
            y, mu.float(), torch.from_numpy(np.maximum(scale_fixed, SCALE_MIN_FIXED) * 2.0**-OUT_FRAC).float(),
            _step_tensor(steps).float(),
        )
    assert not np.array_equal(mu_c, _mu_fixed(mu))  # the context changes the non-anchors
    assert np.abs(mu_c * 2.0**-OUT_FRAC - ref_mu.numpy()).max() < 1e-2
    assert np.abs(scale_c * 2.0**-OUT_FRAC - ref_scale.numpy()).max() < 1e-2


# -- coding ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variable", [True, False])
def test_two_latent_streams_round_trip_through_the_cli(ctx_vr: Path, ctx_fixed: Path, tmp_path: Path,
                                                       capsys, variable: bool) -> None:
    import hificli
    from hificli.codec import decode_file

    weights = ctx_vr if variable else ctx_fixed
    image = tmp_path / "in.png"
    sample_image(150, 97, seed=3).save(image)
    out = tmp_path / "in.hfc"
    args = ["encode", str(image), "-m", str(weights), "-o", str(out)] + (["-q", "70"] if variable else [])
    code, _, err = run(args, capsys)
    assert code == 0, err
    hfc = container.read_file(out)
    names = [s.name for s in hfc.header.streams]
    assert names == ["z", "ya", "yb"]
    assert hfc.header.streams[1].shape == hfc.header.streams[2].shape == (6, 128 // 16, 192 // 32)  # 192x128 padded
    code, _, err = run(["decode", str(out), "-m", str(weights), "-o", str(tmp_path / "out.png")], capsys)
    assert code == 0, err
    from PIL import Image

    decoded = np.asarray(Image.open(tmp_path / "out.png"))
    pixels, _ = decode_file(out.read_bytes(), hificli.load_model(weights))
    assert decoded.shape == (97, 150, 3) and np.array_equal(decoded, pixels)


def test_coded_size_matches_the_float_estimate(ctx_vr: Path) -> None:
    import hificli
    from hificli.codec import encode_source, estimate_bits
    from hificli.imageio import read_image

    model = hificli.load_model(ctx_vr)
    source = read_image(SAMPLE)
    for q in (0.0, 60.0, 100.0):
        code = rate.quality_code(q)
        hfc = container.unpack(encode_source(source, model, code))
        coded = sum(len(hfc.stream(name)) for name in ("z", "ya", "yb"))
        estimate = estimate_bits(source, model, code)["total"] / 8
        assert abs(coded - estimate) <= 0.01 * estimate + 64, (q, coded, estimate)


def test_tiles_and_bands_read_the_same_latents(ctx_vr: Path) -> None:
    import torch

    import hificli
    from hificli import tiling
    from hificli.codec import decode_latents, encode_source
    from hificli.imageio import to_source_image

    model = hificli.load_model(ctx_vr)
    data = encode_source(to_source_image(sample_image(420, 300, seed=9)), model, rate.quality_code(33.3))
    reference = decode_latents(container.unpack(data), model)
    for tile, band_bytes in ((64, None), (128, None), (0, 1), (0, 20000)):
        model.tiling = tiling.Tiling(tile=tile)
        if band_bytes is not None:
            model.context.band_bytes = band_bytes  # 1: one latent row per band
        assert torch.equal(decode_latents(container.unpack(data), model), reference), (tile, band_bytes)
        again = encode_source(to_source_image(sample_image(420, 300, seed=9)), model, rate.quality_code(33.3))
        assert again == data, (tile, band_bytes)


def _hashes(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": args[2]}
    out = subprocess.run([sys.executable, str(HERE / "latent_hashes.py"), *args], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_latents_identical_across_processes_and_threads(ctx_vr: Path, tmp_path: Path) -> None:
    images = []
    for i, (w, h) in enumerate(((97, 211), (300, 64))):
        path = tmp_path / f"img{i}.png"
        sample_image(w, h, seed=30 + i).save(path)
        images.append(str(path))
    images.append(str(SAMPLE))
    out_dir = tmp_path / "hfc"
    out_dir.mkdir()
    encoded = _hashes("encode:5,95.5", str(ctx_vr), "1", str(out_dir), *images)["hashes"]
    decoded = _hashes("decode", str(ctx_vr), "2", *map(str, sorted(out_dir.glob("*.hfc"))))
    assert decoded["threads"] == 2 and len(encoded) == 2 * len(images)
    assert decoded["hashes"] == encoded


def _regenerate_golden() -> None:
    """HIFIC_REGEN_GOLDEN_CTX=1: rebuild the context golden model, files and hashes only."""
    import hificli
    from hificli.codec import encode_source
    from hificli.imageio import read_image

    make_tiny_weights(GOLDEN_MODEL, seed=14, model_id="golden-tiny-ctx", rate_levels=4, **CONTEXT)
    model = hificli.load_model(GOLDEN_MODEL)
    index = {}
    for q in GOLDEN_QUALITIES:
        data = encode_source(read_image(SAMPLE), model, rate.quality_code(q))
        name = f"golden-ctx-q{q:g}.hfc"
        (EXPECTED / name).write_bytes(data)
        index[name] = {"latents": latent_hash(data, model), "file": hashlib.sha256(data).hexdigest()}
    GOLDEN_INDEX.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def test_golden_files_decode_to_recorded_latents() -> None:
    import hificli
    from hificli.codec import encode_source
    from hificli.imageio import read_image

    if os.environ.get("HIFIC_REGEN_GOLDEN_CTX") == "1":
        _regenerate_golden()
    model = hificli.load_model(GOLDEN_MODEL)
    index = json.loads(GOLDEN_INDEX.read_text())
    assert sorted(index) == sorted(f"golden-ctx-q{q:g}.hfc" for q in GOLDEN_QUALITIES)
    for q in GOLDEN_QUALITIES:
        name = f"golden-ctx-q{q:g}.hfc"
        data = (EXPECTED / name).read_bytes()
        assert [s.name for s in container.unpack(data).header.streams] == ["z", "ya", "yb"]
        assert latent_hash(data, model) == index[name]["latents"], name
        assert hashlib.sha256(encode_source(read_image(SAMPLE), model, rate.quality_code(q))).hexdigest() \
            == index[name]["file"], name


def test_damaged_or_missing_context_streams_are_refused(ctx_vr: Path, tmp_path: Path, capsys) -> None:
    from dataclasses import replace

    import hificli
    from hificli.codec import encode_source
    from hificli.imageio import read_image

    model = hificli.load_model(ctx_vr)
    hfc = container.unpack(encode_source(read_image(SAMPLE), model, rate.quality_code(50)))
    assert hfc.header.version == (1, 2) and hfc.header.spatial_context
    z, ya, yb = hfc.header.streams
    cases = {
        "empty-yb": ((z, ya, yb), [hfc.payloads[0], hfc.payloads[1], b""], True),
        "swapped": ((z, ya, yb), [hfc.payloads[0], hfc.payloads[2], hfc.payloads[1]], True),
        "one-y": ((z, container.StreamInfo("y", (ya.shape[0], ya.shape[1], 2 * ya.shape[2]), 4)),
                  [hfc.payloads[0], b"\0" * 4], True),
        "no-flag": ((z, ya, yb), list(hfc.payloads), False),  # a 1.1 file with the context streams
    }
    for name, (streams, payloads, flag) in cases.items():
        streams = tuple(replace(s, length=len(p)) for s, p in zip(streams, payloads, strict=True))
        header = replace(hfc.header, streams=streams, spatial_context=flag, version=None)
        path = tmp_path / f"{name}.hfc"
        path.write_bytes(reseal(container.pack(header, payloads)))
        code, _, err = run(["decode", str(path), "-m", str(ctx_vr), "-o", str(tmp_path / f"{name}.png")], capsys)
        assert code == 3, (name, err)
        assert len(err.strip().splitlines()) <= 2 and not (tmp_path / f"{name}.png").exists(), name


# -- training ----------------------------------------------------------------------------------------


def test_training_gives_a_model_a_context_that_codes(tmp_path: Path, capsys) -> None:
    from hificli.weights import read_weights_info

    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        sample_image(160, 140, seed=40 + i).save(data / f"p{i}.png")
    init = make_tiny_weights(tmp_path / "init.safetensors", seed=8, preset="tiny-gdn", rate_levels=3)
    run_dir = tmp_path / "run"
    code, _, err = run(["train", str(data), "--init", str(init), "--context-channels", "6", "--rate-lambdas",
                        "0.5,1,2", "--k-m", "1", "--steps", "3", "--batch-size", "2", "--crop", "128",
                        "--perceptual", "none", "--workers", "0", "--val-every", "0", "--out", str(run_dir)],
                       capsys)
    assert code == 0, err
    info = read_weights_info(run_dir / "weights.safetensors")
    assert info.config.context == "checkerboard" and info.config.context_channels == 6
    out = tmp_path / "p0.hfc"
    code, _, err = run(["encode", str(data / "p0.png"), "-m", str(run_dir / "weights.safetensors"), "-o",
                        str(out)], capsys)
    assert code == 0, err
    assert [s.name for s in container.read_file(out).header.streams] == ["z", "ya", "yb"]
    # a model that has a context keeps it; another width is refused
    code, _, err = run(["train", str(data), "--init", str(run_dir / "weights.safetensors"), "--context-channels",
                        "4", "--rate-lambdas", "0.5,1,2", "--steps", "1", "--perceptual", "none", "--out",
                        str(tmp_path / "run2")], capsys)
    assert code != 0 and "6 wide" in err
