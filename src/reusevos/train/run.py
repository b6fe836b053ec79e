"""``reusevos train``: build the cache for the training data, then train the refinement network (FRTM) or
TTVOS (``--model ttvos``).

Data: a DAVIS split (never a validation split) plus "syn" clips, objects cut from that split's
frames pasted on other frames of the split and moved by affine motion. Everything is resumable:
cached sequences are skipped, training continues from ``RUN_DIR/last.pt``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from reusevos.config import GateTrainConfig, ModelConfig, TrainConfig, TtvosConfig, TtvosTrainConfig
from reusevos.errors import ReusevosError
from reusevos.io.davis import DavisDataset
from reusevos.io.frames import read_image
from reusevos.model.backbone import load_backbone
from reusevos.model.network import VOSNetwork, read_checkpoint, save_checkpoint
from reusevos.train.cache import (UNRECORDED_BACKBONE, CachedSequence, cache_sequence, is_cached,
                                  load_cached_sequence, recorded_source)
from reusevos.train.loop import distributed_context, train_loop
from reusevos.train.dynamic import DynamicTrainer, TtvosDynamicTrainer, calibrate_gate
from reusevos.train.samples import RefinerSampler, SnippetSampler
from reusevos.train.ttvos import TTVOSTrainer


def git_commit() -> str:
    """The source tree's commit (with ``-dirty`` when it has uncommitted changes), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (commit + ("-dirty" if dirty else "")) if commit else "unknown"


def _load_frames(paths):
    return (read_image(path) for path in paths)  # one at a time; unreadable files are a clear error


def _tracker(network, frames: Callable[[], Iterable[np.ndarray]], masks: np.ndarray):
    """The cache's ``tracker``: ``network`` tracks the frames again (None: no tracked anchor)."""
    if network is None:
        return None
    from reusevos.train.tracked import tracked_scores

    return lambda f16: tracked_scores(network, frames(), masks, f16)


def build_davis_cache(dataset: DavisDataset, cache_dir: Path, backbone, model_config: ModelConfig,
                      seed: int, rank: int = 0, world: int = 1,
                      log: Callable[[str], None] = lambda _: None, tracker_network=None,
                      tracked: bool | None = None) -> list[str]:
    """Cache every sequence of the split (this process's share of them under torchrun); returns the names.
    With ``tracker_network`` each sequence also gets the ``tracked`` anchor (that model's own tracking);
    ``tracked``: whether a cached sequence must have that anchor (None: either will do)."""
    names = []
    for i, name in enumerate(dataset.sequences):
        names.append(name)
        target = cache_dir / name
        if i % world != rank or is_cached(target, tracked, backbone.name):
            continue
        masks = dataset.read_masks(name)
        paths = dataset.frame_paths(name)
        cache_sequence(target, _load_frames(paths), masks, backbone, model_config.target, seed=seed + i,
                       tracker=_tracker(tracker_network, lambda: _load_frames(paths), masks))
        log(f"cached {name} ({masks.shape[0]} frames)")
    return names


def build_synthetic_cache(dataset: DavisDataset, cache_dir: Path, backbone, model_config: ModelConfig,
                          count: int, frames: int, seed: int, rank: int = 0, world: int = 1,
                          log: Callable[[str], None] = lambda _: None, tracker_network=None,
                          speeds: tuple[float, ...] | None = None, tracked: bool | None = None) -> list[str]:
    """Cache ``count`` syn clips made from the split's objects and backgrounds; returns their names.
    ``speeds``: the clips' speeds to draw from (None: :data:`reusevos.train.syn.SPEEDS`); ``tracker_network``
    and ``tracked`` as for :func:`build_davis_cache`."""
    from reusevos.train.syn import SPEEDS, syn_clip

    names, unchecked = [], []
    source = {"sequences": list(dataset.sequences), "speeds": [float(v) for v in speeds or SPEEDS], "frames": frames}
    for i in range(count):
        name = f"syn-{seed}-{i:04d}"
        names.append(name)
        target = cache_dir / name
        if i % world != rank:
            continue
        if is_cached(target, tracked, backbone.name, source):
            if not recorded_source(target):
                unchecked.append(name)
            continue
        clip_frames, clip_masks = syn_clip(dataset, frames, seed=seed * 100003 + i, speeds=speeds or SPEEDS)
        cache_sequence(target, iter(clip_frames), clip_masks, backbone, model_config.target, seed=seed + i,
                       tracker=_tracker(tracker_network, lambda: iter(clip_frames), clip_masks), source=source)
        log(f"cached {name}")
    if unchecked:  # taken as they are (a cache of an older version stays usable), but never silently
        log(f"warning: {len(unchecked)} syn clips in {cache_dir} ({unchecked[0]}, ...) were cached before clips recorded "
            "what they were made from, so this run cannot check that they were cut from its sequences and speeds; "
            "they are used as they are (delete them, or use another --cache folder, to cut them again)")
    return names


