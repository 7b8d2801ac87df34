"""The codec pipeline: image -> latents -> entropy-coded streams -> .hfc bytes, and back.

Encode: pad the image (to a multiple of 64, at least 128 px a side), y = Encoder(x), z = analysis(y),
z_hat = floor(z + 0.5) coded per channel with the factorized tables; (mu, sigma) = exact integer
hyper-synthesis of z_hat; latent symbols s = floor(y - mu + 0.5) coded with the scale table row chosen
by sigma. Decode: the same (mu, sigma) from the decoded z_hat, y_hat = s + mu, Generator, crop.
Variable-rate models quantize with per-channel steps d chosen by the file's quality
(hificli.entropy.rate): s = floor((y - mu) / d + 0.5), the row chosen by sigma / d, y_hat = s * d + mu.
Models with a context (hificli.models.context) code the latents in groups, one stream each (checkerboard:
"ya" anchors then "yb" the rest; channel-conditional: slices "y0".."y3"): the first with the hyperprior's
(mu, sigma), each later one with (mu, sigma) corrected by the exact context networks from the groups
decoded before it (hificli.entropy.context).
Only integer data and integer-exact arithmetic decide how bits are parsed, so the decoded latents are
bit-identical in any process, thread count or machine. That part is numpy only (hificli.latent.LatentModel:
tables, exact hyper-synthesis and context, rate levels): :func:`decode_latents` needs no torch, which
only the float transforms (:class:`CodecModel`) import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from hificli import container
from hificli.errors import CorruptFileError, ModelMismatchError, UnsupportedVersionError
from hificli.imageio import SourceImage
from hificli.latent import LatentModel
from hificli.tiling import ModelSize, Tiling

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from hificli.models.config import ArchConfig
    from hificli.models.hific import HificModel
    from hificli.weights import WeightsInfo

#: Padded sides are multiples of this (latents a multiple of 4 for the hyperprior) and at least MIN_SIDE.
PAD_MULTIPLE = 64
MIN_SIDE = 128
_INT32_MAX = 2**31 - 1


def padded_size(width: int, height: int) -> tuple[int, int]:
    """The size an image is padded to before encoding."""

    def side(n: int) -> int:
        return max(MIN_SIDE, -(-n // PAD_MULTIPLE) * PAD_MULTIPLE)

    return side(width), side(height)


@dataclass
class CodecModel:
    """A loaded model ready to code: the float network (eval mode) and the integer ``latent`` model
    (tables, exact hyper-synthesis and context, rate levels) that decides how bits are parsed.
    ``tiling`` says how large images are split to bound memory (hificli.tiling; never changes the bits
    a decoder reads)."""

    network: HificModel
    latent: LatentModel
    #: Where the float transforms run (see :meth:`place`); the exact path always runs on the CPU.
    device: str = "cpu"
    #: The generator's autocast dtype name under ``--half`` ("bfloat16", "float16"), else None.
    half: str | None = None

    def place(self, device: str = "cpu", *, half: bool = False) -> CodecModel:
        """Move the float transforms to ``device`` (``auto``, ``cpu``, ``cuda[:N]``; hificli.device);
        ``half``: the generator runs under bf16/fp16 autocast (decoded latents are unchanged: they come
        from the integer path; the encoder stays fp32, so files are unchanged too)."""
        import torch

        from hificli import device as devices
        from hificli.tiling import generator_layout

        name = devices.resolve_device(device)
        devices.prepare(name)
        if name != self.device:
            self.network.to(name)
        self.network.Generator.to(memory_format=generator_layout(torch.device(name)))
        self.device = name
        self.half = str(devices.half_dtype(name)).removeprefix("torch.") if half else None
        return self

    @property
    def tiling(self) -> Tiling:
        return self.latent.tiling

    @tiling.setter
    def tiling(self, policy: Tiling) -> None:
        self.latent.tiling = policy

    @property
    def info(self) -> WeightsInfo:
        return self.latent.info

    @property
    def path(self) -> Path | None:
        return self.latent.path

    @property
    def model_id(self) -> str:
        return self.latent.model_id

    @property
    def fingerprint(self) -> bytes:
        return self.latent.fingerprint

    @property
    def config(self) -> ArchConfig:
        return self.latent.config

    @property
    def size(self) -> ModelSize:
        return self.latent.size

    @property
    def variable_rate(self) -> bool:
        """True if the model takes a quality (its latents are quantized with rate-level steps)."""
        return self.latent.variable_rate

    # -- stages -------------------------------------------------------------------------------------

    def analyse(self, pixels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (H, W, 3) padded image -> (y float32, z_hat float32 integer-valued), in tiles; an image
        over the memory limit is refused first (the decoder's rule: hificli.tiling.check_fits)."""
        from hificli import tiling

        tiling.check_fits(self.size, pixels.shape[1], pixels.shape[0], self.tiling)
        y = tiling.encode_latents(self.network, pixels, self.tiling)
        return y, tiling.analyse_hyper(self.network, y, self.tiling)

    @property
    def has_realism(self) -> bool:
        """True if the model has a realism decoder (hificli.models.realism; ``synthesise(realism=)``)."""
        return getattr(self.network, "Realism", None) is not None

    def synthesise(self, y_hat: np.ndarray | torch.Tensor, width: int, height: int, realism: float = 0.0) -> np.ndarray:
        """Latents (1, C, h, w) -> uint8 (height, width, 3) reconstruction, in tiles; ``realism`` in
        [0, 1] blends in the realism decoder (0: the Generator alone, the faithful reconstruction)."""
        import torch

        from hificli import tiling

        half = getattr(torch, self.half) if self.half else None
        y_hat = torch.as_tensor(y_hat)
        if not 0.0 <= realism <= 1.0:
            raise ValueError(f"realism must be in [0, 1], got {realism}")
        if realism == 0.0:
            return tiling.generate_image(self.network, y_hat, width, height, self.tiling, half=half)
        if not self.has_realism:
            raise ModelMismatchError(f"model {self.model_id!r} has no realism decoder",
                                     "decode without --realism, or train one: hific train --stage realism")
        from hificli.models.realism import BlendedGenerator

        generator = BlendedGenerator(self.network.Generator, self.network.Realism, realism)
        return tiling.generate_image(self.network, y_hat, width, height, self.tiling, half=half,
                                     generator=generator, cost_factor=2.0)


