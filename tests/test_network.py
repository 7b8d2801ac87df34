"""The HiFiC network: port key layout and sizes, layer numerics, likelihoods, forward semantics."""

from __future__ import annotations

import json
import math

import pytest
import torch
from port_fixtures import find_port_manifest
from torch.nn import functional as F

from hificli.layers import ChannelNorm2d, clamp_toward, lower_bound, round_half_up
from hificli.models.config import PRESETS, ArchConfig
from hificli.models.discriminator import Discriminator
from hificli.models.hific import HificModel, HyperpriorDensity
from hificli.models.likelihoods import (
    SCALE_MIN,
    latent_likelihood,
    standardized_cdf,
    standardized_quantile,
)

TINY = PRESETS["tiny"]


def _tiny_model(seed: int = 0, **changes) -> HificModel:
    """Seeded tiny model with every parameter perturbed (so gamma/beta/a_k are not at their init)."""
    torch.manual_seed(seed)
    model = HificModel(TINY.with_(**changes))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def _image(n: int = 1, h: int = 128, w: int = 128, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


# -- layout of the published model --------------------------------------------------------------------


@pytest.mark.parametrize("regime", ["low", "med", "high"])
def test_full_config_keys_and_shapes_match_port(regime: str) -> None:
    manifest = find_port_manifest(regime)
    if manifest is None:
        pytest.skip("reference hific_state_dict_*.json not available")
    reference = json.loads(manifest.read_text())
    with torch.device("meta"):
        model = HificModel(ArchConfig())
        disc = Discriminator(ArchConfig())
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    ours.update({"Discriminator." + k: list(v.shape) for k, v in disc.state_dict().items()})
    assert ours == reference
    assert list(ours) == list(reference)  # same order too (optimizer states index parameters by order)
    assert set(model.inference_state_dict()) == {k for k in reference if not k.startswith("Discriminator.")}


def test_full_config_parameter_counts() -> None:
    with torch.device("meta"):
        counts = HificModel(ArchConfig()).count_parameters()
        seven = HificModel(ArchConfig(n_residual_blocks=7)).count_parameters()
        disc = Discriminator(ArchConfig())
    assert counts["Encoder"] == 7_423_420
    assert counts["Generator"] == 156_774_683
    assert counts["Hyperprior"] == 17_277_560
    assert counts["Hyperprior.analysis_net"] == 5_754_560
    assert counts["Hyperprior.synthesis_mu"] == counts["Hyperprior.synthesis_std"] == 5_754_460
    assert counts["Hyperprior.hyperlatent_likelihood"] == 14_080
    assert counts["total"] == 181_475_663
    assert seven["Generator"] == 123_585_563
    assert sum(p.numel() for p in disc.parameters()) == 2_793_117


def test_synthesis_nets_expose_three_transposed_convs() -> None:
    hp = HificModel(TINY).Hyperprior
    for net in (hp.synthesis_mu, hp.synthesis_std):
        assert [type(getattr(net, f"conv{i}")) for i in (1, 2, 3)] == [torch.nn.ConvTranspose2d] * 3
        assert net.conv3.out_channels == TINY.latent_channels


# -- layers ---------------------------------------------------------------------------------------------


def test_channel_norm_matches_formula_with_unbiased_variance() -> None:
    torch.manual_seed(1)
    norm = ChannelNorm2d(7)
    with torch.no_grad():
        norm.gamma.copy_(torch.randn(1, 7, 1, 1))
        norm.beta.copy_(torch.randn(1, 7, 1, 1))
    x = torch.randn(2, 7, 5, 3, dtype=torch.float64) * 3 + 1
    mean = x.sum(1, keepdim=True) / 7
    var = ((x - mean) ** 2).sum(1, keepdim=True) / 6  # unbiased: divide by C - 1
    expected = (x - mean) / torch.sqrt(var + 1e-3) * norm.gamma.double() + norm.beta.double()
    torch.testing.assert_close(norm.double()(x), expected, rtol=1e-12, atol=1e-12)
    assert sorted(k for k, _ in norm.named_parameters()) == ["beta", "gamma"]
    with pytest.raises(ValueError):
        ChannelNorm2d(1)


def test_round_half_up_is_floor_plus_half() -> None:
    x = torch.tensor([-1.5, -0.5, 0.5, 1.5, 2.5, 2.49])
    assert round_half_up(x).tolist() == [-1.0, 0.0, 1.0, 2.0, 3.0, 2.0]


def test_lower_bound_forward_and_gradient() -> None:
    x = torch.tensor([0.05, 0.05, 0.2, 0.2, 0.11], requires_grad=True)
    y = lower_bound(x, SCALE_MIN)
    assert y.tolist() == pytest.approx([0.11, 0.11, 0.2, 0.2, 0.11])
    y.backward(torch.tensor([1.0, -1.0, 1.0, -1.0, 1.0]))
    # Below the bound only a gradient that pushes x up (negative) passes; at/above it everything passes.
    assert x.grad.tolist() == [0.0, -1.0, 1.0, -1.0, 1.0]


def test_clamp_toward_passes_gradients_back_into_range() -> None:
    x = torch.tensor([-0.5, -0.5, 0.5, 1.5, 1.5], requires_grad=True)
    y = clamp_toward(x, 0.0, 1.0)
    assert y.tolist() == [0.0, 0.0, 0.5, 1.0, 1.0]
    y.backward(torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0]))
    assert x.grad.tolist() == [0.0, -1.0, 1.0, 1.0, 0.0]


