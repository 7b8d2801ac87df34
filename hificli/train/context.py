"""Training a context model into a model (``hific train --context KIND --context-channels K``)."""

from __future__ import annotations

from hificli.errors import HificError
from hificli.models.config import ArchConfig

#: The context networks learn this many times faster than the rest (new layers on a trained model);
#: ``hific train --help`` states it.
CONTEXT_LR_SCALE = 10.0
#: Width of a new context when only --context is given.
DEFAULT_CONTEXT_CHANNELS = 192


def context_config(config: ArchConfig, kind: str | None, channels: int | None) -> tuple[ArchConfig, bool]:
    """(config to train, whether its context is new and must keep its fresh initialisation).

    Without options the model keeps what it has. A model gains (or has replaced) a context of ``kind``
    (default: "channel" when only ``channels`` is given), ``channels`` wide (default 192, or the width of
    the context it already has of that kind); a context of the same kind and width is kept.
    """
    if kind is None and channels is None:
        return config, False
    kind = kind or (config.context if config.context != "none" else "channel")
    if kind == "none":
        if channels is not None:
            raise HificError("--context none takes no --context-channels")
        return config.with_(context="none", context_channels=0), config.context != "none"
    same_kind = config.context == kind
    width = channels or (config.context_channels if same_kind else DEFAULT_CONTEXT_CHANNELS)
    if same_kind and width == config.context_channels:
        return config, False
    return config.with_(context=kind, context_channels=width), True
