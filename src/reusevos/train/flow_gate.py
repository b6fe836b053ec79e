"""``reusevos fit-flow-gate``: fit the flow variant's gate on the training split (ours).

The flow gate predicts how good an anchor's output, warped onto a later frame by optical flow, will be
(its IoU with that frame's truth) from what the warp leaves behind (:data:`reusevos.flow.FEATURES`). It needs
no network: for each training sequence, each anchor frame a (every ``stride``-th) and each gap k in ``gaps``,
the ground-truth mask of frame a is warped onto frame a + k exactly as at inference, and the features are
kept with the IoU of the warped mask against the ground truth of frame a + k. A small MLP is then fitted to
that IoU (squared error, Adam), first on all sequences but every ``holdout_every``-th to report the held-out
ones, then on all of them. Pairs are saved per sequence (``OUT/pairs/<sequence>.npz``), so a stopped run
resumes; the whole fit takes minutes on one core.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from reusevos.errors import ReusevosError
from reusevos.evaluation.metrics import boundary_f_measure, region_similarity
from reusevos.flow import FLOW, MAX_GAP, UNNAMED_FLOW, FlowGate, FlowWarper, make_anchor, small_grey
from reusevos.io.davis import DavisDataset
from reusevos.io.files import write_json
from reusevos.train.per_sequence import collect_per_sequence


@dataclass
class FlowGateConfig:
    gaps: tuple[int, ...] = tuple(range(1, MAX_GAP + 1))
    stride: int = 2  # every stride-th frame is an anchor
    hidden: int = 32
    steps: int = 3000  # full-batch Adam steps
    lr: float = 3e-3
    weight_decay: float = 1e-4
    holdout_every: int = 5
    holdout_offset: int = 0  # held out: sequences offset, offset + every, ... (sorted); offsets 0..every-1 are folds
    seed: int = 0
    taus: tuple[float, ...] = (0.95, 0.9, 0.85, 0.8, 0.7)
    target: str = "iou"  # what P predicts: "iou" (J of the warped mask) or "jf" ((J + boundary F) / 2, the metric's)


def sequence_pairs(frames: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray], gaps: Sequence[int],
                   stride: int) -> dict[str, np.ndarray]:
    """The gate's pairs of one sequence: ``features`` ``(N, F)``, ``iou`` and ``f`` ``(N,)`` (the warped anchor mask
    against the truth: IoU and boundary F), ``copy_iou`` ``(N,)`` (the unwarped one), ``gap`` and ``frame``
    ``(N,)``. Objects are the ground truth's non-zero labels, each on its own (255 = void counts as background)."""
    greys = [small_grey(np.ascontiguousarray(f)) for f in frames]
    warper = FlowWarper()
    ids = sorted(set(np.unique(np.stack(ground_truth)).tolist()) - {0, 255})
    rows: dict[str, list] = {"features": [], "iou": [], "f": [], "copy_iou": [], "gap": [], "frame": []}
    for obj in ids:
        masks = [np.asarray(g) == obj for g in ground_truth]
        for a in range(0, len(frames), stride):
            if not masks[a].any():
                continue
            anchor = make_anchor(a, greys[a], masks[a].astype(np.float32))
            for k in gaps:
                t = a + k
                if t >= len(frames):
                    break
                proposal = warper.propose(anchor, greys[t], t)
                if proposal is None:
                    continue
                rows["features"].append(proposal.features)
                warped = proposal.prob > 0.5
                rows["iou"].append(float(region_similarity(warped, masks[t])))
                rows["f"].append(float(boundary_f_measure(masks[t], warped)))
                rows["copy_iou"].append(float(region_similarity(masks[a], masks[t])))
                rows["gap"].append(k)
                rows["frame"].append(t)
    if not rows["iou"]:
        raise ReusevosError("the sequence gave no pair (too short, or no object in it)")
    return {"flow": np.array(FLOW), "features": np.stack(rows["features"]).astype(np.float32),
            "iou": np.float32(rows["iou"]), "f": np.float32(rows["f"]),
            "copy_iou": np.float32(rows["copy_iou"]), "gap": np.int16(rows["gap"]), "frame": np.int32(rows["frame"])}


