"""The training loop for the refinement network: single process, or DistributedDataParallel under torchrun.

Resumable: ``RUN_DIR/last.pt`` holds the iteration, the network and the optimiser; a run started
again with the same folder continues where it stopped (an interrupt or SIGTERM saves first). The
data order depends only on (seed, rank, iteration), so a resumed run draws what the uninterrupted
run would have drawn.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

from reusevos.config import TrainConfig
from reusevos.errors import ReusevosError
from reusevos.model.network import VOSNetwork, save_checkpoint
from reusevos.train.samples import RefinerSampler


def distributed_context() -> tuple[int, int]:
    """(rank, world size); initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def _lr_at(config: TrainConfig, iteration: int) -> float:
    drops = sum(iteration >= f * config.iterations for f in config.lr_drops)
    return config.lr * (0.1 ** drops)


class _StopFlag:
    """Set by SIGTERM so the loop can checkpoint before leaving."""

    def __init__(self):
        self.stop = False
        try:
            signal.signal(signal.SIGTERM, self._handler)
        except ValueError:  # not the main thread
            pass

    def _handler(self, *_):
        self.stop = True


def train_refiner(network: VOSNetwork, sampler: RefinerSampler, run_dir: str | os.PathLike,
                  config: TrainConfig, meta: dict | None = None,
                  log: Callable[[str], None] = lambda _: None) -> dict:
    """Train ``network.refiner`` with BCE on cached samples; returns a summary.

    Writes ``last.pt`` (resume state) every ``checkpoint_every`` iterations, ``log.jsonl`` (loss per
    ``log_every`` iterations) and, at the end, ``refiner.pt`` in the model checkpoint format.
    """
    rank, world = distributed_context()
    run_dir = Path(run_dir)
    device = network.device
    refiner = network.refiner
    refiner.train()
    model = refiner
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(refiner, device_ids=[device] if device.type == "cuda" else None)
    optimizer = torch.optim.Adam(refiner.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    start, elapsed = 0, 0.0
    resume_path = run_dir / "last.pt"
    if resume_path.is_file():
        state = torch.load(resume_path, map_location=device, weights_only=False)
        saved = state["train_config"]
        for key in ("batch", "crop", "seed"):
            if saved[key] != asdict(config)[key]:
                raise ReusevosError(f"{resume_path} was trained with {key}={saved[key]}, not {asdict(config)[key]}; "
                                    "use the same settings to resume or another --out folder")
        refiner.load_state_dict(state["refiner"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = state["iteration"], state.get("elapsed", 0.0)
        log(f"resumed from {resume_path} at iteration {start}")

    def save(iteration: int) -> None:
        if rank == 0:
            tmp = resume_path.with_name("last.pt.tmp")
            torch.save({"iteration": iteration, "refiner": refiner.state_dict(), "optimizer": optimizer.state_dict(),
                        "train_config": asdict(config), "elapsed": elapsed}, tmp)
            os.replace(tmp, resume_path)

    flag = _StopFlag()
    log_file = open(run_dir / "log.jsonl", "a") if rank == 0 else None
    running, count = 0.0, 0
    iteration = start
    tick = time.perf_counter()
    try:
        while iteration < config.iterations:
            for group in optimizer.param_groups:
                group["lr"] = _lr_at(config, iteration)
            rng = np.random.default_rng([config.seed, rank, iteration])
            batch = sampler.draw(rng, config.batch)
            feats = tuple(f.to(device) for f in batch.features)
            logits = model(feats, batch.scores.to(device), batch.masks.shape[-2:])
            loss = F.binary_cross_entropy_with_logits(logits, batch.masks.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
            running += loss.item()
            count += 1
            now = time.perf_counter()
            elapsed += now - tick
            tick = now
            if iteration % config.log_every == 0 and log_file is not None:
                entry = {"iteration": iteration, "loss": running / count, "lr": _lr_at(config, iteration - 1),
                         "elapsed_s": round(elapsed, 1)}
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
                log(f"it {iteration}/{config.iterations} loss {entry['loss']:.4f} lr {entry['lr']:.1e} "
                    f"{elapsed / max(1, iteration - start):.2f} s/it")
                running, count = 0.0, 0
            if iteration % config.checkpoint_every == 0:
                save(iteration)
            if flag.stop:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        save(iteration)
        log(f"stopped at iteration {iteration}; state saved to {resume_path}, run the same command to resume")
        raise
    finally:
        if log_file is not None:
            log_file.close()
    save(iteration)
    refiner.eval()
    summary = {"iterations": iteration, "wall_time_s": round(elapsed, 1), "processes": world}
    if rank == 0:
        save_checkpoint(run_dir / "refiner.pt", network, meta={**(meta or {}), "training": summary,
                                                               "train_config": asdict(config)}, half=True)
    return summary
