"""Training a checkerboard context into a model (``hific train --context-channels K``)."""

from __future__ import annotations

from hificli.errors import HificError
from hificli.models.config import ArchConfig

#: The context networks learn this many times faster than the rest (new layers on a trained model);
#: ``hific train --help`` states it.
CONTEXT_LR_SCALE = 10.0


def context_config(config: ArchConfig, channels: int | None) -> tuple[ArchConfig, bool]:
    """(config to train, whether its context is new and must keep its initialisation).

    A model without a context gains one ``channels`` wide; a model with one keeps it (``channels``
    must then be absent or equal to its width).
    """
    if channels is None:
        return config, False
    if config.context == "none":
        return config.with_(context="checkerboard", context_channels=channels), True
    if config.context_channels != channels:
        raise HificError(
            f"the model already has a context {config.context_channels} wide, not {channels}",
            "leave out --context-channels to keep training it",
        )
    return config, False
