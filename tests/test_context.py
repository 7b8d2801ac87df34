"""Context models (checkerboard and channel-conditional): latent streams per coding group, exact integer
context, determinism, golden files, tiling and banding, training a context into a model, the CLI."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli as run
from hfc_samples import reseal
from latent_hashes import latent_hash, run_hashes
from model_fixtures import assert_coded_size_matches_estimate, make_tiny_network, make_tiny_weights, sample_image

from hificli import container
from hificli.entropy import rate

HERE = Path(__file__).parent
EXPECTED = HERE / "expected"
SAMPLE = HERE.parent / "hificli" / "assets" / "chelsea.png"
#: per context kind: golden model file stem and the prefix of its golden files
GOLDEN = {"checkerboard": ("golden-tiny-ctx", "golden-ctx"), "channel": ("golden-tiny-ctxch", "golden-ctxch")}
GOLDEN_QUALITIES = (10.0, 50.0, 90.0)
CONTEXT = {"preset": "tiny-gdn", "context": "checkerboard", "context_channels": 8}
KINDS = ("checkerboard", "channel")
STREAMS = {"checkerboard": ["z", "ya", "yb"], "channel": ["z", "y0", "y1", "y2", "y3"]}


@pytest.fixture(scope="module", params=KINDS)
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def ctx_vr(tmp_path_factory, kind: str) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("m") / "ctx.safetensors", seed=4, model_id="test-ctx",
                             rate_levels=4, **{**CONTEXT, "context": kind})


@pytest.fixture(scope="module")
def ctx_fixed(tmp_path_factory, kind: str) -> Path:
    return make_tiny_weights(tmp_path_factory.mktemp("m") / "ctx-fixed.safetensors", seed=5,
                             model_id="test-ctx-fixed", **{**CONTEXT, "context": kind})


# -- layout and configuration ------------------------------------------------------------------------


def test_coding_groups_partition_the_latents_and_follow_the_checkerboard() -> None:
    from hificli.entropy.groups import coding_groups, split_mask

    values = np.arange(6 * 4 * 6).reshape(6, 4, 6)
    anchors = split_mask(4, 6)
    assert anchors[0, 0] and not anchors[0, 1] and anchors[1, 1]
    for kind, names in (("checkerboard", ["ya", "yb"]), ("channel", ["y0", "y1", "y2", "y3"]), ("none", ["y"])):
        groups = coding_groups(kind, 6)
        assert [g.name for g in groups] == names
        rebuilt = np.full_like(values, -1)
        for g in groups:
            part = g.take(values)
            assert part.shape == g.shape(4, 6)
            g.put(rebuilt, part)
        assert np.array_equal(rebuilt, values), kind
    ya, yb = coding_groups("checkerboard", 6)
    assert np.array_equal(ya.take(values).reshape(6, -1), values[:, anchors])
    assert np.array_equal(yb.take(values).reshape(6, -1), values[:, ~anchors])


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
    from hificli.codec import _code_groups, _pad, _quantize_fixed, _step_tensor, padded_size
    from hificli.entropy.exact import OUT_FRAC
    from hificli.entropy.tables import SCALE_MIN_FIXED
    from hificli.imageio import to_source_image

    model = hificli.load_model(ctx_vr)
    source = to_source_image(sample_image(200, 130, seed=7))
    y, z_hat = model.analyse(_pad(source.pixels, *padded_size(200, 130)))
    mu_fixed, scale_fixed = model.latent.mean_scale(z_hat.numpy())
    steps = model.latent.steps_fixed(rate.quality_code(40))
    latents = y[0].double().numpy()
    _, mu_ctx = _code_groups(model.latent, mu_fixed, scale_fixed, steps,
                             lambda group, mu_g, step_g, rows_g: _quantize_fixed(group.take(latents), mu_g, step_g))
    with torch.no_grad():
        ref_mu, _ = model.network.context_parameters(
            y, torch.from_numpy(mu_fixed * 2.0**-OUT_FRAC).float(),
            torch.from_numpy(np.maximum(scale_fixed, SCALE_MIN_FIXED) * 2.0**-OUT_FRAC).float(),
            _step_tensor(steps).float(),
        )
    assert not np.array_equal(mu_ctx, mu_fixed)  # the context changes later groups
    error = np.abs(mu_ctx * 2.0**-OUT_FRAC - ref_mu.double().numpy())
    assert np.quantile(error, 0.99) < 1e-2 and error.mean() < 1e-2, (error.max(), error.mean())


def test_exact_context_net_matches_a_torch_float64_convolution(kind: str) -> None:
    """The numpy im2col (taps gathered one by one), in one pass or in bands of one row, gives the integers
    of torch's float64 conv2d on the same integer weights masked to the taps (what hific computed
    before the decoder became numpy-only)."""
    import torch
    import torch.nn.functional as F
    from model_fixtures import numpy_state

    from hificli.entropy.context import ExactContextNet
    from hificli.entropy.exact import ACT_FRAC, ACT_MAX, OUT_FRAC, OUT_MAX, W_FRAC, requantize, to_int
    from hificli.entropy.groups import split_mask
    from hificli.models.context import ContextNet, tap_mask
    from hificli.models.geometry import RADIUS, context_nets

    spec, width, (h, w) = context_nets(kind, 12)[-1], 16, (7, 10)
    torch.manual_seed(3)
    net = ContextNet(spec.in_channels, spec.channels, width, spec.taps)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.normal_(0.0, 0.3)  # (the last layer starts at zero)
    state = numpy_state(net)
    rng = np.random.default_rng(0)
    known = rng.integers(-2**16, 2**16, (spec.in_channels, h, w)).astype(np.float64)
    mu = rng.integers(-2**15, 2**15, (spec.channels, h, w)).astype(np.float64)
    scale = rng.integers(0, 2**15, (spec.channels, h, w)).astype(np.float64)
    outputs = ~split_mask(h, w) if kind == "checkerboard" else None

    def layer(x: torch.Tensor, key: str, mask: torch.Tensor | None = None, padding: int = 0) -> torch.Tensor:
        weight = torch.from_numpy(to_int(state[f"{key}.weight"], W_FRAC, key))
        bias = torch.from_numpy(to_int(state[f"{key}.bias"], W_FRAC + ACT_FRAC, key))
        return F.conv2d(x, weight if mask is None else weight * mask, bias, padding=padding).numpy()

    x = torch.from_numpy(known)[None]
    ctx = np.clip(requantize(layer(x, "context_conv", tap_mask(spec.taps).double(), RADIUS), W_FRAC), -ACT_MAX,
                  ACT_MAX)
    hidden = torch.from_numpy(np.concatenate([ctx[0], mu, scale])[None])
    for i in (1, 2):
        hidden = torch.from_numpy(np.clip(requantize(layer(hidden, f"param_conv{i}"), W_FRAC), 0, ACT_MAX))
    last = requantize(layer(hidden, "param_conv3"), W_FRAC + ACT_FRAC - OUT_FRAC)
    reference = np.clip(last, -OUT_MAX, OUT_MAX)[0].reshape(2 * spec.channels, -1).astype(np.int64)
    if outputs is not None:
        reference = reference[:, outputs.reshape(-1)]
    exact = ExactContextNet(state, spec, width, "ctx")
    for band_bytes in (1 << 30, 1):
        got = exact.deltas(known, mu, scale, outputs, band_bytes)
        assert got.dtype == np.int64 and np.array_equal(got, reference), band_bytes
    assert np.abs(reference).max() > 2**20 and len(np.unique(reference)) > reference.size // 2


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
    assert [s.name for s in hfc.header.streams] == STREAMS[hificli.load_model(weights).config.context]
    code, _, err = run(["decode", str(out), "-m", str(weights), "-o", str(tmp_path / "out.png")], capsys)
    assert code == 0, err
    from PIL import Image

    decoded = np.asarray(Image.open(tmp_path / "out.png"))
    pixels, _ = decode_file(out.read_bytes(), hificli.load_model(weights))
    assert decoded.shape == (97, 150, 3) and np.array_equal(decoded, pixels)


def test_coded_size_matches_the_float_estimate(ctx_vr: Path) -> None:
    assert_coded_size_matches_estimate(ctx_vr, SAMPLE, (0.0, 60.0, 100.0))


def test_tiles_and_bands_read_the_same_latents(ctx_vr: Path) -> None:
    import hificli
    from hificli import tiling
    from hificli.codec import decode_latents, encode_source
    from hificli.imageio import to_source_image

    model = hificli.load_model(ctx_vr)
    data = encode_source(to_source_image(sample_image(420, 300, seed=9)), model, rate.quality_code(33.3))
    reference = decode_latents(container.unpack(data), model.latent)
    for tile, band_bytes in ((64, None), (128, None), (0, 1), (0, 20000)):
        model.tiling = tiling.Tiling(tile=tile)
        if band_bytes is not None:
            model.latent.context.band_bytes = band_bytes  # 1: one latent row per band
        assert np.array_equal(decode_latents(container.unpack(data), model.latent), reference), (tile, band_bytes)
        again = encode_source(to_source_image(sample_image(420, 300, seed=9)), model, rate.quality_code(33.3))
        assert again == data, (tile, band_bytes)


def test_latents_identical_across_processes_and_threads(ctx_vr: Path, tmp_path: Path) -> None:
    images = []
    for i, (w, h) in enumerate(((97, 211), (300, 64))):
        path = tmp_path / f"img{i}.png"
        sample_image(w, h, seed=30 + i).save(path)
        images.append(str(path))
    images.append(str(SAMPLE))
    out_dir = tmp_path / "hfc"
    out_dir.mkdir()
    encoded = run_hashes("encode:5,95.5", str(ctx_vr), "1", str(out_dir), *images)["hashes"]
    decoded = run_hashes("decode", str(ctx_vr), "2", *map(str, sorted(out_dir.glob("*.hfc"))))
    assert decoded["threads"] == 2 and len(encoded) == 2 * len(images)
    assert decoded["hashes"] == encoded


def _regenerate_golden(kind: str) -> None:
    """HIFIC_REGEN_GOLDEN_CTX=1: rebuild a context kind's golden model, files and hashes only."""
    import hificli
    from hificli.codec import encode_source
    from hificli.imageio import read_image

    stem, prefix = GOLDEN[kind]
    make_tiny_weights(EXPECTED / f"{stem}.safetensors", seed=14, model_id=stem, rate_levels=4,
                      **{**CONTEXT, "context": kind})
    model = hificli.load_model(EXPECTED / f"{stem}.safetensors")
    index = {}
    for q in GOLDEN_QUALITIES:
        data = encode_source(read_image(SAMPLE), model, rate.quality_code(q))
        name = f"{prefix}-q{q:g}.hfc"
        (EXPECTED / name).write_bytes(data)
        index[name] = {"latents": latent_hash(data, model), "file": hashlib.sha256(data).hexdigest()}
    (EXPECTED / f"{prefix}.json").write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def test_golden_files_decode_to_recorded_latents(kind: str) -> None:
    import hificli
    from hificli.codec import encode_source
    from hificli.imageio import read_image

    if os.environ.get("HIFIC_REGEN_GOLDEN_CTX") == "1":
        _regenerate_golden(kind)
    stem, prefix = GOLDEN[kind]
    model = hificli.load_model(EXPECTED / f"{stem}.safetensors")
    index = json.loads((EXPECTED / f"{prefix}.json").read_text())
    assert sorted(index) == sorted(f"{prefix}-q{q:g}.hfc" for q in GOLDEN_QUALITIES)
    for q in GOLDEN_QUALITIES:
        name = f"{prefix}-q{q:g}.hfc"
        data = (EXPECTED / name).read_bytes()
        assert [s.name for s in container.unpack(data).header.streams] == STREAMS[kind]
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
    z = hfc.header.streams[0]
    payloads = list(hfc.payloads)
    h, w = z.shape[1] * 4, z.shape[2] * 4
    cases = {
        "empty-last": (hfc.header.streams, payloads[:-1] + [b""], True),
        "swapped": (hfc.header.streams, [payloads[0], payloads[2], payloads[1], *payloads[3:]], True),
        "one-y": ((z, container.StreamInfo("y", (model.config.latent_channels, h, w), 4)),
                  [payloads[0], b"\0" * 4], True),
        "no-flag": (hfc.header.streams, payloads, False),  # a 1.1 file with the context streams
    }
    for name, (streams, payloads, flag) in cases.items():
        streams = tuple(replace(s, length=len(p)) for s, p in zip(streams, payloads, strict=True))
        header = replace(hfc.header, streams=streams, spatial_context=flag, version=None)
        path = tmp_path / f"{name}.hfc"
        path.write_bytes(reseal(container.pack(header, payloads)))
        code, _, err = run(["decode", str(path), "-m", str(ctx_vr), "-o", str(tmp_path / f"{name}.png")], capsys)
        assert code == 3, (name, err)
        assert len(err.strip().splitlines()) <= 2 and not (tmp_path / f"{name}.png").exists(), name


