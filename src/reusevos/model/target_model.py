"""The light-weight target model ("score generator"), one per object, learned online.

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


def ignore_band(labels: torch.Tensor, fraction: float) -> torch.Tensor:
    """The band ``(N, 1, H, W)`` (1 inside, else 0) of pixels outside each (soft) label's object (above 0.5) and within
    ``fraction`` of the object's size (the square root of its area, in label pixels) of it, at least one pixel."""
    inside = (labels > 0.5).to(labels.dtype)
    out = torch.zeros_like(labels)
    for n in range(labels.shape[0]):
        radius = max(1, round(fraction * float(inside[n].sum()) ** 0.5))
        grown = F.max_pool2d(inside[n:n + 1], 2 * radius + 1, stride=1, padding=radius)
        out[n:n + 1] = grown - inside[n:n + 1]
    return out


class TargetModel:
    """Per-object target model and its sample memory.

    ``projection``: ``(c, C16, 1, 1)``; ``filter``: ``(1, c, 3, 3)``. ``apply`` maps stride-16
    features ``(B, C16, h, w)`` to raw scores ``(B, 1, h, w)``, regressed towards the 0/1 mask.
    """

    def __init__(self, config: TargetModelConfig):
        self.config = config
        self.projection: torch.Tensor | None = None
        self.filter: torch.Tensor | None = None
        self.memory = SampleMemory(config.memory_size, config.memory_lr, config.start_share)
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
        """``params -> (v -> J v, u -> J^T u)``: the residual's Jacobian products in closed form (the
        residual is linear in each layer), for :func:`gauss_newton_cg`.

        With both layers, ``features`` are the stride-16 features and the parameters (projection, filter);
        with the filter alone (:meth:`update`), ``features`` are the projected ones and the parameters
        (filter,). The bilinear upsampling to the labels is separable, ``up = A_h s A_w^T``; its transpose
        uses the same matrices. The 3x3 convolutions to one channel, slow as convolutions on a CPU, are
        matrix products with the features laid out as a ``(N h w, C)`` matrix (:func:`_conv3x3`).
        """
        (height, width), (label_h, label_w) = features.shape[-2:], label_size
        rows = _as_rows(features)
        a_h = _upsampling_matrix(height, label_h, features)
        a_w = _upsampling_matrix(width, label_w, features)
        n_data = pixel_scale.numel()
        root_proj, root_filter = math.sqrt(self.config.proj_reg), math.sqrt(self.config.filter_reg)

        def at(params):
            two = len(params) == 2
            filt = params[-1]
            projected = rows @ params[0][:, :, 0, 0].T if two else rows  # shared by the step

            def product(tangents):
                d_scores = _conv3x3(projected, features.shape, tangents[-1])
                if two:  # the 1x1 and 3x3 layers compose into one 3x3 conv to one channel: 10x fewer FLOPs
                    d_scores = d_scores + _conv3x3(rows, features.shape, _compose(tangents[0], filt))
                up = F.interpolate(d_scores, size=label_size, mode="bilinear", align_corners=False)
                return self._with_regularisers([(pixel_scale * up).flatten()], tangents)

            def transposed(u):
                data = pixel_scale * u[:n_data].view_as(pixel_scale)
                d_scores = a_h.T @ data @ a_w  # (N, 1, h, w)
                d_filter = _correlate3x3(projected, d_scores)
                d_filter = d_filter + root_filter * u[-filt.numel():].view_as(filt)
                if not two:
                    return (d_filter,)
                # The features against the scores' gradient at each of the 3x3 offsets, then through the filter.
                shifted = _correlate3x3(rows, d_scores)
                d_projection = torch.einsum("okyx,oCyx->kC", filt, shifted).reshape(params[0].shape)
                d_projection = d_projection + root_proj * u[n_data:n_data + params[0].numel()].view_as(params[0])
                return d_projection, d_filter

            return product, transposed

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

    def add_sample(self, features: torch.Tensor, soft_mask: torch.Tensor, steps: int = 1) -> bool:
        """Remember a tracked frame: features ``(1, C16, h, w)``, soft mask ``(1, 1, H, W)``; older samples decay
        by ``steps`` frames' worth (see :meth:`SampleMemory.add`).

        Frames whose mask has fewer than ``min_sample_pixels`` foreground pixels teach nothing
        about the object and are skipped; with ``sample_confidence_power`` a sample weighs less the less sure the
        output is of its object. Returns whether the sample was added.
        """
        inside = soft_mask > 0.5
        if float(inside.sum()) < self.config.min_sample_pixels:
            return False
        weight = None  # memory_lr
        if self.config.sample_confidence_power > 0:  # less weight where the output is unsure of its object
            sure = (2 * soft_mask[inside].float().mean() - 1).clamp(0, 1)
            weight = self.config.memory_lr * float(sure) ** self.config.sample_confidence_power
        labels, pixel_weights = self.prepare_labels(soft_mask.to(features.dtype))
        if self.config.sample_ignore_band > 0:
            pixel_weights = pixel_weights * (1 - ignore_band(labels, self.config.sample_ignore_band))
        self.memory.add(features, labels, pixel_weights, weight=weight, steps=steps)
        return True

    def update(self, cg_iters: int | None = None) -> list[float]:
        """Refit the filter (compression frozen) on the whole memory, one Gauss-Newton step of ``cg_iters`` CG
        iterations (None: ``update_cg_iters``); returns the losses."""
        feats, labs, pws, sw = self.memory.batch()
        projected = F.conv2d(feats, self.projection)

        def residual(params):
            scores = F.conv2d(projected, params[0], padding=1)
            return self._data_residual(scores, labs, pws, sw, params)

        pixel_scale = self._pixel_scale(labs, pws, sw)
        (self.filter,), losses = gauss_newton_cg(
            residual, (self.filter,), (self.config.update_cg_iters if cg_iters is None else cg_iters,),
            jacobian=self._jacobian(projected, pixel_scale, labs.shape[-2:]))
        return losses

    # -- use ----------------------------------------------------------------------------------
    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """Raw scores ``(B, 1, h, w)`` for stride-16 features ``(B, C16, h, w)``."""
        return F.conv2d(F.conv2d(features, self.projection), self.filter, padding=1)


