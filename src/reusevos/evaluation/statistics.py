"""The DAVIS statistics of one object's per-frame scores: Mean, Recall and Decay.

Decay follows the official toolkit exactly, which is not four equal bins: the frame range is cut at
``round(linspace(1, n, 5)) - 1`` and each bin runs from one cut to the next *inclusive*, so
neighbouring bins share a frame (for n = 48: frames 0..12 and 35..47, 13 each). The toolkit stores
the cuts as uint8, which wraps for sequences longer than 256 frames and yields NaN; here the cuts are
exact integers, so long sequences get a real Decay and every DAVIS sequence gets the toolkit's.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

RECALL_THRESHOLD = 0.5
"""A frame counts towards Recall when its score is strictly above this."""


class Statistics(NamedTuple):
    """Mean, Recall (fraction of frames > 0.5) and Decay (first-quarter mean - last-quarter mean)."""

    mean: float
    recall: float
    decay: float


def decay_bins(n: int) -> list[tuple[int, int]]:
    """The four ``(start, stop)`` slices of ``range(n)`` that DAVIS Decay averages over.

    Cut ``k`` (k = 0..4) is ``round(1 + k (n - 1) / 4) - 1`` with halves rounded up, which in integers
    is ``(k (n - 1) + 2) // 4``; bin ``i`` covers cuts ``i`` to ``i + 1`` inclusive.
    """
    if n < 1:
        raise ValueError("decay needs at least one frame")
    cuts = [(k * (n - 1) + 2) // 4 for k in range(5)]
    return [(cuts[i], cuts[i + 1] + 1) for i in range(4)]


def davis_statistics(per_frame: np.ndarray) -> Statistics:
    """Mean, Recall and Decay of one object's scores.

    Args:
        per_frame: ``(N,)`` J or F values of the scored frames (the sequence without its first and
            last frame), in temporal order, N >= 1.
    """
    values = np.asarray(per_frame, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"per_frame must be a non-empty (N,) array, got shape {values.shape}")
    mean = float(np.mean(values))
    recall = float(np.mean(values > RECALL_THRESHOLD))
    bins = decay_bins(values.size)
    first = values[bins[0][0] : bins[0][1]]
    last = values[bins[3][0] : bins[3][1]]
    decay = float(np.mean(first) - np.mean(last))
    return Statistics(mean, recall, decay)
