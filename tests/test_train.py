"""`hific train`: both stages fit, exact resume, torchrun on CPU, Ctrl-C, run dirs usable by the codec.

Runs use the tiny preset on 128 px crops of small synthetic images (one thread, a few dozen steps).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import pytest
import torch
from model_fixtures import sample_image
from PIL import Image

from hificli.cli.app import main
from hificli.train import data as D
from hificli.train.schedule import REGIMES, make_schedule

FAST = ["--arch", "tiny", "--crop", "128", "--batch-size", "2", "--workers", "0", "--threads", "1"]


def has_stlpips() -> bool:
    try:
        metadata.distribution("stlpips-pytorch")
        return True
    except metadata.PackageNotFoundError:
        return False


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """Run ``hific ARGS`` in-process through the real entry point: (exit code, stderr)."""
    with pytest.raises(SystemExit) as info:
        main(args)
    return int(info.value.code or 0), capsys.readouterr().err


def log_records(run: Path, kind: str = "train") -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def early_late(values: list[float], n: int = 5) -> tuple[float, float]:
    return sum(values[:n]) / n, sum(values[-n:]) / n


def state_of(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    (root / "nested").mkdir()
    sample_image(200, 160, seed=1).save(root / "a.png")
    sample_image(180, 150, seed=2).save(root / "nested" / "b.jpg", quality=95)
    sample_image(90, 70, seed=3).save(root / "small.webp")  # below the crop: upscaled
    (root / "broken.png").write_bytes(b"not an image")
    (root / "notes.txt").write_text("ignored")
    return root


@pytest.fixture(scope="module")
def base_run(images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny base-stage run that overfits one batch (30 steps, log every step)."""
    out = tmp_path_factory.mktemp("runs") / "base-run"
    with pytest.raises(SystemExit) as info:
        main(["--quiet", "train", str(images), *FAST, "--steps", "30", "--out", str(out), "--perceptual", "none",
              "--overfit", "--lr", "2e-3", "--log-every", "1", "--save-every", "0"])
    assert info.value.code == 0
    return out


def test_base_stage_lowers_the_loss(base_run: Path) -> None:
    records = log_records(base_run)
    assert [r["step"] for r in records] == list(range(1, 31))
    first, last = early_late([r["loss"] for r in records])
    assert last < 0.7 * first
    d_first, d_last = early_late([r["distortion"] for r in records])
    assert d_last < d_first
    for r in records:
        assert r["d_loss"] is None and r["perceptual"] is None and r["bpp"] > 0 and r["step_time"] > 0


def test_run_dir_layout_and_checkpoint_format(base_run: Path) -> None:
    from hificli.checkpoint import read_port_checkpoint
    from hificli.models.config import PRESETS
    from hificli.weights import read_weights_info

    ckpt = state_of(base_run)  # weights_only: plain tensors and containers
    assert ckpt["steps"] == 30 and ckpt["format"] == "hific-train"
    assert any(k.startswith("Encoder.conv_block1.") for k in ckpt["model_state_dict"])
    assert {"compression_optimizer_state_dict", "hyperprior_optimizer_state_dict"} <= set(ckpt)
    args = ckpt["args"]
    assert args["perceptual"] == "none" and args["model_type"] == "compression" and args["regime"] == "med"
    assert args["target_rate"] == REGIMES["med"].target_bpp
    port = read_port_checkpoint(base_run / "checkpoint.pt")  # the lead's port reader accepts our runs
    assert port.config == PRESETS["tiny"] and port.steps == 30
    info = read_weights_info(base_run / "weights.safetensors")
    assert info.model_id == "base-run" and info.config == PRESETS["tiny"]
    assert info.meta["perceptual"] == "none" and info.meta["stage"] == "base" and info.meta["steps"] == 30


