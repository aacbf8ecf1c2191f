"""Screenshot a UI-format workflow as ComfyUI's own front end draws it (headless Chromium, via Playwright).

Needs a running ComfyUI with this pack (so the Pusa nodes draw with their widgets), a Chromium from the
distribution's packages (``apt-get install chromium``) and ``pip install playwright`` (Playwright drives
that Chromium; nothing is downloaded)::

    python plugins/pusa_fw_comfy/tools/screenshot_workflow.py --url http://127.0.0.1:PORT \\
        --workflow plugins/pusa_fw_comfy/workflows/pusa_i2v.json --out docs/comfyui_workflow.png

The page is opened, the workflow loaded with the front end's ``app.loadGraphData``, the canvas zoomed to
fit the graph, and the window captured. The PNG is reduced to a 256-colour palette when Pillow is present
(UI screenshots have few colours), so it stays small.
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
"""Front-end settings set before the page opens (no first-run template browser, no minimap)."""


def _set_settings(url: str) -> None:
    for key, value in SETTINGS.items():
        request = urllib.request.Request(
            f"{url}/settings/{key}",
            data=json.dumps(value).encode(),
            method="POST",
            headers={"Content-Type": "application/json"},
        )
        urllib.request.urlopen(request, timeout=30).close()


FIT = """([margin]) => {
  const app = window.app;
  const nodes = app.graph._nodes;
  let [x0, y0, x1, y1] = [Infinity, Infinity, -Infinity, -Infinity];
  for (const node of nodes) {
    x0 = Math.min(x0, node.pos[0]); y0 = Math.min(y0, node.pos[1] - 30);
    x1 = Math.max(x1, node.pos[0] + node.size[0]); y1 = Math.max(y1, node.pos[1] + node.size[1]);
  }
  const canvas = app.canvas.canvas;
  const width = canvas.clientWidth, height = canvas.clientHeight - margin;
  const scale = Math.min(width / (x1 - x0 + 40), height / (y1 - y0 + 40));
  app.canvas.ds.scale = scale;
  app.canvas.ds.offset = [-x0 + 20 + (width / scale - (x1 - x0 + 40)) / 2, -y0 + 20 + margin / scale];
  app.canvas.setDirty(true, true);
  return nodes.length;
}"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="ComfyUI's address, e.g. http://127.0.0.1:8188")
    parser.add_argument("--workflow", type=Path, required=True, help="a UI-format workflow JSON")
    parser.add_argument("--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--chromium", default="/usr/bin/chromium", help="the Chromium executable")
    parser.add_argument("--size", default="1600x900", help="window size WIDTHxHEIGHT")
    options = parser.parse_args()
    from playwright.sync_api import sync_playwright

    width, height = (int(item) for item in options.size.split("x"))
    workflow = json.loads(options.workflow.read_text())
    _set_settings(options.url)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=options.chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(options.url, wait_until="networkidle")
            page.wait_for_function(
                "() => window.app && window.app.graph && window.app.canvas", timeout=60_000
            )
            page.evaluate(
                "([graph, name]) => window.app.loadGraphData(graph, true, true, name)",
                [workflow, options.workflow.stem],
            )
            page.wait_for_timeout(1500)
            page.keyboard.press("Escape")
            drawn = page.evaluate(FIT, [60])
            if drawn != len(workflow["nodes"]):
                raise SystemExit(f"the page drew {drawn} nodes, the workflow has {len(workflow['nodes'])}")
            page.wait_for_timeout(1500)
            page.screenshot(path=str(options.out))
        finally:
            browser.close()
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(options.out) as image:
        image.convert("RGB").quantize(colors=256).save(options.out, optimize=True)


if __name__ == "__main__":
    main()
