"""``reusevos benchmark`` (frame-loop settings side by side) and ``reusevos ablation`` (the paper's grid)."""

from __future__ import annotations

import argparse
import functools

from reusevos.cli.common import (add_davis, add_sequences, add_threads, add_weights, command_line, csv_list, log,
                                 set_threads)
from reusevos.config import (FLOW_MAX_GAP, QUICK_FRAMES, VARIANTS, AblationConfig, SessionConfig, default_tau,
                             offline_config)
from reusevos.errors import ReusevosError

SPLIT_HELP = "split to run; every frame must be annotated"
THREADS_HELP = "torch CPU threads (default: torch's choice); stated in the output"

# The benchmark's cross product when a flag is not given: the base model against the whole-video default setting.
# The flags default to None (not these) so that --settings can tell whether one was given.
GRID = {"variant": f"full,{SessionConfig.variant}", "tau": f"1,{default_tau(SessionConfig.variant, True):g}",
        "tau2": f"{AblationConfig.tau2:g}", "reuse_window": str(SessionConfig.reuse_window),
        "compute_window": str(SessionConfig.compute_window), "flow_max_gap": str(FLOW_MAX_GAP),
        "lookahead": "on", "memory_clock": offline_config().memory_clock, "backbone_runtime": "auto",
        "reuse_max_gap": str(SessionConfig.reuse_max_gap), "search_margin": str(SessionConfig.search_margin)}


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise ValueError(text)
    return text == "on"


_GRID_KINDS = {"tau": float, "tau2": float, "reuse_window": int, "compute_window": int,
               "flow_max_gap": int, "reuse_max_gap": int, "search_margin": int, "lookahead": _on_off}  # the others are names
