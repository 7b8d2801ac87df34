"""Inference weights files: what decoding needs, in a format that cannot execute code on load.

A weights file is a safetensors file holding
- the Encoder, Generator and Hyperprior tensors under the port's key names (fp32, or fp16 with ``half``),
- the integer entropy tables (``tables.z.*`` for the hyperlatents, ``tables.y.*`` for the latents),
- metadata: ``format`` = ``hific-weights``, ``format_version``, ``model_id``, ``arch`` (ArchConfig JSON),
  ``fingerprint`` (16 hex digits, see :func:`fingerprint`), ``meta`` (JSON: training facts).

The fingerprint identifies the decoding contract: it hashes every tensor rounded to float16 plus the
integer tables and the architecture, so an fp32 file and its fp16 copy share it (both decode the same
latents: the exact hyper-synthesis rounds weights to float16 first), while any other weights differ.

A file may also hold a realism decoder (hificli.models.realism): tensors under ``Realism.*`` and their
own fingerprint in the metadata (``realism_fingerprint``, the same hash over those tensors). They are
outside the model's fingerprint: adding a realism decoder to a model (:func:`save_with_realism`) keeps
every file the model wrote decodable with it.

A file may share tensors with another weights file beside it (metadata ``shares``: JSON with that
file's ``model_id``, its ``fingerprint`` and the key ``prefixes`` taken from it; :func:`save_sharing`).
A second model that keeps a model's entropy model (hyperprior, context, tables) and retrains only its
encoder and decoder then stores those two alone. The shared tensors are read from
``<model_id>.safetensors`` in the same directory, checked against its fingerprint, and the file's own
fingerprint covers the merged whole, exactly as if it held every tensor.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hificli.errors import ModelMismatchError
from hificli.fileio import atomic_target
from hificli.models.config import ArchConfig

if TYPE_CHECKING:
    import numpy as np
    import torch

    from hificli.entropy.tables import CdfTable
    from hificli.models.hific import HificModel

WEIGHTS_FORMAT = "hific-weights"
REALISM_PREFIX = "Realism."  #: the realism decoder's tensors (hificli.models.realism)
WEIGHTS_VERSION = 1
_SAFETENSORS_MAX_HEADER = 100 * 1024 * 1024
SHARES_KEY = "shares"  #: metadata: the tensors this file takes from another weights file beside it


@dataclass(frozen=True)
class WeightsInfo:
    """What a weights file says about itself (read from the header only)."""

    model_id: str
    fingerprint: bytes
    config: ArchConfig
    n_params: int
    half: bool
    sha256: str = ""
    size: int = 0
    meta: dict[str, Any] = field(default_factory=dict)
    #: Fingerprint of the realism decoder's tensors, or None when the file has none.
    realism_fingerprint: bytes | None = None
    #: What the file takes from another weights file beside it (:func:`parse_shares`), or None.
    shares: dict[str, Any] | None = None

    @property
    def fingerprint_hex(self) -> str:
        return self.fingerprint.hex()


def is_weights_file(path: str | Path) -> bool:
    """True if ``path`` looks like a hific safetensors weights file (reads 8 + header bytes, no torch)."""
    try:
        _read_safetensors_header(Path(path))
        return True
    except (OSError, ModelMismatchError):
        return False


def is_port_checkpoint(path: str | Path) -> bool:
    """True if ``path`` is a zip-format torch checkpoint (what torch.save writes); structure not checked."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"PK\x03\x04"
    except OSError:
        return False


def _read_safetensors_header(path: Path) -> dict[str, Any]:
    with open(path, "rb") as handle:
        raw = handle.read(8)
        if len(raw) != 8:
            raise ModelMismatchError(f"{path}: not a weights file (too short)")
        length = int.from_bytes(raw, "little")
        if length <= 0 or length > _SAFETENSORS_MAX_HEADER or length > os.path.getsize(path):
            raise ModelMismatchError(f"{path}: not a hific weights file")
        try:
            header = json.loads(handle.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):  # RecursionError: deep nesting
            raise ModelMismatchError(f"{path}: not a hific weights file") from None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(meta, dict) or meta.get("format") != WEIGHTS_FORMAT:
        raise ModelMismatchError(f"{path}: not a hific weights file (no hific metadata)")
    return header


