"""``reusevos train`` (the base model: FRTM's refinement network, or TTVOS with ``--model ttvos``), ``reusevos train-gate`` (the dynamic network on top of it),
``reusevos refit-gate`` (the gate alone, fitted again on full frames) and ``reusevos fit-flow-gate`` (the flow
variant's gate)."""

from __future__ import annotations

import argparse
from pathlib import Path

from reusevos.cli.common import (add_davis, add_device, add_sequences, add_threads, add_weights, command_line,
                                 csv_list, log, set_threads)
from reusevos.config import (BACKBONES, BASE_MODELS, GateRefitConfig, GateTrainConfig, ModelConfig, TrainConfig,
                             TtvosConfig, TtvosTrainConfig)
from reusevos.errors import ReusevosError

TRAIN_SPLIT_HELP = "training split; validation splits are refused"


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``train``, ``train-gate``, ``refit-gate`` and ``fit-flow-gate``."""
    train = sub.add_parser(
        "train", help="train a base model (FRTM's refinement network, or TTVOS) on a DAVIS split plus synthetic clips "
                      "(resumable)",
        description="Builds the feature/score cache of the training data (skipping what is cached), then trains "
                    "the base model: FRTM's refinement network on crops (OUT/refiner.pt), or with --model ttvos TTVOS "
                    "on snippets of frames, each started from its first frame's mask and run on its own estimates "
                    "(OUT/ttvos.pt). Run the same command again to resume; under torchrun it trains with "
                    "DistributedDataParallel.")
    train.add_argument("--model", default="frtm", choices=BASE_MODELS,
                       help="the base model to train; --batch and --lr take its own values unless given: "
                            f"{TrainConfig.batch} and {TrainConfig.lr:g} for frtm, {TtvosTrainConfig.batch} and "
                            f"{TtvosTrainConfig.lr:g} for ttvos")
    train.add_argument("--backbone", default=ModelConfig.backbone, choices=BACKBONES,
                       help="the frozen ImageNet backbone, recorded in the checkpoint (its weights: `reusevos weights "
                            "fetch --backbone NAME`); a cache or run folder of another backbone is refused")
    _add_training_args(train, TrainConfig, "refiner.pt or ttvos.pt", "crops (frtm) or snippets (ttvos)")
    train.set_defaults(batch=None, lr=None)  # the model's own (see --model)
    train.add_argument("--snippet", type=int, default=TtvosTrainConfig.snippet,
                       help="--model ttvos: frames per snippet, the first one's mask given")
    train.add_argument("--update-floor", type=float, default=TtvosConfig.update_floor,
                       help="--model ttvos: the least weight w in [0, 1) with which the template takes in a frame "
                            "(ours; 0, the default, is the paper's)")
    train.add_argument("--tracked-scores", default=None, metavar="WEIGHTS",
                       help="also train on the scores of target models updated from this trained model's own "
                            "tracking (a checkpoint, 'default' for the shipped default, or the name of shipped "
                            "weights, e.g. frtm-mobilenet_v2 for a MobileNetV2 training); default: none")
    train.set_defaults(func=_cmd_train)
    _register_train_gate(sub)
    _register_refit_gate(sub)
    _register_fit_flow_gate(sub)


def _add_training_args(parser: argparse.ArgumentParser, config, product: str, unit: str) -> None:
    """The data, output and optimisation flags that both training stages share; defaults from ``config``."""
    add_davis(parser, "train", TRAIN_SPLIT_HELP)
    add_sequences(parser)
    parser.add_argument("--out", required=True, help=f"run folder: checkpoints, logs, the trained {product}")
    parser.add_argument("--cache", default=None, help="feature/score cache folder (default: OUT/cache)")
    parser.add_argument("--synthetic", type=int, default=60, help="number of syn clips made from the split")
    parser.add_argument("--synthetic-frames", type=int, default=24, help="frames per syn clip")
    parser.add_argument("--synthetic-speeds", default=None, metavar="PX,PX,...",
                        help="syn clips' speeds in pixels per frame, one drawn per clip (default: 0.5,2,6,12); a "
                             "cache is built for one set of speeds")
    parser.add_argument("--iterations", type=int, default=config.iterations, help="training iterations in all")
    parser.add_argument("--batch", type=int, default=config.batch, help=f"{unit} per iteration and process")
    parser.add_argument("--crop", type=int, default=config.crop, help="crop size in pixels (multiple of 32)")
    parser.add_argument("--lr", type=float, default=config.lr, help="Adam learning rate")
    parser.add_argument("--seed", type=int, default=config.seed, help="seed of initialisation and sampling")
    parser.add_argument("--checkpoint-every", type=int, default=config.checkpoint_every,
                        help="iterations between resumable checkpoints")
    parser.add_argument("--snapshot-every", type=int, default=0,
                        help="keep a copy of the weights every this many iterations in OUT/snapshots/, to score "
                             "the run over its iterations (default: 0, none)")
    add_threads(parser)
    add_device(parser, default="cpu")


def _register_train_gate(sub: argparse._SubParsersAction) -> None:
    gate = sub.add_parser(
        "train-gate", help="train the reuse gate, delta generator and refine-translator on a trained base model",
        description="Trains the paper's dynamic network from a base checkpoint written by `reusevos train`: "
                    "G-FRTM on FRTM's refiner.pt, G-TTVOS on TTVOS's ttvos.pt; the base model stays frozen, so tau = 1 "
                    "gives its masks. It runs on the base checkpoint's backbone. Resumable like `reusevos train`; "
                    "writes OUT/dynamic.pt.")
    gate.add_argument("--base", required=True,
                      help="trained base checkpoint (refiner.pt or ttvos.pt from `reusevos train`)")
    _add_training_args(gate, GateTrainConfig, "dynamic.pt", "snippets")
    config = GateTrainConfig
    gate.add_argument("--snippet", type=int, default=config.snippet, help="frames per snippet")
    gate.add_argument("--m1", type=float, default=config.m1, help="margin ramp target (0 = no ramp)")
    gate.add_argument("--m2", type=float, default=config.m2, help="gate-loss dead zone")
    gate.add_argument("--ep-t", type=float, default=config.ep_t, help="epochs the margin ramps over")
    gate.add_argument("--gate-loss", choices=("gp", "ngate"), default=config.gate_loss,
                      help="gp: the paper's gate probability loss; ngate: fixed target rate (ablation)")
    gate.add_argument("--ngate-rate", type=float, default=config.ngate_rate, help="target reuse rate of the ngate loss")
    # the extra "%" keeps the rate's percent sign through argparse's own %-formatting of help texts
    gate.add_argument("--pretrain-iterations", type=int, default=config.pretrain_iterations,
                      help="teacher-forced warm-up iterations before the paper's training (ours; 0 = none, and the "
                           f"gate is initialised to reuse {config.gate_init_rate:.0%}% of frames as in the paper)")
    gate.add_argument("--pretrain-batch", type=int, default=config.pretrain_batch,
                      help="snippets per warm-up iteration")
    gate.add_argument("--pretrain-lr", type=float, default=config.pretrain_lr, help="warm-up learning rate")
    gate.set_defaults(func=_cmd_train_gate)


def _register_refit_gate(sub: argparse._SubParsersAction) -> None:
    refit = sub.add_parser(
        "refit-gate", help="fit the reuse gate again on full frames of the training split (ours, seconds after "
                           "the pairs are collected)",
        description="Runs the trained dynamic model at tau = 1 over every frame of the training sequences and "
                    "keeps, for each frame t and gap k, the gate's input (D_t from f8_t and the score of frame "
                    "t-k, max-pooled to 7x7) with the ground-truth IoU of frames t and t-k; then fits only the "
                    "gate to predict that IoU. Everything else stays as it is, so tau = 1 is unchanged. Pairs are "
                    "saved per sequence (resumable). Writes OUT/dynamic.pt and OUT/refit.json (the gate on "
                    "held-out sequences before and after).")
    config = GateRefitConfig
    add_weights(refit, "dynamic model to refit")
    add_davis(refit, "train", TRAIN_SPLIT_HELP, layout=", 2016 layout")
    add_sequences(refit)
    refit.add_argument("--out", required=True, help="run folder: pairs/, dynamic.pt, refit.json")
    refit.add_argument("--gaps", default=",".join(map(str, config.gaps)),
                       help="comma-separated frame gaps k between frame t and the last computed frame")
    refit.add_argument("--epochs", type=int, default=config.epochs, help="passes over the pairs")
    refit.add_argument("--lr", type=float, default=config.lr, help="Adam learning rate")
    refit.add_argument("--holdout-every", type=int, default=config.holdout_every,
                       help="every n-th sequence is held out to measure the gate before and after (0 = none)")
    refit.add_argument("--seed", type=int, default=config.seed, help="seed of the fit")
    refit.add_argument("--measure-on", default=None, metavar="SPLIT",
                       help="also report the gate before and after on this split's pairs (e.g. val; never fitted on)")
    add_threads(refit)
    add_device(refit, default="cpu", note=" (the collection; the fit runs on the CPU)")
    refit.set_defaults(func=_cmd_refit_gate)


def _register_fit_flow_gate(sub: argparse._SubParsersAction) -> None:
    from reusevos.train.flow_gate import FlowGateConfig

    fit = sub.add_parser(
        "fit-flow-gate", help="fit the flow variant's gate on the training split (ours; minutes, no network)",
        description="For each training sequence, anchor frame a and gap k, warps the ground-truth mask of frame a "
                    "onto frame a + k by optical flow as the flow variant does, and keeps the gate's features with "
                    "the warped mask's IoU against the truth; then fits the gate (a small MLP) to predict that IoU, "
                    "first without every n-th sequence to report them, then on all. Pairs are saved per sequence "
                    "(resumable). Writes OUT/flow_gate.json (use it with the session's flow_gate option, or copy it "
                    "over the shipped one), OUT/flow_gate_holdout.json and OUT/fit.json.")
    config = FlowGateConfig
    add_davis(fit, "train", TRAIN_SPLIT_HELP)
    add_sequences(fit)
    fit.add_argument("--out", required=True, help="run folder: pairs/, flow_gate.json, fit.json")
    fit.add_argument("--gaps", default=",".join(map(str, config.gaps)),
                     help="comma-separated frame gaps k between the anchor and the warped frame")
    fit.add_argument("--stride", type=int, default=config.stride, help="every n-th frame is an anchor")
    fit.add_argument("--steps", type=int, default=config.steps, help="full-batch Adam steps of the fit")
    fit.add_argument("--holdout-every", type=int, default=config.holdout_every,
                     help="every n-th sequence is held out to report the gate on (0 = none)")
    fit.add_argument("--holdout-offset", type=int, default=config.holdout_offset,
                     help="the first held-out sequence (sorted): offsets 0 to n-1 hold out disjoint folds, so that "
                          "each training sequence is held out of one OUT/flow_gate_holdout.json")
    fit.add_argument("--seed", type=int, default=config.seed, help="seed of the fit")
    fit.add_argument("--target", default=config.target, choices=("iou", "jf"),
                     help="what the gate's P predicts: the warped mask's IoU (the shipped gate's) or the mean of its "
                          "IoU and boundary F (jf, DAVIS's per-frame measure)")
    add_threads(fit)
    fit.set_defaults(func=_cmd_fit_flow_gate)


def _training_setup(args: argparse.Namespace) -> None:
    """Threads, the checks both training commands share, the run folder."""
    set_threads(args.threads)
    if args.crop % 32:
        raise ReusevosError(f"--crop {args.crop} is not a multiple of 32")
    Path(args.out).mkdir(parents=True, exist_ok=True)


def _trained(summary: dict, weights: Path) -> int:
    print(f"trained {summary['iterations']} iterations in {summary['wall_time_s']} s; weights: {weights}")
    return 0


def _given(value, default):
    """A flag's value, or the model's default when the flag was not given."""
    return default if value is None else value


def _speeds(args: argparse.Namespace) -> tuple[float, ...] | None:
    """--synthetic-speeds as numbers (None: not given, the default set)."""
    if args.synthetic_speeds is None:
        return None
    speeds = tuple(csv_list(args.synthetic_speeds, "--synthetic-speeds", float))
    if not speeds or min(speeds) < 0:
        raise ReusevosError(f"--synthetic-speeds {args.synthetic_speeds}: give speeds >= 0, e.g. 0.5,2,6,12")
    return speeds


def _cmd_train(args: argparse.Namespace) -> int:
    from reusevos.train.run import run_training, run_ttvos_training

    speeds = _speeds(args)
    if args.model == "ttvos":
        if args.tracked_scores is not None:
            raise ReusevosError("--tracked-scores: TTVOS uses no target-model scores; drop it with --model ttvos")
        if args.snippet < 2:
            raise ReusevosError(f"--snippet {args.snippet}: a snippet needs at least 2 frames")
        if not 0.0 <= args.update_floor < 1.0:
            raise ReusevosError(f"--update-floor {args.update_floor}: give a weight in [0, 1)")
        _training_setup(args)
        config = TtvosTrainConfig(iterations=args.iterations, batch=_given(args.batch, TtvosTrainConfig.batch),
                                  snippet=args.snippet, crop=args.crop, lr=_given(args.lr, TtvosTrainConfig.lr),
                                  seed=args.seed, checkpoint_every=args.checkpoint_every,
                                  snapshot_every=max(0, args.snapshot_every))
        summary = run_ttvos_training(args.davis, args.split, args.out, args.cache, config, synthetic=args.synthetic,
                                     synthetic_frames=args.synthetic_frames, sequences=args.sequences,
                                     device=args.device, command=command_line(), log=log, synthetic_speeds=speeds,
                                     ttvos=TtvosConfig(update_floor=args.update_floor), backbone=args.backbone)
        return _trained(summary, Path(args.out) / "ttvos.pt")
    if args.snippet != TtvosTrainConfig.snippet or args.update_floor != TtvosConfig.update_floor:
        raise ReusevosError("--snippet and --update-floor apply to --model ttvos; FRTM's refinement network trains on "
                            "single frames")
    _training_setup(args)
    config = TrainConfig(iterations=args.iterations, batch=_given(args.batch, TrainConfig.batch), crop=args.crop,
                         lr=_given(args.lr, TrainConfig.lr), seed=args.seed, checkpoint_every=args.checkpoint_every,
                         snapshot_every=max(0, args.snapshot_every))
    from reusevos.model.network import SHIPPED

    if args.tracked_scores not in (None, "default", *SHIPPED) and not Path(args.tracked_scores).is_file():
        raise ReusevosError(f"--tracked-scores {args.tracked_scores}: no such checkpoint file (nor the name of "
                            f"shipped weights: {', '.join(SHIPPED)})")
    summary = run_training(args.davis, args.split, args.out, args.cache, config, synthetic=args.synthetic,
                           synthetic_frames=args.synthetic_frames, sequences=args.sequences, device=args.device,
                           command=command_line(), log=log, tracker_weights=args.tracked_scores,
                           synthetic_speeds=speeds, backbone=args.backbone)
    return _trained(summary, Path(args.out) / "refiner.pt")


def _cmd_train_gate(args: argparse.Namespace) -> int:
    from reusevos.train.run import run_gate_training

    if args.snippet < 2:
        raise ReusevosError(f"--snippet {args.snippet}: a snippet needs at least 2 frames")
    _training_setup(args)
    config = GateTrainConfig(iterations=args.iterations, batch=args.batch, snippet=args.snippet, crop=args.crop,
                             lr=args.lr, m1=args.m1, m2=args.m2, ep_t=args.ep_t, gate_loss=args.gate_loss,
                             ngate_rate=args.ngate_rate, seed=args.seed, checkpoint_every=args.checkpoint_every,
                             snapshot_every=max(0, args.snapshot_every),
                             pretrain_iterations=args.pretrain_iterations, pretrain_batch=args.pretrain_batch,
                             pretrain_lr=args.pretrain_lr)
    summary = run_gate_training(args.base, args.davis, args.split, args.out, args.cache, config,
                                synthetic=args.synthetic, synthetic_frames=args.synthetic_frames,
                                sequences=args.sequences, device=args.device, command=command_line(), log=log,
                                synthetic_speeds=_speeds(args))
    return _trained(summary, Path(args.out) / "dynamic.pt")


def _refit_config(args: argparse.Namespace) -> GateRefitConfig:
    gaps = tuple(sorted(set(csv_list(args.gaps, "--gaps", int))))
    if not gaps:
        raise ReusevosError("--gaps is empty")
    if gaps[0] < 1:
        raise ReusevosError(f"--gaps: {gaps[0]} must be at least 1")
    if args.epochs < 1:
        raise ReusevosError(f"--epochs {args.epochs}: at least 1")
    return GateRefitConfig(gaps=gaps, epochs=args.epochs, lr=args.lr, holdout_every=max(0, args.holdout_every),
                           seed=args.seed)


def _cmd_refit_gate(args: argparse.Namespace) -> int:
    from reusevos.api import load_model
    from reusevos.train.gate_refit import run_gate_refit

    set_threads(args.threads)
    config = _refit_config(args)
    network = load_model(args.weights, device=args.device)
    report = run_gate_refit(args.weights, args.davis, args.split, args.out, config, network=network,
                            sequences=args.sequences, measure_on=args.measure_on, command=command_line(), log=log)
    print(f"gate refitted on {len(report['sequences'])} sequences in {report['wall_time_s']} s; weights: "
          f"{Path(args.out) / 'dynamic.pt'}")
    return 0


def _cmd_fit_flow_gate(args: argparse.Namespace) -> int:
    from reusevos.flow import MAX_GAP
    from reusevos.train.flow_gate import FlowGateConfig, run_fit_flow_gate

    set_threads(args.threads)
    gaps = tuple(sorted(set(csv_list(args.gaps, "--gaps", int))))
    if not gaps or gaps[0] < 1 or gaps[-1] > MAX_GAP:
        raise ReusevosError(f"--gaps must be frame gaps from 1 to {MAX_GAP} (the flow variant computes an object "
                            f"at least every {MAX_GAP} frames); got {args.gaps!r}")
    if args.stride < 1 or args.steps < 1:
        raise ReusevosError("--stride and --steps must be at least 1")
    config = FlowGateConfig(gaps=gaps, stride=args.stride, steps=args.steps,
                            holdout_every=max(0, args.holdout_every), holdout_offset=args.holdout_offset,
                            seed=args.seed, target=args.target)
    report = run_fit_flow_gate(args.davis, args.split, args.out, config, sequences=args.sequences,
                               command=command_line(), log=log)
    held = report.get("holdout")
    if held:
        print(f"held out {', '.join(held['sequences'])}: Pearson(P, IoU) {held['pearson']}, squared error "
              f"{held['mse']}")
    print(f"flow gate fitted on {len(report['sequences'])} sequences in {report['wall_time_s']} s: "
          f"{Path(args.out) / 'flow_gate.json'}")
    return 0
