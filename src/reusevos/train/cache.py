"""The training cache: frozen-backbone features and target-model scores, computed once per sequence.

The backbone never trains and FRTM trains the refinement network on scores of target models fitted
per training sequence, so both can be computed once; an epoch then costs only the refinement
network's forward and backward passes, which is what makes training on 2 CPU cores practical.

Layout of one sequence's folder::

    f4.npy f8.npy f16.npy f32.npy   (T, C, h, w) float16 features (memory-mapped when read)
    masks.npy                       (T, H, W) uint8 ground-truth label maps
    scores.npy                      (A, T, K, h16, w16) float16: per anchor and object, the score map
                                    of a target model fitted at the anchor frame (NaN before it)
    meta.json                       sizes, anchors, object ids, the backbone, completion marker

Scores come from up to three kinds of anchor (``meta.json``'s ``anchor_kinds``): the object's first frame
with the memory updated every ``update_every`` frames from the ground truth (``updated``: as tracking would,
with perfect masks), later anchors without updates (``stale``: the harder, noisier scores the refiner must
cope with) and, when a tracker is given, the first frame with the memory updated from a trained model's own
outputs (``tracked``: the drifting scores of real tracking, ``reusevos.train.tracked``).

The features are those of one backbone, named in ``meta.json`` (caches written before it was recorded hold
MobileNetV2's, the only backbone training used then); a cache of another backbone's is never reused.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from reusevos.config import TargetModelConfig
from reusevos.errors import ReusevosError
from reusevos.model.augment import augment_first_frame
from reusevos.model.backbone import Backbone, images_to_tensor
from reusevos.model.target_model import TargetModel

LEVELS = ("f4", "f8", "f16", "f32")
UNRECORDED_BACKBONE = "mobilenet_v2"  # the backbone of caches whose meta.json does not name one


@dataclass
class CachedSequence:
    """A cached sequence, memory-mapped: arrays are read from disk on access."""

    name: str
    path: Path
    features: dict[str, np.ndarray]  # level -> (T, C, h, w) float16
    masks: np.ndarray  # (T, H, W) uint8
    scores: np.ndarray  # (A, T, K, h16, w16) float16
    anchors: list[int]
    object_ids: list[int]

    @property
    def num_frames(self) -> int:
        return self.masks.shape[0]


def cache_sequence(out_dir: str | os.PathLike, frames: Iterable[np.ndarray], masks: np.ndarray,
                   backbone: Backbone, target_config: TargetModelConfig, extra_anchors: int = 2,
                   seed: int = 0, batch: int = 4,
                   tracker: Callable[[np.ndarray], np.ndarray] | None = None,
                   source: Mapping | None = None) -> CachedSequence:
    """Compute and write one sequence's cache; returns it memory-mapped.

    frames: the sequence's ``(H, W, 3)`` uint8 RGB frames, in order (streamed); masks: ``(T, H, W)``
    label maps of every frame. tracker: given the stride-16 features ``(T, C16, h16, w16)``, the
    ``tracked`` anchor's scores ``(T, K, h16, w16)`` (:func:`reusevos.train.tracked.tracked_scores` with the
    frames bound); None: no such anchor. source: what a made-up clip was made from (a syn clip: the sequences its
    objects and backgrounds come from, its speeds and length), recorded so a run made from other data refuses it
    (:func:`is_cached`). Written to a temporary folder and renamed when complete, so an
    interrupted run never leaves a half-written cache that looks finished.
    """
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    device = next(iter(backbone.buffers())).device
    num_frames = masks.shape[0]
    arrays: dict[str, np.ndarray] = {}
    kept: list[np.ndarray] = []  # frames of anchors only, for their augmented copies
    ids = sorted(int(v) for v in np.unique(masks) if v != 0)
    rng = np.random.default_rng(seed)
    first = {i: int(np.argmax((masks == i).reshape(num_frames, -1).any(axis=1))) for i in ids}
    late = [t for t in range(num_frames) if t > min(first.values())] if ids else []
    anchors = [min(first.values())] if ids else [0]
    if late and extra_anchors:
        anchors += sorted(rng.choice(late, size=min(extra_anchors, len(late)), replace=False).tolist())

    def flush(chunk: list[np.ndarray], start: int) -> None:
        with torch.no_grad():
            feats = backbone(images_to_tensor(np.stack(chunk), device))
        for level, f in zip(LEVELS, feats):
            if level not in arrays:
                arrays[level] = np.lib.format.open_memmap(
                    tmp / f"{level}.npy", mode="w+", dtype=np.float16, shape=(num_frames,) + tuple(f.shape[1:]))
            arrays[level][start:start + len(chunk)] = f.cpu().numpy().astype(np.float16)

    chunk: list[np.ndarray] = []
    seen = 0
    for t, frame in enumerate(frames):
        if t in anchors:
            kept.append(frame)
        chunk.append(frame)
        if len(chunk) == batch:
            flush(chunk, t + 1 - len(chunk))
            chunk = []
        seen = t + 1
    if chunk:
        flush(chunk, seen - len(chunk))
    if seen != num_frames:
        raise ValueError(f"{num_frames} masks but {seen} frames")

    f16 = torch.from_numpy(np.asarray(arrays["f16"]))
    kinds = ["updated"] + ["stale"] * (len(anchors) - 1)
    if tracker is not None and ids:
        kinds.append("tracked")
    scores = np.full((len(kinds), num_frames, max(1, len(ids))) + tuple(f16.shape[-2:]), np.nan, np.float16)
    for a, (anchor, anchor_frame) in enumerate(zip(anchors, kept)):
        for k, obj_id in enumerate(ids):
            if first[obj_id] > anchor or not (masks[anchor] == obj_id).sum() >= target_config.min_object_pixels:
                continue
            scores[a, :, k] = _track_scores(anchor, anchor_frame, masks, obj_id, f16, backbone, target_config,
                                            updates=(a == 0))
    if kinds[-1] == "tracked":
        scores[-1] = tracker(np.asarray(arrays["f16"]))
        anchors.append(anchors[0])
    np.save(tmp / "masks.npy", masks.astype(np.uint8))
    np.save(tmp / "scores.npy", scores)
    for array in arrays.values():
        array.flush()
    arrays.clear()  # close the memory maps before the folder is renamed
    meta = {"num_frames": num_frames, "size": list(masks.shape[1:]), "anchors": anchors, "anchor_kinds": kinds,
            "object_ids": ids, "backbone": backbone.name, **({"source": dict(source)} if source else {}),
            "target_config": {k: getattr(target_config, k) for k in ("channels", "label_stride", "update_every")},
            "complete": True}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return load_cached_sequence(out_dir)


def _track_scores(anchor: int, frame: np.ndarray, masks: np.ndarray, obj_id: int, f16: torch.Tensor,
                  backbone: Backbone, config: TargetModelConfig, updates: bool) -> np.ndarray:
    """Scores ``(T, h16, w16)`` of one object's target model fitted at ``anchor`` (NaN before it)."""
    device = next(iter(backbone.buffers())).device
    mask = masks[anchor] == obj_id
    copies = augment_first_frame(frame, mask, config.num_augmented, config.augment_scales)
    feats = [f16[anchor:anchor + 1].float().to(device)]
    if copies:
        with torch.no_grad():
            feats.append(backbone(images_to_tensor(np.stack([c[0] for c in copies]), device))[2])
    labels = torch.from_numpy(np.stack([mask] + [c[1] for c in copies]).astype(np.float32))[:, None].to(device)
    model = TargetModel(replace(config, sample_ignore_band=0.0))  # ground-truth samples need no band
    model.initialise(torch.cat(feats), labels)
    out = np.full((masks.shape[0],) + tuple(f16.shape[-2:]), np.nan, np.float32)
    computed = 0
    for t in range(anchor, masks.shape[0]):
        ft = f16[t:t + 1].float().to(device)
        with torch.no_grad():
            out[t] = model.apply(ft)[0, 0].cpu().numpy()
        if updates and t > anchor:
            computed += 1
            gt = torch.from_numpy((masks[t] == obj_id).astype(np.float32))[None, None].to(device)
            model.add_sample(ft, gt)
            if computed % config.update_every == 0:
                model.update()
    return out


