"""``reusevos refit-gate``: fit the reuse gate again on full frames (ours, not the paper's).

Why: the gate is trained with the rest of the dynamic network on 256-pixel crops of snippets. On full
480p frames its P_gate came out far below the IoU it should predict (measured in docs/gate.md), so at
tau = 0.7 it hardly ever reused. The gate looks
at D_t through a 7x7 max-pool, whose cells cover four times the area on a full frame than on a crop,
and its batch norm had only seen crop statistics.

What: the trained model runs at tau = 1 (every frame computed, as the base model) over every frame of
the training sequences, as at inference. For each frame t and each gap k in ``gaps``, the frozen
template matcher gives D_t from (f8_t, S_{t-k}), the score of frame t-k (G-TTVOS: its estimated mask): what the
gate sees when the last computed frame is k frames back. Its 7x7 max-pool (the gate's first operation) is kept with the
target IoU(y_t, y_{t-k}) of the ground truth. Then only the gate (conv, batch norm, conv: about 9,400
weights) is fitted on these pairs with Loss_gp at m = 0 (P_target = IoU). The matcher, delta generator,
refine-translator and refinement network are unchanged, so tau = 1 still gives the base model's masks.

Every sequence's pairs are saved under ``OUT/pairs`` as they are collected, so an interrupted run
resumes; the fit itself takes seconds.
"""

from __future__ import annotations

import copy
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from reusevos.config import GateRefitConfig, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.evaluation.metrics import region_similarity
from reusevos.io.davis import DavisDataset
from reusevos.io.files import write_json
from reusevos.model.backbone import images_to_tensor
from reusevos.model.gate import Gate
from reusevos.model.network import VOSNetwork, save_checkpoint
from reusevos.train.per_sequence import collect_per_sequence

POOL = 7  # the gate's first operation: adaptive max-pool of D_t to 7x7


def sequence_pairs(network: VOSNetwork, frames: Sequence[np.ndarray], ground_truth: Sequence[np.ndarray],
                   gaps: Sequence[int]) -> dict[str, torch.Tensor]:
    """The gate's training pairs of one single-object sequence, run at tau = 1 from its first mask.

    Returns ``pooled`` ``(N, 64, 7, 7)`` float16 (D_t max-pooled), ``iou`` ``(N,)`` (ground-truth IoU of frames
    t and t-k), ``gap`` ``(N,)`` (k) and ``frame`` ``(N,)`` (t). ``ground_truth``: ``(H, W)`` maps, object > 0,
    255 = void (counted as background).
    """
    from reusevos.session import Session

    objects = [(g > 0) & (g != 255) for g in ground_truth]
    if not objects[0].any():
        raise ReusevosError("the first frame's mask has no object")
    session = Session(network, SessionConfig(variant="reuse", tau=1.0))
    backbone = network.backbone
    f8s, scores = [], []
    pooled, iou, gap, index = [], [], [], []
    with torch.inference_mode():
        for t, frame in enumerate(frames):
            session.step(frame, mask=objects[0].astype(np.uint8) if t == 0 else None)
            state = next(iter(session.objects.values()))
            f8s.append(backbone.to_f8(images_to_tensor(np.ascontiguousarray(frame), network.device))[1])
            scores.append(session.base.gate_guide(state))  # tau = 1: this frame's own score (TTVOS: estimate)
            back = [k for k in gaps if t - k >= 0]
            if t == 0 or not back:
                continue
            change = network.matcher(state.template.expand(len(back), -1, -1), f8s[t],
                                     torch.cat([scores[t - k] for k in back]))
            pooled.append(F.adaptive_max_pool2d(change, POOL).half())
            for k in back:
                iou.append(float(region_similarity(objects[t], objects[t - k])))
                gap.append(k)
                index.append(t)
            oldest = t - max(gaps)
            if oldest >= 0:  # no longer needed
                f8s[oldest] = None
    if not pooled:
        raise ReusevosError("the sequence is too short for any pair (2 frames at least)")
    return {"pooled": torch.cat(pooled), "iou": torch.tensor(iou), "gap": torch.tensor(gap),
            "frame": torch.tensor(index)}


