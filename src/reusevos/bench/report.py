"""A benchmark report: per-setting figures over the sequences, ratios within the run, and its tables."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from reusevos.evaluation.davis_eval import DavisScores
from reusevos.model.onnx_backbone import RUNTIME_NAMES, RUNTIME_PACKAGES
from reusevos.runner import FRAME_KINDS
from reusevos.session import SUB_STAGES, Route, Stage
from reusevos.bench.measure import SequenceResult
from reusevos.bench.settings import Setting


STAGE_ORDER = (*(stage.value for stage in Stage), "other", "mask_encoding")
"""Every stage of a report, in the order of the paper's Fig. 2 (``mask_encoding`` is outside the FPS)."""
OBJECT_ROUTES = tuple(route.value for route in Route)


def summarise(setting: Setting, results: Sequence[SequenceResult], flops: dict | None = None) -> dict:
    """One setting's figures over its sequences: FPS = total frames / total time, J&F over all objects."""
    frames = sum(r.frames for r in results)
    time_s = sum(r.time_s for r in results)
    init_s = sum(r.init_s for r in results)
    # .get: a result stored before a kind or route existed (a resumed run) has none of it
    kinds = {k: [sum(r.kinds.get(k, [0, 0.0])[0] for r in results), sum(r.kinds.get(k, [0, 0.0])[1] for r in results)]
             for k in FRAME_KINDS}
    tracked_frames = frames - kinds["start"][0]
    tracked_time = time_s - kinds["start"][1]
    started = [o for r in results for o in r.objects.values() if o["started"]]
    rates = [o["reused"] / o["tracked"] if o["tracked"] else 0.0 for o in started]
    scores = DavisScores([s for r in results for s in r.object_scores()]).global_scores()
    names = list(STAGE_ORDER) + sorted({k for r in results for k in r.stages_s} - set(STAGE_ORDER))
    stages = {k: sum(r.stages_s.get(k, 0.0) for r in results) for k in names}
    object_frames = {k: sum(r.object_frames.get(k, 0) for r in results) for k in OBJECT_ROUTES}

    def mean_ms(kind: str) -> float | None:
        n, seconds = kinds[kind]
        return 1000 * seconds / n if n else None

    computed = mean_ms("computed")
    reused = mean_ms(_reused_kind(setting.variant))
    c = reused / computed if computed and reused is not None else None
    c_copy = mean_ms("copied") / computed if computed and mean_ms("copied") is not None else None
    peaks = [r.peak_rss_mb for r in results if r.peak_rss_mb is not None]
    increases = [r.rss_increase_mb for r in results if r.rss_increase_mb is not None]
    summary = {
        "setting": setting.key, "variant": setting.variant, "tau": setting.tau, "tau2": setting.tau2,
        "reuse_window": setting.window, "compute_window": setting.compute_window,
        "flow_max_gap": setting.flow_max_gap, "lookahead": setting.lookahead,
        "memory_clock": setting.memory_clock, "reuse_max_gap": setting.reuse_max_gap, "sequences": len(results),
        "frames": frames, "objects": len(started),
        "time_s": round(time_s, 4), "init_s": round(init_s, 4),
        "fps": round(frames / time_s, 4) if time_s else None,
        "fps_excl_init": round(tracked_frames / tracked_time, 4) if tracked_frames and tracked_time > 0 else None,
        "init_s_per_object": round(init_s / len(started), 4) if started else None,
        "reuse_rate": round(float(np.mean(rates)), 4) if rates else 0.0,
        "J&F": round(scores["J&F-Mean"], 4), "J": round(scores["J-Mean"], 4), "F": round(scores["F-Mean"], 4),
        "scores": {k: round(v, 4) for k, v in scores.items()},
        "c": None if c is None else round(c, 4), "c_reference": None if c is None else setting.key,
        "c_copy": None if c_copy is None else round(c_copy, 4),
        "frame_ms": {k: None if mean_ms(k) is None else round(mean_ms(k), 2) for k in FRAME_KINDS},
        "frame_kinds": {k: kinds[k][0] for k in FRAME_KINDS},
        "object_frames": object_frames,
        "peak_rss_mb": round(max(peaks), 1) if peaks else None,
        "rss_increase_mb": round(max(increases), 1) if increases else None,
        "stages_ms_per_frame": {k: round(1000 * v / frames, 3) for k, v in stages.items()} if frames else {},
        "stages_s": {k: round(v, 4) for k, v in stages.items()},
        "per_sequence": [sequence_summary(r) for r in results],
        "runs": sorted({r.run for r in results if r.run}),
    }
    summary.update(_computation(setting, object_frames, flops))
    return summary


