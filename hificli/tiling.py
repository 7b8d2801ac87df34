"""Tiled encoding and decoding: large images in bounded memory, with the bits of an untiled run.

Every network stage is a stack of local operations (convolutions, per-pixel ChannelNorm, pointwise
activations), so an output element depends only on inputs within the stage's receptive field. A stage
run on a *window* (a core tile plus a halo at least that field wide, clipped at the image border where
the window's padding is then the image's own) reproduces the untiled result on the core: bit for bit
for the integer-exact hyper-synthesis, up to float rounding noise for the float stages. Cores are
stitched into preallocated whole-image buffers. Each stage is tiled on its coarsest grid:

=================  ===============  ==========  ===========================================  ==========
stage              grid unit        input       halo (units) and why                         output
=================  ===============  ==========  ===========================================  ==========
encoder            latent (16 px)   pixels x16  4: a latent sees 34 px before, 19 px after    y
hyper-analysis     z (4 latents)    y x4        2: z sees +-7 latents                         z
hyper-synthesis    z                z           2: a latent sees +-1.75 z (three transposed   mu, rows
                                                convolutions; integer-exact)                  x4
generator trunk    latent           y_hat       1 + 2 per residual block (3x3 convolutions)   features
generator upsample latent           features    2: a pixel sees -0.2..+1.9 latents            pixels x16
=================  ===============  ==========  ===========================================  ==========

The generator's two parts run fused per tile (the trunk on its window, then the upsampling in
sub-tiles of that tile's core), so no whole-image feature map of the widest layer is ever held.

Tile sizes come from a :class:`Tiling` policy: a fixed core side in pixels, never tiling (``tile=0``),
or (default) the largest tiles whose activation memory fits a process budget (``max_memory``) after
the model and the whole-image buffers, from per-unit costs measured on the ``full`` and ``small``
architectures (:func:`stage_costs`). An image that fits runs as one tile, i.e. untiled.

The decoded latents never depend on tiling (the hyper-synthesis is exact in any layout), so the tile
layout is each encoder's and decoder's own choice and the .hfc format stores none (FORMAT.md, "Tiling").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and torch are imported where used: `hific --help` loads this module
    import numpy as np
    import torch

    from hificli.entropy.exact import ExactHyperSynthesis
    from hificli.models.config import ArchConfig
    from hificli.models.hific import HificModel

LATENT = 16  #: pixels per latent
HYPER = 4  #: latents per hyperlatent (z)

ENCODER_HALO = 4  #: latents
ANALYSIS_HALO = 2  #: z units
SYNTHESIS_HALO = 2  #: z units
UPSAMPLE_HALO = 2  #: latents

DEFAULT_MAX_MEMORY = 3 * 1024**3  #: bytes, the default process budget
MIN_WORK_BYTES = 64 * 1024**2  #: tile work never gets less than this, whatever the budget says
RUNTIME_BYTES = 300 * 1024**2  #: python, torch and libraries, resident before any work
#: Share of the free budget given to tile activations; the rest absorbs heap fragmentation (memory
#: freed by earlier tiles that the allocator keeps: ~10 % of the work at 24 MP in measurements).
WORK_FRACTION = 0.85




# ---------------------------------------------------------------------------------------------- policy


@dataclass(frozen=True)
class Tiling:
    """How to tile. ``tile``: core side in pixels (rounded to whole latents / hyperlatents per stage),
    0 = never tile, None = choose from ``max_memory`` (bytes, a target for this process's peak).
    ``workers``: processes sharing a user's limit, each with ``max_memory`` (for messages only)."""

    tile: int | None = None
    max_memory: int = DEFAULT_MAX_MEMORY
    workers: int = 1

    def __post_init__(self) -> None:
        if self.tile is not None and self.tile < 0:
            raise ValueError(f"tile must be >= 0 pixels, got {self.tile}")
        if self.max_memory <= 0:
            raise ValueError(f"max_memory must be positive, got {self.max_memory}")


@dataclass(frozen=True)
class ModelSize:
    """What the memory estimates know of a model: its architecture and its parameter count (held as
    fp32). Torch-free: the decoder checks a file against the limit before torch is imported."""

    config: ArchConfig
    n_params: int

    @classmethod
    def of(cls, network: HificModel) -> ModelSize:
        """The size of a float network (for tiling its stages)."""
        return cls(network.config, sum(p.numel() for p in network.parameters()))


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d*)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"3G"``, ``"512M"``, ``"1.5GB"``, ``"2GiB"`` or plain bytes -> bytes (powers of 1024)."""
    match = _SIZE_RE.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 3G, 512M, 1.5GB)")
    number, unit = float(match.group(1)), match.group(2).lower()
    value = int(number * 1024 ** "_kmgt".index(unit)) if unit else int(number)
    if value <= 0:
        raise ValueError(f"size must be positive, got {text!r}")
    return value


def memory_size(n: int) -> str:
    """Bytes in the units --max-memory takes (powers of 1024): ``512 bytes``, ``1 KiB``, ``364 MiB``,
    ``2.5 GiB``."""
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def stage_costs(config: ArchConfig) -> dict[str, float]:
    """Peak activation bytes per grid unit of a window, per stage (see the module table).

    Fitted to peak-RSS measurements of the ``full`` and ``small`` presets with some margin:
    encoder ~3.5 fp32 copies of its widest full-resolution layer per pixel; trunk ~13 copies of the
    widest layer per latent; upsampling ~6.5 copies of the last layer per pixel; the float64
    hyper-synthesis is dominated by the im2col buffers of its transposed convolutions.
    """
    ch, c, n = config.encoder_channels, config.latent_channels, config.hyper_channels
    px = LATENT * LATENT
    costs = {
        "encoder": px * 4.0 * (16 + 3.7 * max(ch[0], ch[1] / 2)),
        "analysis": HYPER * HYPER * 4.0 * (2 * c + 5 * n),
        "synthesis": 8.0 * (max(100 * n, 144 * c) + 16 * (n + 4 * c)),
        "trunk": 4.0 * (2 * c + 13 * ch[4]),
        "upsample": px * 4.0 * (8 + 6.5 * max(ch[0], ch[1] / 2)),
    }
    if config.transform == "gdn":
        # No full-resolution layer and no trunk: per pixel, a few copies of the 1/2-resolution layer plus
        # the im2col columns (25 x width per position) of the 5x5 layers at 1/4. Derived from the layer
        # shapes with margin; a 24 MP ``compact`` run peaked at 2.1 GB under the default 3G budget.
        full_res = px * 4.0 * (24 + 1.6 * ch[1] + 25 * ch[2] / 16)
        costs.update(encoder=full_res, upsample=full_res, trunk=4.0 * 2 * c)
    return costs


#: Whole-image buffers alive while a stage runs, bytes per latent position: (fixed, per latent channel).
#: Encoder/analysis: source and padded uint8 pixels, y (fp32). Synthesis: pixels, y, mu (fp64), table
#: rows (int32). Generator: y_hat (fp32) and the uint8 output.
_WHOLE_IMAGE = {
    "encoder": (2 * 3 * LATENT * LATENT, 4),
    "analysis": (2 * 3 * LATENT * LATENT, 4),
    "synthesis": (3 * LATENT * LATENT, 16),
    "trunk": (3 * LATENT * LATENT, 4),
    "upsample": (3 * LATENT * LATENT, 4),
}


def resident_bytes(size: ModelSize, latent_positions: int, stage: str) -> int:
    """What the process holds outside ``stage``'s tile work: runtime, weights (plus the float64 copies
    of the integer decoder's nets) and the whole-image buffers of that stage."""
    from hificli.models.geometry import exact_parameters

    fixed, per_channel = _WHOLE_IMAGE[stage]
    per_position = fixed + per_channel * size.config.latent_channels
    return RUNTIME_BYTES + 4 * size.n_params + 8 * exact_parameters(size.config) + per_position * latent_positions


