"""The Python API the CLI is a shell over: load_model, encode, decode."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from hificli.errors import HificError, UsageError

if TYPE_CHECKING:
    from PIL import Image

    from hificli.codec import CodecModel
    from hificli.latent import LatentModel


def load_model(
    name_or_path: str | Path | None = None,
    *,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
    half: bool = False,
    from_header: bool = False,
    latent: LatentModel | None = None,
) -> CodecModel:
    """Load a model by registry name (pulling it on first use unless offline), weights file, port
    checkpoint (.pt) or training run directory. ``None`` loads the embedded default.

    ``device`` (``auto``, ``cpu``, ``cuda[:N]``) and ``half`` say where and how the float transforms
    run (:meth:`CodecModel.place`). A file decodes to the same latents on every device; the symbols an
    encoder writes follow its float latents, which can differ slightly between devices.
    ``from_header``: the name is a .hfc file's model id, resolved among registry and installed names
    only, never as a path. ``latent``: the model's :func:`load_latent_model`, loaded already (its
    weights become the float network's: nothing is read twice)."""
    from hificli import weights
    from hificli.codec import CodecModel
    from hificli.device import check_device, resolve_device

    check_device(device)  # an unavailable device fails before any loading (torch only for cuda)
    if latent is None:
        latent = load_latent_model(name_or_path, offline=offline, cache_dir=cache_dir, progress=progress,
                                   from_header=from_header)
    network = weights.build_network(latent.release_weights(), latent.info, latent.path)
    return CodecModel(network, latent).place(resolve_device(device), half=half)


def load_latent_model(
    name_or_path: str | Path | None = None,
    *,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    from_header: bool = False,
) -> LatentModel:
    """The integer half of a model (hificli.latent: what decoding a file's latents needs), named as for
    :func:`load_model`. A weights file is verified against its fingerprint and read with numpy, without
    importing torch; a port checkpoint needs torch to be read."""
    from hificli import weights
    from hificli.latent import LatentModel
    from hificli.zoo.registry import DEFAULT_MODEL
    from hificli.zoo.resolve import resolve_model

    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    path = Path(resolve_model(name, offline=offline, cache_dir=cache_dir, progress=progress, from_header=from_header))
    if weights.is_port_checkpoint(path):
        return _from_port_checkpoint(path)
    arrays, info = weights.read_verified(path)  # numpy: no torch
    return LatentModel.from_arrays(arrays, info, path)


def checkpoint_model_id(path: Path) -> str:
    """The model id a .hfc file records for a checkpoint used directly: its file name made into a valid
    id (``My_Model v2.pt`` -> ``my-model-v2``; FORMAT.md: ``[a-z0-9][a-z0-9._-]*``, at most 64)."""
    text = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower().replace("_", "-"))
    return re.sub(r"^[^a-z0-9]+", "", text)[:64].rstrip("._-") or "checkpoint"


def _from_port_checkpoint(path: Path) -> LatentModel:
    """A port-layout checkpoint used directly: strict load, tables built in memory."""
    from hificli import weights
    from hificli.checkpoint import load_port_model
    from hificli.latent import LatentModel

    network, _ = load_port_model(path)
    z_table, y_table = weights.build_tables(network)
    state = {k: v.detach().cpu().numpy() for k, v in network.inference_state_dict().items()}
    arrays = weights.table_arrays(z_table, y_table)
    info = weights.WeightsInfo(
        model_id=checkpoint_model_id(path),
        fingerprint=weights.fingerprint(state, arrays, network.config),
        config=network.config,
        n_params=sum(v.size for v in state.values()),
        half=False,
    )
    return LatentModel.from_arrays({**state, **arrays}, info, path)


def encode(
    image: Image.Image,
    model: CodecModel,
    *,
    quality: float | None = None,
    target_bpp: float | None = None,
    target_size: int | None = None,
) -> bytes:
    """Encode a Pillow image into the bytes of a .hfc file (EXIF orientation and mode policy applied).

    Variable-rate models take at most one of ``quality`` (0-100, higher is better and larger; default
    :data:`hificli.entropy.rate.DEFAULT_QUALITY`), ``target_bpp`` (bits per pixel of the whole file) or
    ``target_size`` (bytes): a target gives the largest file not above it (TargetUnreachableError when
    even quality 0 is larger). Fixed-rate models take no quality. ``hificli.container.unpack(data)
    .header.quality`` tells the quality a target chose.
    """
    from hificli.imageio import to_source_image
    from hificli.ratecontrol import RateRequest, encode_with

    if not hasattr(image, "mode"):
        raise HificError("encode() takes a PIL.Image.Image")
    try:
        request = RateRequest(quality, target_bpp, target_size)
        if quality is not None and not model.variable_rate:
            raise ValueError(f"model {model.model_id!r} is fixed-rate: it takes no quality")
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return encode_with(to_source_image(image), model, request).data


def decode(data: bytes, model: CodecModel, *, realism: float = 0.0) -> Image.Image:
    """Decode the bytes of a .hfc file into a Pillow image (grayscale sources decode to mode L).
    ``realism`` in [0, 1]: how much of the model's realism decoder (synthesised detail) to blend in;
    0 is the faithful reconstruction. The latents do not depend on it."""
    from hificli.codec import decode_file, to_pil

    pixels, header = decode_file(data, model, realism)
    return to_pil(pixels, header)
