"""``hific train``: the two-stage HiFiC recipe (Mentzer et al. 2020) on CPU, CUDA or torchrun (DDP).

Stage ``base``: rate + distortion + perceptual loss with the hyperprior. Stage ``gan`` (warm-started
with ``--init BASE_RUN``): adds the latent-conditioned patch discriminator with the non-saturating GAN
loss; each step does one D update and then one E/G/prior update on the same batch (D sees aligned
(image, own latents) pairs for real and generated images).

Modules: :mod:`.schedule` (regimes, loss weights, step schedules), :mod:`.losses`, :mod:`.data`
(deterministic crops), :mod:`.state` (checkpoint format), :mod:`.distributed`, :mod:`.report`
(JSONL log, progress line), :mod:`.loop` (the loop itself). The perceptual networks live in
:mod:`hificli.perceptual`.
"""

from __future__ import annotations

from hificli.train.options import TrainOptions

__all__ = ["TrainOptions"]
