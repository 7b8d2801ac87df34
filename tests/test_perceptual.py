"""Perceptual networks: ST-LPIPS from the stlpips-pytorch wheel's weights, standard LPIPS from a local file."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import torch
from model_fixtures import sample_image

from hificli import perceptual
from hificli.errors import ModelMismatchError, ModelUnavailableError


def has_stlpips() -> bool:
    try:
        metadata.distribution(perceptual.STLPIPS_PACKAGE)
        return True
    except metadata.PackageNotFoundError:
        return False


needs_stlpips = pytest.mark.skipif(not has_stlpips(), reason="stlpips-pytorch is not installed")
CHELSEA = Path(__file__).resolve().parent.parent / "hificli" / "assets" / "chelsea.png"
#: Every exact execution setting on its own and together (FAST), against the network as first written.
EXECUTIONS = {
    "split": dataclasses.replace(perceptual.PLAIN, split_reference=True),
    "channels_last": dataclasses.replace(perceptual.PLAIN, channels_last=True),
    "fused_stem": dataclasses.replace(perceptual.PLAIN, fused_stem=True),
    "fast": perceptual.FAST,
}


def photos(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth synthetic images in [0, 1]."""
    arrays = [np.asarray(sample_image(size, size, seed=seed + i)) for i in range(n)]
    return torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0 for a in arrays])


@pytest.fixture(scope="module")
def st_alex_net() -> torch.nn.Module:
    return perceptual.load_perceptual("stlpips-alex")


@pytest.fixture
def st_alex(st_alex_net: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The module's ST-LPIPS AlexNet, back to float32 and the default execution after each test."""
    yield st_alex_net
    st_alex_net.float().execution = perceptual.FAST


@needs_stlpips
def test_st_lpips_alex_is_a_frozen_distance(st_alex: torch.nn.Module) -> None:
    a = photos(2, seed=0)
    b = photos(2, seed=5)
    noisy = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    with torch.no_grad():
        same = st_alex(a, a)
        near = st_alex(a, noisy)
        far = st_alex(a, b)
        back = st_alex(b, a)
    assert same.shape == (2,) and torch.all(same.abs() < 1e-6)
    assert torch.all(near > 1e-3) and torch.all(far > near)  # more different -> larger
    assert torch.allclose(far, back, rtol=1e-4)
    assert st_alex.kind == "stlpips-alex" and not st_alex.training
    assert sum(p.numel() for p in st_alex.parameters() if p.requires_grad) == 0
    assert sum(p.numel() for p in st_alex.parameters()) > 2_000_000  # the whole AlexNet trunk + heads


@needs_stlpips
def test_st_lpips_passes_gradients_to_its_input_only(st_alex: torch.nn.Module) -> None:
    a = photos(1)
    x = (a * 0.9).requires_grad_(True)
    st_alex(x, a).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in st_alex.parameters())


@needs_stlpips
def test_st_lpips_vgg_loads() -> None:
    vgg = perceptual.load_perceptual("stlpips-vgg")
    a, b = photos(1, size=48), photos(1, size=48, seed=3)
    with torch.no_grad():
        assert float(vgg(a, a)) < 1e-6 < float(vgg(a, b))