_GRID_EXPECTED = {"lookahead": ("on, off or on,off",)}  # what csv_list says when a value is not one


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``benchmark`` and ``ablation``."""
    _register_benchmark(sub)
    _register_ablation(sub)


def _add_run_size(parser: argparse.ArgumentParser, frames_default: str, size_note: str) -> None:
    """--max-frames and --max-size, checked by :func:`_check_run_size`."""
    parser.add_argument("--max-frames", type=int, default=None, metavar="N",
                        help=f"only the first N frames of each sequence (default: {frames_default})")
    parser.add_argument("--max-size", type=int, default=0, metavar="PIXELS",
                        help=f"shrink frames whose longer side exceeds PIXELS{size_note} (0 = as stored)")


def _register_benchmark(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "benchmark", help="speed, accuracy, memory and FLOPs of frame-loop settings on a DAVIS split, in one process",
        description="Runs every requested setting (the variants x the taus; fusion also x --tau2; full once) over the "
                    "same frames: each sequence is decoded once before timing and shared by all settings, after one "
                    "untimed warm-up. Prints per setting FPS (initialisation included, and without), initialisation "
                    "per object, reuse rate, J&F, the reuse-path cost ratio c, GFLOPs per frame and the share saved, "
                    "peak memory, and a per-stage table; --json writes it all with the machine, threads and commit.",
        epilog="example: reusevos benchmark ~/data/DAVIS --split val --variant full,reuse --tau 1,0.7 --threads 2 "
               "--json bench.json")
    add_davis(bench, "val", SPLIT_HELP, positional=True, layout=", 2016 or 2017 layout")
    add_sequences(bench, default="all, or --quick's")
    _add_grid_flags(bench)
    add_weights(bench, model=True)
    add_threads(bench, THREADS_HELP, "N")
    bench.add_argument("--json", default=None, metavar="OUT.json", help="also write the report as JSON")
    bench.add_argument("--markdown", default=None, metavar="OUT.md",
                       help="also write the table as Markdown, with the command, machine, threads and commit")
    bench.add_argument("--figure", default=None, metavar="OUT.png",
                       help="also draw J&F against FPS, one line per variant, window and backbone runtime (needs "
                            "matplotlib)")
    bench.add_argument("--quick", action="store_true",
                       help=f"blackswan and the next two sequences of the split, first {QUICK_FRAMES} frames (for "
                            "development)")
    _add_run_size(bench, f"all; {QUICK_FRAMES} with --quick", ", scoring at that size")
    bench.add_argument("--partial", default=None, metavar="FILE.jsonl",
                       help="append each finished sequence x setting here and skip those already in it (resume)")
    bench.add_argument("--no-flops", dest="flops", action="store_false", help="skip counting FLOPs")
    bench.set_defaults(func=_cmd_benchmark)


def _add_grid_flags(bench: argparse.ArgumentParser) -> None:
    """The cross product's flags (defaults in GRID), and --settings, which names the settings instead."""
    bench.add_argument("--variant", default=None,
                       help=f"comma-separated: {', '.join(VARIANTS)} (default: {GRID['variant']})")
    bench.add_argument("--tau", default=None,
                       help=f"comma-separated reuse thresholds in [0, 1] (default: {GRID['tau']})")
    bench.add_argument("--tau2", default=None, help="comma-separated copy thresholds of the fusion variant; "
                       f"combinations with tau2 <= tau are skipped (default: {GRID['tau2']})")
    bench.add_argument("--reuse-window", default=None, metavar="CELLS",
                       help=f"comma-separated reuse-path window margins in stride-16 cells ({GRID['reuse_window']}, "
                            "the default = the paper's whole-frame refinement); each runs as its own setting of the "
                            "variants with a reuse path")
    bench.add_argument("--compute-window", default=None, metavar="CELLS",
                       help="comma-separated computed-frame window margins in stride-16 cells "
                            f"(default: {GRID['compute_window']}; 0 = the paper's whole-frame refinement); each "
                            "runs as its own setting of every variant")
    bench.add_argument("--flow-max-gap", default=None, metavar="FRAMES",
                       help="comma-separated longest gaps of the flow variant (default: "
                            f"{GRID['flow_max_gap']}); each runs as its own setting of flow at tau < 1 (names show "
                            "+gN unless N is 12)")
    bench.add_argument("--reuse-max-gap", default=None, metavar="FRAMES",
                       help="comma-separated longest gaps of the gated variants (reuse, copy, fusion, oracle, motion; "
                            f"default: {GRID['reuse_max_gap']}, no limit, the paper's); each runs as its own setting "
                            "of them at tau < 1 (names show +gN unless N is 0)")
    bench.add_argument("--search-margin", default=None, metavar="CELLS",
                       help="comma-separated search margins of the settings with a compute window (the coarse score "
                            "counts only this many cells around the object's last output; default: "
                            f"{GRID['search_margin']}, ours; 0 = the whole frame, FRTM's); names show +searchN unless "
                            "N is 0")
    bench.add_argument("--lookahead", default=None, metavar="on,off",
                       help="the flow variant with the lookahead (on, the default: the whole-video default is "
                            f"flow@{default_tau(SessionConfig.variant, True):g}+g2+la+mf+c2+search2), without it "
                            "(off), or both (on,off); each its own setting of flow at tau < 1 (names end in +la when "
                            "on)")
    bench.add_argument("--memory-clock", default=None, metavar="CLOCKS",
                       help="comma-separated clocks of FRTM's target model for flow at tau < 1: frames (ours, the "
                            "default) and/or computed (FRTM's); names end in +mf for frames")
    bench.add_argument("--backbone-runtime", default=None, metavar="RUNTIMES",
                       help="comma-separated backbone runtimes (torch, onnxruntime, onnxruntime-int8, openvino, "
                            "openvino-bf16; auto = the model's own, the default), each its own setting of every other "
                            "choice (names end in +torch, +ort, +ortint8, +ov, +ovbf16)")
    bench.add_argument("--settings", default=None, metavar="NAMES",
                       help="comma-separated settings by the names the tables print (full+torch, full+c2+ort, "
                            "reuse@0.7+w2+c2, fusion@0.5/0.9, flow@0.9+g3+c2): exactly these, in this order, "
                            "instead of the cross product of --variant, --tau, --tau2 and the window and runtime flags")