def read_weights_info(path: str | Path, *, with_hash: bool = False) -> WeightsInfo:
    """Parse a weights file's header (cheap, no torch). ``with_hash`` also hashes the whole file."""
    path = Path(path)
    header = _read_safetensors_header(path)
    meta = header["__metadata__"]
    try:
        version = int(meta.get("format_version", "0"))
        if version > WEIGHTS_VERSION:
            raise ModelMismatchError(f"{path}: weights format {version} is newer than this hific supports")
        config = ArchConfig.from_json(meta["arch"])
        fingerprint_bytes = bytes.fromhex(meta["fingerprint"])
        extra = json.loads(meta.get("meta", "{}"))
        n_params = 0
        half = False
        for key, entry in header.items():
            if key == "__metadata__" or key.startswith("tables."):
                continue
            count = 1
            for dim in entry["shape"]:
                count *= int(dim)
            n_params += count
            half = half or entry["dtype"] == "F16"
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        raise ModelMismatchError(f"{path}: damaged weights metadata ({exc})") from None
    except RecursionError:
        raise ModelMismatchError(f"{path}: damaged weights metadata (nested too deeply)") from None
    if len(fingerprint_bytes) != 8:
        raise ModelMismatchError(f"{path}: damaged weights metadata (fingerprint)")
    try:
        realism = bytes.fromhex(meta["realism_fingerprint"]) if "realism_fingerprint" in meta else None
    except (TypeError, ValueError):
        realism = b""
    if realism is not None and len(realism) != 8:
        raise ModelMismatchError(f"{path}: damaged weights metadata (realism fingerprint)")
    return WeightsInfo(
        model_id=_checked_model_id(path, meta.get("model_id", "")),
        fingerprint=fingerprint_bytes,
        config=config,
        n_params=n_params,
        half=half,
        sha256=file_sha256(path) if with_hash else "",
        size=path.stat().st_size,
        meta=extra,
        realism_fingerprint=realism,
        shares=parse_shares(path, meta.get(SHARES_KEY)),
    )


def _checked_model_id(path: Path, model_id: Any) -> str:
    """A weights file's model id, which .hfc headers record: refused at load time (not when a file is
    written) unless the format allows it."""
    from hificli.container import MAX_MODEL_ID, is_model_id

    if not is_model_id(model_id):
        text = str(model_id)
        shown = repr(text) if len(text) <= 70 else f"{text[:40]!r}... ({len(text)} characters)"
        raise ModelMismatchError(
            f"{path}: bad model id {shown} in the weights metadata",
            f"a model id is 1-{MAX_MODEL_ID} of a-z 0-9 . _ - (starting with a letter or digit)",
        )
    return model_id


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint(
    tensors: dict[str, torch.Tensor | np.ndarray], arrays: dict[str, np.ndarray], config: ArchConfig
) -> bytes:
    """First 8 bytes of sha256 over the canonical form of a model (see the module docstring). The
    network ``tensors`` may be torch tensors or numpy arrays (a weights file checked before torch is
    imported): both round to float16 the same way (IEEE round to nearest even)."""
    import numpy as np

    digest = hashlib.sha256()
    digest.update(config.to_json().encode())
    for name in sorted(tensors):
        shape, bits = _float16_bits(tensors[name])
        digest.update(f"{name}:f16:{shape}".encode())
        digest.update(bits.astype("<i2", copy=False).tobytes())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes())
    return digest.digest()[:8]


def _float16_bits(value: Any) -> tuple[tuple[int, ...], np.ndarray]:
    """(shape, int16 view of the float16 rounding) of a torch tensor or a numpy array."""
    import numpy as np

    if isinstance(value, np.ndarray):
        with np.errstate(over="ignore"):  # beyond float16's range is inf, as torch rounds it, silently
            half = np.ascontiguousarray(value.astype(np.float16, copy=False))
        return tuple(value.shape), half.view(np.int16)
    import torch

    tensor = value.detach().to("cpu", torch.float16).contiguous()
    return tuple(tensor.shape), tensor.view(torch.int16).numpy()