# -- likelihoods ----------------------------------------------------------------------------------------


@torch.no_grad()
def _density_logits_direct(density: HyperpriorDensity, c: int, x: float) -> float:
    """One channel's CDF logit, layer by layer in float64, tanh gating on all four layers."""
    v = torch.tensor([[x]], dtype=torch.float64)
    for k in range(4):
        h = F.softplus(getattr(density, f"H_{k}")[c].double())
        v = h @ v + getattr(density, f"b_{k}")[c].double()
        v = v + torch.tanh(getattr(density, f"a_{k}")[c].double()) * torch.tanh(v)
    return float(v)


def _perturbed_density(channels: int = 4, seed: int = 0) -> HyperpriorDensity:
    torch.manual_seed(seed)
    density = HyperpriorDensity(channels)
    with torch.no_grad():
        for p in density.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return density


def test_density_shapes_and_init() -> None:
    d = HyperpriorDensity(320)
    shapes = {k: tuple(v.shape) for k, v in d.state_dict().items()}
    assert shapes["H_0"] == (320, 3, 1) and shapes["H_3"] == (320, 1, 3) and shapes["a_3"] == (320, 1, 1)
    scale = 10 ** 0.25
    assert torch.allclose(d.H_1, torch.full_like(d.H_1, math.log(math.expm1(1 / scale / 3))))
    assert torch.allclose(d.H_3, torch.full_like(d.H_3, math.log(math.expm1(1 / scale))))
    assert bool((d.a_2 == 0).all()) and float(d.b_0.detach().abs().max()) <= 0.5


def test_density_pmf_sums_to_one_per_channel() -> None:
    density = _perturbed_density(4)
    k = torch.arange(-300, 301, dtype=torch.float32).reshape(1, 1, 1, -1).expand(1, 4, 1, -1)
    with torch.no_grad():
        pmf = density.likelihood(k)
    assert pmf.shape == (1, 4, 1, 601)
    torch.testing.assert_close(pmf.sum(-1).flatten(), torch.ones(4), atol=1e-4, rtol=0)


def test_density_likelihood_matches_direct_formula() -> None:
    density = _perturbed_density(3, seed=2)
    z = torch.randint(-6, 7, (2, 3, 2, 3)).float() + torch.rand(2, 3, 2, 3) * 0.2
    with torch.no_grad():
        lik = density.likelihood(z)
    assert lik.shape == z.shape
    for n, c, h, w in [(0, 0, 0, 0), (1, 2, 1, 2), (0, 1, 1, 0), (1, 0, 0, 1)]:
        x = float(z[n, c, h, w])
        u, lo = _density_logits_direct(density, c, x + 0.5), _density_logits_direct(density, c, x - 0.5)
        s = -math.copysign(1.0, u + lo)
        expected = max(abs(1 / (1 + math.exp(-s * u)) - 1 / (1 + math.exp(-s * lo))), 1e-9)
        assert float(lik[n, c, h, w]) == pytest.approx(expected, rel=1e-4)
    # The port gates the last layer too: zeroing a_3 must change the result.
    with torch.no_grad():
        density.a_3.zero_()
        assert not torch.allclose(density.likelihood(z), lik)