def _register_ablation(sub: argparse._SubParsersAction) -> None:
    config = AblationConfig
    ablation = sub.add_parser(
        "ablation", help="the paper's ablations (variants x tau): JSON, CSV and Fig. 7 / Fig. 8 PNGs (resumable)",
        description="The benchmark over every variant at every tau (fusion with a fixed --tau2, skipped where "
                    "tau >= tau2), written to OUT/ablation.json, OUT/ablation.csv, OUT/fig7_jf_vs_fps.png (J&F vs "
                    "FPS), OUT/fig8_jf_vs_reuse.png (J&F vs reuse rate) and OUT/ablation.md (the table for the "
                    "docs). Each finished sequence x setting is appended to OUT/partial.jsonl; run the same command "
                    "again to resume.",
        epilog="example: reusevos ablation ~/data/DAVIS --split val --out docs/ablation --threads 2")
    add_davis(ablation, "val", SPLIT_HELP, positional=True, layout=", 2016 or 2017 layout")
    ablation.add_argument("--out", required=True, metavar="OUT_DIR", help="folder for the results (created)")
    add_sequences(ablation)
    ablation.add_argument("--variants", default=",".join(config.variants),
                          help=f"comma-separated: {', '.join(v for v in VARIANTS if v != 'full')} (and full, the "
                               "base model, once)")
    ablation.add_argument("--taus", default=",".join(f"{tau:g}" for tau in config.taus),
                          help="comma-separated thresholds")
    ablation.add_argument("--tau2", type=float, default=config.tau2, help="the fusion variant's copy threshold")
    ablation.add_argument("--compute-window", type=int, default=0, metavar="CELLS",
                          help="the computed-frame window margin of every setting, in stride-16 cells (0: the "
                               f"paper's whole-frame refinement; {SessionConfig.compute_window}: what reusevos runs "
                               f"unless told). flow runs as the whole-video default does: "
                               f"flow@tau+g{FLOW_MAX_GAP}+la+mf")
    add_weights(ablation)
    add_threads(ablation, THREADS_HELP, "N")
    _add_run_size(ablation, "all", "")
    ablation.add_argument("--no-plots", dest="plots", action="store_false", help="skip the figures (no matplotlib)")
    ablation.add_argument("--finished-only", action="store_true",
                          help="compute nothing: write the outputs from the sequences OUT/partial.jsonl already holds "
                               "for every setting (to look at a long run while it goes on)")
    ablation.set_defaults(func=_cmd_ablation)


def _check_run_size(args: argparse.Namespace) -> None:
    if args.max_frames is not None and args.max_frames < 3:
        raise ReusevosError(f"--max-frames {args.max_frames}: scoring leaves out the first and last frame, give 3 "
                            "or more")
    if args.max_size < 0:
        raise ReusevosError(f"--max-size {args.max_size}: give a number of pixels, or 0 for the stored size")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _settings_chooser(args: argparse.Namespace):
    """From --settings or the cross product's flags: a function of ``has_gate`` that returns the settings to run
    and those skipped. Bad names and values raise here, before the model loads."""
    from reusevos.bench.settings import build_settings, select_settings

    if args.settings is not None:
        given = [_flag(name) for name in GRID if getattr(args, name) is not None]
        if given:
            raise ReusevosError(f"--settings names every setting in full; drop {', '.join(given)}")
        choose = functools.partial(select_settings, csv_list(args.settings, "--settings"))
    else:
        texts = {name: default if getattr(args, name) is None else getattr(args, name)
                 for name, default in GRID.items()}
        lists = {name: csv_list(text, _flag(name), _GRID_KINDS.get(name, str), *_GRID_EXPECTED.get(name, ()))
                 for name, text in texts.items()}
        choose = functools.partial(build_settings, lists["variant"], lists["tau"], lists["tau2"],
                                   windows=lists["reuse_window"], compute_windows=lists["compute_window"],
                                   runtimes=lists["backbone_runtime"], flow_max_gaps=lists["flow_max_gap"],
                                   lookaheads=lists["lookahead"], memory_clocks=lists["memory_clock"],
                                   reuse_max_gaps=lists["reuse_max_gap"], search_margins=lists["search_margin"])
    choose()
    return choose


