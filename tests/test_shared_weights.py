"""A weights file that shares its entropy model with another one beside it (hificli.weights.save_sharing):
stored alone, loaded as the merged model, refused when its partner is missing or changed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from model_fixtures import make_tiny_weights, sample_image
from safetensors.numpy import load_file

from hificli.errors import ModelMismatchError
from hificli.weights import (
    build_network,
    check_fingerprint,
    read_tables,
    read_verified,
    save_inference_weights,
    save_sharing,
    split_tensors,
)

ROOT = Path(__file__).resolve().parents[1]
CONTEXT = {"context": "channel", "context_channels": 8}


def retrained(base: Path, seed: int = 1) -> dict[str, np.ndarray]:
    """The base's encoder and decoder, perturbed (what a --freeze-prior run changes), float16-exact."""
    network, _, _ = split_tensors(read_verified(base)[0])
    rng = np.random.default_rng(seed)
    return {k: (v * (1 + 0.05 * rng.standard_normal(v.shape))).astype(np.float16).astype(np.float32)
            for k, v in network.items() if k.startswith(("Encoder.", "Generator."))}


@pytest.fixture()
def pair(tmp_path: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    base = make_tiny_weights(tmp_path / "zoo" / "test-base.safetensors", seed=3, model_id="test-base",
                             rate_levels=4, **CONTEXT)
    own = retrained(base)
    shared = tmp_path / "zoo" / "test-second.safetensors"
    save_sharing(base, own, shared, model_id="test-second", meta={"stage": "test"})
    return base, shared, own


def full_copy(base: Path, own: dict[str, np.ndarray], path: Path) -> Path:
    """The same second model written whole (every tensor), for comparison."""
    arrays, info = read_verified(base)
    model = build_network({**arrays, **own}, info, base)
    save_inference_weights(model, path, model_id="test-second", tables=read_tables(arrays, base))
    return path


def test_stores_only_its_own_tensors_and_loads_as_the_merged_model(pair, tmp_path: Path) -> None:
    base, shared, own = pair
    stored = split_tensors(load_file(str(shared)))
    assert set(stored[0]) == set(own) and not stored[1] and not stored[2]  # no tables, no realism
    assert shared.stat().st_size < 0.6 * base.stat().st_size
    arrays, info = read_verified(shared)
    base_arrays, base_info = read_verified(base)
    assert set(arrays) == set(base_arrays)
    assert all(np.array_equal(arrays[k], base_arrays[k]) for k in base_arrays if not k.startswith(tuple({*own})))
    whole = full_copy(base, own, tmp_path / "whole" / "test-second.safetensors")
    assert info.fingerprint == read_verified(whole)[1].fingerprint != base_info.fingerprint
    assert info.n_params == base_info.n_params  # shared parameters count (memory estimates)
    assert check_fingerprint(shared).fingerprint == info.fingerprint


def test_the_cli_encodes_and_decodes_with_it_as_with_the_whole_file(pair, tmp_path: Path, capsys) -> None:
    base, shared, own = pair
    whole = full_copy(base, own, tmp_path / "whole" / "test-second.safetensors")
    source = tmp_path / "in.png"
    sample_image(130, 100, seed=5).save(source)
    files = {}
    for name, weights in (("shared", shared), ("whole", whole)):
        hfc, png = tmp_path / f"{name}.hfc", tmp_path / f"{name}.png"
        for args in (["encode", "-m", str(weights), "-q", "40", str(source), "-o", str(hfc)],
                     ["decode", "-m", str(weights), str(hfc), "-o", str(png)]):
            code, _, err = run_cli(args, capsys)
            assert code == 0, err
        files[name] = (hfc.read_bytes(), png.read_bytes())
    assert files["shared"] == files["whole"]
    code, _, err = run_cli(["decode", "-m", str(base), str(tmp_path / "shared.hfc"), "-o", str(tmp_path / "x.png")],
                           capsys)
    assert code == 4 and "test-second" in err  # another model's file is refused, not decoded


def test_refused_without_its_partner_or_with_a_changed_one(pair, tmp_path: Path, capsys) -> None:
    base, shared, _ = pair
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(shared, alone / shared.name)
    with pytest.raises(ModelMismatchError, match="not beside it"):
        read_verified(alone / shared.name)
    code, _, err = run_cli(["encode", "-m", str(alone / shared.name), str(base), "-o", str(tmp_path / "y.hfc")],
                           capsys)
    assert code == 4 and "test-base.safetensors" in err
    other = make_tiny_weights(alone / "test-base.safetensors", seed=9, model_id="test-base", rate_levels=4, **CONTEXT)
    assert other.exists()
    with pytest.raises(ModelMismatchError, match="made to share"):
        read_verified(alone / shared.name)


def test_only_whole_modules_of_the_base_can_be_replaced(pair, tmp_path: Path) -> None:
    base, _, own = pair
    part = dict(list(own.items())[:1])
    with pytest.raises(ModelMismatchError, match="whole modules"):
        save_sharing(base, part, tmp_path / "zoo" / "bad.safetensors", model_id="bad")


def test_ship_perceptual_refuses_a_run_whose_prior_moved(pair, tmp_path: Path) -> None:
    base, _, own = pair
    arrays, info = read_verified(base)
    moved = {k: (v + 0.01 if k.startswith("Hyperprior.") and v.dtype == np.float32 else v)
             for k, v in arrays.items()}
    source = full_copy(base, own, tmp_path / "kept" / "test-second.safetensors")

    bad = tmp_path / "moved.safetensors"
    save_inference_weights(build_network({**moved, **own}, info, base), bad, model_id="test-second")
    script = [sys.executable, str(ROOT / "scripts" / "ship_perceptual.py"), "--base", str(base),
              "--model-id", "test-ship"]
    done = subprocess.run([*script, str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "differs" in done.stderr
    done = subprocess.run([*script, str(source), str(source)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    shipped = base.parent / "test-ship.safetensors"
    arrays, _ = read_verified(shipped)
    assert all(np.array_equal(arrays[k], v) for k, v in own.items())