def _distance_and_grad(net: torch.nn.Module, execution: perceptual.Execution, a: torch.Tensor,
                       b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(distances, gradient of their sum w.r.t. a) with the reference b needing no gradient."""
    net.execution = execution
    a = a.detach().clone().requires_grad_(True)
    d = net(a, b)
    d.sum().backward()
    return d.detach(), a.grad


@needs_stlpips
@pytest.mark.parametrize("name", EXECUTIONS)
def test_each_execution_is_the_plain_network_in_float64(st_alex: torch.nn.Module, name: str) -> None:
    # float64 leaves only the arithmetic: the fused stem (and its border rows/columns, for even and odd
    # conv1 output sides: 58, 59, 61, 64, 65 px) must be the same function as conv1 + blur1, gradients too
    net = st_alex.double()
    for h, w in ((64, 64), (65, 70), (67, 71)):
        g = torch.Generator().manual_seed(h)
        x = torch.rand(2, 3, h, w, generator=g, dtype=torch.float64)
        x_hat = (x + 0.05 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
        d0, g0 = _distance_and_grad(net, perceptual.PLAIN, x_hat, x)
        d1, g1 = _distance_and_grad(net, EXECUTIONS[name], x_hat, x)
        assert torch.allclose(d1, d0, rtol=1e-12, atol=0), (h, w)
        assert torch.allclose(g1, g0, rtol=0, atol=1e-12 * float(g0.abs().max())), (h, w)


def _close_gradients(g1: torch.Tensor, g0: torch.Tensor) -> bool:
    """Equal up to float32 rounding, in relative L2. Rounding may flip a max-pool's choice between near-equal
    neighbours (or a ReLU at 0) and move some gradient to a neighbour: against float64 we saw 1.4e-4 (PLAIN)
    and 7.6e-4 (FAST); the float64 test checks the arithmetic itself."""
    return float(torch.linalg.vector_norm(g1 - g0)) <= 3e-3 * float(torch.linalg.vector_norm(g0))


def _photo_pairs(size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(test, reference): crops of a real photo and their JPEG q20 / q60 versions, in [0, 1]."""
    from PIL import Image

    photo = Image.open(CHELSEA).convert("RGB")
    refs, tests = [], []
    for left, top, quality in ((0, 0, 20), (451 - size[1], 300 - size[0], 60)):
        crop = photo.crop((left, top, left + size[1], top + size[0]))
        buf = io.BytesIO()
        crop.save(buf, "JPEG", quality=quality)
        refs.append(np.asarray(crop))
        tests.append(np.asarray(Image.open(buf).convert("RGB")))
    test, ref = (torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).float() / 255.0 for a in (tests, refs))
    return test, ref


@needs_stlpips
@pytest.mark.parametrize("size", [(128, 128), (97, 150)])
def test_fast_execution_gives_the_same_values_in_float32(st_alex: torch.nn.Module, size: tuple[int, int]) -> None:
    test, ref = _photo_pairs(size)
    noisy = torch.rand(2, 3, *size, generator=torch.Generator().manual_seed(1))
    for a, b in ((test, ref), (noisy, ref)):
        d0, g0 = _distance_and_grad(st_alex, perceptual.PLAIN, a, b)
        d1, g1 = _distance_and_grad(st_alex, perceptual.FAST, a, b)
        assert float(d0.min()) > 0.005
        assert torch.allclose(d1, d0, rtol=1e-5, atol=0) and _close_gradients(g1, g0)


@needs_stlpips
def test_the_eval_metric_is_unchanged(st_alex: torch.nn.Module) -> None:
    from hificli.eval.metrics import Perceptual

    test, ref = _photo_pairs((300, 451))
    ref_u8, test_u8 = (np.asarray(t[0].permute(1, 2, 0) * 255).round().astype(np.uint8) for t in (ref, test))
    metric = Perceptual("stlpips-alex", st_alex)
    values = {}
    for name, execution in (("plain", perceptual.PLAIN), ("fast", perceptual.FAST)):
        st_alex.execution = execution
        values[name] = metric(ref_u8, test_u8)
    assert values["plain"] > 0.01 and abs(values["fast"] - values["plain"]) <= 1e-5 * values["plain"]


@needs_stlpips
def test_fast_execution_keeps_no_graph_of_the_reference(st_alex: torch.nn.Module) -> None:
    # split_reference: the reference's pass needs no gradient, so autograd saves only the reconstruction's
    # activations (about half of PLAIN's); both inputs still get gradients if both ask
    a, b = photos(2, size=96), photos(2, size=96, seed=4)
    saved = {}
    for name, execution in (("plain", perceptual.PLAIN), ("fast", perceptual.FAST)):
        st_alex.execution = execution
        total = [0]

        def pack(t: torch.Tensor, total: list[int] = total) -> torch.Tensor:
            total[0] += t.numel()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            st_alex(a.clone().requires_grad_(True), b).sum()
        saved[name] = total[0]
    assert saved["fast"] < 0.6 * saved["plain"]
    grads = []
    for execution in (perceptual.PLAIN, perceptual.FAST):
        st_alex.execution = execution
        x, y = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
        st_alex(x, y).sum().backward()
        grads.append((x.grad, y.grad))
    for g0, g1 in zip(*grads, strict=True):
        assert g1 is not None and _close_gradients(g1, g0)


