"""Metrics, BD-rate and baseline codecs of ``hific eval`` against hand-computed values."""

from __future__ import annotations

import io
import json
import math
import sys

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from hificli.eval import baselines as bl
from hificli.eval.bdrate import bd_rate, monotone_curve, pchip_eval, pchip_integral, summarize
from hificli.eval.metrics import MS_SSIM_WEIGHTS, load_lpips, ms_ssim, ms_ssim_plan, psnr
from hificli.eval.report import ALL_MODELS, bd_rates, build_report, to_json
from hificli.eval.runner import ImageResult, Point

C1 = (0.01 * 255) ** 2
C2 = (0.03 * 255) ** 2


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([120 + 80 * np.sin(xx / 7 + c) * np.cos(yy / 9) for c in range(3)], axis=2)
    return np.clip(base + rng.normal(0, 8, (h, w, 3)), 0, 255).astype(np.uint8)


def _noisy(image: np.ndarray, sigma: float, seed: int = 1) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


# --- PSNR ----------------------------------------------------------------------------------------------


def test_psnr_of_a_known_error():
    a = np.random.default_rng(0).integers(10, 240, (20, 30, 3)).astype(np.uint8)
    assert psnr(a, a + 5) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)
    b = a.copy()
    b[::2] += 3  # half the rows off by 3: MSE = 9 / 2
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 4.5), abs=1e-12)
    assert psnr(a, a) == math.inf


def test_metrics_refuse_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="shapes differ"):
        ms_ssim(np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8))


# --- MS-SSIM -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("h", "w", "plan"), [
    (256, 256, (5, 11)), (161, 500, (5, 11)), (160, 160, (4, 11)), (48, 64, (3, 11)), (11, 30, (1, 11)),
    (10, 20, (1, 9)), (4, 4, (1, 3)), (1, 7, (1, 1)),
])
def test_ms_ssim_plan_uses_fewer_scales_for_small_images(h, w, plan):
    assert ms_ssim_plan(h, w) == plan


@pytest.mark.parametrize(("h", "w"), [(176, 200), (48, 64), (9, 7), (1, 1)])
def test_ms_ssim_of_identical_images_is_one(h, w):
    a = _image(h, w)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(("side", "weight"), [
    (256, MS_SSIM_WEIGHTS[4]),  # 5 scales: the standard weight of the last scale
    (64, MS_SSIM_WEIGHTS[2] / sum(MS_SSIM_WEIGHTS[:3])),  # 3 scales: weights renormalised
])
def test_ms_ssim_of_flat_images_is_the_luminance_term(side, weight):
    # Flat images have no contrast or structure: every cs term is 1 and only the luminance term of the
    # coarsest scale remains, raised to that scale's weight.
    a = np.full((side, side, 3), 100, np.uint8)
    b = np.full((side, side, 3), 110, np.uint8)
    luminance = (2 * 100 * 110 + C1) / (100**2 + 110**2 + C1)
    assert ms_ssim(a, b) == pytest.approx(luminance**weight, abs=1e-7)


def test_single_scale_matches_a_direct_ssim_computation():
    # A 9x9 image gets one scale with a 9-tap window: one window position covering the whole image.
    a = _image(9, 9, seed=3).astype(np.float64)
    b = _noisy(a.astype(np.uint8), 20).astype(np.float64)
    x = np.arange(9) - 4.0
    g = np.exp(-(x**2) / (2 * 1.5**2))
    window = np.outer(g, g) / np.outer(g, g).sum()
    values = []
    for c in range(3):
        p, q = a[:, :, c], b[:, :, c]
        mp, mq = (window * p).sum(), (window * q).sum()
        vp, vq = (window * p * p).sum() - mp**2, (window * q * q).sum() - mq**2
        cov = (window * p * q).sum() - mp * mq
        values.append((2 * mp * mq + C1) * (2 * cov + C2) / ((mp**2 + mq**2 + C1) * (vp + vq + C2)))
    expected = float(np.mean(np.maximum(values, 0)))
    assert ms_ssim(a.astype(np.uint8), b.astype(np.uint8)) == pytest.approx(expected, abs=1e-6)


