"""Target-model scores as tracking produces them, for training the refinement network on them.

The cache's other anchors update the target model from the ground truth (or not at all); at test time it
learns from the network's own outputs, so its errors feed back and grow over a video (J-Decay). Here a
trained model tracks the sequence exactly as ``reusevos segment`` would (the base model, no reuse), and
each object's score is recorded before every step, so the refiner learns from the drifted scores it will
meet and from recovering from them.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np
import torch

from reusevos.config import SessionConfig
from reusevos.session import Session


def tracked_scores(network, frames: Iterable[np.ndarray], masks: np.ndarray, f16: np.ndarray,
                   compute_window: int = 2) -> np.ndarray:
    """Scores ``(T, K, h16, w16)`` float16 of each object's target model as tracking updates it (NaN before the
    object starts; K objects in ascending id order, as the cache stores them).

    network: a trained :class:`~reusevos.model.network.VOSNetwork`; frames: the sequence's ``(H, W, 3)`` uint8
    RGB frames (streamed); masks: ``(T, H, W)`` ground-truth label maps, used only at each object's first
    frame (the start mask); f16: the cache's stride-16 features ``(T, C16, h16, w16)``. Frame t's score is the
    target model's at the moment frame t is segmented (before frame t's own sample and refit).
    """
    ids = sorted(int(v) for v in np.unique(masks) if v != 0)
    session = Session(network, SessionConfig("full", compute_window=compute_window))
    device = session.device
    out = np.full((masks.shape[0], max(1, len(ids))) + tuple(f16.shape[-2:]), np.nan, np.float16)
    started: set[int] = set()
    minimum = network.config.target.min_object_pixels  # smaller first appearances start later, once large enough
    seen = 0
    for t, frame in enumerate(frames):
        features = torch.from_numpy(np.asarray(f16[t:t + 1], dtype=np.float32)).to(device)
        with torch.no_grad():
            for k, obj_id in enumerate(ids):
                if obj_id in session.objects:
                    out[t, k] = session.objects[obj_id].target.apply(features)[0, 0].cpu().numpy()
        new = [i for i in ids if i not in started and int((masks[t] == i).sum()) >= minimum]
        start = np.where(np.isin(masks[t], new), masks[t], 0).astype(np.uint8) if new else None
        with torch.no_grad():
            session.step(frame, start)
        for k, obj_id in enumerate(ids):
            if obj_id in new:  # the start frame's score, from the model just fitted on it
                started.add(obj_id)
                if obj_id in session.objects:
                    out[t, k] = session.objects[obj_id].target.apply(features)[0, 0].cpu().numpy()
        seen = t + 1
    if seen != masks.shape[0]:
        raise ValueError(f"{masks.shape[0]} masks but {seen} frames")
    return out