def test_gan_stage_warm_starts_and_lowers_the_loss(images: Path, tmp_path: Path, capsys) -> None:
    base, out = tmp_path / "short-base", tmp_path / "gan"
    code, err = run_cli(["--quiet", "train", str(images), *FAST, "--steps", "4", "--out", str(base), "--perceptual",
                         "none", "--lr", "2e-3"], capsys)
    assert code == 0, err
    code, err = run_cli(["train", str(images), "--stage", "gan", "--init", str(base), "--crop", "128",
                         "--batch-size", "2", "--workers", "0", "--threads", "1", "--steps", "12", "--out", str(out),
                         "--perceptual", "none", "--overfit", "--lr", "2e-3", "--log-every", "1",
                         "--save-every", "0", "--name", "gan-test"], capsys)
    assert code == 0, err
    records = log_records(out)
    first, last = early_late([r["loss"] for r in records], 4)
    assert last < 0.8 * first
    assert all(r["d_loss"] > 0 and r["g_loss"] > 0 for r in records)
    ckpt = state_of(out)
    assert ckpt["args"]["model_type"] == "compression_gan" and "discriminator_optimizer_state_dict" in ckpt
    assert any(k.startswith("Discriminator.conv1.weight_orig") for k in ckpt["model_state_dict"])
    start = state_of(base)["model_state_dict"]
    assert not torch.equal(ckpt["model_state_dict"]["Encoder.conv_block1.1.weight"],
                           start["Encoder.conv_block1.1.weight"])  # trained on from the base weights


def test_mixed_precision_path_trains_both_stages_on_cpu(images: Path, tmp_path: Path, capsys) -> None:
    """``--amp bf16`` runs the autocast code that CUDA runs by default (no GPU needed): the rates stay in
    float32, the loss falls, the GAN stage's D and G losses are finite."""
    base, gan = tmp_path / "bf16-base", tmp_path / "bf16-gan"
    code, err = run_cli(["--quiet", "train", str(images), *FAST, "--steps", "20", "--out", str(base), "--perceptual",
                         "none", "--overfit", "--lr", "2e-3", "--log-every", "1", "--save-every", "0",
                         "--amp", "bf16"], capsys)
    assert code == 0, err
    records = log_records(base)
    first, last = early_late([r["loss"] for r in records])
    assert last < 0.8 * first and all(r["bpp"] > 0 for r in records)
    code, err = run_cli(["--quiet", "train", str(images), *FAST, "--stage", "gan", "--init", str(base), "--steps", "4",
                         "--out", str(gan), "--perceptual", "none", "--log-every", "1", "--save-every", "0",
                         "--amp", "bf16"], capsys)
    assert code == 0, err
    assert all(r["d_loss"] > 0 and r["g_loss"] > 0 and r["loss"] < 1e6 for r in log_records(gan))


def test_resume_equals_an_uninterrupted_run(base_run: Path, images: Path, tmp_path: Path, capsys) -> None:
    # with ST-LPIPS on random 64 px windows when available: the windows must replay too
    lpips = ["stlpips-alex", "--perceptual-crop", "64"] if has_stlpips() else ["none"]
    common = ["train", str(images), "--stage", "gan", "--init", str(base_run), "--crop", "128", "--batch-size",
              "2", "--workers", "1", "--threads", "1", "--perceptual", *lpips, "--warmup-steps", "1",
              "--lr-drop-step", "3", "--save-every", "0", "--log-every", "1"]
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert run_cli([*common, "--steps", "4", "--out", str(straight)], capsys)[0] == 0
    assert run_cli([*common, "--steps", "2", "--out", str(split)], capsys)[0] == 0
    assert state_of(split)["steps"] == 2
    code, err = run_cli(["train", "--resume", str(split), "--steps", "4"], capsys)
    assert code == 0, err
    a, b = state_of(straight), state_of(split)
    assert b["steps"] == 4
    for key, value in a["model_state_dict"].items():
        assert torch.allclose(value, b["model_state_dict"][key], rtol=0, atol=1e-6), key
    assert [r["step"] for r in log_records(split)] == [1, 2, 3, 4]
    assert log_records(split)[-1]["loss"] == pytest.approx(log_records(straight)[-1]["loss"], rel=1e-6)