def collect_pairs(dataset: DavisDataset, out_dir: str | os.PathLike, config: FlowGateConfig,
                  log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Pairs of every sequence into ``out_dir/<sequence>.npz``; files already there are kept (resume)."""

    def save(pairs: dict[str, np.ndarray], tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, **pairs)

    return collect_per_sequence(dataset, out_dir, ".npz",
                                lambda data: sequence_pairs(data.frames, data.ground_truth, config.gaps, config.stride),
                                save, log)


def load_pairs(files: Sequence[Path]) -> dict[str, np.ndarray]:
    if not files:
        raise ReusevosError("no pairs to fit the flow gate on")
    parts = [dict(np.load(f)) for f in files]
    for file, part in zip(files, parts):
        flow = str(part.pop("flow", UNNAMED_FLOW))
        if flow != FLOW:
            raise ReusevosError(f"the pairs in {file} were computed with another optical flow ({flow}) than this "
                                f"version's ({FLOW}); fit into a new --out folder")
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def target_values(pairs: dict[str, np.ndarray], target: str) -> np.ndarray:
    """What the gate is fitted to predict for each pair: the warped mask's IoU (``iou``) or the mean of its IoU
    and boundary F (``jf``, the DAVIS measure of one frame)."""
    if target == "iou":
        return pairs["iou"]
    if target != "jf":
        raise ReusevosError(f"unknown flow gate target {target!r}; choose iou or jf")
    if "f" not in pairs:
        raise ReusevosError("these pairs were collected without boundary F (an older version); delete the run's "
                            "pairs/ folder and fit again")
    return (pairs["iou"] + pairs["f"]) / 2


def fit(pairs: dict[str, np.ndarray], config: FlowGateConfig) -> FlowGate:
    """An MLP (one hidden layer of ``config.hidden``) fitted to predict the pairs' ``config.target`` (squared
    error)."""
    x = torch.from_numpy(pairs["features"]).double()
    mean, scale = x.mean(0), x.std(0).clamp_min(1e-6)
    x = ((x - mean) / scale).float()
    y = torch.from_numpy(target_values(pairs, config.target)).float()
    torch.manual_seed(config.seed)
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], config.hidden), torch.nn.ReLU(),
                              torch.nn.Linear(config.hidden, 1))
    optimiser = torch.optim.Adam(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    with torch.enable_grad():
        for _ in range(config.steps):
            loss = (torch.sigmoid(net(x)[:, 0]) - y).square().mean()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    layers = [(m.weight.detach().numpy().copy(), m.bias.detach().numpy().copy())
              for m in net if isinstance(m, torch.nn.Linear)]
    return FlowGate(mean.float().numpy(), scale.float().numpy(), layers)


def quality(gate: FlowGate, pairs: dict[str, np.ndarray], taus: Sequence[float], target: str = "iou") -> dict:
    """How well the gate predicts its target (the warped IoU, or J&F) on ``pairs``, and per tau what it would
    reuse: the share of pairs (and of gap-1 pairs), their mean target, the share reused although their target is
    below tau, and what the oracle (the true target >= tau) would reuse. The keys say iou whatever the target."""
    p, iou, first = gate.probabilities(pairs["features"]), target_values(pairs, target), pairs["gap"] == 1
    report = {"pairs": int(len(iou)), "mse": round(float(np.square(p - iou).mean()), 4),
              "pearson": round(float(np.corrcoef(p, iou)[0, 1]), 4) if p.std() > 0 and iou.std() > 0 else None,
              "iou_mean": round(float(iou.mean()), 4), "copy_iou_mean": round(float(pairs["copy_iou"].mean()), 4)}
    for tau in taus:
        reuse = p >= tau
        report[f"tau={tau:g}"] = {
            "reused": round(float(reuse.mean()), 4),
            "reused_gap1": round(float(reuse[first].mean()), 4) if first.any() else None,
            "reused_iou_mean": round(float(iou[reuse].mean()), 4) if reuse.any() else None,
            "reused_below_tau": round(float((reuse & (iou < tau)).mean()), 4),
            "oracle_reused": round(float((iou >= tau).mean()), 4)}
    return report


def run_fit_flow_gate(davis_root: str | os.PathLike | None, split: str, out_dir: str | os.PathLike,
                      config: FlowGateConfig, sequences: Sequence[str] | None = None, command: str = "",
                      log: Callable[[str], None] = lambda _: None) -> dict:
    """Collect the pairs of ``split`` (resumable), report the gate on held-out sequences fitted on the rest,
    fit on all and write ``OUT/flow_gate.json`` and ``OUT/fit.json`` (and ``OUT/flow_gate_holdout.json``, the gate
    fitted without the held-out sequences, for choices made on them)."""
    if split == "val" or split.startswith("test"):
        raise ReusevosError(f"refusing to fit the flow gate on the {split} split: use a training split")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReusevosError(f"output {out} is a file; give a folder")
    dataset = DavisDataset(davis_root, split=split, sequences=sequences)
    started = time.time()
    files = collect_pairs(dataset, out / "pairs", config, log)
    report: dict = {"command": command, "config": asdict(config), "split": split, "sequences": dataset.sequences}
    if config.holdout_every and len(files) >= 2:
        if not 0 <= config.holdout_offset < config.holdout_every:
            raise ReusevosError(f"the held-out offset must be from 0 to {config.holdout_every - 1}, not "
                                f"{config.holdout_offset}")
        held = files[config.holdout_offset::config.holdout_every]
        held_pairs = load_pairs(held)
        gate = fit(load_pairs([f for f in files if f not in held]), config)
        report["holdout"] = {"sequences": [f.stem for f in held],
                             **quality(gate, held_pairs, config.taus, config.target)}
        gate.info = {"fitted_without": report["holdout"]["sequences"], "split": split}
        gate.save(out / "flow_gate_holdout.json")  # for choices made on the held-out sequences
        log(f"held-out sequences {report['holdout']['sequences']}: {report['holdout']}")
    pairs = load_pairs(files)
    gate = fit(pairs, config)
    report["fitted"] = quality(gate, pairs, config.taus, config.target)
    report["wall_time_s"] = round(time.time() - started, 1)
    gate.info = {k: report[k] for k in ("command", "config", "split", "sequences")}
    gate.info["holdout"] = report.get("holdout")
    gate.save(out / "flow_gate.json")
    write_json(out / "fit.json", report)
    return report
