"""`hific eval` through the CLI: JSON report, tables, matched images, plot, parallel runs, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from model_fixtures import make_tiny_weights, sample_image
from PIL import Image

from hificli.cli.app import cli
from hificli.eval import baselines as bl

JXL_OR_WEBP = "jxl" if bl.unavailable_reason("jxl") is None else "webp"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("eval")
    (root / "imgs").mkdir()
    sample_image(64, 48, seed=1).save(root / "imgs" / "a.png")
    sample_image(40, 56, seed=2).save(root / "imgs" / "b.png")
    (root / "imgs" / "notes.txt").write_text("not an image; ignored in a directory")
    make_tiny_weights(root / "tiny.safetensors")
    return root


def _run(args: list[str]):
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    return result


def _hific(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HIFIC_OFFLINE": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "hificli", *args], capture_output=True, text=True, env=full_env, timeout=300
    )


def _strict_json(path: Path) -> dict:
    def refuse(name: str):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def hific_run(data, tmp_path_factory) -> tuple[Path, str]:
    """One full run with the tiny model: JSON, saved images, CompressAI files (shared by several tests)."""
    out = tmp_path_factory.mktemp("run")
    args = [
        "eval", str(data / "imgs"), "-m", str(data / "tiny.safetensors"), "-b", f"jpeg,{JXL_OR_WEBP}",
        "-o", str(out / "r.json"), "--save-images", str(out / "saved"), "--compressai-dir", str(out / "cai"),
    ]
    result = _run(args)
    assert result.exit_code == 0, result.output
    return out, result.output


def test_baselines_only_json_follows_the_compressai_schema(data, tmp_path):
    result = _run(["eval", str(data / "imgs"), "--no-hific", "-b", "jpeg,webp", "--lpips", "none",
                   "-o", str(tmp_path / "r.json")])
    assert result.exit_code == 0, result.output
    report = _strict_json(tmp_path / "r.json")
    assert report["format"] == "hific-eval" and report["version"] == 1
    assert [c["name"] for c in report["codecs"]] == ["JPEG 4:2:0", "WebP"]
    for entry, key in zip(report["codecs"], ("jpeg", "webp"), strict=True):
        assert isinstance(entry["description"], str) and entry["description"]
        results = entry["results"]
        n = len(bl.get(key).sweep)
        for field in ("bpp", "psnr-rgb", "ms-ssim", "ms-ssim-rgb", "lpips", "encoding_time", "decoding_time"):
            assert len(results[field]) == n, field
        assert results["lpips"] == [None] * n
        assert results["quality"] == list(bl.get(key).sweep)
        assert all(0 < m <= 1 for m in results["ms-ssim"])
    assert report["metrics"]["lpips"] == "LPIPS disabled (--lpips none)"
    # Per-image data, and bpp from the real file size: JPEG q=50 as Pillow writes it.
    assert [img["name"] for img in report["per_image"]] == ["a", "b"]
    point = next(p for p in report["per_image"][0]["sweeps"]["jpeg"] if p["setting"] == 50)
    buffer = io.BytesIO()
    Image.open(data / "imgs" / "a.png").convert("RGB").save(buffer, "JPEG", quality=50, optimize=True)
    assert point["bytes"] == len(buffer.getvalue())
    assert point["bpp"] == pytest.approx(8 * len(buffer.getvalue()) / (64 * 48))
    mean_bpp = report["codecs"][0]["results"]["bpp"][4]
    per_image_bpp = [img["sweeps"]["jpeg"][4]["bpp"] for img in report["per_image"]]
    assert mean_bpp == pytest.approx(np.mean(per_image_bpp))
    assert "Curves, mean over" in result.output and "JPEG 4:2:0" in result.output
    assert report["bd_rate"] == []  # no hific model, nothing to compare


def test_hific_is_measured_from_its_real_file_and_baselines_are_matched(data, hific_run):
    out, output = hific_run
    report = _strict_json(out / "r.json")
    assert list(report["models"]) == ["test-tiny"]
    assert report["models"]["test-tiny"]["name"] == str(data / "tiny.safetensors")
    from hificli import api

    model = api.load_model(str(data / "tiny.safetensors"))
    for image in report["per_image"]:
        source = Image.open(image["path"]).convert("RGB")
        size = len(api.encode(source, model))
        point = image["hific"]["test-tiny"]
        assert point["bytes"] == size
        assert point["bpp"] == pytest.approx(8 * size / (source.width * source.height))
        for key in ("jpeg", JXL_OR_WEBP):
            matched = image["matched"]["test-tiny"][key]
            assert matched["target_bpp"] == point["bpp"]
            saved = Image.open(matched["file"])
            assert saved.size == source.size
            encoded = bl.get(key).encode(np.asarray(source), matched["setting"])
            assert matched["bytes"] == len(encoded)
        assert Image.open(point["file"]).size == source.size
        assert Image.open(out / "saved" / image["name"] / "original.png").size == source.size
    for line in ("Per image", "Mean / median over 2 image(s)", "BD-rate", "LPIPS:"):
        assert line in output


def test_bd_rates_are_reported_per_model_baseline_and_metric(hific_run):
    out, _ = hific_run
    report = _strict_json(out / "r.json")
    rows = {(r["test"], r["anchor"], r["metric"]): r for r in report["bd_rate"]}
    metrics = ("psnr-rgb", "ms-ssim", "lpips")
    assert set(rows) == {("test-tiny", k, m) for k in ("jpeg", JXL_OR_WEBP) for m in metrics}
    for row in rows.values():
        assert row["n"] == 2 and set(row["per_image_pct"]) == {"a", "b"}
        # Each image either has a value or says why not.
        for name, value in row["per_image_pct"].items():
            assert (value is None) == (name in row["reasons"])
        assert row["n_valid"] == sum(v is not None for v in row["per_image_pct"].values())


def test_compressai_files_are_one_per_codec(hific_run):
    out, _ = hific_run
    files = sorted(p.name for p in (out / "cai").iterdir())
    assert files == sorted(["test-tiny.json", "jpeg.json", f"{JXL_OR_WEBP}.json"])
    data = _strict_json(out / "cai" / "jpeg.json")
    assert set(data) == {"name", "description", "results"}
    assert len(data["results"]["bpp"]) == len(data["results"]["psnr-rgb"]) == len(bl.get("jpeg").sweep)


def test_parallel_workers_give_the_same_results_in_input_order(data, hific_run, tmp_path):
    out, _ = hific_run
    result = _run(["--quiet", "eval", str(data / "imgs"), "-m", str(data / "tiny.safetensors"), "-b", "jpeg",
                   "-j", "2", "-o", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert result.output == ""  # -q: no tables

    def measurements(report: dict) -> list:
        """Names, hific points and JPEG points of each image, without timings and file names."""
        varying = ("encoding_time", "decoding_time", "file")
        images = []
        for image in report["per_image"]:
            matched = [by_model["jpeg"] for by_model in image["matched"].values()]
            points = [*image["hific"].values(), *image["sweeps"]["jpeg"], *matched]
            kept = [{k: v for k, v in p.items() if k not in varying} for p in points]
            images.append([image["name"], *kept])
        return images

    parallel = measurements(_strict_json(tmp_path / "p.json"))
    assert [image[0] for image in parallel] == ["a", "b"]
    assert parallel == measurements(_strict_json(out / "r.json"))


def test_plot_file_is_written(data, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "rd.png"
    result = _run(["eval", str(data / "imgs" / "a.png"), "--no-hific", "-b", "jpeg,webp", "--lpips", "none",
                   "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(plot) as image:
        assert image.width > 400 and image.height > 200


def test_absent_optional_libraries_skip_a_baseline_and_fail_only_plot(data, tmp_path):
    shadow = tmp_path / "shadow"
    for module in ("imagecodecs", "matplotlib"):
        (shadow / module).mkdir(parents=True)
        (shadow / module / "__init__.py").write_text(f"raise ImportError('no {module} here')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(shadow), os.getcwd()])}
    image = str(data / "imgs" / "a.png")
    run = _hific(["eval", image, "--no-hific", "-b", "jpeg,jxl", "--lpips", "none", "-o",
                  str(tmp_path / "r.json")], env)
    assert run.returncode == 0, run.stderr
    assert "skipping jxl: imagecodecs is not installed" in run.stderr
    report = _strict_json(tmp_path / "r.json")
    assert "jxl" in report["skipped"] and [c["name"] for c in report["codecs"]] == ["JPEG 4:2:0"]
    run = _hific(["eval", image, "--no-hific", "-b", "jpeg", "--plot", str(tmp_path / "rd.png"),
                  "-o", str(tmp_path / "r2.json")], env)
    assert run.returncode == 1
    assert "error: --plot needs matplotlib" in run.stderr and "hint:" in run.stderr
    assert not (tmp_path / "r2.json").exists()  # refused before any work


def test_exit_codes(data, tmp_path):
    image = str(data / "imgs" / "a.png")
    missing = _hific(["eval", str(tmp_path / "missing.png"), "--no-hific"])
    assert missing.returncode == 3 and "no such file" in missing.stderr
    (tmp_path / "bad.png").write_text("not a png")
    assert _hific(["eval", str(tmp_path / "bad.png"), "--no-hific"]).returncode == 3
    unknown = _hific(["eval", image, "--no-hific", "-b", "jpeg,bpg"])
    assert unknown.returncode == 2 and "unknown baseline(s) bpg" in unknown.stderr
    (tmp_path / "r.json").write_text("{}")
    exists = _hific(["eval", image, "--no-hific", "-o", str(tmp_path / "r.json")])
    assert exists.returncode == 5 and (tmp_path / "r.json").read_text() == "{}"
    bad_plot = _hific(["eval", image, "--no-hific", "--plot", str(tmp_path / "rd.txt")])
    assert bad_plot.returncode == 1 and "extension '.txt'" in bad_plot.stderr
    no_model = _hific(["eval", image, "-m", str(tmp_path / "nothing.safetensors"), "-b", "jpeg"])
    assert no_model.returncode == 4
    both = _hific(["eval", image, "-m", "x", "--no-hific"])
    assert both.returncode == 2


def test_help_lists_every_baseline_and_import_stays_light():
    from hificli.cli.eval import BASELINES_HELP

    assert [k.strip() for k in BASELINES_HELP.split(",")] == list(bl.BASELINES)
    code = "import sys, hificli.cli.eval; assert 'torch' not in sys.modules and 'numpy' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
    result = _run(["eval", "--help"])
    assert result.exit_code == 0 and "--save-images" in result.output and "BD-rate" in result.output


def test_no_sweep_lpips_measures_lpips_only_where_images_are_compared(data, tmp_path):
    pytest.importorskip("stlpips_pytorch")
    out = tmp_path / "r.json"
    args = ["eval", str(data / "imgs" / "a.png"), "-m", str(data / "tiny.safetensors"), "-b", "jpeg",
            "--lpips", "stlpips-alex", "--no-sweep-lpips", "-o", str(out)]
    result = _run(args)
    assert result.exit_code == 0, result.output
    image = _strict_json(out)["per_image"][0]
    assert image["hific"]["test-tiny"]["lpips"] is not None
    assert image["matched"]["test-tiny"]["jpeg"]["lpips"] is not None
    assert all(point["lpips"] is None for point in image["sweeps"]["jpeg"])