def _write_benchmark(report: dict, args: argparse.Namespace) -> None:
    """The files --json, --markdown and --figure ask for, then the tables on stdout."""
    from reusevos.bench.figures import plot_figure
    from reusevos.bench.report import format_header, format_markdown, format_stage_table, format_table
    from reusevos.io.files import write_json, write_text

    if args.json:
        write_json(args.json, report)
    if args.markdown:
        write_text(args.markdown, format_markdown(report))
    if args.figure:
        plot_figure(report, "fps", args.figure)
    print()
    print(format_header(report))
    print(format_table(report))
    print()
    print(format_stage_table(report))
    for label, path in (("JSON", args.json), ("Markdown", args.markdown), ("Figure", args.figure)):
        if path:
            print(f"{label}: {path}")


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from reusevos.api import load_model
    from reusevos.bench.figures import require_matplotlib
    from reusevos.bench.run import quick_sequences, run_benchmark
    from reusevos.bench.settings import runnable_settings
    from reusevos.io.davis import DavisDataset
    from reusevos.io.outputs import check_outputs

    _check_run_size(args)
    if args.figure:
        require_matplotlib("drop --figure")  # fail before the run, not after
    choose = _settings_chooser(args)
    set_threads(args.threads)
    dataset = DavisDataset(args.davis, split=args.split, sequences=args.sequences)
    check_outputs([dataset.root, args.weights], files={"--json": args.json, "--markdown": args.markdown,
                                                       "--figure": args.figure, "--partial": args.partial})
    max_frames = args.max_frames
    if args.quick:
        if args.sequences is None:
            dataset = DavisDataset(dataset.root, split=args.split, sequences=quick_sequences(dataset))
        max_frames = max_frames or QUICK_FRAMES
    network = load_model(args.weights, device="cpu", model=args.model)
    settings, skipped = runnable_settings(*choose(has_gate=network.has_gate), network)
    report = run_benchmark(network, dataset, settings, skipped=skipped, max_frames=max_frames,
                           max_size=args.max_size or None, partial=args.partial, flops=args.flops,
                           command=command_line(), log=log)
    _write_benchmark(report, args)
    return 0


def _cmd_ablation(args: argparse.Namespace) -> int:
    from reusevos.api import load_model
    from reusevos.bench.ablation import ablation_settings, run_ablation
    from reusevos.bench.report import format_header, format_table
    from reusevos.io.davis import DavisDataset
    from reusevos.io.outputs import check_outputs

    _check_run_size(args)
    variants = csv_list(args.variants, "--variants")
    taus = csv_list(args.taus, "--taus", float)
    ablation_settings(variants, taus, args.tau2, args.compute_window)  # bad values are refused before the model loads
    set_threads(args.threads)
    dataset = DavisDataset(args.davis, split=args.split, sequences=args.sequences)
    check_outputs([dataset.root, args.weights], folders={"--out": args.out})
    network = load_model(args.weights, device="cpu")
    report = run_ablation(network, dataset, args.out, variants, taus, args.tau2, compute_window=args.compute_window,
                          max_frames=args.max_frames, max_size=args.max_size or None, plots=args.plots,
                          finished_only=args.finished_only, command=command_line(), log=log)
    print()
    print(format_header(report))
    print(format_table(report))
    print("\nwritten: " + ", ".join(report["files"][k] for k in ("json", "csv", "markdown", "fps", "reuse")
                                    if k in report["files"]))
    return 0
