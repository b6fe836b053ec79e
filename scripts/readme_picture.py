"""The README's pictures: a frame of the shared DAVIS blackswan clip next to the model's mask drawn over it, or,
with ``--box-start``, a run started from a box instead of the first-frame annotation.

    python scripts/readme_picture.py --frame 40 --out docs/blackswan-overlay.png   # the shipped weights
    python scripts/readme_picture.py --box-start --frame 40 --out docs/box-start.png

Segments the clip from its first-frame annotation (the semi-supervised protocol) up to ``--frame`` through the
public API, then writes ``[frame | overlay]`` side by side, each panel ``--width`` pixels wide, as a PNG, and
prints the frame's IoU with the ground truth so the caption can say how good it is. With ``--box-start`` the run
starts from the mask ``reusevos.mask_from_box`` makes (``--box-method``) from the annotation's bounding box, and the
picture is ``[first frame with the box | the start mask | frame --frame's result]``, with both masks' IoU printed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

import reusevos
from reusevos.evaluation.metrics import region_similarity
from reusevos.start import box_of

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
    parser.add_argument("--box-start", action="store_true",
                        help="start from the first annotation's bounding box instead of the annotation")
    parser.add_argument("--box-method", default="model", help="--box-start: reusevos.mask_from_box's method")
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
    ious = {}
    for i, (name, frame) in enumerate(reusevos.open_frames(frames_dir)):
        if i == 0 and args.box_start:
            box = box_of(first)  # the tightest box a user could draw
            start = reusevos.mask_from_box(frame, box, method=args.box_method, network=model)
            ious["start mask"] = iou(start, first)
            panels = [draw_box(frame, box), reusevos.render_overlay(frame, start)]
            first = start
        result = session.step(frame, first if i == 0 else None)
        if i == args.frame:
            break
    else:
        raise SystemExit(f"{frames_dir} has no frame {args.frame}")
    ious[f"frame {name}"] = iou(result.labels, reusevos.read_mask(masks_dir / f"{name}.png"))
    panels = (panels if args.box_start else [frame]) + [reusevos.render_overlay(frame, result.labels)]
    height = round(frame.shape[0] * args.width / frame.shape[1])
    picture = Image.new("RGB", (len(panels) * (args.width + 8) - 8, height), (255, 255, 255))
    for k, panel in enumerate(panels):
        picture.paste(Image.fromarray(panel).resize((args.width, height), Image.LANCZOS), (k * (args.width + 8), 0))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # 256 colours (dithered) keep the PNG small enough for the repository; the overlay colours are exact.
    picture.quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.FLOYDSTEINBERG).save(args.out,
                                                                                                 optimize=True)
    weights = getattr(model, "meta", {}).get("name", args.weights or "shipped")
    started = f"box {','.join(map(str, box))} ({args.box_method})" if args.box_start else "the first annotation"
    print(f"{args.out}: {args.sequence} from {started}, IoU with the ground truth: "
          + ", ".join(f"{k} {v:.3f}" for k, v in ious.items())
          + f"; weights {weights}, {Path(args.out).stat().st_size // 1024} KiB")
    return 0


def iou(labels: np.ndarray, truth: np.ndarray) -> float:
    return float(region_similarity(truth > 0, labels > 0))


def draw_box(frame: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The frame with the box drawn as a yellow rectangle 1/160 of the frame's width thick, inside the box."""
    x0, y0, x1, y1 = box
    out = frame.copy()
    for t in range(max(2, frame.shape[1] // 160)):
        out[y0 + t, x0:x1] = out[y1 - 1 - t, x0:x1] = (255, 220, 0)
        out[y0:y1, x0 + t] = out[y0:y1, x1 - 1 - t] = (255, 220, 0)
    return out


if __name__ == "__main__":
    sys.exit(main())