@needs_stlpips
def test_fast_execution_of_st_lpips_vgg() -> None:
    vgg = perceptual.load_perceptual("stlpips-vgg")
    a, b = photos(1, size=48), photos(1, size=48, seed=3)
    d0, g0 = _distance_and_grad(vgg, perceptual.PLAIN, a, b)
    d1, g1 = _distance_and_grad(vgg, perceptual.FAST, a, b)
    assert torch.allclose(d1, d0, rtol=1e-5) and _close_gradients(g1, g0)


def test_missing_package_names_the_pip_command(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(ModelUnavailableError) as info:
        perceptual.load_perceptual("stlpips-alex")
    assert "stlpips-pytorch==0.0.2" in info.value.hint and "--perceptual none" in info.value.hint


def _fake_lpips_files(tmp_path: Path) -> tuple[Path, Path]:
    """Random weights in the layouts of torchvision's AlexNet and lpips' alex.pth (linear heads)."""
    g = torch.Generator().manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    trunk = {}
    for idx, shape in shapes.items():
        trunk[f"features.{idx}.weight"] = torch.randn(shape, generator=g) * 0.05
        trunk[f"features.{idx}.bias"] = torch.zeros(shape[0])
    trunk["classifier.1.weight"] = torch.zeros(4, 4)  # ignored
    heads = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in
             enumerate((64, 192, 384, 256, 256))}
    trunk_path, heads_path = tmp_path / "alexnet.pth", tmp_path / "alex.pth"
    torch.save(trunk, trunk_path)
    torch.save(heads, heads_path)
    return trunk_path, heads_path


def test_standard_lpips_from_local_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    trunk, heads = _fake_lpips_files(tmp_path)
    monkeypatch.setenv(perceptual.LPIPS_ENV, f"{trunk}{os.pathsep}{heads}")
    assert perceptual.resolve_kind("auto") == "lpips-alex"
    net = perceptual.load_perceptual("auto")
    a, b = photos(2, size=96), photos(2, size=96, seed=9)
    with torch.no_grad():
        assert net.kind == "lpips-alex"
        assert torch.all(net(a, a).abs() < 1e-6) and torch.all(net(a, b) > 0)
        fast = net(a, b)
        net.execution = perceptual.PLAIN
        assert torch.allclose(fast, net(a, b), rtol=1e-5)
    assert torch.equal(net.trunk.conv2.weight, torch.load(trunk, weights_only=True)["features.3.weight"])


def test_standard_lpips_rejects_incomplete_or_hostile_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trunk, _ = _fake_lpips_files(tmp_path)
    monkeypatch.setenv(perceptual.LPIPS_ENV, str(trunk))  # no linear heads
    with pytest.raises(ModelMismatchError, match="missing perceptual weights"):
        perceptual.load_perceptual("lpips-alex")
    hostile = tmp_path / "hostile.pth"
    torch.save({"x": Path("/")}, hostile)  # a pickled object, refused by weights_only loading
    monkeypatch.setenv(perceptual.LPIPS_ENV, str(hostile))
    with pytest.raises(ModelMismatchError, match="not a loadable weights file"):
        perceptual.load_perceptual("lpips-alex")
    monkeypatch.setenv(perceptual.LPIPS_ENV, str(tmp_path / "absent.pth"))
    with pytest.raises(ModelUnavailableError, match="does not exist"):
        perceptual.load_perceptual("lpips-alex")
    monkeypatch.delenv(perceptual.LPIPS_ENV)
    assert perceptual.resolve_kind("auto") == "stlpips-alex"


def test_training_without_the_package_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from hificli.cli.app import main

    def absent(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    sample_image(160, 160).save(tmp_path / "a.png")
    with pytest.raises(SystemExit) as info:
        main(["train", str(tmp_path), "--arch", "tiny", "--crop", "128", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert info.value.code == 4
    assert "pip install 'stlpips-pytorch==0.0.2'" in err and "--perceptual none" in err


def test_importing_the_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, hificli.perceptual; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
