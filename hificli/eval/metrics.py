"""Full-reference image metrics on 8-bit RGB: PSNR, MS-SSIM and LPIPS.

Images are uint8 numpy arrays of shape (H, W, 3). PSNR (float64) and MS-SSIM (float32 filtering,
float64 averages) are computed here with torch; LPIPS comes from :mod:`hificli.perceptual` (imported
lazily; when it cannot be loaded there is no LPIPS, with the reason).

MS-SSIM follows Wang, Simoncelli and Bovik (2003): 5 scales with weights
(0.0448, 0.2856, 0.3001, 0.2363, 0.1333), an 11-tap gaussian window (sigma 1.5) applied without padding
("valid"), K1 = 0.01, K2 = 0.03, data range 255; contrast-structure terms at scales 1..M-1, the full
SSIM at scale M, each averaged over the image and per channel, negative terms clamped to 0, the product
of powers averaged over the three channels. Between scales the image is averaged over 2x2 blocks; an odd
side is padded by one pixel on each side, padding excluded from the average (so side s becomes ceil(s/2)).

Small images: scale k (0-based) has side ceil(s / 2**k), which must be at least the window (11). When the
smaller side s cannot hold 5 scales (s <= 160) we use the most scales that fit and renormalise their
weights to sum to 1; below 11 pixels we use one scale (plain SSIM) with the window shrunk to the largest
odd size that fits. :func:`ms_ssim_plan` says what a given size gets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch

MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def _check_pair(reference: np.ndarray, test: np.ndarray) -> None:
    if reference.shape != test.shape:
        raise ValueError(f"image shapes differ: {reference.shape} vs {test.shape}")
    if reference.ndim != 3 or reference.shape[2] != 3:
        raise ValueError(f"expected (H, W, 3) images, got shape {reference.shape}")


def _to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float64 (1, 3, H, W) in 0..255."""
    import torch

    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0).double()


def psnr(reference: np.ndarray, test: np.ndarray, data_range: float = 255.0) -> float:
    """PSNR in dB over all pixels and the three channels (RGB); ``inf`` for identical images."""
    import torch

    _check_pair(reference, test)
    mse = torch.mean((_to_tensor(reference) - _to_tensor(test)) ** 2).item()
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(data_range * data_range / mse)


def ms_ssim_plan(height: int, width: int, n_scales: int = 5, window: int = SSIM_WINDOW) -> tuple[int, int]:
    """(scales, window size) that MS-SSIM uses for an image of this size (see the module docstring)."""
    side = min(height, width)
    if side < 1:
        raise ValueError("image has no pixels")
    if side < window:
        return 1, side if side % 2 else side - 1
    scales = 1
    while scales < n_scales and math.ceil(side / 2**scales) >= window:
        scales += 1
    return scales, window