def build_tables(model: HificModel) -> tuple[CdfTable, CdfTable]:
    """The integer entropy tables of a model: (hyperlatent z table, latent y table)."""
    import torch

    from hificli.entropy import tables as T

    density = model.Hyperprior.hyperlatent_likelihood

    def pmf(values: Any) -> Any:
        with torch.no_grad():
            tensor = torch.as_tensor(values, dtype=torch.float32)
            return density.likelihood(tensor).double().numpy()

    z_table = T.factorized_tables(pmf, model.config.hyper_channels, T.TAIL_MASS)
    y_table = T.latent_tables(model.config.likelihood, T.latent_scale_table(T.LATENT_LEVELS), T.TAIL_MASS)
    return z_table, y_table


#: Where a variable-rate model's fixed-point rate levels (int64 (L, C)) are stored.
RATE_LEVELS_KEY = "tables.rate.steps_fixed"


def table_arrays(
    z_table: CdfTable, y_table: CdfTable, rate_levels: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """The integer tables (and rate levels) as stored in a weights file and hashed by the fingerprint."""
    arrays = {**z_table.to_arrays("tables.z."), **y_table.to_arrays("tables.y.")}
    if rate_levels is not None:
        arrays[RATE_LEVELS_KEY] = rate_levels.astype("int64")
    return arrays


def save_inference_weights(
    model: HificModel,
    path: str | Path,
    *,
    model_id: str,
    half: bool = False,
    meta: dict[str, Any] | None = None,
    tables: tuple[CdfTable, CdfTable] | None = None,
) -> WeightsInfo:
    """Write ``model``'s inference weights + integer tables to ``path`` atomically."""
    import torch
    from safetensors.torch import save_file

    z_table, y_table = tables if tables is not None else build_tables(model)
    arrays = table_arrays(z_table, y_table, model.RateSteps.fixed() if model.variable_rate else None)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.inference_state_dict().items()}
    dtype = torch.float16 if half else torch.float32
    tensors = {k: v.to(dtype) for k, v in state.items()}
    fp = fingerprint(tensors, arrays, model.config)
    tensors.update({k: torch.from_numpy(v.copy()) for k, v in arrays.items()})
    metadata = {
        "format": WEIGHTS_FORMAT,
        "format_version": str(WEIGHTS_VERSION),
        "model_id": model_id,
        "arch": model.config.to_json(),
        "fingerprint": fp.hex(),
        "meta": json.dumps(meta or {}, sort_keys=True),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return read_weights_info(path, with_hash=True)


def convert_port_checkpoint(
    src: str | Path, dst: str | Path, *, model_id: str, half: bool = False
) -> WeightsInfo:
    """Strictly load a checkpoint in the earlier port's layout and write hific inference weights."""
    from hificli.checkpoint import load_port_model

    model, checkpoint = load_port_model(src)
    meta = {"source": "port-checkpoint", "steps": checkpoint.steps, "regime": checkpoint.args.get("regime")}
    return save_inference_weights(model, dst, model_id=model_id, half=half, meta=meta)


def read_verified(path: str | Path) -> tuple[dict[str, np.ndarray], WeightsInfo]:
    """A weights file's arrays (numpy, no torch) and info, after checking them against the fingerprint
    (:func:`refuse_tampered`): damaged or changed weights are refused before torch is imported."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    info = read_weights_info(path)
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ModelMismatchError(f"{path}: damaged weights file ({exc})") from None
    arrays = _with_shared(path, arrays, info)
    refuse_tampered(path, arrays, info)
    if info.shares:  # the parameters it shares count too (memory estimates use them)
        info = replace(info, n_params=sum(v.size for k, v in arrays.items() if not k.startswith("tables.")))
    return arrays, info


def parse_shares(path: Path, text: Any) -> dict[str, Any] | None:
    """The ``shares`` metadata of a weights file (model id, fingerprint, prefixes), checked; None if absent."""
    if text is None:
        return None
    try:
        shares = json.loads(text)
        model_id, prefixes = _checked_model_id(path, shares["model_id"]), [str(p) for p in shares["prefixes"]]
        if len(bytes.fromhex(shares["fingerprint"])) != 8 or not prefixes or not all(prefixes):
            raise ValueError("fingerprint or prefixes")
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        raise ModelMismatchError(f"{path}: damaged weights metadata (shares: {exc})") from None
    return {"model_id": model_id, "fingerprint": shares["fingerprint"], "prefixes": prefixes}


def shared_file(path: Path, shares: dict[str, Any]) -> Path:
    """Where the file a sharing weights file takes its tensors from lies: beside it, by model id."""
    return path.parent / f"{shares['model_id']}.safetensors"


def _with_shared(path: Path, arrays: dict[str, np.ndarray], info: WeightsInfo) -> dict[str, np.ndarray]:
    """``arrays`` plus the tensors the file shares with another (:data:`SHARES_KEY`), that file verified."""
    shares = info.shares
    if shares is None:
        return arrays
    source = shared_file(path, shares)
    hint = f"keep {source.name} beside {path.name} (the package ships both)"
    if not source.is_file():
        raise ModelMismatchError(f"{path}: shares its entropy model with {shares['model_id']}, "
                                 f"whose weights ({source.name}) are not beside it", hint)
    if read_weights_info(source).shares is not None:
        raise ModelMismatchError(f"{path}: shares tensors with {source.name}, which shares its own (one level only)")
    base, base_info = read_verified(source)
    if base_info.fingerprint_hex != shares["fingerprint"]:
        raise ModelMismatchError(f"{path}: made to share {shares['model_id']} {shares['fingerprint']}, "
                                 f"but {source.name} is {base_info.fingerprint_hex}", hint)
    taken = {k: v for k, v in base.items() if k.startswith(tuple(shares["prefixes"]))}
    if not taken or set(taken) & set(arrays):
        raise ModelMismatchError(f"{path}: damaged weights file (shared tensors missing or stored twice)")
    return {**taken, **arrays}


def save_sharing(base: str | Path, replaced: dict[str, np.ndarray], path: str | Path, *, model_id: str,
                 meta: dict[str, Any] | None = None) -> WeightsInfo:
    """Write a model that is the weights file ``base`` (verified) with the network tensors ``replaced``
    (e.g. every ``Encoder.*`` and ``Generator.*``, stored as float16) and without base's realism decoder,
    to ``path`` atomically. Only ``replaced`` is stored; the rest (hyperprior, context, tables: what
    parses the bits) is read from base at load time, which must lie beside ``path`` as
    ``<base's model id>.safetensors``. The fingerprint covers the merged model."""
    import numpy as np
    from safetensors.numpy import save_file

    loaded, info = read_verified(base)
    network, _, arrays = split_tensors(loaded)
    tops = {key.split(".", 1)[0] + "." for key in replaced}
    if set(replaced) != {k for k in network if k.startswith(tuple(tops))}:
        raise ModelMismatchError(f"{base}: the replaced tensors must be whole modules of its network ({sorted(tops)})")
    for key, value in replaced.items():
        if tuple(value.shape) != tuple(network[key].shape):
            raise ModelMismatchError(f"{key}: shape {tuple(value.shape)}, {base} has {tuple(network[key].shape)}")
    own = {k: np.ascontiguousarray(v, dtype=np.float16) for k, v in replaced.items()}
    merged = {**network, **own}
    prefixes = sorted({key.split(".", 1)[0] + "." for key in (*network, *arrays)} - tops)
    metadata = {
        "format": WEIGHTS_FORMAT,
        "format_version": str(WEIGHTS_VERSION),
        "model_id": _checked_model_id(Path(path), model_id),
        "arch": info.config.to_json(),
        "fingerprint": fingerprint(merged, arrays, info.config).hex(),
        "meta": json.dumps(meta or {}, sort_keys=True),
        SHARES_KEY: json.dumps({"model_id": info.model_id, "fingerprint": info.fingerprint_hex,
                                "prefixes": prefixes}, sort_keys=True),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        save_file(own, tmp, metadata=metadata)
    return read_weights_info(path, with_hash=True)


def load_weights(path: str | Path) -> tuple[HificModel, CdfTable, CdfTable, WeightsInfo]:
    """Load a weights file: (model in eval mode, z table, y table, info). Any damage -> ModelMismatchError."""
    path = Path(path)
    loaded, info = read_verified(path)
    z_table, y_table = read_tables(loaded, path)
    return build_network(loaded, info, path), z_table, y_table, info


def read_tables(arrays: dict[str, np.ndarray], path: Path | None) -> tuple[CdfTable, CdfTable]:
    """The (z, y) entropy tables of a weights file's arrays (numpy, no torch); damage -> ModelMismatchError."""
    from hificli.entropy.tables import CdfTable

    try:
        return CdfTable.from_arrays(arrays, "tables.z."), CdfTable.from_arrays(arrays, "tables.y.")
    except (KeyError, ValueError) as exc:
        raise ModelMismatchError(f"{path}: damaged entropy tables ({exc})") from None


def read_rate_levels(arrays: dict[str, np.ndarray], config: ArchConfig, path: Path | None) -> np.ndarray | None:
    """A variable-rate model's fixed-point rate levels, int64 (L, C), checked against ``config`` (numpy,
    no torch); None for a fixed-rate model. Damaged or missing levels -> ModelMismatchError."""
    from hificli.entropy.rate import check_levels

    if not config.rate_levels:
        return None
    try:
        levels = check_levels(arrays[RATE_LEVELS_KEY], config.latent_channels)
        if levels.shape[0] != config.rate_levels:
            raise ValueError(f"{levels.shape[0]} stored rate levels, the architecture has {config.rate_levels}")
    except (KeyError, ValueError) as exc:
        raise ModelMismatchError(f"{path}: damaged or missing rate levels ({exc})") from None
    return levels


def build_network(loaded: dict[str, np.ndarray], info: WeightsInfo, path: Path | None) -> HificModel:
    """The float network (eval mode, no gradients) of a weights file's verified arrays (:func:`read_verified`);
    fp32 arrays become its parameters without a copy. Any mismatch -> ModelMismatchError."""
    import torch

    from hificli.checkpoint import load_strict
    from hificli.models.hific import HificModel

    network, realism, arrays = split_tensors(loaded)
    state = {k: torch.from_numpy(v).float() for k, v in network.items()}
    with torch.device("meta"):  # no random init of parameters that are overwritten anyway
        model = HificModel(info.config)
    load_strict(model, state, ignore_prefixes=("RateSteps.",))
    levels = read_rate_levels(arrays, info.config, path)
    if levels is not None:
        model.RateSteps.load_fixed(levels)
    if realism:
        _attach_realism(path, model, realism)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _attach_realism(path: Path, model: HificModel, tensors: dict[str, np.ndarray]) -> None:
    """Give ``model`` its realism decoder (``model.Realism``) from the file's ``Realism.*`` tensors."""
    import torch

    from hificli.checkpoint import load_strict
    from hificli.models.realism import RealismGenerator, architecture_of

    shapes = {k[len(REALISM_PREFIX):]: tuple(v.shape) for k, v in tensors.items()}
    try:
        with torch.device("meta"):
            model.Realism = RealismGenerator(model.config, **architecture_of(shapes))
    except ValueError as exc:
        raise ModelMismatchError(f"{path}: {exc}") from None
    state = {k[len(REALISM_PREFIX):]: torch.from_numpy(v).float() for k, v in tensors.items()}
    load_strict(model.Realism, state, ignore_prefixes=(), ignore_patterns=())


def save_with_realism(
    base: str | Path, realism: Any, path: str | Path, *, model_id: str, meta: dict[str, Any] | None = None,
) -> WeightsInfo:
    """Write the weights file ``base`` (verified) plus the realism decoder ``realism``
    (hificli.models.realism.RealismGenerator) to ``path`` atomically: same model fingerprint, the
    realism decoder's own in ``realism_fingerprint``; ``meta`` is stored under the base's ``meta`` as
    ``realism``. A realism decoder already in ``base`` is replaced."""
    extra = {REALISM_PREFIX + k: v.detach().to("cpu").float().contiguous().numpy()
             for k, v in realism.state_dict().items()}
    return _save_model(base, path, model_id=model_id, realism=extra, realism_meta=meta or {})


def save_without_realism(base: str | Path, path: str | Path) -> WeightsInfo:
    """Write the weights file ``base`` (verified) without its realism decoder to ``path`` atomically
    (same model id and fingerprint; a realism run on it starts G_r from the Generator)."""
    return _save_model(base, path, model_id=read_weights_info(Path(base)).model_id, realism=None)


def _save_model(base: str | Path, path: str | Path, *, model_id: str, realism: dict[str, Any] | None,
                realism_meta: dict[str, Any] | None = None) -> WeightsInfo:
    """``base``'s model and tables plus the ``Realism.*`` arrays ``realism`` (None: no realism decoder)."""
    import numpy as np
    from safetensors.numpy import save_file

    loaded, info = read_verified(base)
    network, _, arrays = split_tensors(loaded)
    header = _read_safetensors_header(Path(base))["__metadata__"]
    metadata = {key: header[key] for key in ("format", "format_version", "arch", "fingerprint")}
    meta = {k: v for k, v in info.meta.items() if k != "realism"}
    metadata["model_id"] = _checked_model_id(Path(path), model_id)
    if realism is not None:
        metadata["realism_fingerprint"] = fingerprint(realism, {}, info.config).hex()
        meta["realism"] = realism_meta or {}
    metadata["meta"] = json.dumps(meta, sort_keys=True)
    tensors = {k: np.ascontiguousarray(v) for k, v in {**network, **arrays, **(realism or {})}.items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_target(path) as tmp:
        save_file(tensors, tmp, metadata=metadata)
    return read_weights_info(path, with_hash=True)


def refuse_tampered(path: Path, tensors: dict[str, np.ndarray], info: WeightsInfo) -> None:
    """Recompute the fingerprint from the file's arrays (everything under ``tables.`` is a table, the
    rest the network) and refuse weights whose metadata states another: changed or damaged weights
    must not decode files into garbage under the fingerprint of the originals. Numpy only (no torch);
    a few ms for the embedded models, so the result is not cached."""
    state, realism, arrays = split_tensors(tensors)
    try:
        actual = fingerprint(state, arrays, info.config)
        actual_realism = fingerprint(realism, {}, info.config) if realism else None
    except (RuntimeError, ValueError, TypeError) as exc:
        raise ModelMismatchError(f"{path}: damaged weights file ({exc})") from None
    hint = "get the weights again (hific models pull / import)"
    if actual != info.fingerprint:
        raise ModelMismatchError(
            f"{path}: weights do not match their fingerprint (they hash to {actual.hex()}, the metadata "
            f"says {info.fingerprint_hex}): modified or damaged", hint,
        )
    if actual_realism != info.realism_fingerprint:
        raise ModelMismatchError(f"{path}: the realism decoder does not match its fingerprint: modified or "
                                 "damaged", hint)


def split_tensors(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(network, realism decoder, tables) parts of a weights file's tensors."""
    parts: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] = ({}, {}, {})
    for key, value in tensors.items():
        index = 2 if key.startswith("tables.") else 1 if key.startswith(REALISM_PREFIX) else 0
        parts[index][key] = value
    return parts


def check_fingerprint(path: str | Path) -> WeightsInfo:
    """Re-hash a weights file's tensors and tables (with those it shares from another file) and compare
    with the fingerprint its metadata states (``hific models verify`` of the models shipped in the package,
    which have no manifest). Damage -> ModelMismatchError naming what differs."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    path = Path(path)
    info = read_weights_info(path, with_hash=True)
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, TypeError) as exc:
        raise ModelMismatchError(f"{path}: damaged weights file ({exc})") from None
    state, realism, arrays = split_tensors(_with_shared(path, tensors, info))
    actual = fingerprint(state, arrays, info.config)
    if actual != info.fingerprint:
        raise ModelMismatchError(
            f"{path}: its tensors hash to fingerprint {actual.hex()}, its metadata says {info.fingerprint_hex}"
        )
    if (fingerprint(realism, {}, info.config) if realism else None) != info.realism_fingerprint:
        raise ModelMismatchError(f"{path}: its realism decoder does not match the fingerprint its metadata states")
    return info