def test_ms_ssim_falls_with_distortion_and_is_symmetric():
    a = _image(96, 128)
    scores = [ms_ssim(a, _noisy(a, sigma)) for sigma in (2, 10, 40)]
    assert 1.0 > scores[0] > scores[1] > scores[2] > 0.0
    b = _noisy(a, 10)
    assert ms_ssim(a, b) == pytest.approx(ms_ssim(b, a), abs=1e-6)


# --- BD-rate -------------------------------------------------------------------------------------------

RATES = [0.1, 0.2, 0.4, 0.8, 1.6]
PSNRS = [27.0, 30.5, 33.0, 35.0, 36.5]


@pytest.mark.parametrize("factor", [0.8, 1.25, 0.5])
def test_bd_rate_of_a_rate_scaled_curve(factor):
    result = bd_rate(RATES, PSNRS, [factor * r for r in RATES], PSNRS)
    assert result.valid and result.reason is None
    assert result.value == pytest.approx(factor - 1.0, abs=1e-12)
    assert result.interval == (27.0, 36.5)


def test_bd_rate_of_a_curve_against_itself_is_zero_and_inverse_is_consistent():
    assert bd_rate(RATES, PSNRS, RATES, PSNRS).value == pytest.approx(0.0, abs=1e-12)
    other = [0.12, 0.25, 0.45, 0.9]
    other_q = [28.0, 31.0, 33.5, 35.5]
    forward = bd_rate(RATES, PSNRS, other, other_q).value
    backward = bd_rate(other, other_q, RATES, PSNRS).value
    assert (1 + forward) * (1 + backward) == pytest.approx(1.0, abs=1e-12)


def test_bd_rate_without_overlap_is_nan_with_a_reason():
    result = bd_rate(RATES, PSNRS, [2.0, 3.0], [40.0, 42.0])
    assert math.isnan(result.value) and not result.valid
    assert "no overlap" in result.reason
    assert "1 usable point(s), needs 2" in bd_rate([0.1], [30.0], RATES, PSNRS).reason


def test_bd_rate_of_a_single_point_is_the_rate_difference_at_its_quality():
    # At a knot the interpolant is exact: 0.9 x the anchor's rate at 33 dB is -10 %.
    assert bd_rate(RATES, PSNRS, [0.36], [33.0]).value == pytest.approx(-0.1, abs=1e-12)
    outside = bd_rate(RATES, PSNRS, [0.05], [20.0])
    assert not outside.valid and "outside the anchor's range" in outside.reason


def test_pchip_is_exact_on_lines_and_integrates_exactly():
    x = np.array([0.0, 1.0, 2.5, 4.0])
    y = 3.0 * x - 1.0
    assert pchip_eval(x, y, 1.7) == pytest.approx(3.0 * 1.7 - 1.0, abs=1e-12)
    assert pchip_integral(x, y, 0.5, 3.0) == pytest.approx(1.5 * (3.0**2 - 0.5**2) - 2.5, abs=1e-12)
    # On curved data the exact integral equals a fine numerical integration of the interpolant.
    y = np.log(np.array([0.1, 0.3, 0.5, 1.4]))
    grid = np.linspace(0.3, 3.7, 20001)
    values = np.array([pchip_eval(x, y, t) for t in grid])
    numeric = float(np.sum((values[1:] + values[:-1]) / 2 * np.diff(grid)))
    assert pchip_integral(x, y, 0.3, 3.7) == pytest.approx(numeric, abs=1e-7)
    # Shape preservation: monotone data gives a monotone interpolant (no overshoot).
    assert np.all(np.diff(values) >= 0)


def test_monotone_curve_drops_points_that_do_not_improve():
    rates, qualities = monotone_curve([0.4, 0.1, 0.2, 0.3, 0.5, -1.0], [33.0, 28.0, 30.0, 29.0, math.nan, 40])
    assert rates.tolist() == [0.1, 0.2, 0.4]
    assert qualities.tolist() == [28.0, 30.0, 33.0]


