"""``reusevos segment`` (one video or folder of frames), ``reusevos segment-davis`` (a DAVIS split or a YouTube-VOS
folder) and ``reusevos merge`` (the shards of a segment-davis run)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from reusevos.cli.common import (add_device, add_sequences, add_session_flags, add_threads, add_weights,
                                 command_line, log, note, session_options, set_threads)
from reusevos.config import DEFAULT_MAX_SIZE
from reusevos.errors import ReusevosError

if TYPE_CHECKING:
    from reusevos.start import Prompt

OVERLAY_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv")


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``segment``, ``segment-davis`` and ``merge``."""
    _register_segment(sub)
    _register_segment_davis(sub)
    _register_merge(sub)


def _register_segment(sub: argparse._SubParsersAction) -> None:
    seg = sub.add_parser(
        "segment", help="segment a video or a folder of frames from its first-frame mask, or a box or clicks",
        description="Segments INPUT (a video file: mp4, mov, avi, webm, mkv; or a folder of JPEG/PNG frames) from "
                    "the mask of its first frame, or from a folder of masks for objects that start later, or from a "
                    "box (--box) or clicks (--points) on each object. Writes OUT_DIR/<frame>.png (DAVIS palette, the "
                    "input's size; other formats with --format), OUT_DIR/stats.json (frames, resolution, FPS, "
                    "initialisation time, reuse rate and gate decisions per object, how each object started, "
                    "versions, settings) and, with --overlay, a video of the masks drawn over the frames. Frames are "
                    "streamed, so a long video runs in constant memory.",
        epilog="examples: reusevos segment clip.mp4 --mask first.png --out masks/ --overlay clip-masks.mp4; "
               "reusevos segment clip.mp4 --box 40,30,200,180 --points 300,120@12 --out masks/ --format davis,webm")
    seg.add_argument("input", metavar="INPUT", help="video file or folder of frames (named in order: 00000.jpg ...)")
    seg.add_argument("--mask", default=None, metavar="MASK",
                     help="first frame's mask: a palette or label PNG (labels 1, 2, ... = objects, 0 = background, "
                          "255 = void) or a black-and-white 0/255 PNG (one object); or a folder of <frame>.png "
                          "masks for objects that start later (a video's frames are named 00000, 00001, ...). "
                          "Needed unless --box or --points starts the objects")
    seg.add_argument("--box", dest="prompts", action=_AppendPrompt, default=None, metavar="X0,Y0,X1,Y1[@FRAME]",
                     help="start an object from a box around it (pixels: top-left corner X0,Y0, bottom-right X1,Y1, "
                          "exclusive) at frame index FRAME (default 0); its mask is made as --box-method says and "
                          "written to OUT_DIR/start-masks/<frame>.png. Repeat for more objects: each --box and "
                          "--points is one object, numbered 1, 2, ... in order (after the ids of --mask)")
    seg.add_argument("--box-method", default=None, metavar="METHOD",
                     help="how a --box becomes a mask: model (the model's own features and refinement network, then "
                          "GrabCut seeded by their mask, then the network again; made once the model has loaded) or "
                          "grabcut (OpenCV's GrabCut from the box alone). Default: model, or grabcut with weights that "
                          "have no FRTM target model (--model ttvos)")
    seg.add_argument("--points", dest="prompts", action=_AppendPrompt, default=None, metavar="X,Y[,X,Y...][@FRAME]",
                     help="start an object from clicks on it at frame index FRAME (default 0), made into a mask by "
                          "GrabCut; a pair with a - before it is a background click (100,120,-30,40: on the object "
                          "at 100,120, not at 30,40; write --points=-30,40,... when the first click is background)")
    seg.add_argument("--corrections", default=None, metavar="DIR",
                     help="a folder of masks named after frames, read as --mask's are: on each such frame the objects "
                          "its mask marks start again from it (a fresh start), to put a drifting object right")
    seg.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for the masks and stats.json "
                     "(created if missing; a folder holding files is refused unless --overwrite; never an input)")
    seg.add_argument("--overwrite", action="store_true",
                     help="replace an OUT_DIR that holds files (another run's) whole, once this run is complete; "
                          "until then the new run is in OUT_DIR.partial and the old results are untouched")
    seg.add_argument("--threshold", type=int, default=None, metavar="T",
                     help="read the masks as one object where their grey level is at least T (0-255): for soft-edged "
                          "masks from an editor and JPEG masks, which are otherwise refused")
    seg.add_argument("--overlay", default=None, metavar="OUT.mp4",
                     help="also write the frames with the masks drawn over them as a video (.mp4, .mov or .mkv)")
    seg.add_argument("--format", dest="formats", default="davis", metavar="LIST",
                     help="what to write into OUT_DIR, comma-separated: davis (<frame>.png palette PNGs), binary "
                          "(binary/<id>/<frame>.png, 0/255 per object), rgba (rgba/<frame>.png, the frame with alpha = "
                          "all objects), webm (matte.webm, VP9 with alpha), mov (matte.mov, ProRes 4444 with alpha), "
                          "coco (coco.json, COCO RLE per frame and object), youtube (Annotations/<video>/<frame>.png "
                          "and meta.json, the YouTube-VOS layout)")
    seg.add_argument("--feather", type=float, default=0.0, metavar="PIXELS",
                     help="blur the alpha's edge in rgba, webm and mov by a Gaussian of this standard deviation "
                          "(0 = the mask exactly)")
    add_session_flags(seg)
    seg.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, metavar="PIXELS",
                     help="run the model on frames whose longer side is at most PIXELS (masks are still written at "
                          f"the input size); 0 = the input size. {DEFAULT_MAX_SIZE} is DAVIS 480p, the size the "
                          "model is trained at")
    add_weights(seg, model=True)
    add_device(seg)
    add_threads(seg, "CPU threads for torch and OpenCV (default: torch's choice, usually the core count)", "N")
    seg.add_argument("--no-warmup", dest="warmup", action="store_false",
                     help="skip the untimed warm-up on the first frame (saves about one frame's initialisation; "
                          "the FPS then includes start-up costs)")
    seg.add_argument("--progress", action="store_true",
                     help="show the progress bar even when stderr is not a terminal (it is shown on terminals)")
    seg.set_defaults(func=_cmd_segment)


