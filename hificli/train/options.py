"""Everything ``hific train`` can be told, as one plain dataclass (stored in every checkpoint)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

STAGES = ("base", "gan", "realism")
AMP_MODES = ("auto", "bf16", "fp16", "off")
REALISM_SAMPLING = ("uniform", "one")
MODEL_ID_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")  # what the .hfc container accepts

#: Options that may differ when a run is resumed (they do not change what is computed).
RUNTIME_OPTIONS = frozenset(
    {"data_dir", "val", "steps", "save_every", "val_every", "log_every", "device", "workers", "threads",
     "cache_mb", "val_images", "val_crop", "checkpoints"}
)


@dataclass
class TrainOptions:
    """A training run's settings. ``None`` means "the regime's / schedule's default" where it applies."""

    data_dir: str
    out: str
    stage: str = "base"
    regime: str = "med"
    arch: str = "small"
    steps: int = 1000
    batch_size: int = 8
    crop: int = 256
    init: str | None = None
    val: str | None = None
    val_split: float = 0.05
    val_every: int = 1000
    val_images: int = 8
    val_crop: int = 512
    save_every: int = 1000
    log_every: int = 10
    device: str = "auto"
    name: str | None = None
    perceptual: str = "auto"
    perceptual_crop: int = 0
    lr: float | None = None
    target_bpp: float | None = None
    lambda_a: float | None = None
    lambda_b: float | None = None
    k_m: float | None = None
    k_p: float | None = None
    k_grid: float | None = None  #: weight of the grid-locked pattern penalty (realism default K_GRID, else 0)
    beta: float | None = None
    d_gain: float = 1.0  #: discriminator: scale of its image input (hificli.models.discriminator)
    d_high_pass: bool = False  #: discriminator: judge the image minus its 3x3 mean (texture only)
    warmup_steps: int | None = None
    lr_drop_step: int | None = None
    lr_drop_factor: float | None = None
    grad_clip: float | None = None
    rate_lambdas: list[float] | None = None  #: variable-rate training: lambda per rate level (low -> high)
    context: str | None = None  #: context model kind to train ("none", "checkerboard", "channel"); None: keep
    context_channels: int | None = None  #: width of a new context (default 192)
    widen: tuple[int, int, int] | None = None  #: new hidden widths of an --init GDN model (1/2, 1/4, 1/8 res.)
    realism_sampling: str = "uniform"  #: realism stage: r ~ U(0, 1) per image ("uniform") or r = 1 ("one")
    grain: bool = False  #: realism stage: give the realism decoder a grain head (hificli.models.grain)
    grain_only: bool = False  #: realism stage: train the grain head alone (implies grain)
    grain_fit: bool = False  #: realism stage: fit the grain head's energy by regression alone (implies grain)
    realism_blocks: int = 0  #: realism stage: residual blocks at latent resolution for a new realism decoder
    freeze_prior: bool = False  #: base/gan stage: train the encoder and decoder only (entropy model fixed)
    perceptual_per_lambda: bool = False  #: variable rate: each image's perceptual weight scales with its lambda
    perceptual_relative: bool = False  #: variable rate: share the perceptual weight out by m(level) / d_i
    rescale: tuple[float, float] = (0.75, 0.95)
    hflip: bool = True
    workers: int | None = None
    threads: int | None = None
    cache_mb: float = 4096.0
    amp: str = "auto"
    channels_last: bool = False
    overfit: bool = False
    seed: int = 0
    checkpoints: bool = True  # False (benchmarks only): write no checkpoint or weights at all
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> None:
        """Raise ValueError naming the first bad option."""
        if self.stage not in STAGES:
            raise ValueError(f"--stage must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.k_grid is not None and self.k_grid < 0:
            raise ValueError("--k-grid is a weight >= 0")
        if not self.d_gain > 0:
            raise ValueError(f"--d-gain must be > 0, got {self.d_gain}")
        if self.stage == "base" and (self.d_gain != 1.0 or self.d_high_pass):
            raise ValueError("--d-gain and --d-high-pass set the discriminator of --stage gan or realism")
        if self.widen is not None and self.stage == "realism":
            raise ValueError("--stage realism keeps the model as it is: it takes no --widen")
        if self.widen is not None and not self.init:
            raise ValueError("--widen needs --init MODEL (the model to widen)")
        if (self.grain or self.grain_only or self.grain_fit) and self.stage != "realism":
            raise ValueError("--grain, --grain-only and --grain-fit are part of the realism decoder (--stage realism)")
        if self.realism_blocks and self.stage != "realism":
            raise ValueError("--realism-blocks is part of the realism decoder (--stage realism)")
        if self.freeze_prior and self.stage == "realism":
            raise ValueError("--freeze-prior is for --stage base or gan (the realism stage freezes the whole model)")
        if self.perceptual_per_lambda and not self.rate_lambdas:
            raise ValueError("--perceptual-per-lambda weights the perceptual term per rate level: needs --rate-lambdas")
        if self.perceptual_relative and not self.rate_lambdas:
            raise ValueError("--perceptual-relative compares distances within a rate level: needs --rate-lambdas")
        if self.perceptual_relative and self.perceptual == "none":
            raise ValueError("--perceptual-relative weights the perceptual term: not with --perceptual none")
        if self.grain_only and self.grain_fit:
            raise ValueError("--grain-fit and --grain-only are two ways to train the grain: choose one")
        if self.realism_sampling not in REALISM_SAMPLING:
            raise ValueError(f"--realism-sampling must be one of {', '.join(REALISM_SAMPLING)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {self.amp!r}")
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("--steps and --batch-size must be >= 1")
        if self.crop < 64 or self.crop % 64:
            raise ValueError(f"--crop must be a multiple of 64 (encoder x hyperprior stride), got {self.crop}")
        lo, hi = self.rescale
        if not 0 < lo <= hi:
            raise ValueError(f"--rescale needs 0 < LO <= HI, got {lo} {hi}")
        if not 0 <= self.val_split < 1:
            raise ValueError(f"--val-split must be in [0, 1), got {self.val_split}")
        for name in ("save_every", "val_every", "log_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        if self.perceptual_crop and not 64 <= self.perceptual_crop <= self.crop:
            raise ValueError(f"--perceptual-crop must be 0 or in [64, --crop], got {self.perceptual_crop}")
        if self.name is not None and not MODEL_ID_RE.match(self.name):
            raise ValueError(f"--name {self.name!r}: use 1-64 of a-z 0-9 . _ - (starting with a letter/digit)")

    def model_id(self) -> str:
        """``--name``, or one derived from the run directory's name."""
        if self.name:
            return self.name
        stem = re.sub(r"[^a-z0-9._-]+", "-", Path(self.out).resolve().name.lower()).strip("-._")
        return (stem or "hific-run")[:64]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rescale"] = list(self.rescale)
        data["widen"] = list(self.widen) if self.widen else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainOptions:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for name in ("rescale", "widen"):
            if values.get(name) is not None:
                values[name] = tuple(values[name])
        return cls(**values)
