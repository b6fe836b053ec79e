"""The training loop shared by the refinement network and the dynamic network: single process, or
DistributedDataParallel under torchrun.

Resumable: ``RUN_DIR/last.pt`` holds the iteration, the trained module and the optimiser; a run
started again with the same folder continues where it stopped (an interrupt or SIGTERM saves
first). The data order depends only on (seed, rank, iteration), so a resumed run draws exactly what
the uninterrupted run would have drawn.
"""

from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from reusevos.errors import ReusevosError

# forward(model, batch, iteration) -> (loss, {name: value}) ; draw(rng) -> batch
LossFn = Callable[[nn.Module, Any, int], tuple[torch.Tensor, dict[str, float]]]


def distributed_context() -> tuple[int, int]:
    """(rank, world size); initialises the process group when started by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)


def lr_at(config, iteration: int) -> float:
    """Step schedule: ``lr`` times 0.1 for every fraction in ``config.lr_drops`` already passed."""
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


def train_loop(model: nn.Module, draw: Callable[[np.random.Generator], Any], loss_fn: LossFn,
               run_dir: str | os.PathLike, config, log: Callable[[str], None] = lambda _: None,
               resume_keys: tuple[str, ...] = ("batch", "crop", "seed"),
               snapshot: Callable[[int], None] | None = None) -> dict:
    """Optimise the parameters of ``model`` that require grad, with Adam, for ``config.iterations``.

    ``config`` needs iterations, lr, lr_drops, weight_decay, seed, checkpoint_every, log_every and
    the ``resume_keys`` (which must match a run being resumed); with ``snapshot`` and a positive
    ``config.snapshot_every``, ``snapshot(iteration)`` runs (rank 0) every that many iterations. Returns a
    summary dict.
    """
    snapshot_every = getattr(config, "snapshot_every", 0) if snapshot is not None else 0
    rank, world = distributed_context()
    run_dir = Path(run_dir)
    device = next(model.parameters()).device
    model.train()
    wrapped = model
    if world > 1:
        wrapped = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device] if device.type == "cuda" else None)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    start, elapsed = 0, 0.0
    resume_path = run_dir / "last.pt"
    if resume_path.is_file():
        state = torch.load(resume_path, map_location=device, weights_only=False)
        saved = state["train_config"]
        for key in resume_keys:
            if saved.get(key) != asdict(config)[key]:
                raise ReusevosError(f"{resume_path} was trained with {key}={saved.get(key)}, not "
                                    f"{asdict(config)[key]}; use the same settings to resume or another --out folder")
        model.load_state_dict(state["model"] if "model" in state else state["refiner"])
        optimizer.load_state_dict(state["optimizer"])
        start, elapsed = state["iteration"], state.get("elapsed", 0.0)
        log(f"resumed from {resume_path} at iteration {start}")

    def save(iteration: int) -> None:
        if rank == 0:
            tmp = resume_path.with_name("last.pt.tmp")
            torch.save({"iteration": iteration, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "train_config": asdict(config), "elapsed": elapsed}, tmp)
            os.replace(tmp, resume_path)

    flag = _StopFlag()
    log_file = open(run_dir / "log.jsonl", "a") if rank == 0 else None
    sums: dict[str, float] = {}
    count = 0
    iteration = start
    tick = began = time.perf_counter()
    try:
        while iteration < config.iterations:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(config, iteration)
            batch = draw(np.random.default_rng([config.seed, rank, iteration]))
            loss, metrics = loss_fn(wrapped, batch, iteration)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            iteration += 1
            for key, value in {"loss": loss.item(), **metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value)
            count += 1
            now = time.perf_counter()
            elapsed += now - tick
            tick = now
            if iteration % config.log_every == 0 and log_file is not None:
                entry = {"iteration": iteration, **{k: v / count for k, v in sums.items()},
                         "lr": lr_at(config, iteration - 1), "elapsed_s": round(elapsed, 1)}
                log_file.write(json.dumps(entry) + "\n")
                log_file.flush()
                shown = " ".join(f"{k} {v / count:.4f}" for k, v in sums.items())
                log(f"it {iteration}/{config.iterations} {shown} lr {entry['lr']:.1e} "
                    f"{(now - began) / (iteration - start):.2f} s/it")
                sums, count = {}, 0
            if iteration % config.checkpoint_every == 0:
                save(iteration)
            if snapshot_every and iteration % snapshot_every == 0 and rank == 0:
                snapshot(iteration)
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
    model.eval()
    return {"iterations": iteration, "wall_time_s": round(elapsed, 1), "processes": world, "rank": rank}
