"""The README's picture: a frame of the shared DAVIS blackswan clip next to the model's mask drawn over it.

    python scripts/readme_picture.py --frame 40 --out docs/blackswan-overlay.png   # the shipped weights

Segments the clip from its first-frame annotation (the semi-supervised protocol) up to ``--frame`` through the
public API, then writes ``[frame | overlay]`` side by side, each panel ``--width`` pixels wide, as a PNG, and
prints the frame's IoU with the ground truth so the caption can say how good it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import reusevos

SHARED = Path(os.environ.get("REUSEVOS_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--clip", default=str(SHARED / "data" / "davis2016-blackswan"), help="DAVIS 2016 root")
    parser.add_argument("--sequence", default="blackswan", help="sequence in it")
    parser.add_argument("--frame", type=int, default=40, help="frame to show")
    parser.add_argument("--weights", default=None, help="checkpoint (default: the shipped weights)")
    parser.add_argument("--width", type=int, default=360, help="width of each panel in pixels")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default="docs/blackswan-overlay.png", help="PNG to write")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    root = Path(args.clip)
    frames_dir = root / "JPEGImages" / "480p" / args.sequence
    masks_dir = root / "Annotations" / "480p" / args.sequence
    model = reusevos.load_model(args.weights)
    session = reusevos.Session(model)
    first = reusevos.read_mask(sorted(masks_dir.glob("*.png"))[0])
    for i, (name, frame) in enumerate(reusevos.open_frames(frames_dir)):
        result = session.step(frame, first if i == 0 else None)
        if i == args.frame:
            break
    else:
        raise SystemExit(f"{frames_dir} has no frame {args.frame}")
    gt = reusevos.read_mask(masks_dir / f"{name}.png")
    iou = np.logical_and(result.labels > 0, gt > 0).sum() / max(1, np.logical_or(result.labels > 0, gt > 0).sum())
    overlay = reusevos.render_overlay(frame, result.labels)
    height = round(frame.shape[0] * args.width / frame.shape[1])
    panels = [Image.fromarray(a).resize((args.width, height), Image.LANCZOS) for a in (frame, overlay)]
    picture = Image.new("RGB", (2 * args.width + 8, height), (255, 255, 255))
    picture.paste(panels[0], (0, 0))
    picture.paste(panels[1], (args.width + 8, 0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # 256 colours (dithered) keep the PNG small enough for the repository; the overlay colours are exact.
    picture.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(args.out,
                                                                                                 optimize=True)
    weights = getattr(model, "meta", {}).get("name", args.weights or "shipped")
    print(f"{args.out}: {args.sequence} frame {name}, IoU with the ground truth {iou:.3f}, weights {weights}, "
          f"{Path(args.out).stat().st_size // 1024} KiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
