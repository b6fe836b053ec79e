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
from reusevos.config import TrainConfig


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
    train.add_argument("--davis", default=None, help="DAVIS root (default: $REUSEVOS_DAVIS)")
    train.add_argument("--split", default="train", help="training split; validation splits are refused")
    train.add_argument("--sequences", default=None, help="comma-separated subset of the split")
    train.add_argument("--out", required=True, help="run folder: checkpoints, logs, the trained refiner.pt")
    train.add_argument("--cache", default=None, help="cache folder (default: OUT/cache)")
    train.add_argument("--synthetic", type=int, default=60, help="number of syn clips made from the split")
    train.add_argument("--synthetic-frames", type=int, default=24, help="frames per syn clip")
    train.add_argument("--iterations", type=int, default=TrainConfig.iterations)
    train.add_argument("--batch", type=int, default=TrainConfig.batch, help="crops per iteration and process")
    train.add_argument("--crop", type=int, default=TrainConfig.crop, help="crop size in pixels (multiple of 32)")
    train.add_argument("--lr", type=float, default=TrainConfig.lr)
    train.add_argument("--seed", type=int, default=TrainConfig.seed)
    train.add_argument("--checkpoint-every", type=int, default=TrainConfig.checkpoint_every)
    train.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    train.add_argument("--device", default="cpu", help="cpu, cuda or mps")
    train.set_defaults(func=_cmd_train)

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
