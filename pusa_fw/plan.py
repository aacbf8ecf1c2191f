"""The plan: what every task compiles to and what every sampler consumes.

A plan is explicit data over a timeline of N latent frames and S steps:

- ``sigmas`` `[S + 1, N]`: the noise level of every frame's latent *state* before step i (row i) and at
  the end (row S). Within a step a frame either moves down (the sampler updates it with the model's
  velocity), stays (a step of length zero, the identity), or moves up (a deliberate re-noise: a held frame
  is re-drawn from its source at the new level with fresh noise).
- ``input_sigmas`` `[S, N]`: the level at which each frame is shown to the model at step i. It equals the
  state level, except for frames that are not updated in that step and are shown noisier than they are
  (e.g. SkyReels-style re-noised history: a fresh noisy copy goes into the model, the clean state is kept).
- ``windows`` `[S, 2]`: ``(start, stop)`` of the frames that take part in step i's forward pass. On a ring
  timeline (``ring=True``) a window may run past N and wraps to frame 0.
- ``held`` `[N]`: frames whose content is given (a source latent); only they may be re-noised. A frame
  that is not held starts from the sample's noise whatever its first level (Wan's UniPC grid starts at
  0.9998, Pusa's at 1).

Every invariant is checked on construction, and an error names the step and frame that break it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import PlanError
from .flow import SIGMA_DTYPE

_EXACT_DTYPE = SIGMA_DTYPE  # plans are tiny; float64 keeps every level exact all the way to the backbone


def _check_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape:
        raise PlanError(f"plan.{name} has shape {tuple(tensor.shape)}, expected {shape}")


@dataclass(frozen=True, eq=False)
class Plan:
    """A validated, explicit sampling plan (see the module docstring for the meaning of each field).

    Attributes:
        sigmas: `[S + 1, N]` float64 state levels.
        input_sigmas: `[S, N]` float64 levels shown to the model (they reach the backbone in float64).
        windows: `[S, 2]` int64 ``(start, stop)`` per step.
        held: `[N]` bool, frames with a given source latent.
        ring: whether windows wrap around the end of the timeline.
        meta: free-form JSON-able description (task name, params) carried into summaries.
    """

    sigmas: torch.Tensor
    input_sigmas: torch.Tensor
    windows: torch.Tensor
    held: torch.Tensor
    ring: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("sigmas", "input_sigmas", "windows", "held"):
            if not isinstance(getattr(self, name), torch.Tensor):
                raise PlanError(f"plan.{name} must be a torch.Tensor, got {type(getattr(self, name)).__name__}")
        if self.sigmas.dim() != 2 or self.sigmas.shape[0] < 2 or self.sigmas.shape[1] < 1:
            raise PlanError(f"plan.sigmas must be [S+1, N] with S >= 1 and N >= 1, got {tuple(self.sigmas.shape)}")
        object.__setattr__(self, "sigmas", self.sigmas.detach().to("cpu", _EXACT_DTYPE).contiguous())
        object.__setattr__(self, "input_sigmas", self.input_sigmas.detach().to("cpu", _EXACT_DTYPE).contiguous())
        object.__setattr__(self, "windows", self.windows.detach().to("cpu", torch.int64).contiguous())
        object.__setattr__(self, "held", self.held.detach().to("cpu", torch.bool).contiguous())
        steps, frames = self.num_steps, self.num_latent_frames
        _check_shape("input_sigmas", self.input_sigmas, (steps, frames))
        _check_shape("windows", self.windows, (steps, 2))
        _check_shape("held", self.held, (frames,))
        self._validate()

    # ------------------------------------------------------------------ shape
    @property
    def num_steps(self) -> int:
        """S, the number of steps (forward passes per guidance branch)."""
        return self.sigmas.shape[0] - 1

    @property
    def num_latent_frames(self) -> int:
        """N, the number of latent frames on the timeline."""
        return self.sigmas.shape[1]

    # ------------------------------------------------------------ validation
    def _validate(self) -> None:
        sig, inp = self.sigmas, self.input_sigmas
        for name, grid in (("sigmas", sig), ("input_sigmas", inp)):
            bad = ~torch.isfinite(grid) | (grid < 0) | (grid > 1)
            if bad.any():
                step, frame = (int(v) for v in bad.nonzero()[0])
                raise PlanError(
                    f"plan.{name}[{step}, {frame}] = {float(grid[step, frame])} is not a finite sigma in [0, 1]"
                )
        fresh = ~self.held & (sig[0] == 0)
        if fresh.any():
            frame = int(fresh.nonzero()[0])
            raise PlanError(
                f"frame {frame} is not held but starts at sigma 0; a frame without a source starts from pure "
                "noise and must be denoised (start above 0), or mark it held and give its source"
            )
        unfinished = sig[-1] != 0
        if unfinished.any():
            frame = int(unfinished.nonzero()[0])
            raise PlanError(f"frame {frame} ends at sigma {float(sig[-1, frame])}; every frame must end at 0")
        up = sig[1:] > sig[:-1]
        bad_up = up & ~self.held
        if bad_up.any():
            step, frame = (int(v) for v in bad_up.nonzero()[0])
            raise PlanError(
                f"frame {frame} goes up from sigma {float(sig[step, frame])} to {float(sig[step + 1, frame])} "
                f"at step {step}; only held frames may be re-noised (they are re-drawn from their source)"
            )
        self._validate_windows()
        inside = self.window_mask()
        moving = sig[1:] < sig[:-1]
        outside_update = moving & ~inside
        if outside_update.any():
            step, frame = (int(v) for v in outside_update.nonzero()[0])
            raise PlanError(f"frame {frame} is updated at step {step} but lies outside that step's window")
        below = inp < sig[:-1]
        if below.any():
            step, frame = (int(v) for v in below.nonzero()[0])
            raise PlanError(
                f"frame {frame} is shown to the model at sigma {float(inp[step, frame])} at step {step}, "
                f"cleaner than its state ({float(sig[step, frame])}); input sigmas may only be noisier"
            )
        noisier = inp > sig[:-1]
        bad_view = noisier & (moving | ~inside)
        if bad_view.any():
            step, frame = (int(v) for v in bad_view.nonzero()[0])
            why = "is updated in that step" if bool(moving[step, frame]) else "is outside that step's window"
            raise PlanError(
                f"frame {frame} is shown at sigma {float(inp[step, frame])} above its state at step {step} but "
                f"{why}; a noised view is only allowed for frames that stay put inside the window"
            )

    def _validate_windows(self) -> None:
        start, stop = self.windows[:, 0], self.windows[:, 1]
        n = self.num_latent_frames
        length = stop - start
        limit_stop = torch.full_like(stop, n) if not self.ring else start + n
        bad = (start < 0) | (start >= n) | (length < 1) | (stop > limit_stop)
        if bad.any():
            step = int(bad.nonzero()[0])
            extent = "inside [0, N]" if not self.ring else "with 0 <= start < N and at most N frames"
            raise PlanError(
                f"window of step {step} is ({int(start[step])}, {int(stop[step])}); it must be {extent} "
                f"for a timeline of N={n} frames"
            )

    # ------------------------------------------------------------- derived
    def window_frames(self, step: int) -> torch.Tensor:
        """Frame indices `[W]` (int64, in forward-pass order) of the window of `step`."""
        start, stop = (int(v) for v in self.windows[step])
        frames = torch.arange(start, stop)
        return frames % self.num_latent_frames if self.ring else frames

    def window_slice(self, step: int) -> slice | None:
        """The window of `step` as a plain slice, or None when it wraps around a ring timeline."""
        start, stop = (int(v) for v in self.windows[step])
        return slice(start, stop) if stop <= self.num_latent_frames else None

    def window_mask(self) -> torch.Tensor:
        """`[S, N]` bool: frame f takes part in step i's forward pass."""
        frames = torch.arange(self.num_latent_frames)
        start, stop = self.windows[:, :1], self.windows[:, 1:]
        mask = (frames >= start) & (frames < stop)
        if self.ring:
            mask |= frames + self.num_latent_frames < stop
        return mask

    def update_mask(self) -> torch.Tensor:
        """`[S, N]` bool: frame f is moved down by the sampler in step i."""
        return self.sigmas[1:] < self.sigmas[:-1]

    def renoise_mask(self) -> torch.Tensor:
        """`[S, N]` bool: held frame f is re-drawn from its source at the end of step i."""
        return self.sigmas[1:] > self.sigmas[:-1]

    def context_mask(self) -> torch.Tensor:
        """`[S, N]` bool: frames in the window that condition the step rather than being generated by it.

        These are held frames and frames that stay put below sigma 1 (finished history). History guidance
        hides exactly these frames from its unguided branch.
        """
        staying = (self.sigmas[1:] == self.sigmas[:-1]) & (self.sigmas[:-1] < 1)
        return self.window_mask() & (self.held.unsqueeze(0) | staying)

    def remaining_updates(self) -> torch.Tensor:
        """`[S, N]` int64: updates of frame f from step i to the end of its current run (re-noise ends a run).

        Multistep solvers use it to drop to first order on a frame's last update, as Wan's UniPC does.
        """
        updates = self.update_mask().to(torch.int64)
        renoise = self.renoise_mask()
        remaining = torch.zeros_like(updates)
        running = torch.zeros(self.num_latent_frames, dtype=torch.int64)
        for step in range(self.num_steps - 1, -1, -1):
            running = torch.where(renoise[step], torch.zeros_like(running), running) + updates[step]
            remaining[step] = running
        return remaining

    def model_calls(self) -> int:
        """Forward passes per guidance branch: steps whose window updates or re-noises anything."""
        active = self.update_mask() | self.renoise_mask()
        return int(active.any(dim=1).sum())

    def pruned(self) -> Plan:
        """The same plan without idle steps (steps in which no frame moves).

        Idle steps arise e.g. when a late-release policy holds every frame for the first rows; skipping
        them changes no result and saves their forward passes.
        """
        active = (self.update_mask() | self.renoise_mask()).any(dim=1)
        if bool(active.all()):
            return self
        if not bool(active.any()):
            raise PlanError("every step of this plan is idle; there is nothing to sample")
        keep = active.nonzero().squeeze(1)
        rows = torch.cat([keep, torch.tensor([self.num_steps])])
        return Plan(
            sigmas=self.sigmas[rows],
            input_sigmas=self.input_sigmas[keep],
            windows=self.windows[keep],
            held=self.held,
            ring=self.ring,
            meta=dict(self.meta),
        )

    # ----------------------------------------------------------- rendering
    def summary(self) -> dict[str, Any]:
        """A JSON-able description: sizes, model calls, held frames, first/last windows, meta."""
        return {
            "num_steps": self.num_steps,
            "num_latent_frames": self.num_latent_frames,
            "model_calls": self.model_calls(),
            "held_frames": self.held.nonzero().squeeze(1).tolist(),
            "ring": self.ring,
            "windows": sorted({tuple(w) for w in self.windows.tolist()}),
            "meta": dict(self.meta),
        }

    def table(self, max_frames: int = 64) -> str:
        """The frames-by-steps table of state sigmas, as text (see `pusa_fw.plan_render`)."""
        from .plan_render import render_table

        return render_table(self, max_frames=max_frames)

    def save_heatmap(self, path: str) -> None:
        """Write a frames-by-steps heatmap PNG to `path` atomically (needs matplotlib)."""
        from .plan_render import save_heatmap

        save_heatmap(self, path)