def _register_segment_davis(sub: argparse._SubParsersAction) -> None:
    segdavis = sub.add_parser(
        "segment-davis", help="segment every sequence of a DAVIS split or a YouTube-VOS folder into RESULTS_DIR "
                              "(resumable, shardable)",
        description="Runs the model on each sequence of a DAVIS split from its first-frame annotation and writes "
                    "RESULTS_DIR/<sequence>/<frame>.png (the layout `reusevos eval` reads); or on each video of a "
                    "YouTube-VOS split's folder (JPEGImages/, Annotations/, meta.json), every object starting on the "
                    "first annotation that names it (later annotations are not given to the model), and writes the "
                    "submission layout RESULTS_DIR/Annotations/<video>/<frame>.png (every frame, the annotations' "
                    "object ids) and, with --zip, the zip the evaluation server takes. RESULTS_DIR/stats.json holds "
                    "frames, FPS and initialisation time per sequence. Complete sequences are skipped, so an "
                    "interrupted run resumes. Under torchrun (RANK/WORLD_SIZE) or as a Slurm array job "
                    "(SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT) each process takes its share of the sequences and "
                    "writes RESULTS_DIR/stats-IofN.json; `reusevos merge RESULTS_DIR` then joins them.",
        epilog="examples: reusevos segment-davis ~/data/DAVIS --split val --out results/; "
               "reusevos segment-davis ~/data/youtube-vos/valid --out yt/ --zip yt.zip; "
               "torchrun --nproc-per-node 4 -m reusevos segment-davis ~/data/youtube-vos/valid --out yt/")
    segdavis.add_argument("davis", metavar="DATASET_ROOT", nargs="?", default=None,
                          help="a DAVIS root (2016 or 2017 layout; default: $REUSEVOS_DAVIS) or the folder of one "
                               "YouTube-VOS split (e.g. valid/)")
    segdavis.add_argument("--split", default=None,
                          help="DAVIS: the split to segment (default: val); YouTube-VOS: a split's folder under "
                               "DATASET_ROOT (e.g. valid), when DATASET_ROOT is the download's top folder")
    segdavis.add_argument("--layout", default="auto", metavar="LAYOUT",
                          help="davis, youtube, or auto: a root holding ImageSets/ is DAVIS, one holding JPEGImages/ "
                               "without ImageSets/ is YouTube-VOS")
    segdavis.add_argument("--out", required=True, metavar="RESULTS_DIR", help="output folder")
    add_sequences(segdavis)
    segdavis.add_argument("--shard", default=None, metavar="I/N",
                          help="process only every N-th sequence from the I-th (0-based), writing stats-IofN.json; "
                               "wins over the launcher's environment (default: torchrun's RANK/WORLD_SIZE or the Slurm "
                               "array task, else the whole run)")
    segdavis.add_argument("--zip", default=None, metavar="FILE.zip",
                          help="YouTube-VOS, unsharded: also write the submission zip (top level Annotations/) at the "
                               "end; a sharded run makes it with `reusevos merge RESULTS_DIR --zip FILE.zip`")
    add_session_flags(segdavis)
    add_weights(segdavis, model=True)
    add_device(segdavis, note=" (under torchrun, cuda means cuda:LOCAL_RANK)")
    add_threads(segdavis)
    segdavis.add_argument("--no-warmup", dest="warmup", action="store_false",
                          help="skip the untimed warm-up on the first sequence's first frames")
    segdavis.set_defaults(func=_cmd_segment_davis)


