"""The whole benchmark run: sequences outer, settings inner, resumable from a JSON-lines file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import torch

from reusevos import __version__
from reusevos.config import QUICK_SEQUENCES, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.io.davis import DavisDataset, load_sequence
from reusevos.io.files import write_text
from reusevos.model.network import VOSNetwork
from reusevos.model.onnx_backbone import runtime_versions
from reusevos.provenance import machine_info, machine_label, source_commit, source_fingerprint, weights_info
from reusevos.runner import warm_up
from reusevos.bench.measure import RSS_INTERVAL_S, SequenceResult, count_flops, hwm_mb, run_setting
from reusevos.bench.report import _add_references, sequence_summary, summarise
from reusevos.bench.settings import Setting

REPORT_FORMAT = "reusevos-benchmark"
REPORT_VERSION = 1


def quick_sequences(dataset: DavisDataset, count: int = QUICK_SEQUENCES) -> list[str]:
    """``blackswan`` when the split has it, then the next sequences in split order, ``count`` in all."""
    names = dataset.sequences
    chosen = ["blackswan"] if "blackswan" in names else []
    return (chosen + [n for n in names if n not in chosen])[:count]


class PartialResults:
    """A JSON-lines file of finished (sequence, setting) results, for resuming.

    Every line carries the run's ``signature`` (weights, split, frames, size, threads, torch, the code's
    :func:`source_fingerprint`); a file written under another signature is refused, since its numbers
    would not compare. Every line also names the machine it was timed on (:func:`machine_label`): a run
    resumed on another kind of machine keeps its scores, and ``machines`` lets the report say that its
    timings mix machines. A last line cut short by an interruption is ignored (and overwritten by the next
    append).
    """

    def __init__(self, path: str | os.PathLike, signature: dict):
        self.path = Path(path)
        self.signature = signature
        self.done: dict[tuple[str, str], SequenceResult] = {}
        self.machines: dict[tuple[str, str], str] = {}
        if not self.path.is_file():
            return
        lines = self.path.read_text(encoding="utf-8").splitlines()
        good = 0
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                result = SequenceResult.from_dict(entry["result"])
            except (ValueError, KeyError, TypeError) as exc:
                if number == len(lines):
                    break  # an interrupted write
                raise ReusevosError(f"{self.path} line {number} is damaged ({exc}); delete the line or the file") \
                    from None
            if entry.get("signature") != signature:
                differ = sorted(k for k in set(signature) | set(entry.get("signature") or {})
                                if signature.get(k) != (entry.get("signature") or {}).get(k))
                raise ReusevosError(f"{self.path} holds results of another run (differs in {', '.join(differ)}); "
                                    "use another output file or folder, or delete it to start over")
            self.done[(result.sequence, result.setting)] = result
            self.machines[(result.sequence, result.setting)] = entry.get("machine", "unknown")
            good = number
        if good < len(lines):  # drop the torn tail so appends start on a fresh line
            self._rewrite(lines[:good])

    def _rewrite(self, lines: list[str]) -> None:
        write_text(self.path, "".join(line + "\n" for line in lines if line.strip()))

    def add(self, result: SequenceResult) -> None:
        self.done[(result.sequence, result.setting)] = result
        self.machines[(result.sequence, result.setting)] = machine_label()
        line = json.dumps({"signature": self.signature, "machine": machine_label(), "result": result.to_dict()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


# -- the whole run ------------------------------------------------------------------------------------------------
def run_signature(network: VOSNetwork, dataset: DavisDataset, max_frames: int | None, max_size: int | None) -> dict:
    """What must not change between the parts of a resumed run, or their numbers would not compare."""
    weights = weights_info(network)
    return {"weights": weights.get("sha256") or weights.get("file"), "split": dataset.split,
            "max_frames": max_frames, "max_size": max_size, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "device": str(network.device), "code": source_fingerprint(),
            "backbone_runtime": network.backbone.active_runtime(network.device), **runtime_versions()}


def run_benchmark(network: VOSNetwork, dataset: DavisDataset, settings: Sequence[Setting], *,
                  skipped: Sequence[dict] = (), max_frames: int | None = None, max_size: int | None = None,
                  partial: str | os.PathLike | None = None, flops: bool = True, warmup: bool = True,
                  command: str = "", log: Callable[[str], None] = lambda _: None) -> dict:
    """Run ``settings`` over ``dataset``'s sequences (sequences outer, settings inner) and report.

    Args:
        network: the model, in eval mode, on the device to measure.
        dataset: the sequences to run (every frame must be annotated).
        settings: from :func:`build_settings`; ``skipped`` its list of impossible combinations, reported.
        max_frames: only the first frames of each sequence (None = all).
        max_size: shrink frames whose longer side exceeds this (None = as stored); scores are then at
            that size.
        partial: JSON-lines file of per-sequence results: appended as they finish, done ones skipped.
        flops: count each path's FLOPs on the first sequence's frames 0 and 1.
        command: the command line, recorded.
        log: receives one line per finished (sequence, setting).

    Returns the report (see docs/speed.md and :func:`format_table`); JSON-serialisable.
    """
    if not settings:
        raise ReusevosError("no setting to run: every requested combination was skipped "
                            + "; ".join(f"{s['setting']}: {s['reason']}" for s in skipped))
    if max_frames is not None and max_frames < 3:
        raise ReusevosError(f"max_frames {max_frames}: scoring needs at least 3 frames")
    sequences = dataset.sequences
    if not sequences:
        raise ReusevosError(f"{dataset} has no sequence to run")
    weights = weights_info(network)
    threads = torch.get_num_threads()
    store = PartialResults(partial, run_signature(network, dataset, max_frames, max_size)) if partial else None
    run = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"
    started = time.time()
    flop_report = count_flops(network, load_sequence(dataset, sequences[0], 3, max_size)) if flops else None
    results: dict[tuple[str, str], SequenceResult] = dict(store.done) if store else {}
    resolutions: dict[str, list[int]] = {}
    warmup_s = None
    for index, sequence in enumerate(sequences, start=1):
        todo = [s for s in settings if (sequence, s.key) not in results]
        if not todo:
            resolutions[sequence] = list(results[(sequence, settings[0].key)].resolution)
            log(f"{sequence} [{index}/{len(sequences)}]: all settings already done")
            continue
        data = load_sequence(dataset, sequence, max_frames, max_size)
        resolutions[sequence] = list(data.resolution)
        if warmup and warmup_s is None:
            options = [SessionConfig("full", 1.0)] + ([SessionConfig("reuse", 0.0)] if network.has_gate else [])
            warmup_s = warm_up(network, data.frames[:3], data.start_masks[0], options, [s.runtime for s in settings])
        for setting in todo:
            result = run_setting(network, data, setting, run)
            results[(sequence, setting.key)] = result
            if store is not None:
                store.add(result)
            summary = sequence_summary(result)
            reuse = f", reuse {summary['reuse_rate']:.0%}" if setting.variant != "full" else ""
            log(f"{sequence} [{index}/{len(sequences)}] {setting.key}: {result.frames} frames, "
                f"{summary['fps']:.2f} FPS{reuse}, J&F {summary['J&F']:.3f}")
        del data
    summaries = [summarise(s, [results[(q, s.key)] for q in sequences], flop_report) for s in settings]
    for setting, summary in zip(settings, summaries):
        with network.backbone.runtime_as(setting.runtime):
            summary["backbone_runtime"] = network.backbone.active_runtime(network.device)
    _add_references(summaries)
    timed_on = sorted({store.machines.get((q, s.key), machine_label()) if store else machine_label()
                       for q in sequences for s in settings})
    return {
        "format": REPORT_FORMAT, "version": REPORT_VERSION, "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "wall_time_s": round(time.time() - started, 1),
        "reusevos": __version__, **source_commit(), "torch": torch.__version__, "threads": threads,
        "device": str(network.device), "machine": machine_info(), "timed_on": timed_on, "weights": weights,
        **runtime_versions(),  # onnxruntime, openvino
        "dataset": {"root": str(dataset.root), "split": dataset.split, "layout": dataset.layout,
                    "sequences": list(sequences), "max_frames": max_frames, "max_size": max_size,
                    "resolutions": resolutions, "frames": sum(r.frames for (q, k), r in results.items()
                                                              if k == settings[0].key and q in sequences)},
        "warmup_s": None if warmup_s is None else round(warmup_s, 3),
        "process_peak_rss_mb": None if hwm_mb() is None else round(hwm_mb(), 1),
        "memory": "peak_rss_mb: largest VmRSS of the whole process (model, one sequence's decoded frames, "
                  f"Python) sampled every {RSS_INTERVAL_S * 1000:g} ms while the setting ran; rss_increase_mb: "
                  "that peak minus the VmRSS when the setting started",
        "flops": flop_report, "settings": summaries, "skipped": list(skipped),
    }