def _reused_kind(variant: str) -> str:
    """The frame kind whose cost ``c`` compares: copied frames for the copy variant, moved ones for motion and
    flow, else reuse-path frames."""
    return {"copy": "copied", "motion": "moved", "flow": "moved"}.get(variant, "reused")


def sequence_summary(result: SequenceResult) -> dict:
    scores = DavisScores(result.object_scores()).global_scores()
    rates = [o["reused"] / o["tracked"] if o["tracked"] else 0.0 for o in result.objects.values() if o["started"]]
    return {"sequence": result.sequence, "frames": result.frames,
            "fps": round(result.frames / result.time_s, 4) if result.time_s else None,
            "init_s": round(result.init_s, 4), "reuse_rate": round(float(np.mean(rates)), 4) if rates else 0.0,
            "J&F": round(scores["J&F-Mean"], 4), "J": round(scores["J-Mean"], 4), "F": round(scores["F-Mean"], 4),
            "J-Decay": round(scores["J-Decay"], 4)}


def _computation(setting: Setting, object_frames: dict[str, int], flops: dict | None) -> dict:
    """GFLOPs per frame and the share saved against the setting's own full path (every frame computed):
    saved = share of reuse-path object-frames x (1 - F_reuse / F_computed) + the same for copies.
    Exact for single-object sequences; an estimate with several objects (the per-frame part is shared)."""
    if not flops:
        return {"gflops_per_frame": None, "computation_saved": None}
    g = flops["gflops"]
    # The flow variant's computed frames are the base model's (no template matching); its moved frames run no
    # network. The motion variant's moved frames run what a copied frame runs (the backbone to f8 and the gate).
    reference = g.get("computed") if setting.variant not in ("full", "flow") else g.get("full")
    if not reference:
        return {"gflops_per_frame": None, "computation_saved": None}
    tracked = sum(object_frames.values())
    saved = 0.0
    if tracked:
        moved = "flow" if setting.variant == "flow" else "copy"
        for path, key in (("reused", "reuse"), ("copied", "copy"), ("moved", moved)):
            if object_frames[path] and g.get(key) is not None:
                saved += object_frames[path] / tracked * (1 - g[key] / reference)
    return {"gflops_per_frame": round(reference * (1 - saved), 4), "computation_saved": round(saved, 4)}


