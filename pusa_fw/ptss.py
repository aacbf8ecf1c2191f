"""PTSS: the per-frame sigma sampler of FAFM training (Probabilistic Timestep Sampling Strategy).

Each training sample gets one sigma per latent frame. With probability `p_async` the frames of a sample
draw independent sigmas (asynchronous); otherwise one sigma is drawn and shared by all frames of that
sample (synchronous, i.e. ordinary video flow matching). Every sigma is `u` mapped through the shift

    sigma = shift * u / (1 + (shift - 1) * u),

with `u ~ U(0, 1)`, or, when `num_train_steps` is set, `u` uniform on the discrete training grid
`{1, 1 - 1/N, ..., 1/N}` (`N = num_train_steps`), which is what the official Pusa trainer draws from
(`set_timesteps(1000, training=True)` with shift 5, then `randint(0, 1000)` per frame).

The official trainer hard-codes `p_async = 1` (every frame independent, no synchronous branch); FVDM
used `p_async = 0.2`. Note the marginal that the shift gives: with shift 5 and the 1000-step grid,
P(sigma > 0.5) = 0.834 and P(sigma > 0.8) = 0.556, so most frames are mostly noise.

Whatever `p_async` is, the marginal law of every single frame's sigma is the shifted law above: the
shared and the independent draws have the same distribution. Its CDF (continuous case) is
`P(sigma <= s) = s / (shift - (shift - 1) * s)`.

Other laws of `u` (before the shift): `marginal="logit_normal"` draws `u = sigmoid(logit_mean + logit_std *
z)`, `z ~ N(0, 1)` (SD3's choice), and `uniform_fraction` mixes in `U(0, 1)` draws (e.g. 0.2 for 80 %
logit-normal + 20 % uniform). `PTSS.cdf` gives the resulting marginal CDF of sigma.

The held-frames law (`held_probability`, `held_frames`, `held_frames_max`): with probability p a sample gets
k distinct random latent frames held clean at sigma 0 (or, with `held_multiplier` m, shown at m times their
drawn level, as Pusa's noise multiplier shows them), the way i2v / keyframe inference holds its conditioning
frames and a rolling window holds its history; k is `held_frames`, or, with `held_frames_max`, uniform on
`held_frames .. held_frames_max` per sample. `PTSS.draw` reports them so the loss can leave them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from einops import repeat
from pydantic import BaseModel, ConfigDict, Field, model_validator

from .errors import InputError
from .sigma_shift import shift_sigmas, training_sigma_grid, unshift_sigmas

__all__ = ["PTSS", "PTSSDraw", "shift_sigmas", "training_sigma_grid", "unshift_sigmas"]


def _check_sample_args(batch_size: int, num_latent_frames: int, generator: torch.Generator) -> None:
    for name, value in (("batch_size", batch_size), ("num_latent_frames", num_latent_frames)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError(f"{name} must be an int >= 1, got {value!r}.")
    if not isinstance(generator, torch.Generator):
        raise InputError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            "pass torch.Generator().manual_seed(seed)."
        )
    if generator.device.type != "cpu":
        raise InputError(
            f"generator must live on the CPU, got one on {generator.device}; sigmas are drawn on the CPU "
            "so that a seed gives the same draw on every device. Use torch.Generator() (no device)."
        )


@dataclass(frozen=True)
class PTSSDraw:
    """One PTSS draw for a batch.

    Attributes:
        sigmas: `[B, F]` float32 on the CPU, in [0, 1] (0 at held frames, or `held_multiplier` times
            their drawn level).
        synchronous: `[B]` bool, True where the sample's frames share one drawn level (held frames aside).
        held: `[B, F]` bool, True at frames held clean by the held-frames law.
    """

    sigmas: torch.Tensor
    synchronous: torch.Tensor
    held: torch.Tensor

    @property
    def loss_mask(self) -> torch.Tensor:
        """`[B, F]` bool, True for the frames that count in the loss (every frame that is not held)."""
        return ~self.held


class PTSS(BaseModel):
    """Per-frame sigma sampler with a real asynchrony knob.

    Attributes:
        p_async: probability that a sample's frames draw independent sigmas; 0 = every sample is
            synchronous (all frames share one sigma), 1 = every frame is independent (official Pusa).
        shift: the flow-matching shift applied to every draw (official Pusa training: 5).
        num_train_steps: None to draw `u ~ U(0, 1)`; an int N to draw `u` uniformly from the N-point
            training grid of the official trainer (`training_sigma_grid`; official: 1000).
        marginal: law of `u` before the shift: "uniform" or "logit_normal".
        logit_mean: mean of the normal under the sigmoid (logit-normal marginal).
        logit_std: standard deviation of that normal, > 0.
        uniform_fraction: with the logit-normal marginal, the fraction of levels drawn from U(0, 1)
            instead (a mixture; 0.2 = 80 % logit-normal + 20 % uniform).
        held_probability: probability that a sample has `held_frames` frames held clean (sigma 0).
        held_frames: k, how many distinct latent frames a held sample holds (must be < F at draw time).
        held_frames_max: None for exactly `held_frames`; an int K >= `held_frames` to draw k uniformly
            from `held_frames .. K` per held sample (K < F at draw time).
        held_multiplier: m in [0, 1): a held frame is shown at m times the level drawn for it (the sample's
            shared level in a synchronous sample), the way Pusa's noise multiplier shows a given frame at
            inference; 0 (the default) holds it clean. Held frames stay out of the loss either way.

    Example:
        >>> ptss = PTSS(p_async=0.5, shift=5.0)
        >>> sigmas = ptss.sample(2, 21, torch.Generator().manual_seed(0))
        >>> tuple(sigmas.shape)
        (2, 21)
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    p_async: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="probability that a sample's frames are independent",
    )
    shift: float = Field(5.0, gt=0.0, allow_inf_nan=False, description="flow-matching shift of every sigma")
    num_train_steps: int | None = Field(
        None, ge=1, strict=True, description="None: continuous u; N: u on the official N-step training grid"
    )
    marginal: Literal["uniform", "logit_normal"] = Field(
        "uniform", description="law of u before the shift: uniform or logit_normal"
    )
    logit_mean: float = Field(0.0, allow_inf_nan=False, description="logit-normal: mean of the normal")
    logit_std: float = Field(1.0, gt=0.0, allow_inf_nan=False, description="logit-normal: std of the normal")
    uniform_fraction: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        allow_inf_nan=False,
        description="logit-normal: fraction of uniform draws mixed in",
    )
    held_probability: float = Field(
        0.0, ge=0.0, le=1.0, allow_inf_nan=False, description="probability that a sample holds frames clean"
    )
    held_frames: int = Field(1, ge=1, strict=True, description="frames held at sigma 0 in a held sample")
    held_frames_max: int | None = Field(
        None, ge=1, strict=True, description="None: exactly held_frames; K: k uniform on held_frames..K per sample"
    )
    held_multiplier: float = Field(
        0.0, ge=0.0, lt=1.0, allow_inf_nan=False,
        description="held frames are shown at this multiple of their drawn level (0: clean)",
    )

    @model_validator(mode="after")
    def _check_law(self) -> PTSS:
        if self.num_train_steps is not None and self.marginal != "uniform":
            raise ValueError(
                f"num_train_steps={self.num_train_steps} needs marginal='uniform' (the official grid is "
                f"uniform), got marginal={self.marginal!r}; drop num_train_steps or use the uniform marginal"
            )
        if self.held_frames_max is not None and self.held_frames_max < self.held_frames:
            raise ValueError(
                f"held_frames_max={self.held_frames_max} is below held_frames={self.held_frames}; it is the "
                "largest count drawn, so set it >= held_frames (or leave it unset for exactly held_frames)"
            )
        if self.uniform_fraction > 0 and self.marginal != "logit_normal":
            raise ValueError(
                f"uniform_fraction={self.uniform_fraction} mixes uniform draws into the logit-normal "
                "marginal; set marginal='logit_normal' or uniform_fraction=0"
            )
        return self

    def sample(self, batch_size: int, num_latent_frames: int, generator: torch.Generator) -> torch.Tensor:
        """Draw per-frame sigmas.

        Args:
            batch_size: B, number of samples.
            num_latent_frames: F, latent frames per sample.
            generator: CPU `torch.Generator`; the only source of randomness.

        Returns:
            `[B, F]` float32 sigmas on the CPU, in [0, 1].
        """
        return self.draw(batch_size, num_latent_frames, generator).sigmas

    def sample_with_sync_mask(
        self, batch_size: int, num_latent_frames: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw per-frame sigmas and say which samples were synchronous (see `draw`).

        Args:
            batch_size: B, number of samples.
            num_latent_frames: F, latent frames per sample.
            generator: CPU `torch.Generator`.

        Returns:
            sigmas: `[B, F]` float32 on the CPU, in [0, 1].
            synchronous: `[B]` bool, True where all frames of the sample share one sigma by design
                (with F = 1 a sample is trivially both; the coin flip still decides the flag).
        """
        result = self.draw(batch_size, num_latent_frames, generator)
        return result.sigmas, result.synchronous

    def draw(self, batch_size: int, num_latent_frames: int, generator: torch.Generator) -> PTSSDraw:
        """Draw per-frame sigmas, the synchronous flags and the held frames.

        Draw order from `generator` (fixed, so a seed reproduces a draw): the B async coin flips, then
        B shared levels, then B*F independent levels (each level draw takes its normal or uniform
        variates, then, with a uniform mixture, its mixture coins and uniforms), then, only when
        `held_probability > 0`, B held coins and B*F frame keys, and with `held_frames_max` set, B count
        uniforms. Every part is always drawn, so the
        stream depends on the configuration only, never on the outcomes.

        Args:
            batch_size: B, number of samples.
            num_latent_frames: F, latent frames per sample.
            generator: CPU `torch.Generator`.

        Returns:
            A `PTSSDraw`. Held frames have sigma exactly 0, or `held_multiplier` times their drawn level.

        Raises:
            InputError: bad arguments, or a held-frames law that would hold every frame (k >= F).
        """
        _check_sample_args(batch_size, num_latent_frames, generator)
        most = self.held_frames if self.held_frames_max is None else self.held_frames_max
        if self.held_probability > 0 and most >= num_latent_frames:
            field = "held_frames" if self.held_frames_max is None else "held_frames_max"
            raise InputError(
                f"{field}={most} would hold all {num_latent_frames} latent frames, leaving "
                f"nothing to learn; use {field} <= {num_latent_frames - 1} or clips with more latent frames"
            )
        coin = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        synchronous = coin >= self.p_async  # P(async) = p_async exactly at 0 and 1
        shared = self._draw_levels((batch_size, 1), generator)
        independent = self._draw_levels((batch_size, num_latent_frames), generator)
        shared = repeat(shared, "b 1 -> b f", f=num_latent_frames)
        sigmas = torch.where(repeat(synchronous, "b -> b f", f=num_latent_frames), shared, independent)
        held = torch.zeros((batch_size, num_latent_frames), dtype=torch.bool)
        if self.held_probability > 0:
            held_coin = torch.rand(batch_size, generator=generator, dtype=torch.float64)
            keys = torch.rand((batch_size, num_latent_frames), generator=generator, dtype=torch.float64)
            # The k frames with the smallest keys: a uniformly random k-subset (continuous keys, no ties).
            ranks = keys.argsort(dim=1).argsort(dim=1)
            counts = torch.full((batch_size,), self.held_frames, dtype=torch.int64)
            if self.held_frames_max is not None:
                choices = self.held_frames_max - self.held_frames + 1
                picks = torch.rand(batch_size, generator=generator, dtype=torch.float64)
                counts += (picks * choices).long().clamp(max=choices - 1)
            held = (ranks < repeat(counts, "b -> b f", f=num_latent_frames)) & repeat(
                held_coin < self.held_probability, "b -> b f", f=num_latent_frames
            )
            sigmas = torch.where(held, sigmas * self.held_multiplier, sigmas)
        return PTSSDraw(sigmas=sigmas.to(torch.float32), synchronous=synchronous, held=held)

    def cdf(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Marginal CDF `P(sigma <= s)` of a frame that is not held (continuous laws).

        Args:
            sigmas: levels `s` in [0, 1], any shape.

        Returns:
            float64 tensor of the same shape.

        Raises:
            InputError: for the discrete official grid (`num_train_steps` set), whose CDF is a step function.
        """
        if self.num_train_steps is not None:
            raise InputError(
                "cdf is for continuous laws; with num_train_steps use training_sigma_grid instead"
            )
        u = unshift_sigmas(sigmas.to(torch.float64), self.shift)
        if self.marginal == "uniform":
            return u
        logits = torch.logit(u)
        normal = 0.5 * (1.0 + torch.erf((logits - self.logit_mean) / (self.logit_std * math.sqrt(2.0))))
        return self.uniform_fraction * u + (1.0 - self.uniform_fraction) * normal

    def _draw_levels(self, shape: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """Draw shifted sigmas of the given shape, float64 on the CPU."""
        if self.num_train_steps is None:
            if self.marginal == "uniform":
                u = torch.rand(shape, generator=generator, dtype=torch.float64)
            else:
                normal = torch.randn(shape, generator=generator, dtype=torch.float64)
                u = torch.sigmoid(self.logit_mean + self.logit_std * normal)
                if self.uniform_fraction > 0:
                    mixture_coin = torch.rand(shape, generator=generator, dtype=torch.float64)
                    uniform = torch.rand(shape, generator=generator, dtype=torch.float64)
                    u = torch.where(mixture_coin < self.uniform_fraction, uniform, u)
            return shift_sigmas(u, self.shift)
        grid = training_sigma_grid(self.num_train_steps, self.shift)
        index = torch.randint(0, self.num_train_steps, shape, generator=generator)
        return grid[index]