def _register_merge(sub: argparse._SubParsersAction) -> None:
    merge = sub.add_parser(
        "merge", help="join the shards of a segment-davis run into RESULTS_DIR/stats.json",
        description="Joins RESULTS_DIR/stats-IofN.json, written by the N shards of a segment-davis run, into "
                    "RESULTS_DIR/stats.json as an unsharded run writes it: the sequences' entries together, the "
                    "total recomputed (FPS = all frames over all model seconds), complete only when every shard is "
                    "complete and every sequence is there. A missing shard, shards of two different runs, a "
                    "sequence in two shards or shards with other settings are refused. Run it again once more "
                    "shards are done: it replaces its own stats.json.")
    merge.add_argument("out", metavar="RESULTS_DIR", help="the folder the shards wrote to")
    merge.add_argument("--zip", default=None, metavar="FILE.zip",
                       help="also write the YouTube-VOS submission zip (the merged run must be complete)")
    merge.set_defaults(func=_cmd_merge)


class _AppendPrompt(argparse.Action):
    """--box and --points into one list of ``(flag, text)``, in the order given: the objects' ids follow it."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, [*(getattr(namespace, self.dest) or []), (option_string, values)])


def _parse_box(text: str) -> Prompt:
    """``--box X0,Y0,X1,Y1[@FRAME]``."""
    from reusevos.start import Prompt

    fields, frame = _split_frame(text, "--box", "X0,Y0,X1,Y1[@FRAME]")
    try:
        box = tuple(int(v) for v in fields)
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ReusevosError(f"--box {text!r}: write X0,Y0,X1,Y1[@FRAME], whole pixels, the top-left and bottom-right "
                            "corners (for example --box 40,30,200,180@5)")
    return Prompt(frame, box=box, text=f"--box {text}")


def _parse_points(text: str) -> Prompt:
    """``--points X,Y[,X,Y...][@FRAME]``, a ``-`` before a pair marking a background click."""
    from reusevos.start import Prompt

    fields, frame = _split_frame(text, "--points", "X,Y[,X,Y...][@FRAME]")
    hint = (f"--points {text!r}: write X,Y pairs of whole pixels, a - before a pair for a background click "
            "(for example --points 100,120,-30,40@5)")
    if len(fields) % 2:
        raise ReusevosError(hint)
    foreground, background = [], []
    for x, y in zip(fields[::2], fields[1::2]):
        if not (x.lstrip("-").isdigit() and y.isdigit()):
            raise ReusevosError(hint)
        (background if x.startswith("-") else foreground).append((int(x.lstrip("-")), int(y)))
    if not foreground:
        raise ReusevosError(f"--points {text!r} has no foreground click; give at least one X,Y on the object")
    return Prompt(frame, foreground=tuple(foreground), background=tuple(background), text=f"--points {text}")


def _split_frame(text: str, flag: str, form: str) -> tuple[list[str], int]:
    """``A,B,...@FRAME`` as the fields and the frame index (0 without ``@``)."""
    body, at, frame = text.partition("@")
    if at and not frame.strip().isdigit():
        raise ReusevosError(f"{flag} {text!r}: FRAME after @ is a frame index, 0 or more; write {form}")
    return [f.strip() for f in body.split(",")], int(frame) if at else 0


def _segment_inputs(args: argparse.Namespace):
    """Everything ``segment`` can check without the model, checked before anything is written (the boxes and clicks
    are made into start masks here); returns the session options, the device, the frames, the start masks, the
    corrections, the formats and the output folder."""
    from reusevos.api import resolve_device
    from reusevos.config import TargetModelConfig
    from reusevos.io.exports import check_formats
    from reusevos.io.frames import fit_size, open_frames
    from reusevos.model.onnx_backbone import check_runtime
    from reusevos.segment import StartMasks, make_corrections, make_start_masks, plan_outputs
    from reusevos.session import check_frame_size
    from reusevos.start import BOX_METHODS, check_prompts

    options = session_options(args)
    check_runtime(args.backbone_runtime)
    if args.max_size < 0:
        raise ReusevosError(f"--max-size {args.max_size}: give a number of pixels, or 0 for the input size")
    set_threads(args.threads)
    device = resolve_device(args.device)
    if args.threshold is not None and not 0 < args.threshold <= 255:
        raise ReusevosError(f"--threshold {args.threshold}: give a grey level from 1 to 255 (128 is the middle)")
    if args.overlay is not None and Path(args.overlay).suffix.lower() not in OVERLAY_SUFFIXES:
        raise ReusevosError(f"--overlay {args.overlay}: give a file name ending in .mp4 (or .mov, .mkv)")
    prompts = [_parse_box(text) if flag == "--box" else _parse_points(text) for flag, text in args.prompts or []]
    if args.box_method is not None and args.box_method not in BOX_METHODS:
        raise ReusevosError(f"--box-method {args.box_method!r}: choose model (the model's features, then GrabCut; the "
                            "default) or grabcut (GrabCut alone)")
    if args.mask is None and not prompts:
        raise ReusevosError("give the first frame's mask (--mask first.png), or a box (--box X0,Y0,X1,Y1) or clicks "
                            "(--points X,Y) on each object")
    formats = check_formats(args.formats.split(","), args.feather)
    frames = open_frames(args.input)
    process_size = fit_size(frames.size, args.max_size or None)
    check_frame_size(process_size)
    # Sizes, empty, soft and too small masks, before the model loads (segment_video checks again with its weights).
    # Boxes wait for the model unless --box-method grabcut (its method, and which method is the default, need it):
    # their frames and corners are checked here, their masks made by segment_video.
    later = prompts if args.box_method != "grabcut" and any(p.box is not None for p in prompts) else []
    check_prompts(later, frames)
    if args.mask is None and later:
        masks = StartMasks({}, "the boxes and clicks")
    else:
        masks = make_start_masks(frames, args.mask, [] if later else prompts, process_size,
                                 TargetModelConfig().min_object_pixels, args.threshold, box_method=args.box_method)
    fixes = make_corrections(frames, args.corrections, process_size, TargetModelConfig().min_object_pixels,
                             args.threshold)
    results = plan_outputs(frames, masks, args.out, args.overlay, args.overwrite, args.weights, fixes)
    return options, device, frames, masks, later, fixes, formats, results


class _ProgressBar:
    """The frame counter on stderr, made when the first frame starts so that its clock leaves out loading and
    warm-up; ``on_start`` and ``on_frame`` are segment_video's callbacks."""

    def __init__(self, label: str, always: bool):
        self.label, self.always, self.bar = label, always, None

    def on_start(self, stats) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=stats.total, unit="frame", desc=self.label, file=sys.stderr, dynamic_ncols=True,
                        disable=False if self.always else None, leave=False)

    def on_frame(self, result, stats) -> None:
        reuse = f", reuse {stats.reuse_rate:.0%}" if stats.settings.get("variant", "full") != "full" else ""
        self.bar.set_postfix_str(f"model {stats.fps:.1f} FPS{reuse}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _segment_summary(stats, out: Path, overlay: str | None) -> str:
    """The one line ``segment`` ends with: size, speed, threads, device, the gate's share and where the files are."""
    import torch

    height, width = stats.resolution
    ph, pw = stats.process_resolution
    size = f"{width}x{height}" + (f" (model at {pw}x{ph})" if (ph, pw) != (height, width) else "")
    setting = stats.settings
    gate = (f"variant {setting.get('variant')} at tau {setting.get('tau')}: {stats.reuse_rate:.0%} of frames reused"
            if setting.get("variant") not in (None, "full") else "variant full (no reuse)") \
        + (", with the mirrored video (flip)" if setting.get("flip") else "")
    return (f"{stats.frames} frames {size} in {stats.wall_s:.1f} s: {stats.fps:.2f} FPS model, "
            f"{stats.fps_wall:.2f} FPS end to end, init {stats.init_s:.2f} s, {torch.get_num_threads()} threads, "
            f"{setting.get('device')} (backbone: {setting.get('backbone_runtime')}); {gate}; masks and "
            f"stats.json in {out}"
            + (f", overlay {overlay}" if overlay else ""))


def _cmd_segment(args: argparse.Namespace) -> int:
    import time

    from reusevos.api import load_model
    from reusevos.model.onnx_backbone import bf16_mode_available
    from reusevos.segment import segment_video

    options, device, frames, masks, prompts, fixes, formats, results = _segment_inputs(args)
    start = time.perf_counter()
    if sys.stderr.isatty():  # a cold start takes seconds: say what is happening (logs stay one line per error)
        note("loading the model" + (" and warming up" if args.warmup else "") + " ...")
    network = load_model(args.weights, device=device, model=args.model)
    network.backbone.runtime = args.backbone_runtime
    extra = {"command": command_line(), "load_s": round(time.perf_counter() - start, 4)}
    progress = _ProgressBar(Path(args.input).name, args.progress)
    try:
        stats = segment_video(network, frames, masks, results.path, prompts=prompts, box_method=args.box_method,
                              corrections=fixes, formats=formats,
                              feather=args.feather, overlay=args.overlay, options=options,
                              max_size=args.max_size, warmup=args.warmup, on_start=progress.on_start,
                              on_frame=progress.on_frame, extra=extra, overwrite=args.overwrite)
    except KeyboardInterrupt:
        progress.close()
        kept = f"; the earlier results in {results.path} are unchanged" if results.staging else ""
        note(f"stopped: the frames done are in {results.folder}, marked partial in its stats.json{kept}")
        raise
    finally:
        progress.close()
    print(_segment_summary(stats, results.path, args.overlay))
    shown = args.progress or sys.stderr.isatty()  # where the progress bar shows: not in logs
    if shown and args.backbone_runtime == "auto" and stats.settings.get("device") == "cpu" and bf16_mode_available():
        note("this CPU computes bfloat16 natively: --backbone-runtime openvino-bf16 (the bfloat16 mode) is faster "
             "here, with slightly different masks (the default model on DAVIS val: 1.4x, 0.1 less J&F; "
             "docs/speed.md)")
    return 0


def _cmd_segment_davis(args: argparse.Namespace) -> int:
    import os

    import torch

    from reusevos.api import load_model, resolve_device
    from reusevos.io.datasets import open_dataset
    from reusevos.model.onnx_backbone import check_runtime
    from reusevos.segment import check_davis_output, segment_davis
    from reusevos.shards import parse_shard, shard_from_environment

    shard = parse_shard(args.shard) if args.shard is not None else shard_from_environment(os.environ)
    options = session_options(args)
    check_runtime(args.backbone_runtime)
    set_threads(args.threads)
    device = resolve_device(args.device)
    if shard.source == "torchrun" and device.type == "cuda" and device.index is None and "LOCAL_RANK" in os.environ:
        device = resolve_device(f"cuda:{os.environ['LOCAL_RANK']}")  # one GPU per process
    dataset = open_dataset(args.davis, args.split, args.sequences, args.layout)
    check_davis_output(dataset, args.out, args.weights, shard, args.zip)  # before the model loads
    network = load_model(args.weights, device=device, model=args.model)
    network.backbone.runtime = args.backbone_runtime
    report = segment_davis(network, dataset, args.out, shard=shard, warmup=args.warmup, log=log, options=options,
                           zip_path=args.zip)
    total = report["total"]
    part = f"shard {shard.index} of {shard.count} (from {shard.source}): " if shard.count > 1 else ""
    after = (f"; when every shard is done: reusevos merge {args.out}" if shard.count > 1
             else f"; submission zip {args.zip}" if args.zip else "")
    print(f"{part}{total['sequences']} sequences, {total['frames']} frames, {total['fps']:.2f} FPS "
          f"({torch.get_num_threads()} threads); results in {args.out}{after}")
    return 0


def _cmd_merge(args: argparse.Namespace) -> int:
    from reusevos.io.youtube import write_submission_zip
    from reusevos.segment import check_zip
    from reusevos.shards import merge_shards, write_merged

    merged = merge_shards(args.out)
    dataset = merged.get("dataset") or {}
    if args.zip is not None:  # checked before anything is written
        check_zip(dataset.get("layout", ""), None, dataset.get("root"), args.zip)
        if not merged["complete"]:
            raise ReusevosError(f"--zip {args.zip}: the merged run is not complete ({len(merged['sequences'])} of "
                                f"{len(dataset.get('sequences', []))} sequences, shards complete: "
                                f"{sum(s['complete'] for s in merged['merged'])} of {len(merged['merged'])}); finish "
                                "the shards, then merge again")
    path = write_merged(args.out, merged)
    if args.zip is not None:
        write_submission_zip(args.out, args.zip, dataset.get("sequences", []))
    total = merged["total"]
    state = "complete" if merged["complete"] else "NOT complete"
    print(f"{len(merged['merged'])} shards: {total['sequences']} sequences, {total['frames']} frames, "
          f"{total['fps']:.2f} FPS; {state}; {path}" + (f"; submission zip {args.zip}" if args.zip else ""))
    return 0
