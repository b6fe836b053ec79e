"""The paper's ablations (Table 2, Fig. 7 and 8) in one resumable run: the benchmark over variants x taus.

:func:`run_ablation` runs :func:`reusevos.bench.run.run_benchmark` for every variant (``reuse``, ``copy``,
``fusion``, ``oracle`` by default) at every tau, appending each finished (sequence, setting) to
``OUT/partial.jsonl`` so that an interrupted run resumes where it stopped, then writes:

- ``OUT/ablation.json``: the benchmark report (machine, threads, commit, every setting's figures);
- ``OUT/ablation.csv``: one row per setting, skipped ones with the reason;
- ``OUT/ablation.md``: the table in Markdown with the command, machine, threads and commit, for the README;
- ``OUT/fig7_jf_vs_fps.png`` and ``OUT/fig8_jf_vs_reuse.png``: J&F against FPS and against the reuse
  rate, one line per variant, points labelled with tau (matplotlib, the optional ``reusevos[plots]``).

``flow`` (ours) runs as the whole-video default does (:func:`reusevos.config.offline_config`: the longest gap, the
lookahead and the memory clock), so its curve passes through the setting ``reusevos segment`` runs; ``compute_window``
applies to every setting (0, the default, is the paper's whole-frame refinement).

``fusion`` uses one fixed ``tau2`` (0.9 by default) for every tau below it; at tau >= tau2 it cannot run
and is listed as skipped. At tau = 1 no variant reuses, so every variant computes the same frames: only the
first variant with the paper's gate runs there and the others' rows repeat its figures (``measured_as`` names it);
``flow``, which has no such gate, repeats ``full``'s when the grid has it.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path
from typing import Callable, Sequence

from reusevos.bench.figures import FIGURES, plot_figure, require_matplotlib
from reusevos.bench.report import format_markdown
from reusevos.bench.run import PartialResults, run_benchmark, run_signature
from reusevos.bench.settings import GATE_FREE, Setting, build_settings
from reusevos.config import AblationConfig, offline_config
from reusevos.errors import ReusevosError
from reusevos.io.davis import DavisDataset
from reusevos.io.files import write_json, write_text
from reusevos.model.network import VOSNetwork

PARTIAL_FILE = "partial.jsonl"

CSV_COLUMNS = ("setting", "variant", "tau", "tau2", "status", "frames", "fps", "fps_excl_init", "speedup",
               "speedup_reference", "init_s_per_object", "reuse_rate", "J&F", "J", "F", "c", "c_reference",
               "gflops_per_frame", "computation_saved", "peak_rss_mb", "measured_as", "note")


def run_ablation(network: VOSNetwork, dataset: DavisDataset, out_dir: str | os.PathLike,
                 variants: Sequence[str] = AblationConfig.variants, taus: Sequence[float] = AblationConfig.taus,
                 tau2: float = AblationConfig.tau2, *, compute_window: int = 0, max_frames: int | None = None,
                 max_size: int | None = None, plots: bool = True, finished_only: bool = False, command: str = "",
                 log: Callable[[str], None] = lambda _: None) -> dict:
    """Run the ablation into ``out_dir`` (resuming from ``out_dir/partial.jsonl``); returns the report with
    ``report["files"]`` naming what was written.

    ``finished_only``: compute nothing; write the outputs from the sequences that ``partial.jsonl`` already
    holds for every setting (a look at a long run while it goes on; the report names those sequences).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ReusevosError(f"output {out} is a file; give a folder")
    if plots:
        require_matplotlib()  # fail before hours of computing, not after
    settings, skipped = ablation_settings(variants, taus, tau2, compute_window, network.has_gate)
    measured_as = _same_at_tau_one(settings)
    to_run = [s for s in settings if s.key not in measured_as]
    if finished_only:
        dataset = _finished_part(network, dataset, to_run, out / PARTIAL_FILE, max_frames, max_size)
    out.mkdir(parents=True, exist_ok=True)
    report = run_benchmark(network, dataset, to_run, skipped=skipped, max_frames=max_frames, max_size=max_size,
                           partial=out / PARTIAL_FILE, command=command, log=log)
    by_key = {s["setting"]: s for s in report["settings"]}
    report["settings"] = [by_key[s.key] if s.key not in measured_as else
                          {**by_key[measured_as[s.key]], "setting": s.key, "variant": s.variant,
                           "measured_as": measured_as[s.key]} for s in settings]
    files = {"json": out / "ablation.json", "csv": out / "ablation.csv", "markdown": out / "ablation.md",
             "partial": out / PARTIAL_FILE}
    write_text(files["csv"], to_csv(report))
    write_text(files["markdown"], format_markdown(report))
    if plots:
        for kind, name in FIGURES.items():
            files[kind] = out / name
            plot_figure(report, kind, files[kind])
    report["files"] = {k: str(v) for k, v in files.items()}
    write_json(files["json"], report)
    return report


def ablation_settings(variants: Sequence[str], taus: Sequence[float], tau2: float, compute_window: int = 0,
                      has_gate: bool = True) -> tuple[list[Setting], list[dict]]:
    """The ablation's grid (:func:`build_settings`'s settings and skipped ones): every variant at every tau with
    one compute window, flow with the whole-video default's options."""
    shipped = offline_config()
    return build_settings(variants, taus, [tau2], has_gate, compute_windows=[compute_window],
                          flow_max_gaps=[shipped.flow_max_gap], lookaheads=[shipped.lookahead],
                          memory_clocks=[shipped.memory_clock])


def _same_at_tau_one(settings) -> dict[str, str]:
    """Setting key -> the key of the setting whose run stands for it at tau = 1, where nothing reuses: the first
    variant with the paper's gate stands for the others with it (all run the template matcher and the gate, then
    compute every frame), and ``full`` for the gate-free ``flow``, which at tau 1 is the base model at its cost
    (without ``full`` in the grid, flow runs itself). ``full`` is its own setting and always runs."""
    full = next((s for s in settings if s.variant == "full"), None)
    at_one = [s for s in settings if s.tau == 1.0 and s.variant != "full"]
    gated = next((s for s in at_one if s.variant not in GATE_FREE), None)
    free = full or next((s for s in at_one if s.variant in GATE_FREE), None)
    stands = {s.key: (free if s.variant in GATE_FREE else gated).key for s in at_one}
    return {key: first for key, first in stands.items() if key != first}


def _finished_part(network, dataset: DavisDataset, settings, partial: Path, max_frames, max_size) -> DavisDataset:
    """The part of ``dataset`` whose sequences ``partial`` holds for every setting."""
    if not partial.is_file():
        raise ReusevosError(f"{partial} does not exist: nothing has finished yet")
    store = PartialResults(partial, run_signature(network, dataset, max_frames, max_size))
    done = [q for q in dataset.sequences if all((q, s.key) in store.done for s in settings)]
    if not done:
        raise ReusevosError(f"no sequence has finished every setting yet in {partial}")
    return DavisDataset(dataset.root, split=dataset.split, sequences=done)


def to_csv(report: dict) -> str:
    """One row per setting (:data:`CSV_COLUMNS`), then the skipped ones (``status`` = skipped, ``note`` why)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for s in report["settings"]:
        writer.writerow({**{k: "" if s.get(k) is None else s.get(k) for k in CSV_COLUMNS}, "status": "ok", "note": ""})
    for s in report.get("skipped", []):
        writer.writerow({"setting": s["setting"], "variant": s["variant"], "tau": s["tau"],
                         "tau2": "" if s["tau2"] is None else s["tau2"], "status": "skipped", "note": s["reason"]})
    return buffer.getvalue()
