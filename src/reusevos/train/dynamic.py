"""Training the dynamic network: template matcher, gate, delta generator and refine-translator, on
snippets of cached frames, with hard gate decisions and straight-through gradients.

The refinement network stays frozen at the trained base model, so tau = 1 reproduces the base model
exactly. Each snippet starts with a computed frame (which builds the template); on every later frame
the gate decides, and S_prev / R_prev / y_{t-n} change only where it chose to compute, as at inference.

An optional warm-up (``stage = "pretrain"``, ours) trains the same modules teacher-forced and without
the shallow refinement levels: every later frame of a snippet is compared with its computed first frame.

G-TTVOS (:class:`TtvosDynamicTrainer`) trains the same modules with the same losses on a frozen TTVOS: template
matching reads the last computed frame's estimated mask (TTVOS has no score map), Delta_t learns the change of
the mask since then, and the translator stands in for the short-term feature, which the decoder then takes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reusevos.config import GateTrainConfig
from reusevos.errors import ReusevosError
from reusevos.model.network import VOSNetwork
from reusevos.model.ttvos import TTVOSMemory
from reusevos.train.losses import (delta_loss, fixed_rate_gate_loss, gate_probability_loss, gate_target, margin,
                                   mask_iou, straight_through)
from reusevos.train.samples import SnippetBatch


def gate_loss(cfg: GateTrainConfig, p_gate: torch.Tensor, mask: torch.Tensor, mask_prev: torch.Tensor,
              m: float) -> torch.Tensor:
    """The gate's loss on a frame: the paper's Loss_gp against max(m, IoU(y_t, y_last computed)), or with
    ``gate_loss = "ngate"`` the fixed-rate ablation."""
    if cfg.gate_loss == "gp":
        return gate_probability_loss(p_gate, gate_target(mask_iou(mask, mask_prev), m), cfg.m2)
    return fixed_rate_gate_loss(p_gate, cfg.ngate_rate)


class DynamicTrainer(nn.Module):
    """Wraps the network so one ``forward`` computes the whole snippet loss (DDP needs a module call)."""

    def __init__(self, network: VOSNetwork, config: GateTrainConfig):
        super().__init__()
        if not network.has_gate:
            raise ValueError("the network has no reuse-path modules")
        self.network = network
        self.config = config
        self.stage = "full"  # or "pretrain"
        network.refiner.requires_grad_(False)
        network.backbone.requires_grad_(False)

    def full_states(self, batch: SnippetBatch) -> torch.Tensor:
        """R of every frame on the full path ``(L, B, 64, S/16, S/16)`` (frozen, so computed without grad)."""
        refiner = self.network.refiner
        f16, f32 = batch.features[2], batch.features[3]
        with torch.no_grad():
            return torch.stack([refiner.deep(*refiner.reduce_deep(f16[i], f32[i]), batch.scores[i])
                                for i in range(batch.scores.shape[0])])

    def change_features(self, batch: SnippetBatch, frame: int) -> torch.Tensor:
        """D_t of ``frame`` against the template of frame 0, with S_prev = S_0 (used to calibrate the gate)."""
        net = self.network
        template = net.matcher.template(batch.features[1][0], batch.masks[0])
        return net.matcher(template, batch.features[1][frame], batch.scores[0])

    def forward(self, batch: SnippetBatch, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        if self.stage == "pretrain":
            return self.pretrain(batch)
        cfg, net = self.config, self.network
        refiner = net.refiner
        f4, f8 = batch.features[0], batch.features[1]
        scores, masks = batch.scores, batch.masks
        length = scores.shape[0]
        full_states = self.full_states(batch)
        m = margin(cfg.epoch(iteration), cfg.m1, cfg.ep_t)

        template = net.matcher.template(f8[0], masks[0])
        score_prev, state_prev, mask_prev = scores[0], full_states[0], masks[0]
        totals = {"bce": 0.0, "delta": 0.0, "gate": 0.0}
        reused, p_sum = 0.0, 0.0
        for i in range(1, length):
            p_gate, delta, loss_delta = self._reuse_step(template, f8[i], score_prev, masks[i])
            totals["delta"] = totals["delta"] + loss_delta
            totals["gate"] = totals["gate"] + gate_loss(cfg, p_gate, masks[i], mask_prev, m)
            reuse = straight_through(p_gate, cfg.threshold).view(-1, 1, 1, 1)
            score = reuse * (score_prev + delta) + (1 - reuse) * scores[i]
            state = reuse * net.translator(state_prev, delta) + (1 - reuse) * full_states[i]
            logits = refiner.shallow(state, *refiner.reduce_shallow(f4[i], f8[i]), score, masks.shape[-2:])
            totals["bce"] = totals["bce"] + F.binary_cross_entropy_with_logits(logits, masks[i])
            computed = (p_gate.detach() < cfg.threshold).view(-1, 1, 1, 1)
            score_prev = torch.where(computed, scores[i], score_prev)
            state_prev = torch.where(computed, full_states[i], state_prev)
            mask_prev = torch.where(computed, masks[i], mask_prev)
            reused += float((~computed).float().mean())
            p_sum += float(p_gate.detach().mean())
        loss, metrics = _averaged(totals, length - 1)
        metrics.update({"reuse": reused / (length - 1), "p_gate": p_sum / (length - 1), "margin": m})
        return loss, metrics

    def _reuse_step(self, template, f8, score_prev, mask):
        """A later frame against the last computed one: P_gate ``(B,)``, Delta and Loss_delta."""
        net = self.network
        change = net.matcher(template, f8, score_prev)
        delta = net.delta(change, score_prev.shape[-2:])
        label_small = F.interpolate(mask, size=score_prev.shape[-2:], mode="area")
        return net.gate(change), delta, delta_loss(delta, label_small, score_prev)

    def pretrain(self, batch: SnippetBatch) -> tuple[torch.Tensor, dict[str, float]]:
        """The warm-up loss: frame 0 of the snippet is the last computed frame of every later frame i, so
        Loss_gp(P_gate, IoU(y_i, y_0)) + Loss_delta(Delta_i, y'_i - S_0) + the translator's relative error
        against the full path's state R_i (its input Delta detached, so it does not steer the gate)."""
        net, cfg = self.network, self.config
        f8, scores, masks = batch.features[1], batch.scores, batch.masks
        full_states = self.full_states(batch)
        template = net.matcher.template(f8[0], masks[0])
        totals = {"gate": 0.0, "delta": 0.0, "state": 0.0}
        p_sum = 0.0
        for i in range(1, scores.shape[0]):
            p_gate, delta, loss_delta = self._reuse_step(template, f8[i], scores[0], masks[i])
            totals["gate"] = totals["gate"] + gate_probability_loss(p_gate, mask_iou(masks[i], masks[0]), cfg.m2)
            totals["delta"] = totals["delta"] + loss_delta
            translated = net.translator(full_states[0], delta.detach())
            totals["state"] = totals["state"] + (F.mse_loss(translated, full_states[i])
                                                 / full_states[i].square().mean().clamp(min=1e-6))
            p_sum += float(p_gate.detach().mean())
        loss, metrics = _averaged(totals, scores.shape[0] - 1)
        metrics["p_gate"] = p_sum / (scores.shape[0] - 1)
        return loss, metrics


class TtvosDynamicTrainer(nn.Module):
    """G-TTVOS's trainer: TTVOS frozen, so tau = 1 reproduces it exactly. Each snippet runs as at test time: frame
    0's ground truth starts the memory; on a later frame the gate decides, the short-term feature is TTVOS's
    (computed) or the translator's (reused), the decoder runs from it, and only computed frames move the memory
    on (with the model's own estimate) and become the last computed state. Loss per frame: Loss_gp (target
    max(m, IoU of the ground truths of this frame and the last computed one)) + Loss_delta (Delta_t against the
    change of the mask at stride 16 since the last computed estimate) + the cross-entropy of the output."""

    def __init__(self, network: VOSNetwork, config: GateTrainConfig):
        super().__init__()
        if not network.has_gate or network.base != "ttvos":
            raise ValueError("G-TTVOS training needs TTVOS with the reuse-path modules")
        if config.pretrain_iterations:
            raise ReusevosError("the warm-up (--pretrain-iterations) is G-FRTM's; G-TTVOS trains without it")
        self.network = network
        self.config = config
        self.stage = "full"
        network.ttvos.requires_grad_(False)
        network.backbone.requires_grad_(False)

    def change_features(self, batch: SnippetBatch, frame: int) -> torch.Tensor:
        """D_t of ``frame`` against the template of frame 0, guided by frame 0's mask (used to calibrate the gate)."""
        net, f8, masks = self.network, batch.features[1], batch.masks
        guide = F.adaptive_avg_pool2d(masks[0], f8[0].shape[-2:])
        return net.matcher(net.matcher.template(f8[0], masks[0]), f8[frame], guide)

    def forward(self, batch: SnippetBatch, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, net, model = self.config, self.network, self.network.ttvos
        f4, f8, f16, f32 = batch.features
        masks = batch.masks
        size = tuple(masks.shape[-2:])
        m = margin(cfg.epoch(iteration), cfg.m1, cfg.ep_t)
        with torch.no_grad():
            feature16 = model.frame_feature(f16[0], f32[0])
            memory = model.start(f8[0], feature16, masks[0])
            state_prev = model.short_term_feature(memory, feature16)
        template = net.matcher.template(f8[0], masks[0])
        mask_prev = masks[0]
        totals = {"bce": 0.0, "delta": 0.0, "gate": 0.0}
        reused, p_sum, iou = 0.0, 0.0, 0.0
        length = masks.shape[0]
        for i in range(1, length):
            change = net.matcher(template, f8[i], memory.masks8[:, :1])
            p_gate = net.gate(change)
            estimate16 = memory.masks16[:, :1]
            delta = net.delta(change, estimate16.shape[-2:])
            totals["delta"] = totals["delta"] + delta_loss(
                delta, F.adaptive_avg_pool2d(masks[i], estimate16.shape[-2:]), estimate16)
            totals["gate"] = totals["gate"] + gate_loss(cfg, p_gate, masks[i], mask_prev, m)
            with torch.no_grad():
                feature16 = model.frame_feature(f16[i], f32[i])
                short_full = model.short_term_feature(memory, feature16)
            reuse = straight_through(p_gate, cfg.threshold).view(-1, 1, 1, 1)
            out = model.decode(memory, reuse * net.translator(state_prev, delta) + (1 - reuse) * short_full,
                               f4[i], f8[i], size)
            totals["bce"] = totals["bce"] + F.binary_cross_entropy_with_logits(out.logits, masks[i])
            computed = p_gate.detach() < cfg.threshold
            with torch.no_grad():
                estimate = torch.sigmoid(out.logits)
                moved_on = model.remember(memory, out.update_weight, f8[i], feature16, estimate)
                memory = _rows_where(computed, moved_on, memory)
                iou += float(mask_iou(estimate, masks[i]).mean())
            state_prev = torch.where(computed.view(-1, 1, 1, 1), short_full, state_prev)
            mask_prev = torch.where(computed.view(-1, 1, 1, 1), masks[i], mask_prev)
            reused += float((~computed).float().mean())
            p_sum += float(p_gate.detach().mean())
        loss, metrics = _averaged(totals, length - 1)
        metrics.update({"reuse": reused / (length - 1), "p_gate": p_sum / (length - 1), "margin": m,
                        "iou": iou / (length - 1)})
        return loss, metrics


def _rows_where(condition: torch.Tensor, a: TTVOSMemory, b: TTVOSMemory) -> TTVOSMemory:
    """Per object (row), ``a``'s memory where ``condition`` ``(B,)`` holds, else ``b``'s."""
    return TTVOSMemory(*(torch.where(condition.view(-1, *[1] * (x.dim() - 1)), x, y)
                         for x, y in zip(a._tensors(), b._tensors())))


def _averaged(totals: dict[str, torch.Tensor], steps: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The loss (sum of the summed terms over ``steps`` frames) and each term per frame, for the log."""
    return sum(totals.values()) / steps, {k: float(v.detach()) / steps for k, v in totals.items()}


@torch.no_grad()
def calibrate_gate(trainer: DynamicTrainer, batches: list[SnippetBatch], rate: float) -> float:
    """Set the gate's final bias so a fraction ``rate`` of the frames in ``batches`` would reuse at the
    training threshold (the paper starts at about 15%). Returns the measured rate afterwards."""
    trainer.train()  # batch-norm statistics as in training
    gate = trainer.network.gate
    changes = torch.cat([trainer.change_features(b, i) for b in batches for i in range(1, b.scores.shape[0])])
    gate.calibrate(gate.logits(changes), rate, trainer.config.threshold)
    return float((gate(changes) >= trainer.config.threshold).float().mean())
