"""--perceptual-relative: per-image weights from distances against each rate level's running mean."""

from __future__ import annotations

import pytest
import torch

from hificli.train.relative import RelativePerceptualWeights


def test_weights_favour_images_whose_distance_is_low_for_their_level() -> None:
    relative = RelativePerceptualWeights(levels=3, decay=0.5)
    # level 0 sees high distances (low rate), level 2 low ones: only the spread within a level counts
    positions = torch.tensor([0.1, -0.2, 1.9, 2.2], dtype=torch.float64)
    relative(positions, torch.tensor([0.4, 0.2, 0.04, 0.02]))  # means: level 0 -> 0.3, level 2 -> 0.03
    weights = relative(positions, torch.tensor([0.6, 0.3, 0.06, 0.03]))
    assert weights.dtype == torch.float32
    assert weights.mean().item() == pytest.approx(1.0)
    assert weights[1] == pytest.approx(2 * weights[0]) and weights[3] == pytest.approx(2 * weights[2])
    assert weights[0] == pytest.approx(weights[2])  # same ratio to its level's mean, whatever the level
    assert relative.means[1].isnan()  # a level not seen yet has no mean


def test_weights_are_clipped_and_equal_on_first_sight() -> None:
    relative = RelativePerceptualWeights(levels=2, decay=0.9, max_weight=4.0)
    first = relative(torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.01]))
    assert torch.allclose(first, torch.ones(2))
    weights = relative(torch.tensor([0.0, 0.0]), torch.tensor([1e-9, 100.0]))
    assert weights[0] / weights[1] == pytest.approx(16.0)  # 4 / (1 / 4)
    with pytest.raises(ValueError):
        RelativePerceptualWeights(levels=0)
