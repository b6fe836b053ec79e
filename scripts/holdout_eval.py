"""The base model on held-out DAVIS 2016 *train* sequences: how training and test-time choices are made for the
accuracy work (never on val). J&F, J, F and J-Decay per sequence and over them, one JSON per call.

The held-out sequences are those the flow gate's fit leaves out (every fifth of the sorted train split): a refiner
trained with ``--sequences`` set to the other 24 has never seen them. The shipped weights were trained on all 30,
so their scores here are optimistic: a candidate trained without these sequences that still beats them is better.

    python scripts/holdout_eval.py --weights runs/r17-tracked/refiner.pt --davis ~/data/DAVIS \
        --out docs/results/accuracy/holdout-r17-tracked.json --threads 2
    python scripts/holdout_eval.py --davis ~/data/DAVIS --target update_every=4 --out ... # a test-time change

Settings: the base model as shipped (variant full, compute window 2); ``--variant``, ``--tau``,
``--reuse-window`` and ``--reuse-max-gap`` run a gated variant instead (weights with a reuse gate; the flow variant
has its own script, ``scripts/flow_tau_holdout.py``); ``--target KEY=VALUE`` overrides a field of the target model's configuration
(``reusevos.config.TargetModelConfig``) for this run only.
``--reuse-mode`` switches parts of FRTM's reuse path off (the modes of ``scripts/reuse_path_parts.py``).
``--frame-step N`` keeps every Nth frame (0, N, 2N, ...): the same sequences with N times the motion between frames,
meant as a probe of the fast sequences that are val's worst and of drift; at N = 3 they turned out easier, not harder
(docs/accuracy.md item 12). The frames' names stay the originals. ``--flip`` runs test-time flip.
``--partner WEIGHTS`` (repeatable) runs one more tracker per partner model beside ``--weights``' with the same settings
(each with its own flip under ``--flip``) and scores the mean of their merged probabilities, labelled as flip labels
them: an ensemble of independently trained refiners (a prototype; each partner runs its own backbone).
Every tracker remembers the fused output, as flip's trackers do (``reusevos.Session``); ``--own-memory`` makes
each remember its own instead (independent trackers: flip as it was in session 21, and the ensembles measured then).
``--oracle-memory`` (a diagnostic, never a result to ship) gives the target models the ground truth as their samples
instead of the network's own outputs (the windows still follow the outputs): what is left of J-Decay when the memory
makes no errors, so how much of the decay the self-taught memory causes.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import torch

import reusevos
from reusevos.config import BACKBONE_RUNTIMES, VARIANTS, SessionConfig, TargetModelConfig
from reusevos.evaluation.davis_eval import DavisScores, score_sequence
from reusevos.io.davis import DavisDataset, SequenceData, load_sequence
from reusevos.io.files import write_text
from reusevos.model.merge import merged_labels
from reusevos.provenance import machine_label, source_commit
from reuse_path_parts import MODES, reuse_path_as  # scripts/, beside this one

HELD_OUT = ("bear", "car-turn", "flamingo", "lucia", "paragliding", "stroller")


def target_overrides(items: list[str]) -> dict:
    """``["update_every=4", ...]`` as typed values of :class:`TargetModelConfig` fields."""
    kinds = {f.name: type(getattr(TargetModelConfig(), f.name)) for f in fields(TargetModelConfig)}
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in kinds:
            raise SystemExit(f"--target {item}: no such field; choose one of {', '.join(kinds)}")
        kind = kinds[key]
        out[key] = tuple(float(v) if "." in v else int(v) for v in value.split(",") if v) if kind is tuple \
            else kind(value)
    return out


def every_nth_frame(data: SequenceData, step: int) -> SequenceData:
    """``data`` with frames 0, step, 2 step, ... only (its objects must start on a kept frame)."""
    if step == 1:
        return data
    dropped = sorted(t for t in data.start_masks if t % step)
    if dropped:
        raise SystemExit(f"--frame-step {step}: {data.name} starts objects on frames {dropped}, which it drops")
    return replace(data, frames=data.frames[::step], ground_truth=data.ground_truth[::step],
                   frame_ids=data.frame_ids[::step], start_masks={t // step: m for t, m in data.start_masks.items()})


class Trackers:
    """Several trackers on one video, each a plain :class:`reusevos.Session` (no flip of its own): every model once,
    and with ``flip`` once more on the mirrored video. Each frame is the mean of their merged probabilities (the
    mirrored ones mirrored back; the background takes what the objects leave, labelled as the session's flip labels
    them). ``fused_memory``: each tracker remembers that mean (the right way round for it: target-model samples and
    the windows' last output), as the Session's flip does (for one model with ``flip`` the masks are its); without it
    each remembers its own output: independent trackers."""

    def __init__(self, models: list, options: SessionConfig, flip: bool, fused_memory: bool):
        plain = replace(options, flip=False)
        self.members = [(reusevos.Session(m, plain), mirrored) for m in models for mirrored in (False, True)[:1 + flip]]
        self.fused_memory = fused_memory

    @property
    def first(self) -> reusevos.Session:
        return self.members[0][0]

    @torch.no_grad()
    def step(self, frame: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        stepped = []  # each tracker's frame up to its merge (the Session's two-part step), then its memory
        for session, mirrored in self.members:
            turn = (lambda a: np.ascontiguousarray(a[:, ::-1])) if mirrored else (lambda a: a)
            stepped.append(session._outputs(turn(frame), None if mask is None else turn(mask), False, False))
        ids = sorted(stepped[0].soft)
        fused = {i: torch.stack([(st.soft[i].flip(-1) if mirrored else st.soft[i]).float()
                                 for st, (_, mirrored) in zip(stepped, self.members)]).mean(dim=0) for i in ids}
        for st, (session, mirrored) in zip(stepped, self.members):
            session._commit(st, {i: fused[i].flip(-1) if mirrored else fused[i] for i in ids}
                            if self.fused_memory else None)
        if not ids:
            return np.zeros(frame.shape[:2], np.uint8)
        return merged_labels(torch.stack([fused[i] for i in ids]), ids).numpy()


def oracle_stepper(session: reusevos.Session, ground_truth: np.ndarray):
    """``step(frame, mask)`` for ``session`` whose target models remember frame t's ground truth ``ground_truth[t]``
    (a label map) instead of the outputs; the outputs stay what the later frames' windows follow."""
    frames = iter(ground_truth)

    def step(frame: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
        truth = next(frames)
        stepped = session._outputs(frame, mask, False, False)
        memory = {i: torch.from_numpy(truth == i).float() for i in stepped.soft}
        result = session._commit(stepped, memory)[0]
        for i, own in stepped.soft.items():  # the windows' last output: the frame's own, as without the oracle
            if session.objects[i].prob_prev is memory[i]:
                session.objects[i].prob_prev = own
        return result.labels

    return step


def score(model, dataset: DavisDataset, options: SessionConfig, frame_step: int = 1, partners: tuple = (),
          fused_memory: bool = True, oracle_memory: bool = False) -> tuple[list[dict], list, SessionConfig]:
    """Each sequence of ``dataset`` run from its first mask (every ``frame_step``-th frame), by ``model`` alone (a
    Session with ``options``, flip included) or, with ``partners`` or without ``fused_memory``, by :class:`Trackers`:
    a row per sequence (printed as it is done), the per-object scores and the settings the sessions ran with
    (``options`` as the model completes them)."""
    rows, objects, session = [], [], None
    for name in dataset.sequences:
        data = every_nth_frame(load_sequence(dataset, name), frame_step)
        if partners or (options.flip and not fused_memory):
            trackers = Trackers([model, *partners], options, options.flip, fused_memory)
            session, step = trackers.first, trackers.step
        elif oracle_memory:
            session = reusevos.Session(model, options)
            step = oracle_stepper(session, data.ground_truth)
        else:
            session = reusevos.Session(model, options)
            step = lambda f, m: session.step(f, m).labels  # noqa: E731
        start = time.perf_counter()
        labels = np.stack([step(f, data.start_masks.get(t)) for t, f in enumerate(data.frames)])
        seconds = time.perf_counter() - start
        scored = score_sequence(data.ground_truth, labels, name, data.frame_ids)
        objects += scored
        g = DavisScores(scored).global_scores()
        rows.append({"sequence": name, "J&F": g["J&F-Mean"], "J": g["J-Mean"], "F": g["F-Mean"],
                     "J-Decay": g["J-Decay"], "frames": len(data.frames), "seconds": round(seconds, 2),
                     "reuse_rate": float(np.mean(list(session.reuse_rates.values())))})
        print(json.dumps(rows[-1]), flush=True)
    return rows, objects, session.options


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--davis", required=True)
    parser.add_argument("--weights", default=None, help="a checkpoint (default: the shipped one)")
    parser.add_argument("--sequences", default=",".join(HELD_OUT), help="train sequences to score")
    parser.add_argument("--target", action="append", default=[], metavar="KEY=VALUE",
                        help="a target-model setting for this run (repeatable)")
    parser.add_argument("--compute-window", type=int, default=2)
    parser.add_argument("--search-margin", type=int, default=0,
                        help="cells around the last output where the coarse score counts (SessionConfig.search_margin)")
    parser.add_argument("--variant", default="full",
                        choices=[v for v in VARIANTS if v not in ("flow", "oracle", "fusion")],
                        help="full (default), or a gated variant (weights with a reuse gate)")
    parser.add_argument("--tau", type=float, default=None, help="the gate's threshold (default: the variant's)")
    parser.add_argument("--reuse-window", type=int, default=0)
    parser.add_argument("--reuse-max-gap", type=int, default=0, help="the gated variants' longest gap (0: no limit)")
    parser.add_argument("--reuse-mode", default="paper", choices=MODES,
                        help="FRTM's reuse path with parts switched off (scripts/reuse_path_parts.py; default: paper)")
    parser.add_argument("--backbone-runtime", default="auto", choices=BACKBONE_RUNTIMES,
                        help="what runs the backbone (default: auto); its precision can change J&F")
    parser.add_argument("--flip", action="store_true", help="test-time horizontal flip (SessionConfig.flip)")
    parser.add_argument("--frame-step", type=int, default=1, metavar="N",
                        help="keep every Nth frame: N times the motion between frames (default: 1, all frames)")
    parser.add_argument("--partner", action="append", default=[], metavar="WEIGHTS",
                        help="one more tracker with these weights, its probabilities averaged with the others' "
                             "(repeatable; an ensemble)")
    parser.add_argument("--own-memory", action="store_true",
                        help="with --flip or --partner: every tracker remembers its own output, not the fused one "
                             "(independent trackers)")
    parser.add_argument("--oracle-memory", action="store_true",
                        help="a diagnostic: the target models learn from the ground truth, not the outputs")
    parser.add_argument("--out", required=True)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.frame_step < 1:
        parser.error("--frame-step must be at least 1")
    if args.own_memory and not (args.flip or args.partner):
        parser.error("--own-memory needs more than one tracker: add --flip or --partner")
    if args.oracle_memory and (args.flip or args.partner):
        parser.error("--oracle-memory runs one tracker: leave out --flip and --partner")
    torch.set_num_threads(args.threads)
    model = reusevos.load_model(args.weights, device="cpu")
    overrides = target_overrides(args.target)
    partners = [reusevos.load_model(w, device="cpu") for w in args.partner]
    for m in (model, *partners):
        m.backbone.runtime = args.backbone_runtime
        m.config.target = replace(m.config.target, **overrides)
    dataset = DavisDataset(args.davis, split="train", sequences=args.sequences.split(","))
    options = SessionConfig(args.variant, args.tau, reuse_window=args.reuse_window, compute_window=args.compute_window,
                            reuse_max_gap=args.reuse_max_gap, flip=args.flip, search_margin=args.search_margin)
    with reuse_path_as(args.reuse_mode):
        rows, objects, session_options = score(model, dataset, options, args.frame_step, partners,
                                               not args.own_memory, args.oracle_memory)
    overall = DavisScores(objects).global_scores()
    weights = args.weights or "default"
    report = {"command": shlex.join(["python", "scripts/holdout_eval.py", *sys.argv[1:]]),
              "commit": source_commit(), "machine": machine_label(), "weights": weights,
              "partners": args.partner, "fused_memory": not args.own_memory, "oracle_memory": args.oracle_memory,
              "weights_meta": {k: model.meta.get(k) for k in ("data", "train_config", "commit") if k in model.meta},
              "split": "train", "sequences": dataset.sequences, "session": asdict(session_options),
              "frame_step": args.frame_step, "reuse_mode": args.reuse_mode,
              "backbone_runtime": model.backbone.active_runtime("cpu"),
              "target_overrides": overrides, "global": overall, "rows": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text(args.out, json.dumps(report, indent=1, default=str) + "\n")  # atomic; meta may hold paths
    reused = float(np.mean([r["reuse_rate"] for r in rows]))  # the mean over sequences
    mode = "" if args.reuse_mode == "paper" else f" reuse path {args.reuse_mode}"
    mode += "" if args.backbone_runtime == "auto" else f" backbone {args.backbone_runtime}"
    mode += "" if args.frame_step == 1 else f" every {args.frame_step} frames"
    mode += " flip" if args.flip else ""
    mode += "".join(f" + {w}" for w in args.partner)
    mode += " own memory" if args.own_memory else ""
    mode += " ORACLE memory (ground truth)" if args.oracle_memory else ""
    print(f"{weights} {session_options.variant}@{session_options.tau:g} {overrides or ''}{mode}: "
          f"reused {100 * reused:.1f}%  "
          f"J&F {100 * overall['J&F-Mean']:.1f}  J {100 * overall['J-Mean']:.1f}  F {100 * overall['F-Mean']:.1f}  "
          f"J-Decay {100 * overall['J-Decay']:.1f}")


if __name__ == "__main__":
    main()