@pytest.mark.parametrize("kind", ["gaussian", "logistic"])
@pytest.mark.parametrize("scale", [SCALE_MIN, 1.0, 20.0])
def test_latent_likelihood_sums_to_one(kind: str, scale: float) -> None:
    y = torch.arange(-800, 801, dtype=torch.float64)
    mu = torch.tensor(0.3, dtype=torch.float64)
    lik = latent_likelihood(y, mu, torch.tensor(scale, dtype=torch.float64), kind)
    assert float(lik.sum()) == pytest.approx(1.0, abs=1e-5)  # tail bins sit at the 1e-9 floor
    naive = standardized_cdf((y + 0.5 - mu) / scale, kind) - standardized_cdf((y - 0.5 - mu) / scale, kind)
    central = naive > 1e-6
    torch.testing.assert_close(lik[central], naive[central], rtol=1e-9, atol=1e-12)
    assert float(lik.min()) >= 1e-9


def test_standardized_cdf_and_quantile() -> None:
    assert -standardized_quantile(2**-9, "logistic") == pytest.approx(math.log(511), rel=1e-12)
    assert -standardized_quantile(2**-9, "gaussian") == pytest.approx(2.8856, abs=1e-4)
    p = torch.tensor([0.01, 0.3, 0.5, 0.9], dtype=torch.float64)
    for kind in ("gaussian", "logistic"):
        q = standardized_quantile(p, kind)
        torch.testing.assert_close(standardized_cdf(q, kind), p)
    assert float(standardized_cdf(torch.tensor(1.0), "gaussian")) == pytest.approx(0.841344746, rel=1e-6)
    with pytest.raises(ValueError):
        standardized_cdf(torch.zeros(1), "laplace")


# -- forward ----------------------------------------------------------------------------------------


def test_training_forward_shapes_rates_and_mixed_quantization() -> None:
    model = _tiny_model().train()
    x = _image(2, 128, 192)
    out = model(x, generator=torch.Generator().manual_seed(3))
    d = {k: v.detach() for k, v in vars(out).items()}  # for value checks (no autograd warnings)
    c, n_h = TINY.latent_channels, TINY.hyper_channels
    assert out.x_hat.shape == x.shape
    assert out.y.shape == out.y_hat.shape == out.mu.shape == out.scale.shape == (2, c, 8, 12)
    assert out.z.shape == out.z_hat.shape == out.z_likelihoods.shape == (2, n_h, 2, 3)
    for t in (out.x_hat, out.y_hat, out.bpp, out.q_bpp):
        assert bool(torch.isfinite(t).all())
    assert float(d["x_hat"].min()) >= 0 and float(d["x_hat"].max()) <= 1
    assert float(d["bpp"]) > 0 and float(d["q_bpp"]) > 0
    assert float(d["scale"].min()) >= float(torch.tensor(SCALE_MIN))  # the float32 bound
    # Generator input: straight-through rounding of y around mu; z gets uniform noise.
    torch.testing.assert_close(out.y_hat, torch.floor(out.y - out.mu + 0.5) + out.mu)
    noise = d["z_hat"] - d["z"]
    assert float(noise.abs().max()) <= 0.5 and float(noise.abs().max()) > 0
    # bpp is the information of the returned likelihoods per input pixel.
    pixels = 2 * 128 * 192
    expected = -(torch.log2(out.y_likelihoods).sum() + torch.log2(out.z_likelihoods).sum()) / pixels
    torch.testing.assert_close(out.bpp, expected)
    torch.testing.assert_close(out.bpp, out.bpp_y + out.bpp_z)
    # Gradients reach the encoder through the straight-through estimator and the density through the rate.
    (out.bpp + ((out.x_hat - x) ** 2).mean()).backward()
    enc_grad = model.Encoder.conv_block1[1].weight.grad
    assert enc_grad is not None and float(enc_grad.abs().sum()) > 0
    assert float(model.Hyperprior.hyperlatent_likelihood.b_0.grad.abs().sum()) > 0


