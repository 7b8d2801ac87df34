"""Coding groups of the latents (numpy only: ``hific decode`` checks a file's streams before torch).

A model without context codes its latents in one group, ``y``. A context model (hificli.models.context)
codes them in groups, each with a stream of its own, in order: the checkerboard's anchors ``ya`` then the
other positions ``yb``; the channel-conditional slices ``y0`` .. ``y3``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Channel groups of the channel-conditional context.
SLICES = 4


def slice_bounds(channels: int) -> list[int]:
    """Channel boundaries of the :data:`SLICES` groups (as equal as integers allow)."""
    return [round(k * channels / SLICES) for k in range(SLICES + 1)]


@dataclass(frozen=True)
class Group:
    """One coding group: a stream of the latents' channels [lo, hi) at some positions (``"all"``, or
    ``"anchors"`` / ``"others"`` of the checkerboard), each row's positions left to right."""

    name: str
    lo: int
    hi: int
    positions: str = "all"

    def shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Symbol shape of the group's stream for a latent grid of height x width (width even)."""
        return (self.hi - self.lo, height, width if self.positions == "all" else width // 2)

    def take(self, values: np.ndarray) -> np.ndarray:
        """The group's elements of a (C, h, w) array, shaped :meth:`shape`."""
        return self.at_positions(values[self.lo : self.hi])

    def at_positions(self, values: np.ndarray) -> np.ndarray:
        """The group's positions of a (c, h, w) array already restricted to its channels."""
        if self.positions == "all":
            return values
        anchors, others = split_anchors(values)
        return anchors if self.positions == "anchors" else others

    def put(self, target: np.ndarray, values: np.ndarray) -> None:
        """Write the group's elements (shaped :meth:`shape`) into a (C, h, w) array."""
        if self.positions == "all":
            target[self.lo : self.hi] = values
            return
        mask = split_mask(target.shape[1], target.shape[2])
        if self.positions == "others":
            mask = ~mask
        target[self.lo : self.hi, mask] = values.reshape(values.shape[0], -1)


def coding_groups(kind: str, channels: int) -> list[Group]:
    """The groups, in coding order, of a context kind ("none", "checkerboard", "channel")."""
    if kind == "none":
        return [Group("y", 0, channels)]
    if kind == "checkerboard":
        return [Group("ya", 0, channels, "anchors"), Group("yb", 0, channels, "others")]
    if kind == "channel":
        bounds = slice_bounds(channels)
        return [Group(f"y{k}", bounds[k], bounds[k + 1]) for k in range(len(bounds) - 1)]
    raise ValueError(f"unknown context {kind!r}")


def split_anchors(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., h, w) array, w even -> (anchors, non-anchors), each (..., h, w / 2) in raster order."""
    pairs = values.reshape(*values.shape[:-1], values.shape[-1] // 2, 2)
    even_rows = (np.arange(values.shape[-2]) % 2 == 0)[:, None]
    return np.where(even_rows, pairs[..., 0], pairs[..., 1]), np.where(even_rows, pairs[..., 1], pairs[..., 0])


def split_mask(height: int, width: int) -> np.ndarray:
    """Bool (height, width): True at anchors, where ``(row + col)`` is even."""
    return (np.arange(height)[:, None] + np.arange(width)[None, :]) % 2 == 0