def _upsampling_matrix(size: int, out: int, like: torch.Tensor) -> torch.Tensor:
    """The ``(out, size)`` matrix of 1-D bilinear upsampling as ``F.interpolate`` does it (align_corners=False):
    column j is the image of the j-th unit vector."""
    eye = torch.eye(size, dtype=like.dtype, device=like.device)[None, None]
    return F.interpolate(eye, size=(out, size), mode="bilinear", align_corners=False)[0, 0]


def _compose(projection: torch.Tensor, filt: torch.Tensor) -> torch.Tensor:
    """The 3x3 conv ``(1, C, 3, 3)`` equal to a 1x1 ``projection`` ``(c, C, 1, 1)`` followed by ``filt`` ``(1, c, 3, 3)``."""
    return torch.einsum("okyx,kC->oCyx", filt, projection[:, :, 0, 0])


def _as_rows(features: torch.Tensor) -> torch.Tensor:
    """``(N, C, h, w)`` features as a ``(N h w, C)`` matrix."""
    return features.permute(0, 2, 3, 1).reshape(-1, features.shape[1])


def _conv3x3(rows: torch.Tensor, shape: torch.Size, weight: torch.Tensor) -> torch.Tensor:
    """``F.conv2d(x, weight, padding=1)`` for a one-channel ``weight`` ``(1, C, 3, 3)``, with ``x`` of ``shape``
    ``(N, C', h, w)`` given as :func:`_as_rows` (``C`` columns): each tap is a column of one matrix product,
    then the nine taps are added at their offsets. Returns ``(N, 1, h, w)``."""
    n, _, h, w = shape
    taps = (rows @ weight.reshape(weight.shape[1], 9)).view(n, h, w, 9)
    out = rows.new_zeros(n, h + 2, w + 2)
    for k in range(9):
        ky, kx = divmod(k, 3)  # out[y, x] += tap(y + ky - 1, x + kx - 1), in padded coordinates
        out[:, 2 - ky:2 - ky + h, 2 - kx:2 - kx + w] += taps[..., k]
    return out[:, None, 1:h + 1, 1:w + 1]


def _correlate3x3(rows: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """The transpose of :func:`_conv3x3` in its weight: ``(1, C, 3, 3)`` from the output's gradient ``grad``
    ``(N, 1, h, w)`` (what ``torch.nn.grad.conv2d_weight`` gives)."""
    n, _, h, w = grad.shape
    padded = F.pad(grad[:, 0], (1, 1, 1, 1))
    shifted = torch.stack([padded[:, 2 - ky:2 - ky + h, 2 - kx:2 - kx + w] for ky in range(3) for kx in range(3)],
                          dim=-1)
    return (rows.T @ shifted.reshape(-1, 9)).reshape(1, -1, 3, 3)
