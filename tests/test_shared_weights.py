"""A weights file that shares its entropy model with another one beside it (hificli.weights.save_sharing):
stored alone, loaded as the merged model, refused when its partner is missing or changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli
from latent_hashes import latent_hash
from model_fixtures import make_tiny_weights, sample_image
from PIL import Image
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


GOLDEN = Path(__file__).resolve().parent / "expected" / "shared"
GOLDEN_INDEX = GOLDEN / "golden-second.json"


def _regenerate_golden() -> None:
    """HIFIC_REGEN_GOLDEN=1: rebuild the golden pair, its file and hashes (review the diff!)."""
    import hificli
    from hificli.api import encode

    GOLDEN.mkdir(parents=True, exist_ok=True)
    base = make_tiny_weights(GOLDEN / "golden-base.safetensors", seed=21, model_id="golden-base", rate_levels=4,
                             **CONTEXT)
    shared = GOLDEN / "golden-second.safetensors"
    info = save_sharing(base, retrained(base, seed=22), shared, model_id="golden-second")
    model = hificli.load_model(shared)
    data = encode(sample_image(96, 80, seed=23), model, quality=50)
    (GOLDEN / "golden-second-q50.hfc").write_bytes(data)
    index = {"fingerprint": info.fingerprint_hex, "golden-second-q50.hfc": latent_hash(data, model)}
    GOLDEN_INDEX.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def test_golden_sharing_file_loads_and_decodes_to_recorded_latents() -> None:
    import hificli

    if os.environ.get("HIFIC_REGEN_GOLDEN") == "1":
        _regenerate_golden()
    index = json.loads(GOLDEN_INDEX.read_text())
    model = hificli.load_model(GOLDEN / "golden-second.safetensors")
    assert model.fingerprint.hex() == index["fingerprint"]
    assert latent_hash((GOLDEN / "golden-second-q50.hfc").read_bytes(), model) == index["golden-second-q50.hfc"]


def test_the_embedded_perceptual_model_shares_the_default_entropy_model(tmp_path: Path, capsys) -> None:
    from hificli.weights import read_weights_info
    from hificli.zoo import registry

    path = registry.embedded_path(registry.get(registry.PERCEPTUAL_MODEL))
    default = registry.embedded_path(registry.get(registry.DEFAULT_MODEL))
    shares = read_weights_info(path).shares
    assert shares["model_id"] == registry.DEFAULT_MODEL
    assert shares["fingerprint"] == read_weights_info(default).fingerprint_hex
    assert path.stat().st_size < 2.5 * 2**20
    source = tmp_path / "p.png"
    sample_image(96, 64, seed=8).save(source)
    hfc = tmp_path / "p.hfc"
    code, _, err = run_cli(["encode", "-m", registry.PERCEPTUAL_MODEL, "-q", "30", str(source), "-o", str(hfc)],
                           capsys)
    assert code == 0, err
    code, _, err = run_cli(["decode", str(hfc), "-o", str(tmp_path / "p-out.png")], capsys)  # model from the file
    assert code == 0, err
    with Image.open(tmp_path / "p-out.png") as image:
        assert image.size == (96, 64)
    code, _, err = run_cli(["decode", str(hfc), "--realism", "1", "-o", str(tmp_path / "r.png")], capsys)
    assert code == 4 and "realism" in err  # it has no realism decoder: refused, not decoded faithfully


def test_models_import_makes_a_standalone_copy(pair, tmp_path: Path, capsys, monkeypatch) -> None:
    from hificli.weights import read_weights_info

    _, shared, _ = pair
    monkeypatch.setenv("HIFIC_CACHE_DIR", str(tmp_path / "cache"))
    code, _, err = run_cli(["models", "import", "my-second", str(shared)], capsys)
    assert code == 0, err
    installed = tmp_path / "cache" / "models" / "my-second" / "weights.safetensors"
    assert read_weights_info(installed).shares is None  # the cache holds every tensor: no partner needed there
    assert read_weights_info(installed).fingerprint == read_weights_info(shared).fingerprint
    assert read_verified(installed)[1].fingerprint == read_weights_info(shared).fingerprint
