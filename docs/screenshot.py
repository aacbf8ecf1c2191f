"""Open the built site in a real browser (headless Chromium) and screenshot two pages.

    make docs && .venv/bin/python docs/screenshot.py        # or: make docs-screenshots

Serves ``site/`` on 127.0.0.1 (a free port), opens the front page and the components reference page in
Debian's Chromium through Playwright (``pip install playwright``; the browser is the system's
``/usr/bin/chromium``, or ``$CHROMIUM``), fails when a page logs a console error or raises, and writes
``docs/images/site_front_page.png`` and ``docs/images/site_reference_components.png`` atomically.
"""

from __future__ import annotations

import functools
import http.server
import os
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "site"
IMAGES = ROOT / "docs" / "images"
PAGES = {"index.html": "site_front_page.png", "reference/components.html": "site_reference_components.png"}
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:  # keep the console for the page's own errors
        return


def main() -> int:
    from playwright.sync_api import sync_playwright

    if not (SITE / "index.html").is_file():
        sys.stderr.write("site/ is not built; run make docs first\n")
        return 2
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(SITE)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    errors: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                                                 args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: errors.append(f"console {message.type}: {message.text}")
                    if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            for path, image in PAGES.items():
                page.goto(f"http://127.0.0.1:{server.server_port}/{path}", wait_until="networkidle")
                IMAGES.mkdir(parents=True, exist_ok=True)
                partial = IMAGES / f".partial-{image}"
                page.screenshot(path=str(partial), type="png")
                partial.replace(IMAGES / image)
                sys.stdout.write(f"{path}: {page.title()!r} -> docs/images/{image}\n")
            browser.close()
    finally:
        server.shutdown()
    for error in errors:
        sys.stderr.write(error + "\n")
    sys.stdout.write(f"console errors: {len(errors)}\n")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