def load_cached_sequence(path: str | os.PathLike, in_memory: bool = False) -> CachedSequence:
    """A cached sequence, memory-mapped, or read whole into memory with ``in_memory``.

    Training reads random crops all over the cache; memory-mapped, every crop touches many file
    pages, and once the kernel reclaims the page cache (it does so proactively on these machines)
    training becomes disk-bound (several times slower per iteration).
    """
    path = Path(path)
    meta = json.loads((path / "meta.json").read_text())
    mode = None if in_memory else "r"
    features = {level: np.load(path / f"{level}.npy", mmap_mode=mode) for level in LEVELS}
    return CachedSequence(path.name, path, features, np.load(path / "masks.npy", mmap_mode=mode),
                          np.load(path / "scores.npy", mmap_mode=mode), meta["anchors"], meta["object_ids"])


def is_cached(path: str | os.PathLike, tracked: bool | None = None, backbone: str | None = None,
              source: Mapping | None = None) -> bool:
    """Whether ``path`` holds a complete cached sequence; with ``tracked`` True or False, a complete one
    whose ``tracked`` anchor is present or absent as asked is required, with ``backbone`` one of that
    backbone's features, and with ``source`` (a syn clip's, see :func:`cache_sequence`) one made from that; the
    other kind is an error (a cache built for another recipe must not be mixed in silently). A syn clip cached
    before its source was recorded cannot be checked and is taken as it is (the training's log says so)."""
    meta_path = Path(path) / "meta.json"
    if not meta_path.is_file():
        return False
    meta = json.loads(meta_path.read_text())
    if not meta.get("complete", False):
        return False
    built = meta.get("backbone", UNRECORDED_BACKBONE)
    if backbone is not None and built != backbone:
        raise ReusevosError(f"the cache {path} holds {built} features, but this run uses the {backbone} backbone; "
                            "use another --cache folder")
    made_from = meta.get("source")
    if source is not None and made_from is not None and made_from != dict(source):
        differ = ", ".join(k for k in sorted({*made_from, *source}) if made_from.get(k) != source.get(k))
        raise ReusevosError(f"the cache {path} holds a syn clip made with other {differ} than this run's "
                            "(a syn clip's name says only its seed and number); use another --cache folder or --seed")
    has = "tracked" in meta.get("anchor_kinds", [])
    if tracked is not None and has != tracked and meta.get("object_ids"):
        raise ReusevosError(f"the cache {path} was built {'with' if has else 'without'} tracked scores, but this "
                            f"run asks {'for' if tracked else 'not for'} them; use another --cache folder")
    return True


def recorded_source(path: str | os.PathLike) -> bool:
    """Whether the cached sequence at ``path`` records what it was made from (syn clips cached since they do)."""
    return "source" in json.loads((Path(path) / "meta.json").read_text())


def iter_cache(root: str | os.PathLike) -> Iterator[CachedSequence]:
    for path in sorted(Path(root).iterdir()):
        if path.is_dir() and is_cached(path):
            yield load_cached_sequence(path)
