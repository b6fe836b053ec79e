"""The light-weight target model ("score generator"), one per object, learned online (SPEC section 2).

Two layers on the stride-16 features: a 1x1 compression to ``c`` channels and a 3x3 filter to one
channel, both without bias. Fitted at the object's start frame by Gauss-Newton / conjugate gradient
on a weighted L2 loss against the mask, then refitted (filter only) from a memory of tracked frames.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from reusevos.config import TargetModelConfig
from reusevos.model.gauss_newton import gauss_newton_cg
from reusevos.model.memory import SampleMemory


def balance_weights(labels: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per-pixel loss weights ``(N, 1, H, W)`` for (soft) labels of the same shape.

    Small objects (foreground fraction ``af`` below ``threshold``) would be drowned by background,
    so foreground pixels then weigh ``threshold / af`` and background ``(1 - threshold) / (1 - af)``;
    the weights average to one either way.
    """
    af = labels.mean(dim=(1, 2, 3), keepdim=True).clamp(min=1e-6, max=1 - 1e-6)
    balanced = labels * (threshold / af) + (1 - labels) * ((1 - threshold) / (1 - af))
    return torch.where(af < threshold, balanced, torch.ones_like(labels))


class TargetModel:
    """Per-object target model and its sample memory.

    ``projection``: ``(c, C16, 1, 1)``; ``filter``: ``(1, c, 3, 3)``. ``apply`` maps stride-16
    features ``(B, C16, h, w)`` to raw scores ``(B, 1, h, w)``, regressed towards the 0/1 mask.
    """

    def __init__(self, config: TargetModelConfig):
        self.config = config
        self.projection: torch.Tensor | None = None
        self.filter: torch.Tensor | None = None
        self.memory = SampleMemory(config.memory_size, config.memory_lr)
        self.label_size: tuple[int, int] | None = None
        self.frames_since_update = 0

    # -- labels -------------------------------------------------------------------------------
    def prepare_labels(self, masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image-size (soft) masks ``(N, 1, H, W)`` -> labels and pixel weights at the label size."""
        stride = self.config.label_stride
        labels = masks
        if stride > 1:
            size = (math.ceil(masks.shape[-2] / stride), math.ceil(masks.shape[-1] / stride))
            labels = F.interpolate(masks, size=size, mode="area")  # adaptive averaging: soft edges
        self.label_size = tuple(labels.shape[-2:])
        return labels, balance_weights(labels, self.config.balance_threshold)

    # -- fitting ------------------------------------------------------------------------------
    def _residual(self, features, labels, pixel_weights, sample_weights, params):
        projection, filt = params
        scores = F.conv2d(F.conv2d(features, projection), filt, padding=1)
        return self._data_residual(scores, labels, pixel_weights, sample_weights, params)

    @staticmethod
    def _pixel_scale(labels, pixel_weights, sample_weights) -> torch.Tensor:
        """Each label pixel's factor in the residual: sqrt of its pixel and sample weights over the pixel count."""
        n_pix = labels.shape[-2] * labels.shape[-1]
        return (sample_weights.sqrt() / math.sqrt(n_pix)).view(-1, 1, 1, 1) * pixel_weights.sqrt()

    def _data_residual(self, scores, labels, pixel_weights, sample_weights, params):
        up = F.interpolate(scores, size=labels.shape[-2:], mode="bilinear", align_corners=False)
        parts = [(self._pixel_scale(labels, pixel_weights, sample_weights) * (up - labels)).flatten()]
        return self._with_regularisers(parts, params)

    def _with_regularisers(self, parts: list[torch.Tensor], params) -> torch.Tensor:
        if len(params) == 2:
            parts.append(math.sqrt(self.config.proj_reg) * params[0].flatten())
        parts.append(math.sqrt(self.config.filter_reg) * params[-1].flatten())
        return torch.cat(parts)

    def _jacobian(self, features, pixel_scale, label_size):
        """``params -> (v -> J v)``: the residual's Jacobian products in closed form (the residual is linear
        in each layer), for :func:`gauss_newton_cg`.

        With both layers, ``features`` are the stride-16 features and the parameters (projection, filter);
        with the filter alone (:meth:`update`), ``features`` are the projected ones and the parameters
        (filter,).
        """
        def at(params):
            projected = F.conv2d(features, params[0]) if len(params) == 2 else features  # shared by the step

            def product(tangents):
                d_scores = F.conv2d(projected, tangents[-1], padding=1)
                if len(params) == 2:
                    d_scores = d_scores + F.conv2d(F.conv2d(features, tangents[0]), params[1], padding=1)
                up = F.interpolate(d_scores, size=label_size, mode="bilinear", align_corners=False)
                return self._with_regularisers([(pixel_scale * up).flatten()], tangents)

            return product

        return at

    def initialise(self, features: torch.Tensor, masks: torch.Tensor) -> list[float]:
        """Fit both layers on the start frame and its augmented copies.

        features: ``(N, C16, h, w)``; masks: ``(N, 1, H, W)`` in {0, 1} at image size, the first
        being the real frame. Returns the loss before and after each Gauss-Newton step.
        """
        labels, pixel_weights = self.prepare_labels(masks.to(features.dtype))
        self.memory.add(features, labels, pixel_weights,
                        weight=self.config.first_frame_weight * self.config.memory_lr, permanent=True)
        self.projection = self._pca_projection(features, self.config.channels)
        self.filter = features.new_zeros((1, self.config.channels, 3, 3))
        feats, labs, pws, sw = self.memory.batch()

        def residual(params):
            return self._residual(feats, labs, pws, sw, params)

        pixel_scale = self._pixel_scale(labs, pws, sw)
        (self.projection, self.filter), losses = gauss_newton_cg(
            residual, (self.projection, self.filter), self.config.init_cg_iters,
            jacobian=self._jacobian(feats, pixel_scale, labs.shape[-2:]))
        return losses

    @staticmethod
    def _pca_projection(features: torch.Tensor, channels: int) -> torch.Tensor:
        """A starting 1x1 compression: the top principal directions of the features ``(c, C, 1, 1)``."""
        x = features.permute(1, 0, 2, 3).reshape(features.shape[1], -1).double()
        x = x - x.mean(dim=1, keepdim=True)
        cov = x @ x.T / max(1, x.shape[1] - 1)
        _, vecs = torch.linalg.eigh(cov)  # ascending eigenvalues
        vecs = vecs.flip(1)[:, :channels].T
        if vecs.shape[0] < channels:  # fewer feature channels than c: pad with zeros
            vecs = torch.cat([vecs, vecs.new_zeros(channels - vecs.shape[0], vecs.shape[1])])
        return vecs.to(features.dtype).reshape(channels, -1, 1, 1).contiguous()

    def add_sample(self, features: torch.Tensor, soft_mask: torch.Tensor) -> bool:
        """Remember a tracked frame: features ``(1, C16, h, w)``, soft mask ``(1, 1, H, W)``.

        Frames whose mask has fewer than ``min_sample_pixels`` foreground pixels teach nothing
        about the object and are skipped. Returns whether the sample was added.
        """
        if float((soft_mask > 0.5).sum()) < self.config.min_sample_pixels:
            return False
        labels, pixel_weights = self.prepare_labels(soft_mask.to(features.dtype))
        self.memory.add(features, labels, pixel_weights)
        return True

    def update(self) -> list[float]:
        """Refit the filter (compression frozen) on the whole memory; returns the losses."""
        feats, labs, pws, sw = self.memory.batch()
        projected = F.conv2d(feats, self.projection)

        def residual(params):
            scores = F.conv2d(projected, params[0], padding=1)
            return self._data_residual(scores, labs, pws, sw, params)

        pixel_scale = self._pixel_scale(labs, pws, sw)
        (self.filter,), losses = gauss_newton_cg(
            residual, (self.filter,), (self.config.update_cg_iters,),
            jacobian=self._jacobian(projected, pixel_scale, labs.shape[-2:]))
        return losses

    # -- use ----------------------------------------------------------------------------------
    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """Raw scores ``(B, 1, h, w)`` for stride-16 features ``(B, C16, h, w)``."""
        return F.conv2d(F.conv2d(features, self.projection), self.filter, padding=1)