def _prepare(davis_root, split, run_dir, cache_dir, seed, synthetic, synthetic_frames, sequences, device,
             command, settings: dict, log, tracker_weights: str | None = None,
             synthetic_speeds: tuple[float, ...] | None = None, tracked: bool | None = None,
             backbone_name: str = ModelConfig.backbone):
    """Checks, provenance record, and the cache of the training data (``backbone_name``'s features); returns what
    training needs."""
    if "val" in split.lower() or "test" in split.lower():
        raise ReusevosError(f"refusing to train on the split {split!r}: scores are reported on validation data, "
                            "so training must never see it; use --split train")
    rank, world = distributed_context()
    dataset = DavisDataset(davis_root, split=split, sequences=sequences)
    run_dir = Path(run_dir)
    cache_root = Path(cache_dir) if cache_dir else run_dir / "cache"
    try:
        cache_root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReusevosError(f"cannot create {cache_root}: {exc.strerror}") from exc
    _check_run_backbone(run_dir, backbone_name)
    model_config = ModelConfig(backbone=backbone_name)
    backbone = load_backbone(backbone_name).to(device)
    if rank == 0:
        run_info = {"command": command, "commit": git_commit(), "davis_root": str(dataset.root), "split": split,
                    "sequences": dataset.sequences, "synthetic_clips": synthetic,
                    "synthetic_frames": synthetic_frames, "backbone": backbone_name, **settings, "processes": world,
                    "torch": torch.__version__, "python": sys.version.split()[0], "machine": platform.machine(),
                    "threads": torch.get_num_threads()}
        with open(run_dir / "runs.jsonl", "a") as handle:  # one line per start or resume of this run
            handle.write(json.dumps(run_info, default=str) + "\n")
    tracker = None
    if tracker_weights is not None:
        from reusevos.api import load_model

        tracker = load_model(None if tracker_weights == "default" else tracker_weights, device=device)
        if tracker.config.backbone != backbone_name:  # its target models must be fitted on the cached features
            from reusevos.model.network import shipped_on

            same = shipped_on(backbone_name)
            hint = f" (shipped: --tracked-scores {same[0]})" if same else ""
            raise ReusevosError(f"--tracked-scores {tracker_weights}: that model runs on {tracker.config.backbone}, "
                                f"this training on {backbone_name}; give a model trained on {backbone_name}{hint}")
    names = build_davis_cache(dataset, cache_root, backbone, model_config, seed, rank, world, log, tracker, tracked)
    names += build_synthetic_cache(dataset, cache_root, backbone, model_config, synthetic, synthetic_frames,
                                   seed, rank, world, log, tracker, synthetic_speeds, tracked)
    if world > 1:
        torch.distributed.barrier()
    cached: list[CachedSequence] = [load_cached_sequence(cache_root / n, in_memory=True) for n in names]
    meta = {"data": {"davis_split": split, "davis_sequences": dataset.sequences, "synthetic_clips": synthetic,
                     "synthetic_speeds": synthetic_speeds, "tracked_scores": tracker_weights},
            "command": command, "commit": git_commit()}
    return backbone, cached, meta


def _check_run_backbone(run_dir: Path, backbone: str) -> None:
    """Refuse to resume a run folder that an earlier start trained on another backbone (``runs.jsonl``; starts
    that did not record one used MobileNetV2)."""
    log_path = run_dir / "runs.jsonl"
    if not log_path.is_file():
        return
    for line in log_path.read_text().splitlines():
        try:
            earlier = json.loads(line).get("backbone", UNRECORDED_BACKBONE)
        except (ValueError, AttributeError):
            continue
        if earlier != backbone:
            raise ReusevosError(f"{run_dir} holds a run on the {earlier} backbone, not {backbone}; use another --out "
                                "folder")


