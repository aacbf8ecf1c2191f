"""Text tables and PNG heatmaps of a plan: frames as rows, steps as columns.

Drawing a plan before anything runs is how a schedule is debugged: the staircase of a pyramid grid, the
held frames of a keyframe task and the sliding windows of a rolling plan are all visible at a glance.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from .io.atomic import atomic_path

if TYPE_CHECKING:
    from .plan import Plan

LEGEND = (
    "state sigma x100 per latent frame (rows) before each step (columns; last column = end): "
    "## = 1 (noise), 0 = clean; outside the step's window: blank = waiting at 1, '.' = finished at 0; "
    "* = held frame, ~ = shown to the model noisier than its state"
)


def _cell(sigma: float, in_window: bool, noised_view: bool) -> str:
    if not in_window and sigma == 1.0:
        text = "  "
    elif not in_window and sigma == 0.0:
        text = " ."
    elif sigma == 1.0:
        text = "##"
    elif sigma == 0.0:
        text = " 0"
    else:
        text = f"{min(99, max(1, round(sigma * 100))):2d}"
    return text + ("~" if noised_view else " ")


def render_table(plan: Plan, max_frames: int = 64) -> str:
    """Render `plan` as a text table (frames are rows; at most `max_frames` rows are shown).

    Args:
        plan: the plan to draw.
        max_frames: frames beyond this many are summarised in one line.

    Returns:
        A multi-line string, one row per latent frame plus a header and the legend.
    """
    steps, frames = plan.num_steps, plan.num_latent_frames
    inside = plan.window_mask()
    inside = torch.cat([inside, torch.ones(1, frames, dtype=torch.bool)])
    noised = torch.cat([plan.input_sigmas > plan.sigmas[:-1], torch.zeros(1, frames, dtype=torch.bool)])
    title = plan.meta.get("task", "plan")
    lines = [f"{title}: {frames} latent frames x {steps} steps, {plan.model_calls()} model calls", LEGEND]
    header = "frame |" + "".join(f"{i:>3d}" if i % 5 == 0 or i == steps else "   " for i in range(steps + 1))
    lines.append(header)
    sig = plan.sigmas.tolist()
    for frame in range(min(frames, max_frames)):
        mark = "*" if bool(plan.held[frame]) else " "
        cells = "".join(
            _cell(sig[row][frame], bool(inside[row, frame]), bool(noised[row, frame])) for row in range(steps + 1)
        )
        lines.append(f"{frame:>4d}{mark} |{cells}")
    if frames > max_frames:
        lines.append(f"  ... {frames - max_frames} more frames")
    return "\n".join(lines)


def save_heatmap(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Draw `plan` as a frames-by-steps heatmap and write it as a PNG, atomically.

    Args:
        plan: the plan to draw.
        path: output PNG file; its directory must exist.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    sig = plan.sigmas.T.numpy()
    fig_w = min(18.0, 2.5 + 0.18 * (plan.num_steps + 1))
    fig_h = min(14.0, 1.8 + 0.22 * plan.num_latent_frames)
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=100)
    image = ax.imshow(sig, aspect="auto", cmap="magma", vmin=0.0, vmax=1.0, interpolation="nearest")
    outside = (~plan.window_mask()).T.numpy()
    ax.imshow(
        outside, aspect="auto", cmap="Greys", alpha=0.25 * outside.astype(float), extent=(-0.5, plan.num_steps - 0.5,
                                                                                         plan.num_latent_frames - 0.5, -0.5),
        interpolation="nearest",
    )
    for frame in plan.held.nonzero().squeeze(1).tolist():
        ax.annotate("held", xy=(-0.5, frame), xytext=(-0.9, frame), fontsize=6, color="tab:cyan",
                    ha="right", va="center", annotation_clip=False)
    ax.set_xlabel("step (last column: end)")
    ax.set_ylabel("latent frame")
    ax.set_title(f"{plan.meta.get('task', 'plan')}: sigma per frame and step ({plan.model_calls()} model calls)")
    fig.colorbar(image, ax=ax, label="sigma (1 = noise)")
    fig.tight_layout()
    try:
        with atomic_path(path) as temporary:
            fig.savefig(temporary, format="png")
    finally:
        plt.close(fig)
