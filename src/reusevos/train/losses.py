"""Losses of the dynamic network (Loss = Loss_gp + Loss_delta + BCE(mask)) and TTVOS's temporal consistency loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def margin(epoch: float, m1: float, ep_t: float) -> float:
    """The margin schedule m = m1 * min(epoch / ep_T, 1): it pushes the gate to reuse more over training."""
    return m1 * min(epoch / ep_t, 1.0) if ep_t > 0 else m1


def gate_target(iou: torch.Tensor, m: float) -> torch.Tensor:
    """P_target = max(m, IoU(y_t, y_{t-n})) per sample ``(B,)``."""
    return iou.clamp(min=m)


def gate_probability_loss(p_gate: torch.Tensor, p_target: torch.Tensor, m2: float) -> torch.Tensor:
    """Loss_gp = max(m2, |P_gate - P_target|)^2, averaged over the batch ``(B,)``.

    m2 is a dead zone: gate errors smaller than m2 all cost m2^2 (and give no gradient).
    """
    return (p_gate - p_target).abs().clamp(min=m2).square().mean()


def fixed_rate_gate_loss(p_gate: torch.Tensor, rate: float) -> torch.Tensor:
    """Loss_Ngate, the ablation: (mean P_gate over the batch - target reuse rate)^2."""
    return (p_gate.mean() - rate).square()


def delta_loss(delta: torch.Tensor, label_small: torch.Tensor, score_prev: torch.Tensor) -> torch.Tensor:
    """Loss_delta = L2(Delta_t, y'_t - S_prev), all ``(B, 1, H/16, W/16)``: the delta generator learns the
    change of the score since the last computed frame (y' is the ground truth at the score's size)."""
    return F.mse_loss(delta, label_small - score_prev)


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of binary masks ``(B, ...)`` per sample; 1 where both are empty."""
    a, b = a.flatten(1) > 0.5, b.flatten(1) > 0.5
    inter = (a & b).sum(1).float()
    union = (a | b).sum(1).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def straight_through(p_gate: torch.Tensor, threshold: float) -> torch.Tensor:
    """Hard decisions (1 = reuse) in the forward pass, the gradient of P_gate in the backward pass."""
    hard = (p_gate >= threshold).to(p_gate.dtype)
    return hard + p_gate - p_gate.detach()


def temporal_consistency_loss(transition: torch.Tensor, mask: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """TTVOS's temporal consistency loss: the predicted transition ``(B, 1, h, w)`` against the change from the
    previous frame's estimate ``previous`` to this frame's ground truth ``mask`` (both ``(B, 1, H, W)`` in [0, 1],
    averaged down to the transition's size), ``mean((T_hat - (y_t - y_hat_{t-1}))^2)``.

    The transition matrix turns the last estimate into this frame's truth; for a binary mask it is this
    difference (+1 where the object arrives, -1 where it leaves). The estimate keeps its gradient, as in the
    authors' code: the loss also pulls y_hat_{t-1} towards y_t - T_hat, which ties neighbouring outputs together.
    """
    size = transition.shape[-2:]
    change = F.adaptive_avg_pool2d(mask, size) - F.adaptive_avg_pool2d(previous, size)
    return F.mse_loss(transition, change)