def _snapshots(run_dir: Path, network, name: str, meta: dict) -> Callable[[int], None]:
    """``train_loop``'s snapshot hook: the weights at an iteration as a loadable checkpoint,
    ``RUN_DIR/snapshots/NAME-ITERATION.pt`` (scored later, e.g. by ``scripts/holdout_eval.py``)."""

    def snapshot(iteration: int) -> None:
        folder = run_dir / "snapshots"
        folder.mkdir(exist_ok=True)
        save_checkpoint(folder / f"{name}-{iteration:06d}.pt", network, half=True,
                        meta={**meta, "snapshot_iteration": iteration})

    return snapshot


def run_training(davis_root: str | None, split: str, run_dir: str | os.PathLike, cache_dir: str | None,
                 train_config: TrainConfig, synthetic: int = 60, synthetic_frames: int = 24,
                 sequences: list[str] | None = None, device: str = "cpu", command: str = "",
                 log: Callable[[str], None] = lambda _: None, tracker_weights: str | None = None,
                 synthetic_speeds: tuple[float, ...] | None = None, backbone: str = ModelConfig.backbone) -> dict:
    """``reusevos train``: the refinement network of the base model; returns the training summary.

    tracker_weights: a trained checkpoint (``"default"``: the shipped one) whose own tracking adds the cache's
    ``tracked`` scores (None: none); synthetic_speeds: the syn clips' speeds (None: the default set); backbone: the
    frozen backbone (one of ``BACKBONES``), recorded in the checkpoint's model configuration.
    """
    run_dir = Path(run_dir)
    model_config = ModelConfig(backbone=backbone)
    settings = {"train_config": asdict(train_config), "model_config": model_config.to_dict(),
                "tracker_weights": tracker_weights, "synthetic_speeds": synthetic_speeds}
    frozen, cached, meta = _prepare(davis_root, split, run_dir, cache_dir, train_config.seed, synthetic,
                                    synthetic_frames, sequences, device, command, settings, log,
                                    tracker_weights, synthetic_speeds, tracked=tracker_weights is not None,
                                    backbone_name=backbone)
    sampler = RefinerSampler(cached, crop=train_config.crop)
    log(f"{len(cached)} sequences, {len(sampler)} training samples")
    torch.manual_seed(train_config.seed)  # the refiner's initial weights
    network = VOSNetwork(model_config, frozen).to(device)
    summary = train_loop(network.refiner, lambda rng: sampler.draw(rng, train_config.batch), refiner_loss, run_dir,
                         train_config, log=log, snapshot=_snapshots(run_dir, network, "refiner", meta))
    if summary["rank"] == 0:
        save_checkpoint(run_dir / "refiner.pt", network, half=True,
                        meta={**meta, "training": summary, "train_config": asdict(train_config)})
    return summary


def run_ttvos_training(davis_root: str | None, split: str, run_dir: str | os.PathLike, cache_dir: str | None,
                       config: TtvosTrainConfig, synthetic: int = 60, synthetic_frames: int = 24,
                       sequences: list[str] | None = None, device: str = "cpu", command: str = "",
                       log: Callable[[str], None] = lambda _: None,
                       synthetic_speeds: tuple[float, ...] | None = None, ttvos: TtvosConfig | None = None,
                       backbone: str = ModelConfig.backbone) -> dict:
    """``reusevos train --model ttvos``: the TTVOS base model (``ttvos``: its settings, None: the defaults) on
    snippets of the cached training data, on the frozen ``backbone``; writes ``RUN_DIR/ttvos.pt`` and returns the
    training summary. The cache is the one FRTM's training builds (its target-model scores go unused), so a cache of
    the same data and backbone can be shared with ``--cache``."""
    run_dir = Path(run_dir)
    model_config = ModelConfig(backbone=backbone, base="ttvos", ttvos=ttvos or TtvosConfig())
    settings = {"model": "ttvos", "train_config": asdict(config), "model_config": model_config.to_dict(),
                "synthetic_speeds": synthetic_speeds}
    frozen, cached, meta = _prepare(davis_root, split, run_dir, cache_dir, config.seed, synthetic,
                                    synthetic_frames, sequences, device, command, settings, log,
                                    synthetic_speeds=synthetic_speeds, backbone_name=backbone)
    sampler = SnippetSampler(cached, length=config.snippet, crop=config.crop, max_gaps=config.max_gaps)
    log(f"{len(cached)} sequences, {len(sampler)} snippet starts")
    torch.manual_seed(config.seed)  # TTVOS's initial weights
    network = VOSNetwork(model_config, frozen).to(device)
    trainer = TTVOSTrainer(network, config)
    summary = train_loop(trainer, lambda rng: sampler.draw(rng, config.batch), _module_loss, run_dir, config, log=log,
                         resume_keys=("batch", "crop", "seed", "snippet"),
                         snapshot=_snapshots(run_dir, network, "ttvos", meta))
    if summary["rank"] == 0:
        save_checkpoint(run_dir / "ttvos.pt", network, half=True,
                        meta={**meta, "training": summary, "train_config": asdict(config)})
    return summary


