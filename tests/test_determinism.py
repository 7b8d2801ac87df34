"""Bit-exact decoding: the same .hfc decodes to the same latents in any process and thread count,
the coded size matches the model's own estimate, and committed golden files keep decoding."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from latent_hashes import latent_hash
from model_fixtures import make_tiny_weights, sample_image

from hificli import container
from hificli.codec import encode_source, estimate_bits
from hificli.imageio import read_image

HERE = Path(__file__).parent
EXPECTED = HERE / "expected"
SAMPLE = HERE.parent / "hificli" / "assets" / "chelsea.png"


def run_hashes(*args: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": args[2]}
    out = subprocess.run(
        [sys.executable, str(HERE / "latent_hashes.py"), *args], capture_output=True, text=True, env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_latents_identical_across_processes_and_threads(tmp_path: Path) -> None:
    model = make_tiny_weights(tmp_path / "m.safetensors", seed=3)
    rng = np.random.default_rng(0)
    images = []
    for i in range(12):
        w, h = int(rng.integers(1, 300)), int(rng.integers(1, 300))
        path = tmp_path / f"img{i}.png"
        sample_image(w, h, seed=i).save(path)
        images.append(str(path))
    images.append(str(SAMPLE))
    out_dir = tmp_path / "hfc"
    out_dir.mkdir()
    encoded = run_hashes("encode", str(model), "1", str(out_dir), *images)
    assert encoded["threads"] == 1
    decoded = run_hashes("decode", str(model), "2", *map(str, sorted(out_dir.glob("*.hfc"))))
    assert decoded["threads"] == 2
    assert len(encoded["hashes"]) == len(images)
    assert decoded["hashes"] == encoded["hashes"]


def test_coded_size_matches_the_model_estimate(tmp_path: Path) -> None:
    import hificli

    model = hificli.load_model(make_tiny_weights(tmp_path / "m.safetensors"))
    for source in (read_image(SAMPLE), read_image(_png(tmp_path, 300, 200))):
        data = encode_source(source, model)
        hfc = container.unpack(data)
        coded = len(hfc.stream("z")) + len(hfc.stream("y"))
        estimate = estimate_bits(source, model)["total"] / 8
        assert abs(coded - estimate) <= 0.005 * estimate + 64, (coded, estimate)


def _png(tmp_path: Path, w: int, h: int) -> Path:
    path = tmp_path / f"s{w}x{h}.png"
    sample_image(w, h, seed=7).save(path)
    return path


GOLDEN_MODEL = EXPECTED / "golden-tiny.safetensors"
GOLDEN_INDEX = EXPECTED / "golden.json"
GOLDEN_SOURCES = {"chelsea": SAMPLE, "small-17x33": (17, 33), "gray-64x40": (64, 40)}


def _regenerate_golden() -> None:
    """HIFIC_REGEN_GOLDEN=1: rebuild the golden model, files and hashes (review the diff!)."""
    import hificli

    EXPECTED.mkdir(exist_ok=True)
    make_tiny_weights(GOLDEN_MODEL, seed=11, model_id="golden-tiny")
    model = hificli.load_model(GOLDEN_MODEL)
    index = {}
    for name, spec in GOLDEN_SOURCES.items():
        if isinstance(spec, Path):
            source = read_image(spec)
        else:
            image = sample_image(*spec, seed=5, mode="L" if name.startswith("gray") else "RGB")
            source = read_image(_to_png_bytes(image))
        data = encode_source(source, model)
        (EXPECTED / f"golden-{name}.hfc").write_bytes(data)
        index[f"golden-{name}.hfc"] = latent_hash(data, model)
    GOLDEN_INDEX.write_text(json.dumps(index, indent=1, sort_keys=True) + "\n")


def _to_png_bytes(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_golden_files_decode_to_recorded_latents() -> None:
    import hificli

    if os.environ.get("HIFIC_REGEN_GOLDEN") == "1":
        _regenerate_golden()
    if not GOLDEN_INDEX.exists():
        pytest.fail("golden files missing: run HIFIC_REGEN_GOLDEN=1 pytest tests/test_determinism.py")
    model = hificli.load_model(GOLDEN_MODEL)
    index = json.loads(GOLDEN_INDEX.read_text())
    assert len(index) == len(GOLDEN_SOURCES)
    for name, expected in index.items():
        assert latent_hash((EXPECTED / name).read_bytes(), model) == expected, name


def test_half_precision_weights_decode_identical_latents(tmp_path: Path) -> None:
    from model_fixtures import make_tiny_network

    import hificli
    from hificli.weights import save_inference_weights

    network = make_tiny_network(seed=4)
    full = save_inference_weights(network, tmp_path / "f32.safetensors", model_id="t")
    half = save_inference_weights(network, tmp_path / "f16.safetensors", model_id="t", half=True)
    assert half.half and not full.half
    assert half.fingerprint == full.fingerprint
    assert half.size < full.size
    model32 = hificli.load_model(tmp_path / "f32.safetensors")
    model16 = hificli.load_model(tmp_path / "f16.safetensors")
    data = encode_source(read_image(SAMPLE), model32)
    assert latent_hash(data, model16) == latent_hash(data, model32)