def collect_pairs(network: VOSNetwork, dataset: DavisDataset, out_dir: str | os.PathLike,
                  gaps: Sequence[int], log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """Pairs of every sequence of ``dataset`` into ``out_dir/<sequence>.pt``; existing files are kept
    (resume). Sequences with several objects are refused (DAVIS 2016 layout: one object)."""

    def compute(data) -> dict[str, torch.Tensor]:
        ids = set(np.unique(data.ground_truth[0]).tolist()) - {0, 255}
        if len(ids) != 1:
            raise ReusevosError(f"sequence {data.name}: the gate refit needs single-object sequences, found ids "
                                f"{sorted(ids)}")
        return sequence_pairs(network, data.frames, data.ground_truth, gaps)

    return collect_per_sequence(dataset, out_dir, ".pt", compute, lambda pairs, tmp: torch.save(pairs, tmp), log)


def load_pairs(files: Sequence[Path]) -> dict[str, torch.Tensor]:
    parts = [torch.load(f, map_location="cpu") for f in files]
    if not parts:
        raise ReusevosError("no pairs to fit the gate on")
    return {k: torch.cat([p[k] for p in parts]) for k in ("pooled", "iou", "gap")}


def fit_gate(gate: Gate, pairs: dict[str, torch.Tensor], config: GateRefitConfig) -> Gate:
    """A copy of ``gate`` fitted to ``pairs`` (Loss_gp with m = m2 = 0: (P_gate - IoU)^2), on the CPU."""
    fitted = copy.deepcopy(gate).cpu().float()
    generator = torch.Generator().manual_seed(config.seed)
    optimiser = torch.optim.Adam(fitted.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inputs, targets = pairs["pooled"].float(), pairs["iou"].float()
    fitted.train()
    with torch.enable_grad():
        for _ in range(config.epochs):
            order = torch.randperm(len(targets), generator=generator)
            for first in range(0, len(order), config.batch):
                rows = order[first:first + config.batch]
                if len(rows) < 2:  # batch norm needs two samples
                    continue
                loss = (torch.sigmoid(fitted.logits(inputs[rows])) - targets[rows]).square().mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return fitted.eval()


def gate_quality(gate: Gate, pairs: dict[str, torch.Tensor], taus: Sequence[float]) -> dict:
    """How well P_gate predicts the IoU on ``pairs``: mean squared error, Pearson correlation, and per tau
    the share of pairs (and of gap-1 pairs) the gate reuses, the share the oracle g_IoU reuses, and the
    share reused although their IoU is below tau."""
    gate = gate.eval()
    with torch.no_grad():
        p = torch.sigmoid(gate.logits(pairs["pooled"].float().to(next(gate.parameters()).device))).cpu()
    iou, first = pairs["iou"].float(), pairs["gap"] == 1
    quality = {"pairs": len(iou), "mse": round(float((p - iou).square().mean()), 4),
               "pearson": (round(float(np.corrcoef(p.numpy(), iou.numpy())[0, 1]), 4)
                           if float(p.std()) > 0 and float(iou.std()) > 0 else None),  # None: one side constant
               "p_gate_mean": round(float(p.mean()), 4), "iou_mean": round(float(iou.mean()), 4)}
    for tau in taus:
        reuse = p >= tau
        quality[f"tau={tau:g}"] = {
            "reused": round(float(reuse.float().mean()), 4),
            "reused_gap1": round(float(reuse[first].float().mean()), 4) if first.any() else None,
            "oracle_reused": round(float((iou >= tau).float().mean()), 4),
            "reused_below_tau": round(float((reuse & (iou < tau)).float().mean()), 4)}
    return quality


def run_gate_refit(weights: str | os.PathLike | None, davis_root: str | os.PathLike | None, split: str,
                   out_dir: str | os.PathLike, config: GateRefitConfig, network: VOSNetwork | None = None,
                   sequences: Sequence[str] | None = None, measure_on: str | None = None, command: str = "",
                   log: Callable[[str], None] = lambda _: None) -> dict:
    """Collect the pairs of ``split`` (resumable), measure the gate on held-out sequences before and after a
    fit on the rest, then fit on every sequence and write ``OUT/dynamic.pt`` and ``OUT/refit.json``.

    ``measure_on``: also collect the pairs of that split (e.g. ``val``; into ``OUT/pairs-<split>``) and report
    the gate on them before and after; they are never fitted on.
    """
    from reusevos.api import load_model

    if split == "val" or split.startswith("test"):
        raise ReusevosError(f"refusing to fit the gate on the {split} split: use a training split")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReusevosError(f"output {out} is a file; give a folder")
    network = network if network is not None else load_model(weights)
    if not network.has_gate:
        raise ReusevosError(f"{weights or 'the default weights'} has no reuse gate: refit a model trained by "
                            "`reusevos train-gate`")
    dataset = DavisDataset(davis_root, split=split, sequences=sequences)
    started = time.time()
    files = collect_pairs(network, dataset, out / "pairs", config.gaps, log)
    report: dict = {"command": command, "config": asdict(config),
                    "weights": getattr(network, "weights_file", str(weights)), "split": split,
                    "sequences": dataset.sequences}
    if config.holdout_every and len(files) >= 2:
        held = files[::config.holdout_every]
        rest = [f for f in files if f not in held]
        held_pairs = load_pairs(held)
        report["holdout"] = {"sequences": [f.stem for f in held],
                             "before": gate_quality(network.gate, held_pairs, config.taus),
                             "after": gate_quality(fit_gate(network.gate, load_pairs(rest), config), held_pairs,
                                                   config.taus)}
        log("held-out sequences: before " + json.dumps(report["holdout"]["before"]))
        log("held-out sequences: after  " + json.dumps(report["holdout"]["after"]))
    fitted = fit_gate(network.gate, load_pairs(files), config)
    if measure_on:
        measured = load_pairs(collect_pairs(network, DavisDataset(davis_root, split=measure_on),
                                            out / f"pairs-{measure_on}", config.gaps, log))
        report["measured_on"] = {"split": measure_on, "before": gate_quality(network.gate, measured, config.taus),
                                 "after": gate_quality(fitted, measured, config.taus)}
        log(f"{measure_on}: before " + json.dumps(report["measured_on"]["before"]))
        log(f"{measure_on}: after  " + json.dumps(report["measured_on"]["after"]))
    network.gate.load_state_dict(fitted.state_dict())
    report["wall_time_s"] = round(time.time() - started, 1)
    save_checkpoint(out / "dynamic.pt", network, half=True,
                    meta={**getattr(network, "meta", {}), "gate_refit": report})
    write_json(out / "refit.json", report)
    return report
