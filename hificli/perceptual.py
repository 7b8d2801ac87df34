"""Frozen perceptual distances for training: shift-tolerant LPIPS (default) or standard LPIPS.

Standard LPIPS (AlexNet, "net-lin" v0.1) needs ImageNet AlexNet weights that no reachable package ships.
The ``stlpips-pytorch`` 0.0.2 wheel (BSD-2) ships complete shift-tolerant LPIPS networks (trunk and
linear heads). We only read its weight files (``torch.load(weights_only=True)``) and build the networks
here; its Python modules are never imported (they import torchvision/IPython, which do not load here).

Kinds (``load_perceptual(kind)``):

- ``stlpips-alex``: ST-LPIPS AlexNet (stride-1 first conv, blur-pool downsampling with reflect padding).
- ``stlpips-vgg``: ST-LPIPS VGG16 (same blur-pool scheme; about 6x slower).
- ``lpips-alex``: standard LPIPS v0.1 AlexNet; weights from ``$HIFIC_LPIPS_WEIGHTS`` (see
  :func:`lpips_weights_from_env`).
- ``auto``: ``lpips-alex`` when ``$HIFIC_LPIPS_WEIGHTS`` is set, else ``stlpips-alex``.

Every network maps two image batches in [0, 1], shape (N, 3, H, W), to per-image distances (N,). The
numbers of ST-LPIPS are not comparable with published (standard) LPIPS values.

How the frozen network runs is its :class:`Execution` (``net.execution``); every setting gives the same
distances and gradients up to float rounding (``benchmarks/bench_perceptual.py`` measures what each
saves). The default, :data:`FAST`: ST-AlexNet's stride-1 11x11 conv1 and its stride-2 blur as one
stride-2 13x13 convolution computed as 2x2 phases (borders corrected to the reflect padding),
channels-last layout, and the two images as separate passes, so that the backward skips the one that
needs no gradient (the reference image in training). :data:`PLAIN` is the network as first written (one
batch of both images, contiguous layout).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from hificli.errors import ModelMismatchError, ModelUnavailableError

if TYPE_CHECKING:
    import torch
    from torch import nn

KINDS = ("auto", "stlpips-alex", "stlpips-vgg", "lpips-alex", "none")
STLPIPS_PACKAGE = "stlpips-pytorch"
STLPIPS_PIP = "pip install 'stlpips-pytorch==0.0.2' --no-deps"
LPIPS_ENV = "HIFIC_LPIPS_WEIGHTS"

# Input scaling of LPIPS v0.1 after mapping [0, 1] to [-1, 1] (also stored in the ST-LPIPS files).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


@dataclass(frozen=True)
class Execution:
    """How a perceptual network runs; the distances are the same (float rounding) for every setting.

    ``fused_stem``: ST-AlexNet's conv1 + blur1 as one stride-2 convolution (other networks ignore it).
    ``channels_last``: run the trunk in NHWC layout (oneDNN's fast path for pooling and blurs on CPU).
    ``split_reference``: run the two images as separate passes (else as one concatenated batch, whose
    backward also computes the input gradient of the image that needs none, the reference in training).
    """

    fused_stem: bool = True
    channels_last: bool = True
    split_reference: bool = True


FAST = Execution()
PLAIN = Execution(fused_stem=False, channels_last=False, split_reference=False)


def resolve_kind(kind: str) -> str:
    """Map ``auto`` to a concrete kind; validate the others."""
    if kind not in KINDS:
        raise ValueError(f"unknown perceptual network {kind!r}; choose from {', '.join(KINDS)}")
    if kind == "auto":
        return "lpips-alex" if os.environ.get(LPIPS_ENV) else "stlpips-alex"
    return kind


def stlpips_weights_path(trunk: str) -> Path:
    """Path of ``{trunk}_shift_tolerant.pth`` inside the installed stlpips-pytorch wheel."""
    from importlib import metadata

    try:
        dist = metadata.distribution(STLPIPS_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelUnavailableError(
            f"the perceptual loss needs the '{STLPIPS_PACKAGE}' package, which is not installed",
            f"run: {STLPIPS_PIP}  (or train with --perceptual none)",
        ) from None
    name = f"{trunk}_shift_tolerant.pth"
    for file in dist.files or ():
        if file.name == name:
            path = Path(str(dist.locate_file(file)))
            if path.is_file():
                return path
    raise ModelUnavailableError(
        f"'{STLPIPS_PACKAGE}' is installed but has no {name}", f"reinstall it: {STLPIPS_PIP}"
    )


def lpips_weights_from_env() -> list[Path]:
    """Files named by ``$HIFIC_LPIPS_WEIGHTS`` (``os.pathsep``-separated).

    Either one file holding a whole LPIPS state dict (``net.sliceK.I.weight`` + ``linK.model.1.weight``),
    or two files: torchvision's AlexNet (``features.I.weight``) and lpips' ``alex.pth`` (linear heads).
    """
    value = os.environ.get(LPIPS_ENV, "")
    paths = [Path(p).expanduser() for p in value.split(os.pathsep) if p]
    if not paths:
        raise ModelUnavailableError(f"${LPIPS_ENV} is not set", "point it at the LPIPS AlexNet weights file")
    for path in paths:
        if not path.is_file():
            raise ModelUnavailableError(f"${LPIPS_ENV}: {path} does not exist")
    return paths


def _normalize(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Unit-normalize features along channels (LPIPS' normalize_tensor)."""
    import torch

    return feat / (torch.sqrt(torch.sum(feat * feat, dim=1, keepdim=True)) + eps)


def _make_modules():
    """Define the torch modules lazily so that importing this file does not import torch."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class BlurPool(nn.Module):
        """Binomial [1,2,1]^2 blur, then stride-2 subsampling, after reflect padding of 2 per side."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            a = torch.tensor([1.0, 2.0, 1.0])
            k = a[:, None] * a[None, :]
            self.register_buffer("filt", (k / k.sum())[None, None].repeat(channels, 1, 1, 1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.pad(x, (2, 2, 2, 2), mode="reflect")
            return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])

    class Distance(nn.Module):
        """Shared LPIPS head: scale inputs, run a trunk, sum weighted spatial means of feature diffs.

        ``execution`` (an :class:`Execution`, default :data:`FAST`) says how the trunk runs."""

        def __init__(self, trunk: nn.Module, channels: tuple[int, ...]) -> None:
            super().__init__()
            self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
            self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
            self.trunk = trunk
            self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in channels)
            self.execution = FAST

        def features(self, x: torch.Tensor) -> list[torch.Tensor]:
            """(N,3,H,W) in [0,1] -> the trunk's features, unit-normalised along channels."""
            x = (x * 2.0 - 1.0 - self.shift) / self.scale
            if self.execution.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return [_normalize(f) for f in self.trunk(x, self.execution)]

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            """(N,3,H,W) x2 in [0,1] -> (N,) distances."""
            n = a.shape[0]
            if self.execution.split_reference:  # autograd records only the pass of an input needing grad
                fa, fb = self.features(a), self.features(b)
            else:
                both = self.features(torch.cat([a, b]))
                fa, fb = [f[:n] for f in both], [f[n:] for f in both]
            total = a.new_zeros(n)
            for lin, p, q in zip(self.lins, fa, fb, strict=True):
                total = total + lin((p - q) ** 2).mean(dim=(1, 2, 3))
            return total

    class STAlexTrunk(nn.Module):
        """Shift-tolerant AlexNet features: relu1..relu5 (64, 192, 384, 256, 256 channels)."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 11, stride=1, padding=2)
            self.blur1 = BlurPool(64)
            self.blur2 = BlurPool(64)
            self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
            self.blur3 = BlurPool(192)
            self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
            self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
            self.conv5 = nn.Conv2d(256, 256, 3, padding=1)

        def forward(self, x: torch.Tensor, execution: Execution) -> list[torch.Tensor]:
            if execution.fused_stem:
                layout = torch.channels_last if execution.channels_last else torch.contiguous_format
                r1 = F.relu(self.stem(x, layout))
            else:
                r1 = F.relu(self.blur1(self.conv1(x)))
            h = self.blur2(F.max_pool2d(r1, 3, stride=1))
            r2 = F.relu(self.conv2(h))
            h = self.blur3(F.max_pool2d(r2, 3, stride=1))
            r3 = F.relu(self.conv3(h))
            r4 = F.relu(self.conv4(r3))
            r5 = F.relu(self.conv5(r4))
            return [r1, r2, r3, r4, r5]

        def stem(self, x: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
            """``blur1(conv1(x))`` as one stride-2 convolution: (N,3,H,W) -> (N,64,(H-5)//2+1,(W-5)//2+1).

            Away from the borders, blur1 o conv1 is conv1's kernel blurred to 13x13 at stride 2, computed as
            a 7x7 convolution of the 2x2 phases of the input (12 channels). conv1's output Y (side L = H-6)
            is reflect-padded before the blur, so the outer rows and columns differ: output 0 equals output
            1 (taps Y2, Y1, Y0 = Y0, Y1, Y2); the last output equals the one before it for odd L, and is
            (Y[L-2] + Y[L-1]) / 2 for even L, taken from conv1 evaluated on a two-row (column) strip.
            """
            weight, bias = self.conv1.weight, self.conv1.bias
            c, h, w = weight.shape[0], x.shape[-2], x.shape[-1]
            taps = self.blur1.filt[:1]  # (1, 1, 3, 3) binomial
            kernel = F.conv_transpose2d(weight.reshape(-1, 1, 11, 11), taps).reshape(c, 3, 13, 13)
            phases = F.pad(kernel, (0, 1, 0, 1)).reshape(c, 3, 7, 2, 7, 2).permute(0, 1, 3, 5, 2, 4)
            phases = phases.reshape(c, 12, 7, 7).contiguous(memory_format=layout)
            padded = F.pad(x, (4, 4 + w % 2, 4, 4 + h % 2))
            z = F.conv2d(F.pixel_unshuffle(padded, 2).contiguous(memory_format=layout), phases, bias)
            x2 = F.pad(x, (2, 2, 2, 2))
            down = taps.sum(dim=-1, keepdim=True).expand(c, 1, 3, 1)  # [1, 2, 1] / 4 down the rows
            # (dim, L, then the exact reflect-padded blur along the other axis: padding, taps, stride)
            for dim, side, pad, blur, stride in ((3, w - 6, (0, 0, 2, 2), down, (2, 1)),
                                                 (2, h - 6, (2, 2, 0, 0), down.transpose(2, 3), (1, 2))):
                if side % 2:
                    last = z.narrow(dim, z.shape[dim] - 2, 1)
                else:  # (Y[L-2] + Y[L-1]) / 2 from conv1 on the strip of input that makes them
                    strip = F.conv2d(x2.narrow(dim, side - 2, 12), weight, bias).mean(dim=dim, keepdim=True)
                    last = F.conv2d(F.pad(strip, pad, mode="reflect"), blur, stride=stride, groups=c)
                inner = z.narrow(dim, 1, z.shape[dim] - 2)
                z = torch.cat([z.narrow(dim, 1, 1), inner, last], dim=dim)
            return z.contiguous(memory_format=layout)

    class STVggTrunk(nn.Module):
        """Shift-tolerant VGG16 features: relu1_2, relu2_2, relu3_3, relu4_3, relu5_3."""

        STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))

        def __init__(self) -> None:
            super().__init__()
            self.stages = nn.ModuleList()
            self.blurs = nn.ModuleList()
            c_in = 3
            for i, widths in enumerate(self.STAGES):
                self.blurs.append(BlurPool(c_in) if i else nn.Identity())
                convs = nn.ModuleList()
                for w in widths:
                    convs.append(nn.Conv2d(c_in, w, 3, padding=1))
                    c_in = w
                self.stages.append(convs)

        def forward(self, x: torch.Tensor, execution: Execution) -> list[torch.Tensor]:
            out = []
            for i, (blur, convs) in enumerate(zip(self.blurs, self.stages, strict=True)):
                if i:
                    x = blur(F.max_pool2d(x, 2, stride=1))
                for conv in convs:
                    x = F.relu(conv(x))
                out.append(x)
            return out

    class AlexTrunk(nn.Module):
        """Standard AlexNet features (torchvision layout): relu1..relu5."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 11, stride=4, padding=2)
            self.conv2 = nn.Conv2d(64, 192, 5, padding=2)
            self.conv3 = nn.Conv2d(192, 384, 3, padding=1)
            self.conv4 = nn.Conv2d(384, 256, 3, padding=1)
            self.conv5 = nn.Conv2d(256, 256, 3, padding=1)

        def forward(self, x: torch.Tensor, execution: Execution) -> list[torch.Tensor]:
            r1 = F.relu(self.conv1(x))
            r2 = F.relu(self.conv2(F.max_pool2d(r1, 3, stride=2)))
            r3 = F.relu(self.conv3(F.max_pool2d(r2, 3, stride=2)))
            r4 = F.relu(self.conv4(r3))
            r5 = F.relu(self.conv5(r4))
            return [r1, r2, r3, r4, r5]

    return Distance, STAlexTrunk, STVggTrunk, AlexTrunk


# Weight-file conv indices (flattened feature index) -> our trunk's conv names, per trunk.
_ALEX_ST_CONVS = {0: "conv1", 5: "conv2", 9: "conv3", 11: "conv4", 13: "conv5"}
_ALEX_CONVS = {0: "conv1", 3: "conv2", 6: "conv3", 8: "conv4", 10: "conv5"}
_VGG_ST_CONVS = {
    i: f"stages.{s}.{j}"
    for s, idx in enumerate(((0, 2), (6, 8), (12, 14, 16), (20, 22, 24), (28, 30, 32)))
    for j, i in enumerate(idx)
}
_TRUNK_KEY = re.compile(r"^(?:net\.slice\d+|features)\.(\d+)\.(weight|bias)$")
_LIN_KEY = re.compile(r"^lin(\d+)\.model\.\d+\.weight$")


def _map_state(raw: dict, convs: dict[int, str]) -> dict:
    """Rename a LPIPS-style state dict (trunk + linear heads) to our module names."""
    out = {}
    for key, value in raw.items():
        if m := _TRUNK_KEY.match(key):
            idx, what = int(m.group(1)), m.group(2)
            if idx in convs:
                out[f"trunk.{convs[idx]}.{what}"] = value
        elif m := _LIN_KEY.match(key):
            out[f"lins.{int(m.group(1))}.weight"] = value
    return out


def _read(path: Path) -> dict:
    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling refusals, truncation, not a torch file
        raise ModelMismatchError(f"{path}: not a loadable weights file ({exc})") from None
    if not isinstance(data, dict):
        raise ModelMismatchError(f"{path}: expected a state dict, got {type(data).__name__}")
    return data


def _build(kind: str) -> nn.Module:
    Distance, STAlexTrunk, STVggTrunk, AlexTrunk = _make_modules()
    if kind == "stlpips-alex":
        net, convs, files = Distance(STAlexTrunk(), (64, 192, 384, 256, 256)), _ALEX_ST_CONVS, None
    elif kind == "stlpips-vgg":
        net, convs, files = Distance(STVggTrunk(), (64, 128, 256, 512, 512)), _VGG_ST_CONVS, None
    elif kind == "lpips-alex":
        net, convs, files = Distance(AlexTrunk(), (64, 192, 384, 256, 256)), _ALEX_CONVS, lpips_weights_from_env()
    else:
        raise ValueError(f"cannot build perceptual network {kind!r}")
    if files is None:
        files = [stlpips_weights_path(kind.split("-")[1])]
    state: dict = {}
    for path in files:
        state.update(_map_state(_read(path), convs))
    expected = {k for k in net.state_dict() if not k.endswith(("filt", "shift", "scale"))}
    missing = sorted(expected - set(state))
    if missing:
        names = ", ".join(str(f) for f in files)
        more = "..." if len(missing) > 4 else ""
        raise ModelMismatchError(f"{names}: missing perceptual weights {missing[:4]}{more}")
    try:
        net.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise ModelMismatchError(f"perceptual weights do not fit {kind}: {exc}") from None
    return net


def load_perceptual(kind: str = "stlpips-alex", execution: Execution = FAST) -> nn.Module:
    """Build a frozen perceptual distance: ``net(a, b)`` maps two (N,3,H,W) batches in [0,1] to (N,).

    The module is in eval mode and has no trainable parameters; ``net.kind`` names the network and
    ``net.execution`` (assignable) says how it runs. Raises :class:`ModelUnavailableError` when the
    weights cannot be found.
    """
    kind = resolve_kind(kind)
    net = _build(kind)
    net.execution = execution
    for p in net.parameters():
        p.requires_grad_(False)
    net.eval()
    net.kind = kind
    return net