def test_init_from_an_inference_weights_file(base_run: Path, images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "from-weights"
    code, err = run_cli(["train", str(images), "--stage", "gan", "--init", str(base_run / "weights.safetensors"),
                         "--crop", "128", "--batch-size", "2", "--workers", "0", "--threads", "1", "--steps", "1",
                         "--lr", "0", "--perceptual", "none", "--out", str(out)], capsys)
    assert code == 0, err
    before, after = state_of(base_run)["model_state_dict"], state_of(out)["model_state_dict"]
    for key in ("Encoder.conv_block1.1.weight", "Hyperprior.hyperlatent_likelihood.H_0"):
        assert torch.equal(before[key], after[key])  # lr 0: the loaded weights unchanged


def test_resume_refuses_changed_settings(base_run: Path, capsys) -> None:
    code, err = run_cli(["train", "--resume", str(base_run), "--regime", "low"], capsys)
    assert code == 1 and "cannot change --regime" in err


def test_cli_errors(images: Path, base_run: Path, tmp_path: Path, capsys) -> None:
    assert run_cli(["train", str(images)], capsys)[0] == 2  # no --out
    code, err = run_cli(["train", str(images), *FAST, "--crop", "200", "--out", str(tmp_path / "x")], capsys)
    assert code == 2 and "multiple of 64" in err
    code, err = run_cli(["train", str(images), *FAST, "--perceptual-crop", "32", "--out", str(tmp_path / "x")],
                        capsys)
    assert code == 2 and "--perceptual-crop" in err
    code, err = run_cli(["train", str(images), *FAST, "--out", str(base_run)], capsys)
    assert code == 5 and "--resume" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    code, err = run_cli(["train", str(empty), *FAST, "--out", str(tmp_path / "y")], capsys)
    assert code == 3 and "no images" in err
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"PK\x03\x04 not really a checkpoint")
    code, err = run_cli(["train", str(images), *FAST, "--init", str(bad), "--out", str(tmp_path / "z")], capsys)
    assert code == 4
    code, err = run_cli(["train", str(images), "--arch", "small", "--init", str(base_run), "--crop", "128",
                         "--out", str(tmp_path / "w")], capsys)
    assert code == 4 and "--arch small does not match" in err


@pytest.mark.skipif(not has_stlpips(), reason="stlpips-pytorch is not installed")
def test_perceptual_loss_is_trained_and_recorded(images: Path, tmp_path: Path, capsys) -> None:
    from hificli.weights import read_weights_info

    out = tmp_path / "lp"
    code, err = run_cli(["train", str(images), *FAST, "--steps", "3", "--out", str(out), "--perceptual",
                         "stlpips-alex", "--log-every", "1", "--val", str(images), "--val-every", "2"], capsys)
    assert code == 0, err
    assert all(r["perceptual"] > 0 for r in log_records(out))
    val = log_records(out, "val")
    assert [r["step"] for r in val] == [2, 3] and all(r["psnr"] > 0 and r["perceptual"] > 0 for r in val)
    assert sorted(p.name for p in (out / "val" / "step_0000003").iterdir()) == ["a.png", "b.png", "small.png"]
    assert state_of(out)["args"]["perceptual"] == "stlpips-alex"
    assert read_weights_info(out / "weights.safetensors").meta["perceptual"] == "stlpips-alex"


def test_trained_run_encodes_and_decodes_through_the_cli(base_run: Path, tmp_path: Path, capsys) -> None:
    source = tmp_path / "in.png"
    sample_image(150, 130, seed=7).save(source)
    hfc, png = tmp_path / "in.hfc", tmp_path / "out.png"
    for args in (["encode", "-m", str(base_run), str(source), "-o", str(hfc)],
                 ["decode", "-m", str(base_run), str(hfc), "-o", str(png)]):
        code, err = run_cli(args, capsys)
        assert code == 0, err
    assert hfc.stat().st_size > 0
    with Image.open(png) as image:
        assert image.size == (150, 130)


def test_torchrun_two_cpu_processes(images: Path, tmp_path: Path) -> None:
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "hificli",
           "--quiet", "train", str(images), *FAST, "--steps", "2", "--out", str(out), "--perceptual", "none",
           "--device", "cpu", "--log-every", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = state_of(out)
    assert ckpt["steps"] == 2 and ckpt["world"] == 2 and len(ckpt["rng"]) == 2
    assert not torch.equal(ckpt["rng"][0]["torch"], ckpt["rng"][1]["torch"])  # per-process noise streams
    assert [r["step"] for r in log_records(out)] == [1, 2]


