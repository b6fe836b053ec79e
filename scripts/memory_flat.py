"""Memory stays flat over a long video: run ``reusevos segment`` on a 3,000-frame synthetic clip and sample the
process's resident memory (VmRSS from /proc/<pid>/status; Linux only) every N frames.

    python scripts/memory_flat.py --frames 3000 --size 120x216 --every 250 --threads 1 --json memory.json

The clip is written as an mp4 first (streamed), then the real command runs in a subprocess with an overlay video;
frames done = mask PNGs written so far. Without --weights a randomly initialised checkpoint is used: the masks are
then meaningless, but every buffer the session keeps (target-model sample memory, per-object state) is exercised
all the same. Prints a table and writes the samples as JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def rss_mb(pid: int) -> float | None:
    """Resident set size of ``pid`` in MiB, or None once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def make_inputs(work: Path, frames: int, size: tuple[int, int], weights: str | None, variant: str) -> tuple[Path, Path, Path]:
    import torch

    from reusevos.config import ModelConfig
    from reusevos.io.masks import write_mask
    from reusevos.io.writers import VideoWriter
    from reusevos.model.backbone import Backbone
    from reusevos.model.network import VOSNetwork, save_checkpoint
    from reusevos.synthetic import SyntheticConfig, generate_clip

    clip = generate_clip(SyntheticConfig(size=size, num_frames=frames, num_objects=2, speed=2.0, seed=0))
    video = work / "clip.mp4"
    with VideoWriter(video, fps=24) as writer:
        for frame, _ in clip:
            writer.write(frame)
    mask = work / "first.png"
    write_mask(mask, clip.render(0, with_frame=False)[1])
    if weights is None:
        torch.manual_seed(0)
        weights = work / "random.pt"
        net = VOSNetwork(ModelConfig(reuse_gate=variant != "full"), Backbone("mobilenet_v2"))
        save_checkpoint(weights, net, meta={"name": "random (memory test)"})
    return video, mask, Path(weights)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--frames", type=int, default=3000, help="length of the synthetic clip")
    parser.add_argument("--size", default="120x216", metavar="HxW", help="frame size")
    parser.add_argument("--every", type=int, default=250, help="sample memory every N frames")
    parser.add_argument("--threads", type=int, default=1, help="--threads of the segment run")
    parser.add_argument("--variant", default="full", choices=["full", "reuse"],
                        help="full: the base model (target model updated every computed frame); reuse: the gate")
    parser.add_argument("--tau", type=float, default=None, help="--tau of the segment run (reuse variant)")
    parser.add_argument("--weights", default=None, help="checkpoint (default: a random one written here)")
    parser.add_argument("--work", default=None, help="folder for the clip and outputs (default: a temporary one)")
    parser.add_argument("--json", default="memory_flat.json", help="where to write the samples")
    parser.add_argument("--segment-args", default="", metavar="ARGS",
                        help="more flags for the segment run, e.g. \"--compute-window 2 --backbone-runtime onnxruntime\"")
    args = parser.parse_args()
    height, width = (int(v) for v in args.size.lower().split("x"))

    with tempfile.TemporaryDirectory(prefix="reusevos-memory-") as tmp:
        work = Path(args.work or tmp)
        work.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        video, mask, weights = make_inputs(work, args.frames, (height, width), args.weights, args.variant)
        print(f"wrote a {args.frames}-frame {width}x{height} clip in {time.perf_counter() - start:.0f} s", flush=True)
        out = work / "out"
        command = [sys.executable, "-m", "reusevos", "segment", str(video), "--mask", str(mask), "--out", str(out),
                   "--overlay", str(work / "overlay.mp4"), "--weights", str(weights), "--threads", str(args.threads),
                   "--variant", args.variant] + (["--tau", str(args.tau)] if args.tau is not None else []) \
            + shlex.split(args.segment_args)
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        samples, next_at, peak = [], 0, 0.0
        while proc.poll() is None:
            time.sleep(0.1)
            rss = rss_mb(proc.pid)
            if rss is None:
                break
            peak = max(peak, rss)
            done = sum(1 for _ in out.glob("*.png")) if out.is_dir() else 0
            if done >= next_at and done > 0:
                samples.append({"frame": done, "rss_mb": round(rss, 1), "t_s": round(time.perf_counter() - start, 1)})
                next_at = (done // args.every + 1) * args.every
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            print(stderr.strip(), file=sys.stderr)
            return proc.returncode
        stats = json.loads((out / "stats.json").read_text())

    print(f"{'frame':>6}  {'RSS MiB':>8}")
    for s in samples:
        print(f"{s['frame']:>6}  {s['rss_mb']:>8.1f}")
    # Least-squares slope over the samples after the first quarter (start-up allocations settle by then).
    later = [s for s in samples if s["frame"] >= args.frames // 4]
    growth = float(np.polyfit([s["frame"] for s in later], [s["rss_mb"] for s in later], 1)[0] * 1000) \
        if len(later) > 2 else 0.0
    spread = (min(s["rss_mb"] for s in later), max(s["rss_mb"] for s in later)) if later else (0.0, 0.0)
    report = {"frames": stats["frames"], "size": [height, width], "threads": args.threads,
              "variant": stats["settings"].get("variant"), "tau": stats["settings"].get("tau"),
              "backbone_runtime": stats["settings"].get("backbone_runtime"),
              "compute_window": stats["settings"].get("compute_window"),
              "fps": stats["fps"], "reuse_rate": stats["reuse_rate"], "peak_rss_mb": round(peak, 1),
              "growth_mb_per_1000_frames_after_first_quarter": round(growth, 2),
              "rss_range_mb_after_first_quarter": list(spread), "samples": samples,
              "command": " ".join(command[2:]), "summary": stdout.strip()}
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    print(f"peak {peak:.1f} MiB (start-up); after the first quarter RSS stays in {spread[0]:.1f}..{spread[1]:.1f} MiB, "
          f"fitted slope {growth:+.2f} MiB per 1000 frames; "
          f"{stats['frames']} frames at {stats['fps']:.1f} FPS; JSON: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
