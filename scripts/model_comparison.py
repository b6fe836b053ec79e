"""The base models side by side (issue 18's table and figure): one ``reusevos benchmark`` JSON per model, each run's
settings against that run's own base model at the same compute window (``full`` or ``full+cN``), and
the paper's Table 1 rows beside them. Writes a Markdown table and a J&F-vs-speed-up figure (one line per model and
variant, each point labelled with its tau).

    python scripts/model_comparison.py docs/results/ttvos/val-frtm.json docs/results/ttvos/val-ttvos.json \
        --markdown docs/results/ttvos/val-models.md --figure docs/results/ttvos/val-models.png
"""

from __future__ import annotations

import argparse
import json
import re
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

# Park et al., CVPR 2021, Table 1 (DAVIS 2016 val, on a GPU): J&F and FPS
PAPER = [("G-FRTM-fast (paper, ResNet18)", "tau 1", 80.9, 37.6),
         ("G-FRTM-fast (paper, ResNet18)", "tau 0.7", 80.5, 58.0),
         ("TTVOS (paper, ResNet50)", "full", 83.8, 39.6), ("G-TTVOS (paper, ResNet50)", "tau 0.7", 83.5, 49.1)]
NAMES = {"frtm": "FRTM", "ttvos": "TTVOS"}


def model_name(report: dict) -> str:
    """FRTM / TTVOS, with G- when the weights have a reuse gate."""
    weights = report["weights"]
    return ("G-" if weights.get("has_gate") else "") + NAMES.get(weights.get("model", "frtm"), "?")


def base_setting(report: dict, setting: dict) -> dict:
    """The same run's base model at ``setting``'s compute window (``full`` or ``full+cN``)."""
    by_key = {s["setting"]: s for s in report["settings"]}
    window = setting.get("compute_window") or 0
    key = f"full+c{window}" if window else "full"
    if key not in by_key:
        raise SystemExit(f"{report['command']}: no {key} setting to compare {setting['setting']} with")
    return by_key[key]


def rows(reports: list[dict]) -> list[dict]:
    out = []
    for report in reports:
        for s in report["settings"]:
            base = base_setting(report, s)
            out.append({"model": model_name(report), "setting": s["setting"], "variant": s["variant"], "tau": s["tau"],
                        "fps": s["fps"], "speedup": s["fps"] / base["fps"], "reused": s["reuse_rate"],
                        "jf": 100 * s["J&F"], "j": 100 * s["J"], "f": 100 * s["F"], "c": s.get("c"),
                        "gflops": s.get("gflops_per_frame"), "base": base["setting"],
                        "commit": report.get("commit", "")[:7]})
    return out


def markdown(table: list[dict], reports: list[dict]) -> str:
    lines = ["| model | setting | FPS | speed-up | reused | J&F | J | F | c | GFLOPs/frame |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        c = "-" if r["c"] is None else f"{r['c']:.2f}"
        gflops = "-" if r["gflops"] is None else f"{r['gflops']:.2f}"
        lines.append(f"| {r['model']} | {r['setting']} | {r['fps']:.2f} | {r['speedup']:.2f}x vs {r['base']} | "
                     f"{100 * r['reused']:.1f}% | {r['jf']:.1f} | {r['j']:.1f} | {r['f']:.1f} | {c} | {gflops} |")
    for name, setting, jf, fps in PAPER:
        lines.append(f"| {name} | {setting} | {fps} (GPU) | | | {jf} | | | | |")
    lines.append("")
    for report in reports:
        machine = report["machine"]
        lines.append(f"- {model_name(report)}: `{report['command']}` (commit {report.get('commit', '')[:12]}, "
                     f"{report['threads']} threads, {machine.get('cpu_model', '')}, torch's CPU capability "
                     f"{machine.get('cpu_capability', '')})")
    return "\n".join(lines) + "\n"


def figure(table: list[dict], path: str) -> None:
    lines = defaultdict(list)
    for r in table:
        if r["variant"] != "full":
            line = re.sub(r"@[\d.]+(/[\d.]+)?", "", r["setting"])  # one line per variant and options, across taus
            lines[f"{r['model']} {line}"].append((r["speedup"], r["jf"], r["tau"]))
    fig, axes = plt.subplots(figsize=(10, 5.2))
    colours = plt.get_cmap("tab20").colors
    for n, (label, values) in enumerate(lines.items()):
        values.sort()
        axes.plot([v[0] for v in values], [v[1] for v in values], marker="s" if "TTVOS" in label else "o",
                  color=colours[n % len(colours)], linestyle="--" if "+c" in label else "-", label=label)
        for x, y, tau in values:
            axes.annotate(f"{tau:g}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for r in table:
        if r["variant"] == "full" and r["setting"] == r["base"]:
            axes.plot([1.0], [r["jf"]], marker="*", markersize=10, linestyle="none",
                      label=f"{r['model']} {r['setting']}")
    axes.set_xlabel("speed-up over the same run's base model at the same compute window (FPS ratio)")
    axes.set_ylabel("J&F-Mean, DAVIS 2016 val (%)")
    axes.set_title("DAVIS 2016 val, 2 threads; speed-ups within each benchmark run; points labelled with tau",
                   fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the plot: it hides no point
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("reports", nargs="+", help="benchmark JSONs, one per model")
    parser.add_argument("--markdown", required=True)
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    reports = [json.loads(Path(p).read_text()) for p in args.reports]
    table = rows(reports)
    Path(args.markdown).write_text(markdown(table, reports))
    if args.figure:
        figure(table, args.figure)
    print(Path(args.markdown).read_text())


if __name__ == "__main__":
    main()
