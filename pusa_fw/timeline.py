"""Sliding windows over a timeline longer than one forward pass: rolling and looping plans.

A window holds up to `window` latent frames: some already generated (history, kept clean and shown to the
model as context) and some new. Each window runs the per-window schedule over its new frames; the windows
run one after the other, so one plan covers the whole timeline. Latents stay latents between windows: no
decode/encode round trip, hence no colour drift at seams.

On a ring timeline (a loop), the last window wraps around: its new frames sit between the tail of the
previous window and the first frames of the video, so the end flows into the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .errors import PlanError
from .flow import SIGMA_DTYPE
from .plan import Plan
from .schedule import TimestepSchedule, check_plan_size
from .task import Hold, apply_holds


@dataclass(frozen=True)
class WindowLayout:
    """One window: frames ``start .. start + length - 1`` (mod N on a ring); `new` are generated in it."""

    start: int
    length: int
    new: tuple[int, ...]


def rolling_layout(num_latent_frames: int, window: int, overlap: int, ring: bool = False) -> list[WindowLayout]:
    """Place windows over a timeline of `num_latent_frames` latent frames.

    Every window but the first keeps at least `overlap` generated frames as history. Windows are full length
    whenever the timeline allows it (a short last window takes more history instead). On a ring, the last
    window also sees at least `overlap` of the first frames after its new ones.

    Args:
        num_latent_frames: N, latent frames on the timeline.
        window: W, latent frames per forward pass.
        overlap: O, history frames carried into each later window.
        ring: lay the windows out on a loop.
    """
    if window < 1:
        raise PlanError(f"window={window} must be >= 1 latent frame")
    if not 0 <= overlap < window:
        raise PlanError(f"overlap={overlap} must be in [0, window={window}); it is the history kept per window")
    if ring:
        if overlap < 1:
            raise PlanError("a loop needs overlap >= 1 so the seam between end and start has context")
        if window <= 2 * overlap:
            raise PlanError(f"a loop needs window > 2*overlap (got window={window}, overlap={overlap})")
        if num_latent_frames <= window:
            raise PlanError(
                f"a loop of {num_latent_frames} latent frames fits in one window of {window}; use a longer video or "
                "a smaller window so the seam can be generated with context on both sides"
            )
    if num_latent_frames <= window:
        return [WindowLayout(0, num_latent_frames, tuple(range(num_latent_frames)))]
    layouts = [WindowLayout(0, window, tuple(range(window)))]
    step = window - overlap
    if step < 1:
        raise PlanError(f"overlap={overlap} leaves no new frames per window of {window}")
    generated = window
    last_new = min(window - 2 * overlap, num_latent_frames - window) if ring else 0
    while generated < num_latent_frames - last_new:
        count = min(step, num_latent_frames - last_new - generated)
        start = generated + count - window
        layouts.append(WindowLayout(start, window, tuple(range(generated, generated + count))))
        generated += count
    if ring:
        left = (window - last_new) // 2
        layouts.append(WindowLayout(generated - left, window, tuple(range(generated, num_latent_frames))))
    return layouts


def compose_timeline(
    schedule: TimestepSchedule,
    num_latent_frames: int,
    num_steps: int,
    layouts: Sequence[WindowLayout],
    holds: Sequence[Hold] = (),
    *,
    ring: bool = False,
    history_noise: float = 0.0,
    history_multiplier: float = 0.0,
    meta: dict[str, Any] | None = None,
) -> Plan:
    """Compile a windowed plan: each window runs `schedule` over its new frames, one after the other.

    Args:
        schedule: the per-window base schedule (synchronous, pyramid, ...).
        num_latent_frames: N, latent frames on the timeline.
        num_steps: steps of the base sequence per window.
        layouts: the windows, e.g. from `rolling_layout`.
        holds: held frames at absolute timeline positions (keyframes, the first image, a given prefix).
        ring: the timeline is a loop.
        history_noise: level at which finished history frames are shown to the model (SkyReels'
            ``addnoise_condition / 1000``); their clean state is kept. 0 shows them clean.
        history_multiplier: m; history frames are shown at m times the highest level among the frames
            the window is generating in that step (Pusa's noise multiplier on given frames, applied to
            history); their clean state is kept, so the output keeps the history as generated. 0 = off;
            exclusive with `history_noise`.
        meta: description carried into the plan.
    """
    if not 0 <= history_noise < 1:
        raise PlanError(f"history_noise={history_noise} must be in [0, 1)")
    if not 0 <= history_multiplier <= 1:
        raise PlanError(f"history_multiplier={history_multiplier} must be in [0, 1]")
    if history_noise > 0 and history_multiplier > 0:
        raise PlanError(
            f"history_noise={history_noise} and history_multiplier={history_multiplier} both set how history is "
            "shown; set one of them to 0"
        )
    covered = sorted(f for layout in layouts for f in layout.new)
    if covered != list(range(num_latent_frames)):
        raise PlanError("the windows must generate every latent frame of the timeline exactly once")
    check_plan_size(len(layouts) * num_steps, num_latent_frames)
    blocks = [schedule.grid(len(layout.new), num_steps) for layout in layouts]
    total = sum(block.shape[0] - 1 for block in blocks)
    check_plan_size(total, num_latent_frames)
    grid = torch.ones(total + 1, num_latent_frames, dtype=SIGMA_DTYPE)
    windows = torch.zeros(total, 2, dtype=torch.int64)
    row = 0
    for layout, block in zip(layouts, blocks):
        rows = block.shape[0] - 1
        new = torch.tensor(layout.new)
        grid[row : row + rows + 1, new] = block
        grid[row + rows + 1 :, new] = 0.0
        windows[row : row + rows] = torch.tensor([layout.start % num_latent_frames, layout.start % num_latent_frames + layout.length])
        row += rows
    sigmas = grid.clone()
    input_sigmas = grid[:-1].clone()
    held = apply_holds(sigmas, input_sigmas, holds)
    probe = Plan(sigmas, sigmas[:-1].clone(), windows, held, ring=ring)
    inside = probe.window_mask()
    input_sigmas = torch.where(inside, input_sigmas, sigmas[:-1])
    history = inside & ~held & (sigmas[:-1] == 0) & (sigmas[1:] == 0)
    if history_noise > 0:
        input_sigmas = torch.where(history, torch.full_like(input_sigmas, history_noise), input_sigmas)
    if history_multiplier > 0:
        generating = inside & ~held & (sigmas[:-1] > 0)
        level = torch.where(generating, input_sigmas, torch.zeros_like(input_sigmas)).amax(dim=1, keepdim=True)
        input_sigmas = torch.where(history, (history_multiplier * level).expand_as(input_sigmas), input_sigmas)
    return Plan(sigmas, input_sigmas, windows, held, ring=ring, meta=dict(meta or {}))