#: Whole-image bytes per latent position in the untiled phases (entropy coding; measured ~60 per
#: latent element: mu, table rows, symbols and the coder's int64 work arrays) plus source and output.
_CODING_FIXED, _CODING_PER_CHANNEL = 2 * 3 * LATENT * LATENT, 64


def required_bytes(size: ModelSize, padded_width: int, padded_height: int) -> int:
    """Estimated peak bytes to code an image of this padded size with the smallest tiles."""
    positions = (padded_width // LATENT) * (padded_height // LATENT)
    per_position = _CODING_FIXED + _CODING_PER_CHANNEL * size.config.latent_channels
    return resident_bytes(size, 0, "trunk") + MIN_WORK_BYTES + per_position * positions


def check_fits(size: ModelSize, padded_width: int, padded_height: int, tiling: Tiling) -> None:
    """Refuse, before any work or allocation, an image whose whole-image buffers alone would exceed
    ``tiling.max_memory``. Encoders and decoders apply the same rule, so what hific encodes under a
    limit it also decodes under it, and a tiny hostile file claiming a huge image fails at once."""
    from hificli.errors import InvalidInputError

    need = required_bytes(size, padded_width, padded_height)
    if need > tiling.max_memory:
        gib, n = 1024**3, tiling.workers
        shared = f" ({memory_size(n * tiling.max_memory)} shared by {n} workers)" if n > 1 else ""
        hint = f"raise the limit with --max-memory {-(-need * n // gib)}G"
        raise InvalidInputError(
            f"a {padded_width}x{padded_height} (padded) image needs about {memory_size(need)} with this "
            f"model, more than the memory limit of {memory_size(tiling.max_memory)}{shared}",
            hint + (" or use fewer -j workers" if n > 1 else ""),
        )


def check_source_fits(
    size: ModelSize, width: int, height: int, tiling: Tiling, *, input_bytes: int = 0,
    read_bytes_per_pixel: int = 24,
) -> None:
    """Refuse, from an image file's header alone (before one pixel is decoded), an image the encoder
    could not read and code within ``tiling.max_memory``: :func:`check_fits` on its padded size, and
    the reading phase (the model, the input file and ``read_bytes_per_pixel`` per pixel for Pillow's
    image and its conversions, see hificli.imageio)."""
    from hificli.codec import padded_size
    from hificli.errors import InvalidInputError

    check_fits(size, *padded_size(width, height), tiling)
    need = resident_bytes(size, 0, "trunk") + input_bytes + read_bytes_per_pixel * width * height
    if need > tiling.max_memory:
        n = tiling.workers
        raise InvalidInputError(
            f"reading a {width}x{height} image needs about {memory_size(need)} with this model, more than "
            f"the memory limit of {memory_size(tiling.max_memory)}",
            f"raise the limit with --max-memory {-(-need * n // 1024**3)}G",
        )


def work_budget(tiling: Tiling, size: ModelSize, latent_positions: int, stage: str) -> int:
    """Bytes available to one tile's activations in ``stage`` under ``tiling.max_memory``."""
    free = tiling.max_memory - resident_bytes(size, latent_positions, stage)
    return max(MIN_WORK_BYTES, int(WORK_FRACTION * free))


# ---------------------------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Tile:
    """A core (written to the output) and its window (what the stage reads), as (r0, r1, c0, c1)
    half-open ranges of grid units; the window contains the core."""

    core: tuple[int, int, int, int]
    window: tuple[int, int, int, int]

    @property
    def offset(self) -> tuple[int, int]:
        """Position of the core inside the window."""
        return self.core[0] - self.window[0], self.core[2] - self.window[2]

    @property
    def core_shape(self) -> tuple[int, int]:
        return self.core[1] - self.core[0], self.core[3] - self.core[2]


def _segments(start: int, stop: int, n: int) -> list[tuple[int, int]]:
    """``[start, stop)`` cut into ``n`` near-equal non-empty segments."""
    length = stop - start
    bounds = [start + (length * i) // n for i in range(n + 1)]
    return [(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True) if b > a]


def _window_side(core: int, halo: int, limit: int) -> int:
    """Largest window side for cores of length ``core`` (two halos, never more than the image)."""
    return min(limit, core + 2 * halo)


def choose_counts(
    region: tuple[int, int], limits: tuple[int, int], halo: int, max_area: float
) -> tuple[int, int]:
    """Tile counts (rows, cols) over a region of ``region`` units that keep every window within
    ``max_area`` units and compute the least total window area (ties: fewer tiles). When even a
    one-unit core does not fit, cores of ``2 * halo`` units (windows mostly core, at most ~4x the
    work; the budget is then exceeded rather than the run slowed down without limit)."""
    rows, cols = region
    best: tuple[float, int, int, int] | None = None
    for ny in range(1, rows + 1):
        core_h = -(-rows // ny)
        if ny > 1 and core_h == -(-rows // (ny - 1)):
            continue  # same core height as fewer rows of tiles
        win_h = _window_side(core_h, halo, limits[0])
        max_w = max_area / win_h
        if max_w >= limits[1] or max_w >= cols + 2 * halo:
            nx = 1
        else:
            core_w = int(max_w) - 2 * halo
            if core_w < 1:
                continue
            nx = -(-cols // core_w)
        win_w = _window_side(-(-cols // nx), halo, limits[1])
        cost = (ny * win_h) * (nx * win_w)
        key = (cost, ny * nx, ny, nx)
        if best is None or key < best:
            best = key
        if nx == 1:
            break  # more tile rows only add halo
    if best is None:
        core = max(1, 2 * halo)
        return -(-rows // core), -(-cols // core)
    return best[2], best[3]


def plan(
    region: tuple[int, int, int, int],
    limits: tuple[int, int],
    *,
    halo: int,
    core: int | None = None,
    max_area: float | None = None,
) -> list[Tile]:
    """Tiles whose cores partition ``region`` (r0, r1, c0, c1) and whose windows add ``halo`` units,
    clipped to ``[0, limits[0]) x [0, limits[1])``. Core side ``core`` units if given, else counts
    from :func:`choose_counts` under ``max_area``; neither: one tile."""
    r0, r1, c0, c1 = region
    rows, cols = r1 - r0, c1 - c0
    if core is not None:
        ny, nx = -(-rows // max(1, core)), -(-cols // max(1, core))
    elif max_area is not None:
        ny, nx = choose_counts((rows, cols), limits, halo, max_area)
    else:
        ny, nx = 1, 1
    tiles = []
    for a, b in _segments(r0, r1, ny):
        for c, d in _segments(c0, c1, nx):
            window = (max(0, a - halo), min(limits[0], b + halo), max(0, c - halo), min(limits[1], d + halo))
            tiles.append(Tile((a, b, c, d), window))
    return tiles


def stage_plan(
    stage: str,
    size: ModelSize,
    tiling: Tiling,
    grid: tuple[int, int],
    *,
    unit_px: int,
    halo: int,
    latent_positions: int,
    region: tuple[int, int, int, int] | None = None,
    extra: int = 0,
    cost_factor: float = 1.0,
) -> list[Tile]:
    """The tiles of one stage on a ``grid`` of units ``unit_px`` pixels wide, under ``tiling``.
    ``extra``: bytes already held by an enclosing stage while this one runs; ``cost_factor``: the
    stage's activation memory relative to the model's own (2 for a generator run twice)."""
    region = region if region is not None else (0, grid[0], 0, grid[1])
    if tiling.tile == 0:
        return plan(region, grid, halo=halo)
    if tiling.tile is not None:
        return plan(region, grid, halo=halo, core=max(1, round(tiling.tile / unit_px)))
    budget = work_budget(tiling, size, latent_positions, stage) - extra
    max_area = max(1.0, budget / (cost_factor * stage_costs(size.config)[stage]))
    return plan(region, grid, halo=halo, max_area=max_area)


def _crop(t: torch.Tensor | np.ndarray, tile: Tile, scale: int) -> torch.Tensor | np.ndarray:
    """The core of a stage output computed on ``tile.window`` (``scale`` output units per grid unit)."""
    (dr, dc), (h, w) = tile.offset, tile.core_shape
    return t[..., dr * scale : (dr + h) * scale, dc * scale : (dc + w) * scale]


def _window(t: torch.Tensor | np.ndarray, tile: Tile, scale: int = 1) -> torch.Tensor | np.ndarray:
    r0, r1, c0, c1 = tile.window
    return t[..., r0 * scale : r1 * scale, c0 * scale : c1 * scale]


# ---------------------------------------------------------------------------------------------- stages


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    import ctypes

    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (OSError, AttributeError):
        return None


def release_freed_memory() -> None:
    """Hand memory freed by the tiles of a stage back to the OS. glibc keeps freed heap pages (a few
    hundred MB after the encoder tiles of a 24 MP image, measured), which the next stage's budget does
    not count; elsewhere this does nothing."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)



def generator_layout(device: torch.device) -> torch.memory_format:
    """Memory layout of the generator's activations: channels-last on CPUs (oneDNN's own layout, and
    ChannelNorm's fused path; the full-size generator took 0.75-0.84x the time in alternating runs,
    pixels within 1 level), torch's default elsewhere (the GPU path is not measured yet)."""
    import torch

    return torch.channels_last if device.type == "cpu" else torch.contiguous_format


def network_device(network: HificModel) -> torch.device:
    """Where the network's float transforms run (its parameters' device); stage outputs come back to
    the CPU, where the exact hyper-synthesis and the entropy coder work."""
    return next(network.parameters()).device


def encode_latents(network: HificModel, pixels: np.ndarray, tiling: Tiling) -> torch.Tensor:
    """uint8 (H, W, 3) image, sides multiples of 64 -> y, float32 (1, C, H/16, W/16). (The memory
    limit is checked by the caller: hificli.codec.CodecModel.analyse.)"""
    import numpy as np
    import torch

    grid = (pixels.shape[0] // LATENT, pixels.shape[1] // LATENT)
    positions = grid[0] * grid[1]
    tiles = stage_plan("encoder", ModelSize.of(network), tiling, grid, unit_px=LATENT, halo=ENCODER_HALO,
                       latent_positions=positions)
    y = torch.empty((1, network.config.latent_channels, *grid), dtype=torch.float32)
    device = network_device(network)
    with torch.inference_mode():
        for tile in tiles:
            r0, r1, c0, c1 = (v * LATENT for v in tile.window)
            window = torch.from_numpy(np.array(pixels[r0:r1, c0:c1])).to(device)  # a copy: may be read-only
            x = window.permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
            del window
            out = network.encode_latents(network.preprocess(x))
            del x
            _crop_into(y, tile, out)
    release_freed_memory()
    return y


def _crop_into(dest: torch.Tensor | np.ndarray, tile: Tile, out: torch.Tensor | np.ndarray, scale: int = 1) -> None:
    r0, r1, c0, c1 = tile.core
    dest[..., r0 * scale : r1 * scale, c0 * scale : c1 * scale] = _crop(out, tile, scale)


def analyse_hyper(network: HificModel, y: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """y (1, C, h, w), h and w multiples of 4 -> z_hat = floor(z + 0.5), float32 (1, N, h/4, w/4)."""
    import torch

    grid = (y.shape[2] // HYPER, y.shape[3] // HYPER)
    tiles = stage_plan("analysis", ModelSize.of(network), tiling, grid, unit_px=LATENT * HYPER, halo=ANALYSIS_HALO,
                       latent_positions=y.shape[2] * y.shape[3])
    z_hat = torch.empty((1, network.config.hyper_channels, *grid), dtype=torch.float32)
    device = network_device(network)
    with torch.inference_mode():
        for tile in tiles:
            z = network.Hyperprior.analysis(_window(y, tile, HYPER).to(device))
            _crop_into(z_hat, tile, torch.floor(z + 0.5))
    release_freed_memory()
    return z_hat


def hyper_mean_scale(
    size: ModelSize, exact: ExactHyperSynthesis, z_hat: np.ndarray, tiling: Tiling,
) -> tuple[np.ndarray, np.ndarray]:
    """Integer-exact (mu_fixed, scale_fixed), int64 (1, C, 4h, 4w) with OUT_FRAC fractional bits, from
    integer hyperlatents z_hat (1, N, h, w) of ``size``'s model (numpy only).

    Bit-identical to the untiled ``exact.fixed(z_hat)`` for any tiling (integer arithmetic, halo >= field).
    """
    import numpy as np

    grid = (int(z_hat.shape[2]), int(z_hat.shape[3]))
    shape = (1, exact.out_channels, grid[0] * HYPER, grid[1] * HYPER)
    tiles = stage_plan("synthesis", size, tiling, grid, unit_px=LATENT * HYPER, halo=SYNTHESIS_HALO,
                       latent_positions=shape[2] * shape[3])
    mu = np.empty(shape, dtype=np.int64)
    scale = np.empty(shape, dtype=np.int64)
    for tile in tiles:
        mu_fixed, scale_fixed = exact.fixed(_window(z_hat, tile))
        _crop_into(mu, tile, mu_fixed, HYPER)
        _crop_into(scale, tile, scale_fixed, HYPER)
        del mu_fixed, scale_fixed
    release_freed_memory()
    return mu, scale


def hyper_parameters(
    size: ModelSize, exact: ExactHyperSynthesis, z_hat: np.ndarray, thresholds: np.ndarray, tiling: Tiling,
) -> tuple[np.ndarray, np.ndarray]:
    """Integer-exact (mu_fixed int64 (1, C, 4h, 4w), table row int32 (1, C, 4h, 4w)) from z_hat (1, N, h, w).

    Bit-identical to the untiled computation for any tiling (integer arithmetic, halo >= field).
    """
    from hificli.entropy.exact import scale_indexes

    mu, scale = hyper_mean_scale(size, exact, z_hat, tiling)
    return mu, scale_indexes(scale, thresholds)


def generate_image(
    network: HificModel, y_hat: torch.Tensor, width: int, height: int, tiling: Tiling,
    *, half: torch.dtype | None = None, generator: torch.nn.Module | None = None, cost_factor: float = 1.0,
) -> np.ndarray:
    """Latents (1, C, h, w) -> uint8 (height, width, 3), the generator run in fused trunk/upsample tiles
    on the network's device; ``half``: under autocast to that dtype (pixels change by rounding only).
    ``generator``: another module with the Generator's interface (``trunk``, ``upsample``,
    ``trunk_radius``; e.g. hificli.models.realism.BlendedGenerator) whose upsampling needs
    ``cost_factor`` times the Generator's activation memory."""
    import numpy as np
    import torch

    grid = (int(y_hat.shape[2]), int(y_hat.shape[3]))
    positions = grid[0] * grid[1]
    generator = generator if generator is not None else network.Generator
    h_trunk = generator.trunk_radius
    size = ModelSize.of(network)
    outer = stage_plan("trunk", size, tiling, grid, unit_px=LATENT, halo=h_trunk + UPSAMPLE_HALO,
                       latent_positions=positions)
    trunk, upsample = generator.trunk, generator.upsample
    positional = getattr(generator, "positional", False)  # upsample keyed to the tile's pixel origin
    out = np.empty((height, width, 3), dtype=np.uint8)
    device = network_device(network)
    layout = generator_layout(device)
    autocast = torch.autocast(device.type, dtype=half, enabled=half is not None)
    with torch.inference_mode(), autocast:
        for tile in outer:
            # Trunk features, valid on the core plus the upsampling halo (clipped to the image).
            valid = plan(tile.core, grid, halo=UPSAMPLE_HALO)[0].window
            full = trunk(_window(y_hat, tile).to(device).contiguous(memory_format=layout))
            held = full.numel() * full.element_size()
            vr, vc = valid[0] - tile.window[0], valid[2] - tile.window[2]
            features = full[..., vr : vr + valid[1] - valid[0], vc : vc + valid[3] - valid[2]]
            inner = stage_plan("upsample", size, tiling, grid, unit_px=LATENT, halo=UPSAMPLE_HALO,
                               latent_positions=positions, region=tile.core, extra=held, cost_factor=cost_factor)
            for sub in inner:
                w = sub.window
                local = features[..., w[0] - valid[0] : w[1] - valid[0], w[2] - valid[2] : w[3] - valid[2]]
                where = {"origin": (w[0] * LATENT, w[2] * LATENT)} if positional else {}
                x = network.postprocess(upsample(local, **where).float())
                _write_pixels(out, sub, _crop(x, sub, LATENT))
            del full, features
    release_freed_memory()
    return out


def _write_pixels(out: np.ndarray, tile: Tile, x: torch.Tensor) -> None:
    """Write a (1, 3, h, w) [0, 1] core into the uint8 image, cropped to the image size."""
    import torch

    top, left = tile.core[0] * LATENT, tile.core[2] * LATENT
    h = min(x.shape[2], out.shape[0] - top)
    w = min(x.shape[3], out.shape[1] - left)
    if h <= 0 or w <= 0:
        return
    x = x[0, :, :h, :w].mul(255.0).add_(0.5).floor_().clamp_(0, 255)
    out[top : top + h, left : left + w] = x.to(torch.uint8).permute(1, 2, 0).cpu().numpy()