def _gaussian(size: int, sigma: float) -> torch.Tensor:
    import torch

    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2.0
    g = torch.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _blur(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable gaussian filter, no padding ("valid"), applied to every channel of (N, C, H, W)."""
    import torch.nn.functional as F

    channels = x.shape[1]
    size = kernel.numel()
    x = F.conv2d(x, kernel.view(1, 1, 1, size).expand(channels, 1, 1, size), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, size, 1).expand(channels, 1, size, 1), groups=channels)


def _ssim_terms(
    x: torch.Tensor, y: torch.Tensor, kernel: torch.Tensor, c1: float, c2: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean SSIM and mean contrast-structure term, each of shape (C,) in float64.

    The filtering runs in float32 (float64 depthwise convolutions are several times slower) on values
    centred on each channel's mean, which keeps E[x^2] - E[x]^2 accurate (exact for flat images; the
    covariances do not depend on the centre, the means get it added back).
    """
    import torch

    channels = x.shape[1]
    cx, cy = x.mean(dim=(2, 3), keepdim=True), y.mean(dim=(2, 3), keepdim=True)
    xc, yc = x - cx, y - cy
    stats = _blur(torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=1), kernel)
    mx, my, xx, yy, xy = torch.split(stats, channels, dim=1)
    var_x = xx - mx * mx
    var_y = yy - my * my
    cov = xy - mx * my
    mu_x, mu_y = mx + cx, my + cy
    cs = (2.0 * cov + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return (luminance * cs).double().mean(dim=(0, 2, 3)), cs.double().mean(dim=(0, 2, 3))


def _halve(x: torch.Tensor) -> torch.Tensor:
    import torch.nn.functional as F

    padding = (x.shape[2] % 2, x.shape[3] % 2)
    return F.avg_pool2d(x, kernel_size=2, padding=padding, count_include_pad=False)


def ms_ssim(
    reference: np.ndarray,
    test: np.ndarray,
    *,
    data_range: float = 255.0,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
    window: int = SSIM_WINDOW,
    sigma: float = SSIM_SIGMA,
) -> float:
    """MS-SSIM of two uint8 (H, W, 3) images, in [0, 1] (1 for identical images)."""
    import torch

    _check_pair(reference, test)
    scales, size = ms_ssim_plan(reference.shape[0], reference.shape[1], len(weights), window)
    w = torch.tensor(weights[:scales], dtype=torch.float64)
    if scales < len(weights):
        w = w / w.sum()
    kernel = _gaussian(size, sigma).float()
    c1 = (SSIM_K1 * data_range) ** 2
    c2 = (SSIM_K2 * data_range) ** 2
    x, y = _to_tensor(reference).float(), _to_tensor(test).float()
    terms = []
    for scale in range(scales):
        ssim_c, cs_c = _ssim_terms(x, y, kernel, c1, c2)
        if scale == scales - 1:
            terms.append(torch.relu(ssim_c))
        else:
            terms.append(torch.relu(cs_c))
            x, y = _halve(x), _halve(y)
    values = torch.stack(terms)  # (scales, C)
    return torch.prod(values ** w[:, None], dim=0).mean().item()


# --- LPIPS -----------------------------------------------------------------------------------------

_DESCRIPTIONS = {
    "lpips-alex": "LPIPS (standard v0.1, AlexNet; comparable with published LPIPS)",
    "stlpips-alex": "ST-LPIPS (shift-tolerant, AlexNet; not comparable with published standard LPIPS)",
    "stlpips-vgg": "ST-LPIPS (shift-tolerant, VGG16; not comparable with published standard LPIPS)",
}


@dataclass
class Perceptual:
    """A loaded LPIPS-style network: ``metric(reference, test)`` -> distance (lower is better)."""

    kind: str
    network: Any

    @property
    def description(self) -> str:
        return _DESCRIPTIONS.get(self.kind, self.kind)

    def __call__(self, reference: np.ndarray, test: np.ndarray) -> float:
        import torch

        _check_pair(reference, test)
        a = _to_tensor(reference).float().div_(255.0)
        b = _to_tensor(test).float().div_(255.0)
        with torch.inference_mode():
            distance = self.network(a, b)
        return float(torch.as_tensor(distance).float().mean().item())


def load_lpips(kind: str = "auto") -> tuple[Perceptual | None, str]:
    """Load the LPIPS network ``kind`` of :mod:`hificli.perceptual`; "none" disables LPIPS.

    "auto" is that module's choice (standard LPIPS when ``$HIFIC_LPIPS_WEIGHTS`` names its weights, else
    shift-tolerant), falling back to ``stlpips-alex`` if standard LPIPS fails to load. Returns (metric,
    note): the metric is None when no network could be loaded and the note says why; otherwise the note
    says which LPIPS it is.
    """
    if kind == "none":
        return None, "LPIPS disabled (--lpips none)"
    try:
        from hificli.perceptual import load_perceptual, resolve_kind
    except ImportError as exc:
        return None, f"LPIPS unavailable: hificli.perceptual cannot be imported ({exc})"
    try:
        first = resolve_kind(kind)
    except ValueError as exc:
        return None, str(exc)
    candidates = [first] + (["stlpips-alex"] if kind == "auto" and first != "stlpips-alex" else [])
    reasons = []
    for candidate in candidates:
        try:
            network = load_perceptual(candidate)
        except Exception as exc:  # missing package or weights: say which, try the next one
            message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
            reasons.append(f"{candidate}: {message}")
            continue
        metric = Perceptual(getattr(network, "kind", candidate), network)
        note = metric.description
        if reasons:
            note += " (" + "; ".join(reasons) + ")"
        return metric, note
    return None, "LPIPS unavailable (" + "; ".join(reasons) + ")"
