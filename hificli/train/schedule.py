"""The HiFiC regimes and the step schedules of lr, rate weight and target (one place for these numbers).

Paper / port values (PORT_FACTS.md 1.9, 6): Adam lr 1e-4, decayed x0.1 after 500k of 1M steps; for the
first 50k steps lambda_A and lambda_B are doubled and the target rate is raised by 0.20/0.14; the warm-up
is off in the GAN stage (the port disables it after a warm start).

Scaling for shorter runs (``--steps`` below the paper's): the warm-up lasts ``min(50k, 5% of steps)``,
the lr drop happens at ``min(500k, 85% of steps)`` (a late drop gave +1 dB in the CPU probe; with
>= 588k steps this is the paper's 500k). Each can be set explicitly (``--warmup-steps``,
``--lr-drop-step``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LR = 1e-4
LAMBDA_B = 2.0**-4
K_M = 0.075 * 2.0**-5
K_P = 1.0
BETA = 0.15
WARMUP_LAMBDA_FACTOR = 2.0
WARMUP_TARGET_FACTOR = 0.20 / 0.14
LR_DROP_FACTOR = 0.1
PAPER_WARMUP_STEPS = 50_000
PAPER_LR_DROP_STEP = 500_000
WARMUP_FRACTION = 0.05
LR_DROP_FRACTION = 0.85


@dataclass(frozen=True)
class Regime:
    """Target rate r_t (bpp) and the rate weight lambda_A used above it."""

    target_bpp: float
    lambda_a: float


REGIMES: dict[str, Regime] = {
    "low": Regime(target_bpp=0.14, lambda_a=2.0),
    "med": Regime(target_bpp=0.30, lambda_a=1.0),
    "high": Regime(target_bpp=0.45, lambda_a=0.5),
}


@dataclass(frozen=True)
class Schedule:
    """Concrete loss weights and step schedules of one run (stored in checkpoints)."""

    lr: float
    target_bpp: float
    lambda_a: float
    lambda_b: float
    k_m: float
    k_p: float
    beta: float
    warmup_steps: int
    lr_drop_step: int
    lr_drop_factor: float = LR_DROP_FACTOR

    def lr_at(self, step: int) -> float:
        """Learning rate for the update that follows ``step`` completed steps."""
        return self.lr * (self.lr_drop_factor if step >= self.lr_drop_step else 1.0)

    def rate_weights_at(self, step: int) -> tuple[float, float, float]:
        """(lambda_a, lambda_b, target_bpp) in force at ``step``, warm-up factors applied."""
        if step < self.warmup_steps:
            f = WARMUP_LAMBDA_FACTOR
            return self.lambda_a * f, self.lambda_b * f, self.target_bpp * WARMUP_TARGET_FACTOR
        return self.lambda_a, self.lambda_b, self.target_bpp

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Schedule:
        return cls(**data)


def default_warmup_steps(steps: int, stage: str) -> int:
    """Warm-up length for a run of ``steps`` (0 in the GAN stage)."""
    if stage == "gan":
        return 0
    return min(PAPER_WARMUP_STEPS, round(WARMUP_FRACTION * steps))


def default_lr_drop_step(steps: int) -> int:
    """Step of the x0.1 lr drop for a run of ``steps``."""
    return min(PAPER_LR_DROP_STEP, round(LR_DROP_FRACTION * steps))


def make_schedule(
    *,
    regime: str,
    stage: str,
    steps: int,
    lr: float | None = None,
    target_bpp: float | None = None,
    lambda_a: float | None = None,
    lambda_b: float | None = None,
    k_m: float | None = None,
    k_p: float | None = None,
    beta: float | None = None,
    warmup_steps: int | None = None,
    lr_drop_step: int | None = None,
    lr_drop_factor: float | None = None,
) -> Schedule:
    """Resolve a regime plus overrides (None = the regime's / paper's value) into a :class:`Schedule`."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; choose from {', '.join(REGIMES)}")
    base = REGIMES[regime]

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    return Schedule(
        lr=pick(lr, LR),
        target_bpp=pick(target_bpp, base.target_bpp),
        lambda_a=pick(lambda_a, base.lambda_a),
        lambda_b=pick(lambda_b, LAMBDA_B),
        k_m=pick(k_m, K_M),
        k_p=pick(k_p, K_P),
        beta=pick(beta, BETA),
        warmup_steps=pick(warmup_steps, default_warmup_steps(steps, stage)),
        lr_drop_step=pick(lr_drop_step, default_lr_drop_step(steps)),
        lr_drop_factor=pick(lr_drop_factor, LR_DROP_FACTOR),
    )
