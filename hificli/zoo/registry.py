"""The model registry: every model hific knows by name, in one table (no torch, no network).

Two kinds of entries: the embedded default, shipped inside the package as inference weights, and the
released HiFiC checkpoints of the earlier PyTorch port (Zenodo record 4026003), fetched on first use and
converted to inference weights in the cache.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from hificli.errors import UnknownModelError

DEFAULT_MODEL = "hific-vr2"
#: The default's encoder and decoder retrained for perceptual quality (its entropy model shared).
PERCEPTUAL_MODEL = "hific-perceptual"
#: The previous variable-rate default (no context model), still shipped so that its files keep decoding.
PREVIOUS_VR_MODEL = "hific-vr"
#: The previous default (fixed-rate), still shipped so that its files keep decoding.
COMPACT_MODEL = "hific-compact"
DEFAULT_BASE_URL = "https://zenodo.org"
BASE_URL_ENV = "HIFIC_MODEL_BASE_URL"
ZENODO_RECORD = "4026003"

PORT_REPO = "Justin-Tan/high-fidelity-generative-compression"
_PORT_LICENSE = f"Apache-2.0 (released with the earlier PyTorch port, {PORT_REPO})"
_PORT_SIZE = 2_200_000_000  # weights + two Adam moments + discriminator copy, ~2.2 GB each

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model.

    remote_file: file name in the Zenodo record (None for the embedded model).
    resource: file name under the package's ``hificli/zoo/default/`` (None for remote models).
    target_bpp: the rate the model was trained for (None when not fixed yet).
    rate_range: (lowest, highest) bpp on typical photos: a variable-rate model's quality range, or the
      spread of a fixed-rate model over photos.
    variable_rate: the model takes a quality (``hific encode -q``).
    family: fixed-rate models of one family (HiFiC low/med/high): ``--bpp/--size`` choose among them.
    approx_download: approximate download size in bytes (0 for the embedded model).
    """

    name: str
    target_bpp: float | None
    description: str
    source: str
    license: str
    remote_file: str | None = None
    resource: str | None = None
    approx_download: int = 0
    rate_range: tuple[float, float] | None = None
    variable_rate: bool = False
    family: str | None = None

    @property
    def embedded(self) -> bool:
        return self.resource is not None


#: The one table of known models.
MODELS: tuple[ModelEntry, ...] = (
    ModelEntry(
        name=DEFAULT_MODEL,
        target_bpp=None,
        description="variable-rate compact HiFiC-style codec with a channel-conditional context model "
        "(hific-vr fine-tuned on 92 photos) and a realism decoder (decode --realism R); -q 0-100 or "
        "--bpp/--size; the default, offline",
        source="embedded in the hific package",
        license="Apache-2.0 (this project)",
        resource=f"{DEFAULT_MODEL}.safetensors",
        rate_range=(0.012, 1.20),  # E15 photos, -q 0 .. -q 100
        variable_rate=True,
    ),
    ModelEntry(
        name=PERCEPTUAL_MODEL,
        target_bpp=None,
        description="hific-vr2's encoder and decoder retrained for ST-LPIPS (rate + MSE + perceptual, no GAN): "
        "sharper texture at equal bpp, lower PSNR; shares hific-vr2's entropy model; -q 0-100, offline",
        source="embedded in the hific package",
        license="Apache-2.0 (this project)",
        resource=f"{PERCEPTUAL_MODEL}.safetensors",
        rate_range=(0.013, 1.45),  # E15 photos, -q 0 .. -q 100
        variable_rate=True,
    ),
    ModelEntry(
        name=PREVIOUS_VR_MODEL,
        target_bpp=None,
        description="variable-rate compact HiFiC-style codec (hific-compact fine-tuned over 7 rate levels), "
        "no context model; the previous default, offline",
        source="embedded in the hific package",
        license="Apache-2.0 (this project)",
        resource=f"{PREVIOUS_VR_MODEL}.safetensors",
        rate_range=(0.015, 1.17),  # E15 photos, -q 0 .. -q 100
        variable_rate=True,
    ),
    ModelEntry(
        name=COMPACT_MODEL,
        target_bpp=0.2,
        description="compact HiFiC-style codec (GDN transforms, 2.8 M parameters) trained by this project on "
        "2 CPU cores, fixed rate (about 0.3 bpp on photos); the previous default, offline",
        source="embedded in the hific package",
        license="Apache-2.0 (this project)",
        resource=f"{COMPACT_MODEL}.safetensors",
        rate_range=(0.03, 0.78),  # E15 photos
    ),
    ModelEntry(
        name="hific-low",
        family="hific",
        target_bpp=0.14,
        description="HiFiC low-rate regime (181 M parameters, gaussian latents, normalized input)",
        source=f"Zenodo record {ZENODO_RECORD}, file hific_low.pt",
        license=_PORT_LICENSE,
        remote_file="hific_low.pt",
        approx_download=_PORT_SIZE,
    ),
    ModelEntry(
        name="hific-med",
        family="hific",
        target_bpp=0.30,
        description="HiFiC medium-rate regime (181 M parameters, logistic latents)",
        source=f"Zenodo record {ZENODO_RECORD}, file hific_med.pt",
        license=_PORT_LICENSE,
        remote_file="hific_med.pt",
        approx_download=_PORT_SIZE,
    ),
    ModelEntry(
        name="hific-high",
        family="hific",
        target_bpp=0.45,
        description="HiFiC high-rate regime (181 M parameters, gaussian latents, normalized input)",
        source=f"Zenodo record {ZENODO_RECORD}, file hific_hi.pt",
        license=_PORT_LICENSE,
        remote_file="hific_hi.pt",
        approx_download=_PORT_SIZE,
    ),
)

