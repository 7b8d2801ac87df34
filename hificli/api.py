"""The Python API the CLI is a shell over: load_model, encode, decode."""

from __future__ import annotations

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
) -> CodecModel:
    """Load a model by registry name (pulling it on first use unless offline), weights file, port
    checkpoint (.pt) or training run directory. ``None`` loads the embedded default."""
    from hificli import weights
    from hificli.codec import CodecModel
    from hificli.zoo.registry import DEFAULT_MODEL
    from hificli.zoo.resolve import resolve_model

    name = str(name_or_path) if name_or_path is not None else DEFAULT_MODEL
    path = resolve_model(name, offline=offline, cache_dir=cache_dir, progress=progress)
    if weights.is_port_checkpoint(path):
        return _from_port_checkpoint(Path(path))
    network, z_table, y_table, info = weights.load_weights(path)
    return CodecModel(network, z_table, y_table, info, Path(path))


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
        model_id=path.stem.replace("_", "-").lower()[:64] or "checkpoint",
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
