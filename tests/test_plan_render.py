"""Plan heatmaps: integer frame and step ticks, the whole title inside the image, held frames marked in a
strip of their own that overlaps no tick label, and every column (the end state included) drawn."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest

import pusa_fw
from pusa_fw.plan_render import draw_heatmap

matplotlib.use("Agg")

PLANS = {
    "keyframes": lambda: pusa_fw.get_task("keyframes", positions=[0, 40]).plan(num_frames=81, num_steps=10),
    "i2v-small": lambda: pusa_fw.get_task("i2v").plan(num_frames=5, num_steps=2),
    "rolling": lambda: pusa_fw.get_task("rolling").plan(num_frames=161, num_steps=6),
}


@pytest.mark.parametrize("name", sorted(PLANS))
def test_heatmap_ticks_title_and_held_strip(name: str) -> None:
    import matplotlib.pyplot as plt

    plan = PLANS[name]()
    fig = draw_heatmap(plan)
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        heatmap, strip = fig.axes[0], next(ax for ax in fig.axes if ax.get_title() == "held")
        for axis, top in ((heatmap.xaxis, plan.num_steps), (heatmap.yaxis, plan.num_latent_frames - 1)):
            shown = [tick for tick in axis.get_majorticklocs() if -0.5 <= tick <= top + 0.5]
            assert shown and all(float(tick).is_integer() for tick in shown), shown
            labels = [label.get_text() for label in axis.get_ticklabels() if label.get_text()]
            assert all(text.lstrip("−-").isdigit() for text in labels), labels
        assert heatmap.get_xlim() == (-0.5, plan.num_steps + 0.5)  # the end-state column is drawn
        figure_box = fig.bbox
        title_box = heatmap.title.get_window_extent(renderer)
        assert figure_box.x0 <= title_box.x0 and title_box.x1 <= figure_box.x1
        assert title_box.y1 <= figure_box.y1
        assert plan.meta["task"] in heatmap.get_title()
        strip_box = strip.get_window_extent(renderer)
        for label in heatmap.yaxis.get_ticklabels():
            if label.get_text():
                assert not label.get_window_extent(renderer).overlaps(strip_box)
        (held_image,) = strip.get_images()
        assert held_image.get_array().reshape(-1).tolist() == plan.held.float().tolist()
    finally:
        plt.close(fig)


def test_save_heatmap_writes_a_png(tmp_path: Path) -> None:
    target = tmp_path / "plan.png"
    PLANS["i2v-small"]().save_heatmap(target)
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [path.name for path in tmp_path.iterdir()] == ["plan.png"]