def _add_references(summaries: list[dict]) -> None:
    """Ratios against other settings of the same report (so from the same run).

    References are taken among the settings with the same backbone runtime, so a ratio never mixes runtimes.
    ``speedup``: fps over that of ``full`` (without a compute window when it ran, else with one) when it
    ran, else (for tau < 1) of a setting at tau = 1 (which never reuses), preferably of the same variant
    and compute window; ``speedup_reference`` names it.
    ``c`` of a setting without computed frames of its own (every frame reused, e.g. tau = 0): its reused
    frames against the computed frames of a setting at tau = 1 (the same variant and compute window
    preferred: the dynamic network's full path, gate included), else of ``full``; ``c_reference`` names it.
    """
    def peers(summary: dict) -> list[dict]:
        return [s for s in summaries if s.get("backbone_runtime") == summary.get("backbone_runtime")]

    def full_of(summary: dict, window: int, need_computed: bool = False) -> dict | None:
        """The ``full`` setting of the summary's runtime, the one with compute window ``window`` if it ran."""
        fulls = [s for s in peers(summary) if s["variant"] == "full" and (s["frame_ms"]["computed"] or not need_computed)]
        return min(fulls, key=lambda s: (s.get("compute_window") or 0) != window, default=None)

    def at_tau_one(summary: dict, need_computed: bool) -> dict | None:
        candidates = [s for s in peers(summary) if s["tau"] == 1.0 and s["variant"] != "full" and s is not summary
                      and (s["frame_ms"]["computed"] or not need_computed)]
        return min(candidates, default=None, key=lambda s: (s["variant"] != summary["variant"],
                                                            s.get("compute_window") != summary.get("compute_window")))

    for summary in summaries:
        reused = summary["frame_ms"][_reused_kind(summary["variant"])]
        if summary["c"] is None and reused is not None:
            reference = at_tau_one(summary, True) or full_of(summary, summary.get("compute_window") or 0, True)
            if reference is not None:
                summary["c"] = round(reused / reference["frame_ms"]["computed"], 4)
                summary["c_reference"] = reference["setting"]
    for summary in summaries:
        full = full_of(summary, 0)
        if summary is full:
            reference = None
        elif full is not None:
            reference = full
        elif summary["tau"] == 1.0:
            reference = None  # it is a reference itself
        else:
            reference = at_tau_one(summary, False)
        if reference and reference["fps"] and summary["fps"]:
            summary["speedup"] = round(summary["fps"] / reference["fps"], 4)
            summary["speedup_reference"] = reference["setting"]
        else:
            summary["speedup"] = summary["speedup_reference"] = None


