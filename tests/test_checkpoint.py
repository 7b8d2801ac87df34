"""Reading port-layout checkpoints: strict loading, architecture detection, refusal of hostile pickles."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from port_fixtures import (
    PORT_EPOCH,
    PORT_STEPS,
    find_port_manifest,
    make_full_size_port_checkpoint,
    make_malicious_checkpoint,
    make_port_checkpoint,
    malicious_marker,
    port_args,
)

from hificli.checkpoint import (
    ARCH_ARG_KEY,
    load_port_model,
    load_strict,
    read_port_checkpoint,
)
from hificli.errors import EXIT_MODEL, ModelMismatchError, UnknownModelError
from hificli.models.config import PRESETS, ArchConfig
from hificli.models.discriminator import Discriminator
from hificli.models.hific import HificModel

TINY = PRESETS["tiny"]


@pytest.fixture(scope="module")
def good_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_port_checkpoint(tmp_path_factory.mktemp("port") / "good.pt", regime="med", seed=1)


def _resave(src: Path, dst: Path, edit) -> Path:
    """Load a fixture checkpoint (trusted, made here), apply ``edit(obj)`` and save it again."""
    obj = torch.load(src, map_location="cpu", weights_only=True)
    edit(obj)
    torch.save(obj, dst)
    return dst


# -- a good file ---------------------------------------------------------------------------------------


def test_good_port_checkpoint_loads_every_tensor(good_ckpt: Path) -> None:
    model, ckpt = load_port_model(good_ckpt)
    assert not model.training
    assert ckpt.config == TINY.with_(likelihood="logistic", normalize_input=False)  # regime med
    assert (ckpt.steps, ckpt.epoch) == (PORT_STEPS, PORT_EPOCH)
    assert ckpt.args["regime"] == "med" and ckpt.args["image_dims"] == (3, 256, 256)
    raw = torch.load(good_ckpt, map_location="cpu", weights_only=True)["model_state_dict"]
    loaded = model.state_dict()
    assert set(loaded) == {k for k in raw if not k.startswith("Discriminator.")}
    for key, value in loaded.items():
        assert torch.equal(value, raw[key]), key
    # The discriminator part is kept apart and fits our Discriminator strictly.
    disc = Discriminator(ckpt.config)
    disc.load_state_dict(ckpt.discriminator_state, strict=True)
    # The loaded model runs.
    with torch.no_grad():
        out = model(torch.rand(1, 3, 128, 128))
    assert bool(torch.isfinite(out.x_hat).all()) and float(out.bpp) > 0


def test_load_strict_into_a_real_model_copies_values(good_ckpt: Path) -> None:
    ckpt = read_port_checkpoint(good_ckpt)
    model = HificModel(ckpt.config)
    full = dict(ckpt.state_dict)
    full["Discriminator.conv1.weight_orig"] = torch.zeros(3)  # ignored prefix
    full["Hyperprior.prior_entropy_model.CDF"] = torch.zeros(64, 1481, dtype=torch.int32)  # ignored pattern
    skipped = load_strict(model, full)
    assert skipped == ["Discriminator.conv1.weight_orig", "Hyperprior.prior_entropy_model.CDF"]
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt.state_dict[key])


# -- strictness -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("corruption", "key", "words"),
    [
        ("drop_key", "Generator.resblock_0.conv1.weight", "missing 1 key"),
        ("drop_key", "Hyperprior.hyperlatent_likelihood.a_3", "missing 1 key"),
        ("extra_key", "Encoder.conv_block9.1.weight", "1 unexpected key"),
        ("bad_shape_key", "Encoder.conv_block2.2.gamma", "wrong shape"),
    ],
)
def test_structural_mismatch_names_the_key(tmp_path: Path, corruption: str, key: str, words: str) -> None:
    path = make_port_checkpoint(tmp_path / "bad.pt", with_optimizer=False, **{corruption: key})
    with pytest.raises(ModelMismatchError) as info:
        load_port_model(path)
    assert key in info.value.message and words in info.value.message
    assert info.value.exit_code == EXIT_MODEL


def test_many_missing_keys_are_counted_and_sampled() -> None:
    model = HificModel(TINY)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith("Generator.")}
    n = sum(1 for k in model.state_dict() if k.startswith("Generator."))
    with pytest.raises(ModelMismatchError, match=rf"missing {n} keys \(e\.g\. Generator\.") as info:
        load_strict(model, sd)
    assert info.value.message.count("Generator.") == 5 and info.value.message.endswith("...)")


def test_discriminator_and_entropy_model_keys_are_ignored(tmp_path: Path) -> None:
    table_key = "Hyperprior.prior_entropy_model.CDF"
    path = make_port_checkpoint(tmp_path / "tables.pt", with_optimizer=False, extra_key=table_key)
    model, ckpt = load_port_model(path)
    assert not any("entropy_model" in k for k in ckpt.state_dict)
    assert ckpt.discriminator_state is not None and "conv1.weight_orig" in ckpt.discriminator_state


def test_non_finite_and_non_float_tensors_are_rejected() -> None:
    model = HificModel(TINY)
    sd = dict(model.state_dict())
    sd["Encoder.conv_block1.1.bias"] = torch.full_like(sd["Encoder.conv_block1.1.bias"], float("nan"))
    with pytest.raises(ModelMismatchError, match="NaN/inf.*Encoder.conv_block1.1.bias"):
        load_strict(HificModel(TINY), sd)
    sd = dict(model.state_dict())
    sd["Encoder.conv_block1.1.bias"] = sd["Encoder.conv_block1.1.bias"].to(torch.int64)
    with pytest.raises(ModelMismatchError, match="non-float dtype"):
        load_strict(HificModel(TINY), sd)


# -- architecture detection ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("regime", "likelihood", "normalize"),
    [("low", "gaussian", True), ("med", "logistic", False), ("high", "gaussian", True)],
)
def test_regime_flags_come_from_args(tmp_path: Path, regime: str, likelihood: str, normalize: bool) -> None:
    ckpt = read_port_checkpoint(make_port_checkpoint(tmp_path / "r.pt", regime=regime, with_optimizer=False))
    assert (ckpt.config.likelihood, ckpt.config.normalize_input) == (likelihood, normalize)


def test_architecture_is_read_from_the_shapes(tmp_path: Path) -> None:
    config = ArchConfig(
        encoder_channels=(3, 5, 6, 7, 9), latent_channels=4, hyper_channels=3, n_residual_blocks=3,
        likelihood="logistic", normalize_input=True, discriminator_context=5,
    )
    path = make_port_checkpoint(tmp_path / "arch.pt", config=config, with_optimizer=False)
    # args would say 9 blocks / 220 channels for a released model; here the keys decide.
    _resave(path, path, lambda obj: obj["args"].update(n_residual_blocks=9, latent_channels=220))
    model, ckpt = load_port_model(path)
    assert ckpt.config == config
    assert model.count_parameters()["total"] == HificModel(config).count_parameters()["total"]


def test_defaults_when_args_lack_the_flags(tmp_path: Path) -> None:
    path = make_port_checkpoint(tmp_path / "noargs.pt", regime="low", with_optimizer=False)
    _resave(path, path, lambda obj: obj.pop("args"))
    ckpt = read_port_checkpoint(path)
    assert (ckpt.config.likelihood, ckpt.config.normalize_input, ckpt.args) == ("gaussian", False, {})


def test_gap_in_residual_block_numbers_is_refused(tmp_path: Path) -> None:
    config = TINY.with_(n_residual_blocks=3)
    path = make_port_checkpoint(tmp_path / "gap.pt", config=config, with_optimizer=False)

    def drop_block_1(obj: dict) -> None:
        sd = obj["model_state_dict"]
        for key in [k for k in sd if k.startswith("Generator.resblock_1.")]:
            del sd[key]

    _resave(path, path, drop_block_1)
    with pytest.raises(ModelMismatchError, match=r"not numbered 0..n-1: \[0, 2\]"):
        read_port_checkpoint(path)


def test_recorded_arch_json_wins(tmp_path: Path) -> None:
    config = TINY.with_(likelihood="logistic", discriminator_context=7)
    path = make_port_checkpoint(tmp_path / "ours.pt", config=config, regime="low", with_optimizer=False)
    _resave(path, path, lambda obj: obj["args"].update({ARCH_ARG_KEY: config.to_json()}))
    model, ckpt = load_port_model(path)
    assert ckpt.config == config  # although args say normalize_input_image=False, likelihood logistic
    # A record that disagrees with the tensors is caught by the strict load.
    wrong = config.with_(n_residual_blocks=2)
    _resave(path, path, lambda obj: obj["args"].update({ARCH_ARG_KEY: wrong.to_json()}))
    with pytest.raises(ModelMismatchError, match="missing 8 keys"):
        load_port_model(path)
    _resave(path, path, lambda obj: obj["args"].update({ARCH_ARG_KEY: '{"bogus": 1}'}))
    with pytest.raises(ModelMismatchError, match="bad architecture record"):
        read_port_checkpoint(path)


def test_unsupported_port_variants_are_named(tmp_path: Path) -> None:
    path = make_port_checkpoint(tmp_path / "inorm.pt", with_optimizer=False)

    def to_instance_norm(obj: dict) -> None:
        sd = obj["model_state_dict"]
        for key in [k for k in sd if k.endswith((".gamma", ".beta"))]:
            sd[key.replace(".gamma", ".weight").replace(".beta", ".bias")] = sd.pop(key).flatten()

    _resave(path, path, to_instance_norm)
    with pytest.raises(ModelMismatchError, match="InstanceNorm"):
        read_port_checkpoint(path)


# -- files that are not checkpoints -------------------------------------------------------------------


def test_malicious_pickle_is_refused_without_running(tmp_path: Path) -> None:
    path = make_malicious_checkpoint(tmp_path / "evil.pt")
    marker = malicious_marker(path)
    with pytest.raises(ModelMismatchError, match="refusing to load .*contains code/objects"):
        load_port_model(path)
    assert not marker.exists()


@pytest.mark.skipif(os.name != "posix", reason="the payload uses a POSIX shell command")
def test_malicious_fixture_really_runs_code_when_unpickled_unsafely(tmp_path: Path) -> None:
    """Guards the test above: the payload is live, so its refusal is what keeps the marker away."""
    marker = tmp_path / "ran"
    path = make_malicious_checkpoint(tmp_path / "evil.pt", marker=marker)
    torch.load(path, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_not_a_checkpoint(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all" * 10)
    with pytest.raises(ModelMismatchError, match="not a readable PyTorch checkpoint"):
        read_port_checkpoint(garbage)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(ModelMismatchError, match="expected a dict, found list"):
        read_port_checkpoint(listing)
    no_model = tmp_path / "nomodel.pt"
    torch.save({"args": port_args("med"), "state_dict": {}}, no_model)
    with pytest.raises(ModelMismatchError, match="no 'model_state_dict'"):
        read_port_checkpoint(no_model)
    with pytest.raises(UnknownModelError, match="no such checkpoint"):
        read_port_checkpoint(tmp_path / "absent.pt")


def test_truncated_checkpoint(tmp_path: Path, good_ckpt: Path) -> None:
    cut = tmp_path / "cut.pt"
    data = good_ckpt.read_bytes()
    cut.write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelMismatchError, match="not a readable PyTorch checkpoint"):
        read_port_checkpoint(cut)


# -- the published size -------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("regime", ["med"])
def test_full_size_port_checkpoint_loads(tmp_path: Path, regime: str) -> None:
    if find_port_manifest(regime) is None:
        pytest.skip("reference hific_state_dict_*.json not available")
    path = make_full_size_port_checkpoint(tmp_path / "full.pt", regime)
    model, ckpt = load_port_model(path)
    assert ckpt.config == ArchConfig(likelihood="logistic", normalize_input=False)
    assert model.count_parameters()["total"] == 181_475_663
    with torch.device("meta"):
        disc_keys = set(Discriminator(ckpt.config).state_dict())
    assert ckpt.discriminator_state is not None and set(ckpt.discriminator_state) == disc_keys
    raw = torch.load(path, map_location="cpu", weights_only=True, mmap=True)["model_state_dict"]
    sample = ["Encoder.conv_block1.1.weight", "Generator.resblock_8.norm2.beta"]
    sample.append("Hyperprior.hyperlatent_likelihood.H_3")
    for key in sample:
        assert torch.equal(model.state_dict()[key], raw[key])
