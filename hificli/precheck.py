"""Refusing a damaged hyperlatent stream before torch is imported (issue #16: a hostile file's error
comes in a fraction of a second, not after the 1-2 s of importing torch and loading a model).

The z stream is coded with the weights file's fixed hyperlatent tables (``tables.z.*``, one row per
channel), so it can be entropy-decoded with numpy and constriction alone. :func:`refuse_damaged_z`
does that for a file whose header the model would accept; anything it cannot judge (another model's
file, a header the decoder refuses for another reason, weights that are not a local weights file) is
left to hificli.codec.decode_latents, which checks the same stream again with the loaded model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hificli import container
from hificli.errors import HificError, ModelMismatchError

_Z_PREFIX = "tables.z."
#: Larger z streams are left to the decoder, which checks the memory limit before decoding anything
#: (a 24 MP photo has about 0.6 M hyperlatents; a header claiming a huge image must not make this
#: check allocate for it).
MAX_SYMBOLS = 1 << 22


def _z_shape(header: container.Header, info: object) -> tuple[int, ...] | None:
    """The z shape the decoder expects for ``header`` with weights ``info`` (hificli.weights.WeightsInfo),
    or None when the decoder would refuse the header on its own (hificli.codec.expected_streams): its
    message is the one to give."""
    from hificli.codec import expected_streams

    try:
        return expected_streams(header, info.config, info.fingerprint, info.model_id)["z"]  # type: ignore[attr-defined]
    except HificError:
        return None


def refuse_damaged_z(hfc: container.HfcFile, weights_path: str | Path) -> None:
    """Raise CorruptFileError ("damaged stream 'z' ...", as the decoder words it) if ``hfc``'s
    hyperlatent stream does not decode exactly with the tables of the weights at ``weights_path``;
    return silently when it does or when this cannot be judged here. Damaged or changed weights take
    precedence, as when the model loads: before refusing the stream the weights are checked against
    their fingerprint (hificli.weights.read_verified: ModelMismatchError)."""
    from hificli import weights
    from hificli.entropy.coder import decode_symbols
    from hificli.entropy.tables import CdfTable

    path = Path(weights_path)
    try:
        info = weights.read_weights_info(path)
    except (HificError, OSError):
        return
    shape = _z_shape(hfc.header, info)
    if shape is None or int(np.prod(shape)) > MAX_SYMBOLS:
        return
    try:
        table = CdfTable.from_arrays(_read_arrays(path, _Z_PREFIX), _Z_PREFIX)
    except (HificError, OSError, ValueError, TypeError):
        return  # damaged weights: loading the model says so
    indexes = np.broadcast_to(np.arange(shape[0])[:, None, None], shape)
    try:
        decode_symbols(hfc.stream("z"), indexes, table, stream="z")
    except HificError:
        weights.read_verified(path)  # tampered weights are the error to report, if they are
        raise


def _read_arrays(path: Path, prefix: str) -> dict[str, np.ndarray]:
    """The arrays of a safetensors file whose names start with ``prefix`` (numpy, nothing else read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="np") as handle:
            return {key: handle.get_tensor(key) for key in handle.keys() if key.startswith(prefix)}  # noqa: SIM118 (not a dict)
    except SafetensorError as exc:
        raise ModelMismatchError(f"{path}: damaged weights file ({exc})") from None