def run_gate_training(base_weights: str, davis_root: str | None, split: str, run_dir: str | os.PathLike,
                      cache_dir: str | None, config: GateTrainConfig, synthetic: int = 60,
                      synthetic_frames: int = 24, sequences: list[str] | None = None, device: str = "cpu",
                      command: str = "", log: Callable[[str], None] = lambda _: None,
                      synthetic_speeds: tuple[float, ...] | None = None) -> dict:
    """``reusevos train-gate``: the dynamic network on top of a trained base model (FRTM: G-FRTM; TTVOS: G-TTVOS);
    returns the summary."""
    run_dir = Path(run_dir)
    base = read_checkpoint(base_weights)
    model_config = ModelConfig.from_dict({**base["config"], "reuse_gate": True})  # the base model's backbone too
    backbone, cached, meta = _prepare(davis_root, split, run_dir, cache_dir, config.seed, synthetic,
                                      synthetic_frames, sequences, device, command,
                                      {"gate_config": asdict(config), "base_weights": str(base_weights),
                                       "synthetic_speeds": synthetic_speeds}, log, synthetic_speeds=synthetic_speeds,
                                      backbone_name=model_config.backbone)
    sampler = SnippetSampler(cached, length=config.snippet, crop=config.crop, max_gaps=config.max_gaps)
    log(f"{len(cached)} sequences, {len(sampler)} snippet starts")
    torch.manual_seed(config.seed)  # initial weights of the reuse-path modules
    network = VOSNetwork(model_config, backbone).to(device)
    prefix = f"{model_config.base if model_config.base == 'ttvos' else 'refiner'}."  # the frozen base model's modules
    base_state = {k[len(prefix):]: v.float() for k, v in base["state_dict"].items() if k.startswith(prefix)}
    getattr(network, prefix[:-1]).load_state_dict(base_state, strict=True)
    trainer = (TtvosDynamicTrainer if model_config.base == "ttvos" else DynamicTrainer)(network, config)
    pretrained = None
    started = (run_dir / "last.pt").is_file()  # the main stage has begun: no warm-up or initialisation again
    if config.pretrain_iterations and not started:
        # The warm-up has its own resumable folder.
        warmup = replace(config, iterations=config.pretrain_iterations, batch=config.pretrain_batch,
                         lr=config.pretrain_lr, pretrain_iterations=0)
        (run_dir / "pretrain").mkdir(exist_ok=True)
        trainer.stage = "pretrain"
        log(f"warm-up: {warmup.iterations} teacher-forced iterations of {warmup.batch} snippets")
        pretrained = train_loop(trainer, lambda rng: sampler.draw(rng, warmup.batch), _module_loss,
                                run_dir / "pretrain", warmup, log=log)
        trainer.stage = "full"
    elif not started:
        rng = np.random.default_rng([config.seed, 999])
        rate = calibrate_gate(trainer, [sampler.draw(rng, config.batch) for _ in range(8)], config.gate_init_rate)
        log(f"gate initialised: {rate:.1%} of calibration frames reuse at tau {config.threshold}")
    summary = train_loop(trainer, lambda rng: sampler.draw(rng, config.batch), _module_loss, run_dir, config,
                         log=log, snapshot=_snapshots(run_dir, network, "dynamic", meta))
    if pretrained is not None:
        summary["pretrain"] = pretrained
    if summary["rank"] == 0:
        save_checkpoint(run_dir / "dynamic.pt", network, half=True,
                                meta={**meta, "base": base.get("meta", {}), "base_weights": str(base_weights),
                              "gate_training": summary, "gate_config": asdict(config)})
    return summary


def _module_loss(model, batch, iteration: int):
    """The loss of a trainer module that computes it in ``forward`` (a module call, for DDP)."""
    return model(batch, iteration)


def refiner_loss(model, batch, iteration: int):
    """BCE between the refined logits and the ground truth of a batch of crops."""
    device = next(model.parameters()).device
    feats = tuple(f.to(device) for f in batch.features)
    logits = model(feats, batch.scores.to(device), batch.masks.shape[-2:])
    return F.binary_cross_entropy_with_logits(logits, batch.masks.to(device)), {}
