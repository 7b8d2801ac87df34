"""Perceptual networks: ST-LPIPS from the stlpips-pytorch wheel's weights, standard LPIPS from a local file."""

from __future__ import annotations

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


def photos(n: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) smooth synthetic images in [0, 1]."""
    arrays = [np.asarray(sample_image(size, size, seed=seed + i)) for i in range(n)]
    return torch.stack([torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255.0 for a in arrays])


@pytest.fixture(scope="module")
def st_alex() -> torch.nn.Module:
    return perceptual.load_perceptual("stlpips-alex")


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
