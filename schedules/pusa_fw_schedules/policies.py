"""Built-in conditioning policies (see `pusa_fw.policy` for the contract).

| name              | state level of the held frame         | shown to the model at        | found in        |
|-------------------|---------------------------------------|------------------------------|-----------------|
| clean             | 0 (exactly the source)                | 0                            | everyone        |
| multiplier        | m * base (noised once at the start)   | the state                    | Pusa V1         |
| renoise           | 0 (clean state kept)                  | a fixed level, fresh noise   | SkyReels-V2 DF  |
| late_release      | min(base, 1 - strength)               | the state                    | LTX-Video       |
| hold_then_release | hard, then base for the last k steps  | the state                    | (new)           |
| ramp              | min(base, 1 - s) with s ramping       | the state                    | (new)           |
"""

from __future__ import annotations

import torch
from pydantic import Field

from pusa_fw.policy import ConditioningPolicy, FramePath


def _follow_state(sigmas: torch.Tensor) -> FramePath:
    return FramePath(sigmas, sigmas[:-1].clone())


def _moving_steps(column: torch.Tensor) -> torch.Tensor:
    """Indices of the steps in which a base column `[S + 1]` moves down."""
    return (column[1:] < column[:-1]).nonzero().squeeze(1)


class Clean(ConditioningPolicy):
    """Held at sigma 0: the frame is its source, bit-exact, in every step and in the output."""

    name = "clean"
    summary = "sigma 0 throughout; the output frame is the source bit for bit"

    def path(self, base: torch.Tensor) -> FramePath:
        zeros = torch.zeros_like(base)
        return FramePath(zeros, zeros[:-1].clone())


class NoiseMultiplier(ConditioningPolicy):
    """Pusa's noise multiplier m: the frame's path is `m * base`; noised once at the start, then denoised.

    m = 0 is clean; m = 1 is an ordinary generated frame that merely starts from the source. The initial
    latent is `(1 - m * base[0]) * source + m * base[0] * eps` with the sample's own noise, as Pusa does.
    """

    name = "multiplier"
    summary = "Pusa: sigma scaled by m, noised once at the start (strength = 1 - m)"

    multiplier: float = Field(0.2, ge=0, le=1, description="noise multiplier m (0 = clean)")

    def path(self, base: torch.Tensor) -> FramePath:
        return _follow_state(base * self.multiplier)

    @classmethod
    def strength_fields(cls, strength: float) -> dict[str, object]:
        return {"multiplier": 1.0 - strength}


class FixedRenoise(ConditioningPolicy):
    """SkyReels' ``addnoise_condition``: shown at a fixed level with fresh noise each step, kept clean."""

    name = "renoise"
    summary = "shown re-noised to a fixed level every step (fresh noise), clean state kept"

    level: float = Field(0.02, ge=0, lt=1, description="sigma shown to the model (SkyReels 20/1000)")

    def path(self, base: torch.Tensor) -> FramePath:
        zeros = torch.zeros_like(base)
        return FramePath(zeros, torch.full_like(base[:-1], self.level))

    @classmethod
    def strength_fields(cls, strength: float) -> dict[str, object]:
        return {"level": min(1.0 - strength, 0.999)}


class LateRelease(ConditioningPolicy):
    """LTX-style strength s: the frame stays at `1 - s` (from the source) until the base passes below it."""

    name = "late_release"
    summary = "LTX: sigma = min(base, 1 - strength); frozen until the schedule reaches it"

    strength: float = Field(0.9, ge=0, le=1, description="1 = hard anchor, 0 = not held")

    def path(self, base: torch.Tensor) -> FramePath:
        return _follow_state(torch.clamp(base, max=1.0 - self.strength))


class HoldThenRelease(ConditioningPolicy):
    """Held at `min(base, 1 - strength)` (clean for strength 1), then released for the last k steps.

    At the release the frame is re-drawn from its source at the base level with fresh noise and is
    denoised with the other frames, which lets the model heal seams around it.
    """

    name = "hold_then_release"
    summary = "hard early, released to follow the schedule for its last release_steps steps"

    release_steps: int = Field(2, ge=0, description="how many of the frame's last steps are free")
    strength: float = Field(1.0, ge=0, le=1, description="hold strength before the release")

    def path(self, base: torch.Tensor) -> FramePath:
        held = torch.clamp(base, max=1.0 - self.strength)
        out = held.clone()
        for k in range(base.shape[1]):
            moving = _moving_steps(base[:, k])
            if self.release_steps == 0 or moving.numel() == 0:
                continue
            first_free = int(moving[max(0, moving.numel() - self.release_steps)])
            out[first_free:, k] = base[first_free:, k]
        return _follow_state(out)


class RampStrength(ConditioningPolicy):
    """Strength ramps linearly over the frame's own steps from `start` to `end`; level `min(base, 1 - s)`.

    A falling strength loosens the hold (the frame is re-drawn noisier), a rising one tightens it.
    """

    name = "ramp"
    summary = "strength changing linearly across the steps (start -> end)"

    start: float = Field(1.0, ge=0, le=1, description="strength at the frame's first step")
    end: float = Field(0.0, ge=0, le=1, description="strength at the frame's last step")

    def path(self, base: torch.Tensor) -> FramePath:
        out = base.clone()
        for k in range(base.shape[1]):
            column = base[:, k]
            moved = torch.cat([column.new_zeros(1), (column[1:] < column[:-1]).to(column.dtype).cumsum(0)])
            total = max(float(moved[-1]), 1.0)
            strength = self.start + (self.end - self.start) * (moved / total)
            out[:, k] = torch.minimum(column, 1.0 - strength)
        out[-1] = 0.0
        return _follow_state(out)

    @classmethod
    def strength_fields(cls, strength: float) -> dict[str, object]:
        return {"start": strength, "end": 0.0}
