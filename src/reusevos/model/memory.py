"""The target model's training-sample memory: bounded, with exponentially decaying weights."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class SampleMemory:
    """Up to ``capacity`` (features, label, pixel weight) samples with decaying sample weights.

    features: ``(N, C, h, w)`` at stride 16; labels and pixel weights: ``(N, 1, Hl, Wl)``.
    The start frame's samples are never evicted; when full, the lowest-weight later sample is
    replaced. Storage is preallocated on the first add, so memory stays flat over a long video.
    ``start_share``: the least share of the refit's total weight the permanent (start-frame) samples keep, however
    far their own weights have decayed (0: none, FRTM's memory; pytracking's trackers keep such a floor for their
    initial samples); it changes what :meth:`batch` hands out, not the stored weights.
    """

    capacity: int
    lr: float
    start_share: float = 0.0
    features: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    pixel_weights: torch.Tensor | None = None
    weights: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    permanent: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.bool))
    count: int = 0

    def add(self, features: torch.Tensor, labels: torch.Tensor, pixel_weights: torch.Tensor,
            weight: float | None = None, permanent: bool = False, steps: int = 1) -> None:
        """Add ``n`` samples (``(n, C, h, w)``, ``(n, 1, Hl, Wl)`` x2); older weights decay by (1 - lr) per step
        (``steps``: the frames since the last sample, where a frame loop skips frames and counts time in frames)."""
        n = features.shape[0]
        if self.features is None:
            self.features = features.new_zeros((self.capacity,) + tuple(features.shape[1:]))
            self.labels = labels.new_zeros((self.capacity,) + tuple(labels.shape[1:]))
            self.pixel_weights = pixel_weights.new_zeros((self.capacity,) + tuple(pixel_weights.shape[1:]))
            self.weights = torch.zeros(self.capacity, dtype=torch.float64)
            self.permanent = torch.zeros(self.capacity, dtype=torch.bool)
        self.weights[: self.count] *= (1.0 - self.lr) ** steps
        for i in range(n):
            slot = self._free_slot()
            self.features[slot] = features[i]
            self.labels[slot] = labels[i]
            self.pixel_weights[slot] = pixel_weights[i]
            self.weights[slot] = (self.lr if weight is None else weight) / n
            self.permanent[slot] = permanent

    def _free_slot(self) -> int:
        if self.count < self.capacity:
            self.count += 1
            return self.count - 1
        candidates = torch.where(~self.permanent[: self.count])[0]
        if len(candidates) == 0:
            raise RuntimeError("sample memory holds only permanent samples; raise its capacity")
        return int(candidates[torch.argmin(self.weights[candidates])])

    def batch(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The stored samples and their weights normalised to sum 1: ``(N, ...)`` x3, ``(N,)``."""
        n = self.count
        w = self.weights[:n]
        w = w / w.sum()
        if self.start_share > 0:
            kept = self.permanent[:n]
            share = float(w[kept].sum())
            if 0 < share < self.start_share and share < 1:
                w = torch.where(kept, w * (self.start_share / share), w * ((1 - self.start_share) / (1 - share)))
        w = w.to(self.features.dtype)
        return self.features[:n], self.labels[:n], self.pixel_weights[:n], w
