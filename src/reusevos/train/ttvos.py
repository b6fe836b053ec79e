"""Training the TTVOS base model on snippets of cached frames, as it runs at test time.

Each snippet is one object in ``L`` frames in time order (with random gaps, :class:`SnippetSampler`): the first
frame's ground truth starts the memory (template, mask history, feature), every later frame is segmented from
the memory and the memory then takes in the model's own estimate, so the training sees the error propagation the
temporal consistency loss is there to curb. Gradients flow through the whole snippet (as in the authors' code).
Loss per frame = cross-entropy (binary, on the logits) + ``tc_weight`` * the temporal consistency loss.
The backbone is frozen: its features come from the cache.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reusevos.config import TtvosTrainConfig
from reusevos.model.network import VOSNetwork
from reusevos.train.losses import mask_iou, temporal_consistency_loss
from reusevos.train.samples import SnippetBatch


class TTVOSTrainer(nn.Module):
    """Wraps the network so one ``forward`` computes the whole snippet loss (DDP needs a module call)."""

    def __init__(self, network: VOSNetwork, config: TtvosTrainConfig):
        super().__init__()
        if network.base != "ttvos":
            raise ValueError(f"the network holds {network.base}, not TTVOS")
        self.network = network
        self.config = config
        network.backbone.requires_grad_(False)

    def forward(self, batch: SnippetBatch, iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        model = self.network.ttvos
        device = next(model.parameters()).device
        f4, f8, f16, f32 = (f.to(device) for f in batch.features)
        masks = batch.masks.to(device)
        size = tuple(masks.shape[-2:])
        memory = model.start(f8[0], model.frame_feature(f16[0], f32[0]), masks[0])
        previous = masks[0]  # the estimate the next frame's transition starts from: the given mask
        totals = {"ce": 0.0, "tc": 0.0}
        iou, weight = 0.0, 0.0
        steps = masks.shape[0] - 1
        for i in range(1, masks.shape[0]):
            feature16 = model.frame_feature(f16[i], f32[i])
            out = model(memory, f4[i], f8[i], feature16, size)
            estimate = torch.sigmoid(out.logits)
            totals["ce"] = totals["ce"] + F.binary_cross_entropy_with_logits(out.logits, masks[i])
            totals["tc"] = totals["tc"] + temporal_consistency_loss(out.transition, masks[i], previous)
            memory = model.remember(memory, out.update_weight, f8[i], feature16, estimate)
            previous = estimate
            iou += float(mask_iou(estimate.detach(), masks[i]).mean())
            weight += float(out.update_weight.detach().mean())
        loss = (totals["ce"] + self.config.tc_weight * totals["tc"]) / steps
        metrics = {k: float(v.detach()) / steps for k, v in totals.items()}
        metrics.update({"iou": iou / steps, "update_weight": weight / steps})
        return loss, metrics