def test_summarize_counts_valid_results():
    results = [bd_rate(RATES, PSNRS, [0.8 * r for r in RATES], PSNRS), bd_rate(RATES, PSNRS, [9.0], [50.0])]
    expected = {"mean": pytest.approx(-0.2), "median": pytest.approx(-0.2), "n_valid": 1, "n": 2}
    assert summarize(results) == expected


# --- baselines -----------------------------------------------------------------------------------------

AVAILABLE = [key for key in bl.BASELINES if bl.unavailable_reason(key) is None]


@pytest.mark.parametrize("key", AVAILABLE)
def test_baseline_round_trip_and_rate_grows_along_the_sweep(key):
    baseline = bl.get(key)
    pixels = _image(40, 56)
    low, high = baseline.sweep[0], baseline.sweep[-1]
    data_low, data_high = baseline.encode(pixels, low), baseline.encode(pixels, high)
    decoded = baseline.decode(data_high)
    assert decoded.shape == pixels.shape and decoded.dtype == np.uint8
    assert psnr(pixels, decoded) > 25.0
    assert len(data_high) > len(data_low)
    assert bl.bpp_of(data_low, pixels) == 8 * len(data_low) / (40 * 56)


def test_pillow_baselines_use_the_documented_settings():
    pixels = _image(32, 48)
    reference = io.BytesIO()
    Image.fromarray(pixels).save(reference, "JPEG", quality=50, optimize=True, subsampling=0)
    assert bl.get("jpeg444").encode(pixels, 50) == reference.getvalue()
    with Image.open(io.BytesIO(bl.get("jpeg").encode(pixels, 50))) as image:
        assert JpegImagePlugin.get_sampling(image) == 2  # 4:2:0
    with Image.open(io.BytesIO(bl.get("jpeg444").encode(pixels, 50))) as image:
        assert JpegImagePlugin.get_sampling(image) == 0  # 4:4:4
    with Image.open(io.BytesIO(bl.get("webp").encode(pixels, 50))) as image:
        assert image.format == "WEBP"
        assert b"VP8 " in bl.get("webp").encode(pixels, 50)[:40]  # lossy bitstream, not VP8L


@pytest.mark.parametrize("key", [k for k in ("jpeg", "jxl", "jpeg2000") if k in AVAILABLE])
def test_match_bpp_finds_the_setting_closest_to_the_target(key):
    baseline = bl.get(key)
    pixels = _image(48, 64)
    target = bl.bpp_of(baseline.encode(pixels, baseline.sweep[4]), pixels) * 1.02
    setting, data = bl.match_bpp(baseline, pixels, target)
    assert data == baseline.encode(pixels, setting)
    achieved = bl.bpp_of(data, pixels)
    assert abs(achieved / target - 1) < 0.1
    for other in baseline.sweep:  # no sweep setting is closer (in log ratio) than the match
        assert abs(math.log(achieved / target)) <= abs(
            math.log(bl.bpp_of(baseline.encode(pixels, other), pixels) / target)
        ) + 1e-12
    # Out of range: the end of the knob's range.
    lowest, _ = bl.match_bpp(baseline, pixels, 1e-4)
    assert lowest == baseline.candidates()[0]


def test_missing_optional_library_is_reported(monkeypatch):
    monkeypatch.setitem(sys.modules, "imagecodecs", None)  # makes `import imagecodecs` fail
    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    assert "imagecodecs is not installed" in bl.unavailable_reason("jxl")
    assert "pillow-heif is not installed" in bl.unavailable_reason("heic")
    assert bl.unavailable_reason("jpeg") is None
    with pytest.raises(ValueError, match="unknown baseline 'bpg'"):
        bl.get("bpg")


# --- LPIPS ---------------------------------------------------------------------------------------------


