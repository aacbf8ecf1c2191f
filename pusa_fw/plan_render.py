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
    from matplotlib.figure import Figure

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


def draw_heatmap(plan: Plan) -> Figure:
    """Draw `plan` as a frames-by-steps heatmap (a matplotlib figure on the Agg backend; close it after use).

    Frames are rows and steps columns (the last column is the end state), both with integer ticks; steps
    where a frame lies outside the window are shaded; held frames are marked in a strip of their own
    beside the heatmap (never on the tick labels); the title is sized to stay inside the figure.

    Args:
        plan: the plan to draw.

    Returns:
        The figure; its axes are the heatmap, the held-frame strip (title "held") and the colorbar.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.ticker import MaxNLocator
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    steps, frames = plan.num_steps, plan.num_latent_frames
    sig = plan.sigmas.T.numpy()
    outside = torch.cat([~plan.window_mask(), torch.zeros(1, frames, dtype=torch.bool)]).T.numpy()
    fig_w = min(18.0, max(5.5, 3.0 + 0.18 * (steps + 1)))
    fig_h = min(14.0, max(3.2, 1.8 + 0.22 * frames))
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=100)
    extent = (-0.5, steps + 0.5, frames - 0.5, -0.5)
    cells = {"aspect": "auto", "interpolation": "nearest", "vmin": 0.0, "vmax": 1.0}
    image = ax.imshow(sig, cmap="magma", extent=extent, **cells)
    ax.imshow(outside, cmap=ListedColormap([(0, 0, 0, 0), (0.5, 0.5, 0.5, 0.55)]), extent=extent, **cells)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(integer=True, nbins="auto"))
    ax.set_xlim(-0.5, steps + 0.5)
    ax.set_ylim(frames - 0.5, -0.5)
    ax.set_xlabel(f"step (column {steps} = end state; grey = outside the window)")
    ax.set_ylabel("latent frame")
    divider = make_axes_locatable(ax)
    strip = divider.append_axes("right", size=0.18, pad=0.08)
    held = plan.held.numpy()[:, None].astype(float)
    held_colours = ListedColormap([(1, 1, 1, 0), (0.1, 0.75, 0.85, 1)])
    strip.imshow(held, cmap=held_colours, extent=(0, 1, frames - 0.5, -0.5), **cells)
    strip.set_xticks([])
    strip.set_yticks([])
    strip.set_title("held", fontsize=7, color=(0.1, 0.55, 0.65))
    colorbar_axis = divider.append_axes("right", size=0.18, pad=0.45)
    fig.colorbar(image, cax=colorbar_axis, label="sigma (1 = noise)")
    title = (
        f"{plan.meta.get('task', 'plan')}: sigma per frame and step\n"
        f"{frames} latent frames, {steps} steps, {plan.model_calls()} model calls"
    )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_heatmap(plan: Plan, path: str | os.PathLike[str]) -> None:
    """Draw `plan` with `draw_heatmap` and write it as a PNG, atomically.

    Args:
        plan: the plan to draw.
        path: output PNG file; its directory must exist.
    """
    import matplotlib.pyplot as plt

    fig = draw_heatmap(plan)
    try:
        with atomic_path(path) as temporary:
            fig.savefig(temporary, format="png", bbox_inches="tight")
    finally:
        plt.close(fig)
