"""The Python API the CLI is a shell over: load_model, encode, decode."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from hificli.errors import HificError

if TYPE_CHECKING:
    from PIL import Image

    from hificli.codec import CodecModel


def load_model(
    name_or_path: str | Path | None = None,
    *,
    offline: bool | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "cpu",
    half: bool = False,
    from_header: bool = False,
) -> CodecModel:
    """Load a model by registry name (pulling it on first use unless offline), weights file, port
    checkpoint (.pt) or training run directory. ``None`` loads the embedded default.

    ``device`` (``auto``, ``cpu``, ``cuda[:N]``) and ``half`` say where and how the float transforms
    run (:meth:`CodecModel.place`). A file decodes to the same latents on every device; the symbols an
    encoder writes follow its float latents, which can differ slightly between devices.
    ``from_header``: the name is a .hfc file's model id, resolved among registry and installed names
    only, never as a path."""
    from hificli import weights
    from hificli.codec import CodecModel
    from hificli.device import resolve_device
    from hificli.zoo.registry import DEFAULT_MODEL
    from hificli.zoo.resolve import resolve_model

    device = resolve_device(device)  # an unavailable device fails before any loading
    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    path = resolve_model(name, offline=offline, cache_dir=cache_dir, progress=progress, from_header=from_header)
    if weights.is_port_checkpoint(path):
        return _from_port_checkpoint(Path(path)).place(device, half=half)
    network, z_table, y_table, info = weights.load_weights(path)
    return CodecModel(network, z_table, y_table, info, Path(path)).place(device, half=half)


def checkpoint_model_id(path: Path) -> str:
    """The model id a .hfc file records for a checkpoint used directly: its file name made into a valid
    id (``My_Model v2.pt`` -> ``my-model-v2``; FORMAT.md: ``[a-z0-9][a-z0-9._-]*``, at most 64)."""
    text = re.sub(r"[^a-z0-9._-]+", "-", path.stem.lower().replace("_", "-"))
    return re.sub(r"^[^a-z0-9]+", "", text)[:64].rstrip("._-") or "checkpoint"


def _from_port_checkpoint(path: Path) -> CodecModel:
    """A port-layout checkpoint used directly: strict load, tables built in memory."""
    from hificli import weights
    from hificli.checkpoint import load_port_model
    from hificli.codec import CodecModel

    network, _ = load_port_model(path)
    z_table, y_table = weights.build_tables(network)
    state = network.inference_state_dict()
    arrays = weights.table_arrays(z_table, y_table)
    info = weights.WeightsInfo(
        model_id=checkpoint_model_id(path),
        fingerprint=weights.fingerprint(state, arrays, network.config),
        config=network.config,
        n_params=sum(t.numel() for t in state.values()),
        half=False,
    )
    return CodecModel(network, z_table, y_table, info, path)


def encode(image: Image.Image, model: CodecModel) -> bytes:
    """Encode a Pillow image into the bytes of a .hfc file (EXIF orientation and mode policy applied)."""
    from hificli.codec import encode_source
    from hificli.imageio import to_source_image

    if not hasattr(image, "mode"):
        raise HificError("encode() takes a PIL.Image.Image")
    return encode_source(to_source_image(image), model)


def decode(data: bytes, model: CodecModel) -> Image.Image:
    """Decode the bytes of a .hfc file into a Pillow image (grayscale sources decode to mode L)."""
    from hificli.codec import decode_file, to_pil

    pixels, header = decode_file(data, model)
    return to_pil(pixels, header)