def test_ctrl_c_saves_a_checkpoint_and_exits_130(images: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "stopped"
    cmd = [sys.executable, "-m", "hificli", "train", str(images), *FAST, "--workers", "1", "--steps", "100000",
           "--out", str(out), "--perceptual", "none", "--log-every", "1"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 60
        while not (out / "log.jsonl").exists() or not (out / "log.jsonl").read_text():
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole process group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "--resume" in err
    stopped = state_of(out)["steps"]
    assert 1 <= stopped < 100000
    code, err = run_cli(["--quiet", "train", "--resume", str(out), "--steps", str(stopped + 2)], capsys)
    assert code == 0, err
    assert state_of(out)["steps"] == stopped + 2


# -- library pieces --------------------------------------------------------------------------------


def test_images_are_found_recursively_and_bad_files_skipped_once(images: Path) -> None:
    files = D.find_images(images)
    assert sorted(p.name for p in files) == ["a.png", "b.jpg", "broken.png", "small.webp"]
    warnings: list[str] = []
    pool = D.ImagePool(files, warn=warnings.append)
    assert len(pool) == 3 and pool.in_memory
    assert len(warnings) == 1 and "broken.png" in warnings[0]
    lazy = D.ImagePool(files, cache_mb=0, warn=lambda m: None)
    assert not lazy.in_memory and len(lazy) == 3


def test_crops_are_deterministic_and_cover_small_images(images: Path) -> None:
    pool = D.ImagePool(D.find_images(images), warn=lambda m: None)
    ds = D.CropDataset(pool, D.CropSpec(crop=128), seed=3)
    first = [ds[i] for i in range(9)]
    again = D.CropDataset(pool, D.CropSpec(crop=128), seed=3)
    assert all(torch.equal(a, again[i]) for i, a in enumerate(first))
    assert all(t.shape == (3, 128, 128) and t.dtype == torch.uint8 for t in first)
    assert not torch.equal(first[0], first[3])
    small = D.ImagePool([images / "small.webp"], warn=lambda m: None)  # 90x70: upscaled to cover the crop
    crop = D.CropDataset(small, D.CropSpec(crop=128), seed=0)[0]
    assert crop.shape == (3, 128, 128) and crop.float().std() > 5
    other = D.CropDataset(pool, D.CropSpec(crop=128), seed=4)
    assert not all(torch.equal(a, other[i]) for i, a in enumerate(first))


def test_batches_shard_the_global_stream() -> None:
    single = list(D.StepBatchSampler(3, 5, 4, world=1))
    r0 = list(D.StepBatchSampler(3, 5, 2, world=2, rank=0))
    r1 = list(D.StepBatchSampler(3, 5, 2, world=2, rank=1))
    assert [a + b for a, b in zip(r0, r1, strict=True)] == single
    assert list(D.StepBatchSampler(3, 5, 2, fixed=True)) == [[0, 1], [0, 1]]


def test_validation_split_and_crops(images: Path, tmp_path: Path) -> None:
    files = [tmp_path / f"{i}.png" for i in range(40)]
    train, val = D.split_validation(files, 0.05)
    assert len(val) == 2 and len(train) == 38 and not set(train) & set(val)
    assert D.split_validation(files[:5], 0.05) == (files[:5], [])
    loaded = D.load_validation(D.find_images(images), max_side=128, warn=lambda m: None)
    assert [name for name, _ in loaded] == ["a", "b", "small"]
    assert all(t.shape[1] % 64 == 0 and t.shape[2] % 64 == 0 and max(t.shape) <= 128 for _, t in loaded)


def test_schedule_defaults_follow_the_paper_and_scale_down() -> None:
    paper = make_schedule(regime="low", stage="base", steps=1_000_000)
    assert (paper.warmup_steps, paper.lr_drop_step, paper.lr) == (50_000, 500_000, 1e-4)
    assert (paper.target_bpp, paper.lambda_a, paper.lambda_b) == (0.14, 2.0, 2.0**-4)
    assert paper.k_m == pytest.approx(0.075 * 2**-5) and paper.k_p == 1.0 and paper.beta == 0.15
    assert paper.rate_weights_at(0) == pytest.approx((4.0, 2.0**-3, 0.20))
    assert paper.rate_weights_at(50_000) == (2.0, 2.0**-4, 0.14)
    assert paper.lr_at(499_999) == 1e-4 and paper.lr_at(500_000) == pytest.approx(1e-5)
    short = make_schedule(regime="high", stage="base", steps=10_000, lr=3e-4, target_bpp=0.5)
    assert (short.warmup_steps, short.lr_drop_step, short.lr, short.target_bpp) == (500, 8500, 3e-4, 0.5)
    assert make_schedule(regime="med", stage="gan", steps=10_000).warmup_steps == 0


def test_rate_penalty_switches_on_the_hard_rate() -> None:
    from hificli.train.losses import rate_penalty

    assert rate_penalty(0.31, lambda_a=1.0, lambda_b=0.0625, target_bpp=0.30) == 1.0
    assert rate_penalty(0.30, lambda_a=1.0, lambda_b=0.0625, target_bpp=0.30) == 0.0625