# -- text ---------------------------------------------------------------------------------------------------------
def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def text_table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """Aligned plain text: the first ``left`` columns left-aligned, the rest right-aligned."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) if rows else len(str(h))
              for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(str(c).ljust(w) if i < left else str(c).rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_table(report: dict) -> str:
    """One line per setting: speed, initialisation, reuse, accuracy, cost ratio, computation, memory;
    skipped settings last with their reason."""
    headers = ["setting", "frames", "FPS", "FPS-init", "speedup", "init s/obj", "reuse", "J&F", "J", "F", "c",
               "GFLOP/f", "saved", "peak MB"]
    rows = []
    for s in report["settings"]:
        rows.append([s["setting"], str(s["frames"]), _fmt(s["fps"], ".2f"), _fmt(s["fps_excl_init"], ".2f"),
                     _fmt(s.get("speedup"), ".2f"), _fmt(s["init_s_per_object"], ".2f"),
                     f"{s['reuse_rate']:.1%}", f"{s['J&F']:.3f}", f"{s['J']:.3f}", f"{s['F']:.3f}",
                     _fmt(s["c"], ".2f"), _fmt(s["gflops_per_frame"], ".2f"), _fmt(s["computation_saved"], ".1%"),
                     _fmt(s["peak_rss_mb"], ".0f")])
    table = text_table(headers, rows)
    skipped = report.get("skipped", [])
    if skipped:
        table += "\nskipped: " + "; ".join(f"{s['setting']} ({s['reason']})" for s in skipped)
    return table


def format_stage_table(report: dict) -> str:
    """Milliseconds per frame of each stage (rows) for each setting (columns); sub-stages indented."""
    settings = report["settings"]
    parent = {child.value: p.value for p, children in SUB_STAGES.items() for child in children}
    rows = []
    for stage in STAGE_ORDER:
        values = [s["stages_ms_per_frame"].get(stage) for s in settings]
        if not any(values) and stage not in ("initialisation", "mask_encoding"):
            continue
        label = ("  " + stage if stage in parent else stage) + (" (not in FPS)" if stage == "mask_encoding" else "")
        rows.append([label] + [_fmt(v, ".1f") for v in values])
    rows.append(["frame, mean"] + [_fmt(1000 * s["time_s"] / s["frames"] if s["frames"] else None, ".1f")
                                   for s in settings])
    for kind in ("computed", "reoptimised", "reused", "copied", "moved"):
        if any(s["frame_ms"].get(kind) is not None for s in settings):
            rows.append([f"{kind} frame, mean"] + [_fmt(s["frame_ms"].get(kind), ".1f") for s in settings])
    return text_table(["ms per frame"] + [s["setting"] for s in settings], rows)


def format_header(report: dict) -> str:
    """Where and how the numbers were measured, in two lines."""
    machine = report["machine"]
    data = report["dataset"]
    sizes = sorted({f"{w}x{h}" for h, w in data["resolutions"].values()})
    commit = report["commit"][:12] + ("+dirty" if report.get("dirty") else "")
    gflops = ""
    if report.get("flops"):
        g = report["flops"]["gflops"]
        gflops = "; GFLOPs per frame " + ", ".join(f"{k} {v:.2f}" for k, v in g.items())
    timed_on = report.get("timed_on", [])
    mixed = (f" (resumed run: timed on {len(timed_on)} kinds of machine, {'; '.join(timed_on)}; FPS and timings "
             "mix them)") if len(timed_on) > 1 else ""
    used = {s.get("backbone_runtime", "torch") for s in report["settings"]}
    runtimes = [r for r in RUNTIME_NAMES if r in used]
    backbone = ", backbone in " + " and ".join(  # each runtime with its package's version, when the report has it
        RUNTIME_NAMES[r] + (f" {report[RUNTIME_PACKAGES[r]]}" if report.get(RUNTIME_PACKAGES.get(r)) else "")
        for r in runtimes)
    return (f"{machine['cpu_model']}, {report['threads']} threads, torch {report['torch']}{backbone}, commit "
            f"{commit}{mixed}\n"
            f"{(report.get('weights') or {}).get('model') or 'frtm'} model; "  # reports before TTVOS: FRTM's
            f"{data['split']}: {len(data['sequences'])} sequences, {data['frames']} frames at {', '.join(sizes)}"
            + (f" (first {data['max_frames']} frames)" if data["max_frames"] else "") + gflops)


def format_markdown(report: dict) -> str:
    """The main table as Markdown, preceded by the command, machine, threads, commit and resolution, for
    pasting into the README unchanged (J&F, J, F and reuse in %)."""
    headers = ["setting", "FPS", "FPS w/o init", "speed-up", "init s/object", "reused", "J&F", "J", "F", "c",
               "GFLOPs/frame", "computation saved", "peak RSS MB"]
    lines = [f"`{report['command']}`" if report.get("command") else "", "",
             format_header(report).replace("\n", "; ") + ".", "",
             "| " + " | ".join(headers) + " |", "|" + "|".join(["---"] + ["---:"] * (len(headers) - 1)) + "|"]
    for s in report["settings"]:
        speedup = "" if s.get("speedup") is None else f"{s['speedup']:.2f}x vs {s['speedup_reference']}"
        cells = [s["setting"], _fmt(s["fps"], ".2f"), _fmt(s["fps_excl_init"], ".2f"), speedup or "-",
                 _fmt(s["init_s_per_object"], ".2f"), f"{100 * s['reuse_rate']:.1f}", f"{100 * s['J&F']:.1f}",
                 f"{100 * s['J']:.1f}", f"{100 * s['F']:.1f}", _fmt(s["c"], ".2f"), _fmt(s["gflops_per_frame"], ".2f"),
                 _fmt(s["computation_saved"], ".1%"), _fmt(s["peak_rss_mb"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    for s in report.get("skipped", []):
        lines.append(f"| {s['setting']} | skipped: {s['reason']} |" + " |" * (len(headers) - 2))
    return "\n".join(lines).lstrip("\n") + "\n"