def test_training_noise_is_seeded_by_generator() -> None:
    model = _tiny_model().train()
    x = _image()
    a = model(x, generator=torch.Generator().manual_seed(5))
    b = model(x, generator=torch.Generator().manual_seed(5))
    c = model(x, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a.z_hat, b.z_hat) and torch.equal(a.bpp, b.bpp)
    assert not torch.equal(a.z_hat, c.z_hat)


def test_eval_forward_is_deterministic_and_hard_quantized() -> None:
    model = _tiny_model().eval()
    x = _image(1, 128, 128, seed=4)
    with torch.no_grad():
        a, b = model(x), model(x)
    assert torch.equal(a.x_hat, b.x_hat) and torch.equal(a.bpp, b.bpp)
    assert torch.equal(a.z_hat, torch.floor(a.z + 0.5))
    assert torch.equal(a.y_hat, torch.floor(a.y - a.mu + 0.5) + a.mu)
    assert float(a.bpp) == float(a.q_bpp) > 0


def _cn(x: torch.Tensor, sd: dict, key: str) -> torch.Tensor:
    mean = x.mean(1, keepdim=True)
    var = ((x - mean) ** 2).sum(1, keepdim=True) / (x.shape[1] - 1)
    return (x - mean) / torch.sqrt(var + 1e-3) * sd[key + ".gamma"] + sd[key + ".beta"]


def _reference_eval(sd: dict, cfg: ArchConfig, x01: torch.Tensor) -> dict[str, torch.Tensor]:
    """The eval-mode network written out with functional ops from the state_dict keys (PORT_FACTS 1.2-1.5)."""
    x = x01 * 2 - 1 if cfg.normalize_input else x01
    e = "Encoder.conv_block"
    h = F.conv2d(F.pad(x, (3, 3, 3, 3), mode="reflect"), sd[f"{e}1.1.weight"], sd[f"{e}1.1.bias"])
    h = F.relu(_cn(h, sd, f"{e}1.2"))
    for i in range(2, 6):
        h = F.pad(h, (0, 1, 1, 0), mode="reflect")
        h = F.conv2d(h, sd[f"{e}{i}.1.weight"], sd[f"{e}{i}.1.bias"], stride=2)
        h = F.relu(_cn(h, sd, f"{e}{i}.2"))
    y = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), sd[f"{e}_out.1.weight"], sd[f"{e}_out.1.bias"])

    a = "Hyperprior.analysis_net.conv"
    t = F.relu(F.conv2d(y, sd[f"{a}1.weight"], sd[f"{a}1.bias"], padding=1))
    t = F.pad(t, (2, 2, 2, 2), mode="reflect")
    t = F.relu(F.conv2d(t, sd[f"{a}2.weight"], sd[f"{a}2.bias"], stride=2))
    z = F.conv2d(F.pad(t, (2, 2, 2, 2), mode="reflect"), sd[f"{a}3.weight"], sd[f"{a}3.bias"], stride=2)
    z_hat = torch.floor(z + 0.5)

    def synth(name: str) -> torch.Tensor:
        p = f"Hyperprior.{name}.conv"
        s = F.relu(F.conv_transpose2d(z_hat, sd[f"{p}1.weight"], sd[f"{p}1.bias"], 2, 2, 1))
        s = F.relu(F.conv_transpose2d(s, sd[f"{p}2.weight"], sd[f"{p}2.bias"], 2, 2, 1))
        return F.conv_transpose2d(s, sd[f"{p}3.weight"], sd[f"{p}3.bias"], 1, 1)

    mu, scale = synth("synthesis_mu"), synth("synthesis_std").clamp(min=SCALE_MIN)
    y_hat = torch.floor(y - mu + 0.5) + mu

    g = "Generator."
    head = F.conv2d(F.pad(_cn(y_hat, sd, g + "conv_block_init.0"), (1, 1, 1, 1), mode="reflect"),
                    sd[g + "conv_block_init.2.weight"], sd[g + "conv_block_init.2.bias"])
    head = _cn(head, sd, g + "conv_block_init.3")
    h = head
    for i in range(cfg.n_residual_blocks):
        r = f"{g}resblock_{i}."
        u = F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), sd[r + "conv1.weight"], sd[r + "conv1.bias"])
        u = F.relu(_cn(u, sd, r + "norm1"))
        u = F.conv2d(F.pad(u, (1, 1, 1, 1), mode="reflect"), sd[r + "conv2.weight"], sd[r + "conv2.bias"])
        h = h + _cn(u, sd, r + "norm2")
    h = h + head
    for i in range(1, 5):
        p = f"{g}upconv_block{i}."
        h = F.conv_transpose2d(h, sd[p + "0.weight"], sd[p + "0.bias"], stride=2, padding=1, output_padding=1)
        h = F.relu(_cn(h, sd, p + "1"))
    out = F.conv2d(F.pad(h, (3, 3, 3, 3), mode="reflect"), sd[g + "conv_block_out.1.weight"],
                   sd[g + "conv_block_out.1.bias"])
    x_hat = (torch.tanh(out) + 1) / 2 if cfg.normalize_input else out
    return {"y": y, "z": z, "mu": mu, "scale": scale, "x_hat": x_hat.clamp(0, 1)}