def _pad(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Reflect-pad bottom/right where possible, otherwise edge-replicate (tiny images)."""
    h, w = pixels.shape[:2]
    pad = ((0, height - h), (0, width - w), (0, 0))
    reflectable = height - h < h and width - w < w
    return np.pad(pixels, pad, mode="reflect" if reflectable else "edge")


@dataclass
class Analysis:
    """What an encode computes once, whatever the quality: latents, the coded hyperlatents and the
    exact mean / scale of every latent element (so a rate search only re-quantizes and re-codes y)."""

    source: SourceImage
    padded_width: int
    padded_height: int
    y: np.ndarray  #: float32 (1, C, h, w)
    z_shape: tuple[int, ...]
    z_bytes: bytes
    mu_fixed: np.ndarray  #: int64 (1, C, h, w), OUT_FRAC fractional bits
    scale_fixed: np.ndarray  #: int64 (1, C, h, w)


def analyse_source(source: SourceImage, model: CodecModel) -> Analysis:
    """Run the analysis transforms and code the hyperlatents of a policy-converted image."""
    from hificli.entropy.coder import encode_symbols, settle_final_run

    latent = model.latent
    pw, ph = padded_size(source.width, source.height)
    y, z_hat = model.analyse(_pad(source.pixels, pw, ph))
    z_symbols = _to_int32(z_hat[0].double().numpy())
    z_indexes = np.broadcast_to(np.arange(z_symbols.shape[0])[:, None, None], z_symbols.shape)
    # the decoder will see the settled hyperlatents: so must mu and sigma
    z_symbols = settle_final_run(z_symbols, z_indexes, latent.z_table)
    z_bytes = encode_symbols(z_symbols, z_indexes, latent.z_table)
    mu_fixed, scale_fixed = latent.mean_scale(z_symbols[None])
    return Analysis(source, pw, ph, y.numpy(), tuple(z_symbols.shape), z_bytes, mu_fixed, scale_fixed)


def _to_int32(values: np.ndarray) -> np.ndarray:
    """Integer-valued float64 -> int32, clipped to the int32 range."""
    return np.clip(values, -_INT32_MAX, _INT32_MAX).astype(np.int32)


def _rows(scale_fixed: np.ndarray, steps: np.ndarray | None, thresholds: np.ndarray) -> np.ndarray:
    """Table row per latent element: by sigma, or by sigma / step for a variable-rate model."""
    from hificli.entropy.exact import scale_indexes
    from hificli.entropy.rate import scale_on_steps
    from hificli.entropy.tables import SCALE_MIN_FIXED

    if steps is not None:
        scale_fixed = scale_on_steps(scale_fixed, steps.reshape(1, -1, 1, 1), SCALE_MIN_FIXED)
    return scale_indexes(scale_fixed, thresholds)


def _step_tensor(steps: np.ndarray) -> torch.Tensor:
    """Fixed-point steps (C,) -> float64 (1, C, 1, 1) step sizes (exact: a power-of-two scaling)."""
    import torch

    return torch.from_numpy(_step_sizes(steps).reshape(1, -1, 1, 1))


def _step_sizes(steps: np.ndarray) -> np.ndarray:
    """Fixed-point steps -> float64 step sizes of the same shape (exact: a power-of-two scaling)."""
    from hificli.entropy.rate import STEP_FRAC

    return steps.astype(np.float64) * 2.0**-STEP_FRAC


def code_analysis(analysis: Analysis, model: CodecModel, quality_code: int | None = None) -> bytes:
    """Quantize and code the latents of an analysed image at a quality (variable-rate models only;
    None for fixed-rate ones) into the bytes of a .hfc file."""
    from hificli.entropy.coder import encode_symbols, settle_final_run

    latent = model.latent
    steps = latent.steps_fixed(quality_code)
    streams, payloads = [container.StreamInfo("z", analysis.z_shape, len(analysis.z_bytes))], [analysis.z_bytes]

    def add(name: str, symbols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Code one latent stream; returns the symbols as coded (see settle_final_run)."""
        symbols = settle_final_run(symbols, rows, latent.y_table)
        payloads.append(encode_symbols(symbols, rows, latent.y_table))
        streams.append(container.StreamInfo(name, tuple(symbols.shape), len(payloads[-1])))
        return symbols

    y = analysis.y[0].astype(np.float64)
    if latent.context is None:
        step = None if steps is None else steps.reshape(-1, 1, 1)
        y_symbols = _quantize_fixed(y, analysis.mu_fixed[0], step)
        add("y", y_symbols, _rows(analysis.scale_fixed, steps, latent.y_table.scale_thresholds_fixed)
            .reshape(y_symbols.shape))
    else:

        def quantize_group(group, mu_g: np.ndarray, step_g: np.ndarray | None, rows_g: np.ndarray) -> np.ndarray:
            return add(group.name, _quantize_fixed(group.take(y), mu_g, step_g), rows_g)

        _code_groups(latent, analysis.mu_fixed, analysis.scale_fixed, steps, quantize_group)
    source = analysis.source
    header = container.Header(
        model_id=model.model_id,
        fingerprint=model.fingerprint,
        width=source.width,
        height=source.height,
        padded_width=analysis.padded_width,
        padded_height=analysis.padded_height,
        channels=source.channels,
        streams=tuple(streams),
        icc_profile=source.icc_profile,
        coder_id=container.CODER_ANS,
        coder_version=container.CODER_VERSION,
        quality_code=quality_code,
        spatial_context=latent.context is not None,
    )
    return container.pack(header, payloads)


def _quantize_fixed(y: np.ndarray, mu_fixed: np.ndarray, step_fixed: np.ndarray | None) -> np.ndarray:
    """Symbols int32 ``floor((y - mu) / step + 0.5)`` of float64 latents against fixed-point mu / step."""
    from hificli.entropy.exact import OUT_FRAC

    centred = y - mu_fixed.astype(np.float64) * 2.0**-OUT_FRAC
    if step_fixed is not None:
        centred = centred / (step_fixed.astype(np.float64) * 2.0**-OUT_FRAC)
    return _to_int32(np.floor(centred + 0.5))


def _code_groups(latent: LatentModel, mu_fixed: np.ndarray, scale_fixed: np.ndarray, steps: np.ndarray | None,
                 code) -> tuple[np.ndarray, np.ndarray]:
    """Run a context model's coding groups in order: each group's exact (mu, scale), its table rows, then
    ``code(group, mu_g, step_g, rows_g) -> symbols_g`` (quantize + encode, or decode). mu_fixed,
    scale_fixed: the hyperprior's, int64 (1, C, h, w). Returns (symbols int32 (C, h, w), mu_fixed int64
    (1, C, h, w)) of every latent."""
    from hificli.entropy.exact import OUT_FRAC

    context = latent.context
    thresholds = latent.y_table.scale_thresholds_fixed
    mu_in, scale = mu_fixed[0], scale_fixed[0]
    decoded = np.zeros(mu_in.shape, dtype=np.int64)
    symbols = np.zeros(mu_in.shape, dtype=np.int32)
    mu_out = np.zeros(mu_in.shape, dtype=np.int64)
    for index, group in enumerate(context.groups):
        mu_g, scale_g = context.group_parameters(index, decoded, mu_in, scale)
        step_g = None if steps is None else steps[group.lo : group.hi].reshape(-1, 1, 1)
        rows_g = _rows(scale_g, step_g, thresholds).reshape(mu_g.shape)
        symbols_g = code(group, mu_g, step_g, rows_g)
        unit = np.int64(1 << OUT_FRAC) if step_g is None else step_g
        group.put(decoded, mu_g + symbols_g.astype(np.int64) * unit)
        group.put(symbols, symbols_g)
        group.put(mu_out, mu_g)
    return symbols, mu_out[None]


def latent_stream_shapes(config, height: int, width: int) -> dict[str, tuple[int, ...]]:
    """Names and symbol shapes of the latent streams for a latent grid of height x width."""
    from hificli.entropy.groups import coding_groups

    return {g.name: g.shape(height, width) for g in coding_groups(config.context, config.latent_channels)}


def encode_source(source: SourceImage, model: CodecModel, quality_code: int | None = None) -> bytes:
    """Encode a policy-converted image into the bytes of a .hfc file (``quality_code``: see
    :func:`code_analysis`; a variable-rate model uses its default quality when it is None)."""
    from hificli.entropy.rate import DEFAULT_QUALITY
    from hificli.entropy.rate import quality_code as to_code

    if quality_code is None and model.variable_rate:
        quality_code = to_code(DEFAULT_QUALITY)
    return code_analysis(analyse_source(source, model), model, quality_code)


def expected_streams(header: container.Header, config, fingerprint: bytes, model_id: str) -> dict[str, tuple[int, ...]]:
    """The streams (name -> symbol shape) a file must hold to be decoded with the weights ``fingerprint``
    of architecture ``config``; refuses (no torch needed) a file made by other weights or another coder
    (ModelMismatchError, UnsupportedVersionError), or whose quality, context flag, padded size or streams
    do not fit the model (CorruptFileError)."""
    if header.fingerprint != fingerprint:
        raise ModelMismatchError(
            f"file was made by model {header.model_id!r} (weights {header.fingerprint.hex()}), "
            f"not by the loaded {model_id!r} (weights {fingerprint.hex()})",
            f"decode with -m {header.model_id} (or the weights file that encoded it)",
        )
    if header.coder_id != container.CODER_ANS or header.coder_version[0] != container.CODER_VERSION[0]:
        raise UnsupportedVersionError(
            f"unknown entropy coder {header.coder_id} v{header.coder_version[0]}.{header.coder_version[1]}",
            "the file was probably made by a newer hific; upgrade hific",
        )
    variable = config.rate_levels > 0
    if variable and header.quality_code is None:
        raise CorruptFileError(f"file has no quality, but its model {model_id!r} is variable-rate")
    if not variable and header.quality_code is not None:
        raise CorruptFileError(f"file has a quality, but its model {model_id!r} is fixed-rate")
    if header.spatial_context != (config.context != "none"):
        has = "has" if header.spatial_context else "has no"
        raise CorruptFileError(f"file {has} spatial-context flag, but its model {model_id!r} disagrees")
    pw, ph = header.padded_width, header.padded_height
    if (pw, ph) != padded_size(header.width, header.height):
        raise CorruptFileError(f"padded size {pw}x{ph} does not match image size {header.width}x{header.height}")
    expected = {
        "z": (config.hyper_channels, ph // 64, pw // 64),
        **latent_stream_shapes(config, ph // 16, pw // 16),
    }
    streams = {s.name: s for s in header.streams}
    if set(streams) != set(expected):
        raise CorruptFileError(
            f"expected streams {', '.join(expected)}, found {', '.join(sorted(streams)) or 'none'}"
        )
    for name, shape in expected.items():
        if tuple(streams[name].shape) != shape:
            raise CorruptFileError(f"stream {name!r} has shape {streams[name].shape}, expected {shape}")
    return expected


def decode_latents(hfc: container.HfcFile, latent: LatentModel) -> np.ndarray:
    """Entropy-decode a parsed file into the latents y_hat, float32 (1, C, H/16, W/16): numpy and the
    integer model only (no torch). A file the model cannot decode (another model's, a damaged stream,
    an image over the memory limit) raises its HificError before anything image-sized is allocated."""
    from hificli import tiling
    from hificli.entropy.coder import decode_symbols

    header = hfc.header
    config = latent.config
    expected = expected_streams(header, config, latent.fingerprint, latent.model_id)
    steps = latent.steps_fixed(header.quality_code)
    pw, ph = header.padded_width, header.padded_height
    tiling.check_fits(latent.size, pw, ph, latent.tiling)  # before allocating anything image-sized
    z_shape = expected["z"]
    z_indexes = np.broadcast_to(np.arange(z_shape[0])[:, None, None], z_shape)
    z_symbols = decode_symbols(hfc.stream("z"), z_indexes, latent.z_table, stream="z").reshape(z_shape)
    mu_fixed, scale_fixed = latent.mean_scale(z_symbols[None])
    y_shape = (config.latent_channels, ph // 16, pw // 16)
    if latent.context is None:
        y_indexes = _rows(scale_fixed, steps, latent.y_table.scale_thresholds_fixed).reshape(y_shape)
        del scale_fixed
        y_symbols = decode_symbols(hfc.stream("y"), y_indexes, latent.y_table, stream="y").reshape(y_shape)
    else:

        def decode_group(group, mu_g: np.ndarray, step_g: np.ndarray | None, rows_g: np.ndarray) -> np.ndarray:
            return decode_symbols(hfc.stream(group.name), rows_g, latent.y_table, stream=group.name).reshape(mu_g.shape)

        y_symbols, mu_fixed = _code_groups(latent, mu_fixed, scale_fixed, steps, decode_group)
    return _dequantize(y_symbols, mu_fixed, steps)


def _dequantize(symbols: np.ndarray, mu_fixed: np.ndarray, steps: np.ndarray | None) -> np.ndarray:
    """Latents float32 (1, C, h, w) ``symbol * step + mu`` (float64, then rounded once to float32)."""
    from hificli.entropy.exact import OUT_FRAC

    y_hat = symbols.astype(np.float64)[None]
    if steps is not None:
        y_hat = y_hat * _step_sizes(steps).reshape(1, -1, 1, 1)
    return (y_hat + mu_fixed.astype(np.float64) * 2.0**-OUT_FRAC).astype(np.float32)


def decode_file(data: bytes, model: CodecModel, realism: float = 0.0) -> tuple[np.ndarray, container.Header]:
    """Decode .hfc bytes into uint8 (H, W, 3) pixels (at ``realism``: :meth:`CodecModel.synthesise`)
    and the file's header."""
    hfc = container.unpack(data)
    y_hat = decode_latents(hfc, model.latent)
    header = hfc.header
    return model.synthesise(y_hat, header.width, header.height, realism), header


def to_pil(pixels: np.ndarray, header: container.Header) -> Image.Image:
    """Decoded pixels -> Pillow image in the source's colour mode, with its ICC profile attached."""
    from PIL import Image

    image = Image.fromarray(pixels, "RGB")
    if header.channels == 1:
        image = image.convert("L")
    if header.icc_profile:
        image.info["icc_profile"] = header.icc_profile
    return image


def estimate_bits(source: SourceImage, model: CodecModel, quality_code: int | None = None) -> dict[str, float]:
    """The model's own rate estimate for an image: -log2 likelihoods of z_hat and y_hat (float model;
    a variable-rate model at ``quality_code``, by default its default quality)."""
    import torch

    from hificli.entropy.rate import DEFAULT_QUALITY
    from hificli.entropy.rate import quality_code as to_code
    from hificli.models.likelihoods import SCALE_MIN, latent_likelihood

    pw, ph = padded_size(source.width, source.height)
    y, z_hat = model.analyse(_pad(source.pixels, pw, ph))
    y, z_hat = y.to(model.device), z_hat.to(model.device)
    hyper = model.network.Hyperprior
    if model.variable_rate and quality_code is None:
        quality_code = to_code(DEFAULT_QUALITY)
    steps = model.latent.steps_fixed(quality_code)
    with torch.inference_mode():
        mu, scale = hyper.synthesis(z_hat)
        d = _step_tensor(steps).to(y.device, y.dtype) if steps is not None else None
        mu, scale = model.network.context_parameters(y, mu, scale, d)
        if d is not None:  # measure in units of the step, as the coder does
            y, mu, scale = y / d, mu / d, (scale / d).clamp_min(SCALE_MIN)
        y_hat = torch.floor(y - mu + 0.5) + mu
        z_bits = -torch.log2(hyper.hyperlatent_likelihood.likelihood(z_hat)).sum().item()
        y_bits = -torch.log2(latent_likelihood(y_hat, mu, scale, model.config.likelihood)).sum().item()
    total = z_bits + y_bits
    return {"z": z_bits, "y": y_bits, "total": total, "bpp": total / (source.width * source.height)}


def bits_per_pixel(n_bytes: int, width: int, height: int) -> float:
    return 8.0 * n_bytes / (width * height) if width * height else math.nan