_BY_NAME = {entry.name: entry for entry in MODELS}


def names() -> list[str]:
    """Registered model names, in table order."""
    return [entry.name for entry in MODELS]


def variable_rate_names() -> list[str]:
    """Registered models that take a quality."""
    return [entry.name for entry in MODELS if entry.variable_rate]


def family(name: str) -> list[ModelEntry]:
    """The registered models of a fixed-rate family, in table order."""
    return [entry for entry in MODELS if entry.family == name]


def find(name: str) -> ModelEntry | None:
    """The registered entry called ``name``, or None."""
    return _BY_NAME.get(name)


def get(name: str) -> ModelEntry:
    """The registered entry called ``name``; UnknownModelError listing the known names otherwise."""
    entry = _BY_NAME.get(name)
    if entry is None:
        raise UnknownModelError(f"unknown model {name!r}; known models: {', '.join(names())}")
    return entry


def check_name(name: str) -> str:
    """Validate a name for a cache entry (letters, digits, '.', '_', '-'; no path separators)."""
    if not _NAME_RE.match(name) or name in (".", ".."):
        raise UnknownModelError(
            f"invalid model name {name!r}", "names use letters, digits, '.', '_' and '-' (at most 64)"
        )
    return name


def base_url() -> str:
    """The download host: ``HIFIC_MODEL_BASE_URL`` (mirrors, tests) or https://zenodo.org."""
    return (os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def file_url(entry: ModelEntry, base: str | None = None) -> str:
    """Download URL of a remote entry's checkpoint."""
    if entry.remote_file is None:
        raise ValueError(f"{entry.name} is not a downloadable model")
    root = (base or base_url()).rstrip("/")
    return f"{root}/record/{ZENODO_RECORD}/files/{entry.remote_file}?download=1"


def records_api_url(base: str | None = None) -> str:
    """URL of the Zenodo records API entry that lists the files' md5 checksums and sizes."""
    root = (base or base_url()).rstrip("/")
    return f"{root}/api/records/{ZENODO_RECORD}"


def embedded_path(entry: ModelEntry) -> Path | None:
    """Path of an embedded model's weights inside the installed package, or None if not shipped."""
    if entry.resource is None:
        return None
    path = Path(str(resources.files("hificli.zoo").joinpath("default", entry.resource)))
    return path if path.is_file() else None


OFFLINE_ENV = "HIFIC_OFFLINE"


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else ``HIFIC_OFFLINE`` ("1", "true", "yes", "on" mean offline)."""
    if offline is not None:
        return offline
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def offline_reason(offline: bool | None = None) -> str:
    """Why hific is offline, for messages: ``--offline`` (the option, or ``offline=True``) or the
    environment variable as it is set."""
    if offline:
        return "--offline"
    return f"{OFFLINE_ENV}={os.environ.get(OFFLINE_ENV, '').strip()}"
