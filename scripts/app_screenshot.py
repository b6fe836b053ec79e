"""The README's picture of the web app: the page of ``reusevos app`` in headless Chromium, mid-run.

    python scripts/app_screenshot.py --out docs/app-screenshot.png            # the shared DAVIS blackswan clip
    python scripts/app_screenshot.py --demo --out /tmp/app.png                # the synthetic demo clip, two boxes

Starts ``reusevos app`` on a free local port, opens the page in the system's Chromium through Playwright (as
``tests/test_app.py`` does; nothing is downloaded), uploads the clip's frames and its first-frame annotation as the
start mask (or, with ``--demo``, opens the demo clip and draws a box around each object), presses Run, takes the
screenshot once ``--at`` of the frames are done, then presses Stop and stops the server.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from reusevos.app.headless import CHROMIUM, CHROMIUM_ARGS, running_app
from reusevos.synthetic import SyntheticConfig, generate_clip

SHARED = Path(os.environ.get("REUSEVOS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clip", default=str(SHARED / "data" / "davis2016-blackswan"), help="DAVIS 2016 root")
    parser.add_argument("--sequence", default="blackswan", help="sequence in it")
    parser.add_argument("--demo", action="store_true", help="the synthetic demo clip (120 frames, 240x432, two "
                        "objects) with a box drawn around each object, instead of --clip")
    parser.add_argument("--at", type=float, default=0.5, help="share of the frames done when the picture is taken")
    parser.add_argument("--size", default="1280x900", metavar="WxH", help="the browser window")
    parser.add_argument("--threads", type=int, default=2, help="the app's CPU threads")
    parser.add_argument("--chromium", default=str(CHROMIUM), help="the browser")
    parser.add_argument("--out", default="docs/app-screenshot.png", help="PNG to write")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp, running_app(Path(tmp) / "server.log", args.threads) as app, \
            sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=list(CHROMIUM_ARGS))
        page = browser.new_page(viewport={"width": width, "height": height})
        page.set_default_timeout(300_000)
        page.goto(app.url)
        if args.demo:
            _demo(page)
        else:
            _upload(page, Path(args.clip), args.sequence)
        page.click("#run")
        total = int(page.locator("#run-progress").get_attribute("data-total"))
        wanted = max(1, round(args.at * total))
        page.wait_for_function("n => +document.querySelector('#run-progress').dataset.done >= n", arg=wanted)
        time.sleep(0.6)  # the preview of that frame reaches the page
        _save_small(page.screenshot(), args.out)
        print(f"{args.out}: {page.locator('#progress').inner_text()}")
        page.click("#stop")
        page.wait_for_selector("#run-progress[data-state=stopped], #run-progress[data-state=done]")
        browser.close()
    return 0


def _save_small(png: bytes, out: str) -> None:
    """The screenshot as a 256-colour PNG: a third of the bytes, no visible change on this page."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(
        out, optimize=True)


def _said(page, phrase: str) -> None:
    page.wait_for_function("p => document.querySelector('#message').innerText.includes(p)", arg=phrase)


def _upload(page, root: Path, sequence: str) -> None:
    """The clip's frames as an upload, then its first annotation as the start mask."""
    frames = sorted((root / "JPEGImages" / "480p" / sequence).glob("*.jpg"))
    if not frames:
        sys.exit(f"no frames in {root}/JPEGImages/480p/{sequence}; give --clip, or --demo")
    page.locator("#upload input[type=file]").set_input_files([str(p) for p in frames])
    _said(page, f"{len(frames)} frames")
    page.locator("#mask-upload input[type=file]").set_input_files(str(root / "Annotations" / "480p" / sequence /
                                                                      f"{frames[0].stem}.png"))
    _said(page, "the start of object(s) 1")


def _demo(page) -> None:
    """The demo clip, and a box drawn around each of its objects on the first frame."""
    config = SyntheticConfig(size=(240, 432), num_frames=120, num_objects=2, seed=0)
    page.locator("#demo-frames input").fill(str(config.num_frames))
    page.locator("#demo-size textarea").fill("240x432")
    page.locator("#demo-objects input").fill("2")
    page.click("#demo")
    _said(page, "demo clip")
    labels = next(iter(generate_clip(config)))[1]
    viewer = page.locator("#viewer img")
    scale = viewer.bounding_box()["width"] / config.size[1]
    for obj in (1, 2):
        ys, xs = np.nonzero(labels == obj)
        if obj > 1:
            page.click("#new-object")
            _said(page, "new object")
        for x, y in ((xs.min() - 6, ys.min() - 6), (xs.max() + 6, ys.max() + 6)):
            viewer.click(position={"x": (float(x) + 0.5) * scale, "y": (float(y) + 0.5) * scale})
        _said(page, f"object {obj}: box")


if __name__ == "__main__":
    sys.exit(main())