def test_lpips_can_be_disabled_and_unknown_kinds_say_why():
    assert load_lpips("none") == (None, "LPIPS disabled (--lpips none)")
    metric, note = load_lpips("no-such-net")
    assert metric is None and "no-such-net" in note


def test_lpips_distance_orders_distortions():
    metric, note = load_lpips("auto")
    if metric is None:
        pytest.skip(f"no LPIPS network installed: {note}")
    assert metric.kind in note or "LPIPS" in note
    a = _image(64, 64)
    assert metric(a, a) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < metric(a, _noisy(a, 5)) < metric(a, _noisy(a, 40))


# --- report: BD-rate per image, then averaged ----------------------------------------------------------


def _point(codec: str, bpp: float, psnr_db: float, setting: float | None = None) -> Point:
    return Point(codec, setting, int(bpp * 100), bpp, psnr_db, 1 - 10 ** (-psnr_db / 20), None, 0.0, 0.0)


def test_report_bd_rate_is_computed_per_image_then_averaged():
    images = []
    for name, factor in (("a", 0.8), ("b", 0.9), ("c", 0.5)):
        result = ImageResult(name, f"{name}.png", 8, 8)
        result.sweeps["jpeg"] = [_point("jpeg", RATES[i], PSNRS[i], i) for i in range(len(RATES))]
        # Model m1 sits at the anchor's 33 dB knot with `factor` times its rate; m2 at 30.5 dB, 1.1x.
        result.hific["m1"] = _point("m1", factor * 0.4, 33.0)
        result.hific["m2"] = _point("m2", 1.1 * 0.2, 30.5)
        images.append(result)
    images[2].hific["m1"] = _point("m1", 0.01, 10.0)  # far below the anchor: undefined on this image
    rows = {(r["test"], r["metric"]): r for r in bd_rates(images, ["m1", "m2"], ["jpeg"])}
    m1 = rows[("m1", "psnr-rgb")]
    assert m1["per_image_pct"]["a"] == pytest.approx(-20.0)
    assert m1["per_image_pct"]["b"] == pytest.approx(-10.0)
    assert m1["per_image_pct"]["c"] is None and "outside the anchor's range" in m1["reasons"]["c"]
    assert m1["mean_pct"] == pytest.approx(-15.0) and (m1["n_valid"], m1["n"]) == (2, 3)
    assert rows[("m2", "psnr-rgb")]["mean_pct"] == pytest.approx(10.0)
    # Both models together form one curve (on image c it reaches into the anchor's range from below).
    together = rows[(ALL_MODELS, "psnr-rgb")]
    assert together["n_valid"] == 3
    # a: m1 0.8x at 33 dB, m2 1.1x at 30.5 dB -> between the two single-point values.
    assert -20.0 < together["per_image_pct"]["a"] < 10.0
    # LPIPS was not measured anywhere.
    assert rows[("m1", "lpips")]["n_valid"] == 0


def test_report_is_strict_json_and_leaves_out_unmeasured_lpips():
    result = ImageResult("a", "a.png", 8, 8)
    sweep = bl.get("jpeg").sweep  # 8 settings: 5 measured points, then 3 lossless ones (PSNR = inf)
    result.sweeps["jpeg"] = [_point("jpeg", RATES[i], PSNRS[i], sweep[i]) for i in range(5)]
    result.sweeps["jpeg"] += [_point("jpeg", 2.0 + i, math.inf, sweep[i]) for i in range(5, 8)]
    result.hific["m"] = _point("m", 0.3, 31.0)
    models = {"m": {"model_id": "m"}}
    report = build_report([result], models=models, baselines=["jpeg"], skipped={},
                          lpips_note="", lpips_kind=None)
    assert {row["metric"] for row in report["bd_rate"]} == {"psnr-rgb", "ms-ssim"}
    text = to_json(report).decode()
    assert "Infinity" not in text and "NaN" not in text
    jpeg = json.loads(text)["codecs"][1]
    assert jpeg["results"]["psnr-rgb"][:5] == PSNRS and jpeg["results"]["psnr-rgb"][5:] == [None] * 3