@pytest.mark.parametrize("normalize", [False, True])
def test_eval_forward_matches_functional_reference(normalize: bool) -> None:
    model = _tiny_model(seed=7, normalize_input=normalize).double().eval()
    x = _image(1, 128, 192, seed=8).double()
    sd = {k: v.double() for k, v in model.state_dict().items()}
    ref = _reference_eval(sd, model.config, x)
    with torch.no_grad():
        out = model(x)
    for name in ("y", "z", "mu", "scale", "x_hat"):
        torch.testing.assert_close(getattr(out, name), ref[name], rtol=1e-9, atol=1e-9, msg=name)


def test_input_sizes() -> None:
    model = _tiny_model().eval()
    for h, w in [(64, 128), (128, 96), (100, 128)]:
        with pytest.raises(ValueError, match="multiple of 64"):
            model(torch.rand(1, 3, h, w))
    with pytest.raises(ValueError):
        model(torch.rand(3, 128, 128))
    assert HificModel.padded_size(1, 1) == (128, 128)
    assert HificModel.padded_size(129, 300) == (192, 320)
    assert HificModel.padded_size(256, 192) == (256, 192)


def test_pre_and_postprocess() -> None:
    x = torch.tensor([0.0, 0.25, 1.0]).reshape(1, 1, 1, 3)
    plain, norm = HificModel(TINY), HificModel(TINY.with_(normalize_input=True))
    assert torch.equal(plain.preprocess(x), x)
    assert norm.preprocess(x).flatten().tolist() == [-1.0, -0.5, 1.0]
    g = torch.tensor([-3.0, 0.0, 0.5, 3.0])
    assert plain.postprocess(g).tolist() == [0.0, 0.0, 0.5, 1.0]
    torch.testing.assert_close(norm.postprocess(g), (torch.tanh(g) + 1) / 2)


def test_codec_entry_points_compose_to_eval_forward() -> None:
    model = _tiny_model(seed=9).eval()
    x = _image(1, 128, 128, seed=9)
    with torch.no_grad():
        out = model(x)
        y = model.encode_latents(model.preprocess(x))
        x_hat = model.postprocess(model.generate(out.y_hat))
    torch.testing.assert_close(y, out.y)
    torch.testing.assert_close(x_hat, out.x_hat)


# -- discriminator ------------------------------------------------------------------------------------


def test_discriminator_pairs_each_image_with_its_own_latent() -> None:
    torch.manual_seed(0)
    disc = Discriminator(TINY)
    x = _image(2, 64, 64, seed=1)
    y_hat = torch.randn(2, TINY.latent_channels, 4, 4, requires_grad=True)
    with torch.no_grad():
        for _ in range(10):  # let spectral norm's power iteration settle, then freeze it (eval)
            disc(x, y_hat)
        disc.eval()
        both = disc(x, y_hat)
        first = disc(x[:1], y_hat[:1])
        second = disc(x[1:], y_hat[1:])
        swapped = disc(x, y_hat.flip(0))
    assert both.shape == (2 * 4 * 4, 1)
    torch.testing.assert_close(both[:16], first)
    torch.testing.assert_close(both[16:], second)
    assert not torch.allclose(both, swapped)
    disc.train()
    disc(x, y_hat).sum().backward()
    assert y_hat.grad is None  # the latents are detached inside
    with pytest.raises(ValueError):
        disc(x, y_hat[:1])