def test_a_badly_calibrated_context_still_writes_files_that_decode(tmp_path: Path, capsys) -> None:
    """Large random corrections put the last-decoded symbols of a slice in first bins (this seed made a
    file refused as "damaged stream 'y2'"); the encoder settles them (coder.settle_final_run)."""
    weights = make_tiny_weights(tmp_path / "off.safetensors", seed=5, model_id="test-off", preset="tiny-gdn",
                                context="channel", context_channels=8, context_std=0.2)
    image = tmp_path / "in.png"
    sample_image(150, 97, seed=3).save(image)
    out = tmp_path / "in.hfc"
    assert run(["encode", str(image), "-m", str(weights), "-o", str(out)], capsys)[0] == 0
    code, _, err = run(["decode", str(out), "-m", str(weights), "-o", str(tmp_path / "out.png")], capsys)
    assert code == 0, err


# -- training ----------------------------------------------------------------------------------------


def test_training_gives_a_model_a_context_that_codes(tmp_path: Path, capsys) -> None:
    from hificli.weights import read_weights_info

    data = tmp_path / "photos"
    data.mkdir()
    for i in range(3):
        sample_image(160, 140, seed=40 + i).save(data / f"p{i}.png")
    init = make_tiny_weights(tmp_path / "init.safetensors", seed=8, preset="tiny-gdn", rate_levels=3)
    run_dir = tmp_path / "run"
    code, _, err = run(["train", str(data), "--init", str(init), "--context", "checkerboard", "--context-channels",
                        "6", "--rate-lambdas",
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
    # the context can be replaced by another kind: the transforms carry over, the new context starts fresh
    code, _, err = run(["train", str(data), "--init", str(run_dir), "--context", "channel", "--rate-lambdas",
                        "0.5,1,2", "--k-m", "1", "--steps", "2", "--batch-size", "2", "--crop", "128",
                        "--perceptual", "none", "--workers", "0", "--val-every", "0", "--out", str(tmp_path / "run2")],
                       capsys)
    assert code == 0, err
    info = read_weights_info(tmp_path / "run2" / "weights.safetensors")
    assert info.config.context == "channel" and info.config.context_channels == 192
    code, _, err = run(["train", str(data), "--init", str(init), "--context", "none", "--context-channels", "4",
                        "--rate-lambdas", "0.5,1,2", "--steps", "1", "--perceptual", "none", "--out",
                        str(tmp_path / "run3")], capsys)
    assert code != 0 and "no --context-channels" in err
