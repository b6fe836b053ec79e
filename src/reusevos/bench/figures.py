"""The benchmark's figures: J&F against FPS (the paper's Fig. 7) and against the reuse rate (Fig. 8)."""

from __future__ import annotations

import os

from reusevos.bench.report import format_header
from reusevos.config import FLOW_GAP_LIMIT
from reusevos.errors import ReusevosError
from reusevos.io.files import write_atomically
from reusevos.model.onnx_backbone import RUNTIME_NAMES

FIGURES = {"fps": "fig7_jf_vs_fps.png", "reuse": "fig8_jf_vs_reuse.png"}


def require_matplotlib(instead: str = "pass --no-plots") -> None:
    """Raise a ReusevosError that says how to get matplotlib (or ``instead``) when it is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise ReusevosError(f"the figures need matplotlib: pip install 'reusevos[plots]' (or {instead})") from None


_COLOURS = {"reuse": "tab:blue", "copy": "tab:orange", "fusion": "tab:green", "oracle": "tab:red",
            "motion": "tab:purple", "flow": "tab:brown", "full": "black"}
_MARKERS = {"reuse": "o", "copy": "s", "fusion": "^", "oracle": "D", "motion": "v", "flow": "P", "full": "*"}
_LINESTYLES = {(False, False): "-", (True, False): "--", (False, True): ":", (True, True): "-."}  # (reuse, compute) window


Line = tuple[str, int, int, "str | None", "int | None", bool, bool]  # see figure_lines


def figure_lines(report: dict) -> list[tuple[Line, str, list[dict]]]:
    """The lines of :func:`plot_figure`: ``((variant, reuse window, compute window, runtime, flow's longest gap,
    lookahead, memory clock in frames), label, settings in falling tau)``, one per variant and windows (and longest
    gap, lookahead and memory clock for flow), and per backbone runtime when the report has several (else the runtime
    is None)."""
    several_runtimes = len({s.get("backbone_runtime", "torch") for s in report["settings"]}) > 1

    def line_of(s: dict) -> Line:
        runtime = s.get("backbone_runtime", "torch") if several_runtimes else None
        # flow's longest gap, or the gated variants' reuse_max_gap (each absent in reports older than its option)
        gap = s.get("flow_max_gap") if s["variant"] == "flow" else s.get("reuse_max_gap")
        return s["variant"], s.get("reuse_window") or 0, s.get("compute_window") or 0, runtime, \
            None if gap == FLOW_GAP_LIMIT else gap or None, bool(s.get("lookahead")), s.get("memory_clock") == "frames"

    lines = []
    for line in dict.fromkeys(map(line_of, report["settings"])):
        variant, reuse_window, compute_window, runtime, gap, lookahead, frames_clock = line
        points = sorted((s for s in report["settings"] if line_of(s) == line), key=lambda s: -s["tau"])
        label = (variant if variant != "fusion" else f"fusion (tau2 = {points[0]['tau2']:g})") \
            + (f", reuse window {reuse_window}" if reuse_window else "") \
            + (f", compute window {compute_window}" if compute_window else "") \
            + (f", longest gap {gap}" if gap else "") + (", lookahead" if lookahead else "") \
            + (", memory clock in frames" if frames_clock else "") \
            + (f", backbone in {RUNTIME_NAMES.get(runtime, runtime)}" if runtime else "")
        lines.append((line, label, points))
    return lines


def plot_figure(report: dict, kind: str, path: str | os.PathLike) -> None:
    """Draw J&F (%) against FPS (``kind="fps"``, the paper's Fig. 7) or against the reuse rate (%)
    (``kind="reuse"``, Fig. 8) as a PNG: one line per variant (and per refinement window, dashed or
    dotted, and per backbone runtime when the report has several, PyTorch's paler) in tau order, each point
    labelled with tau."""
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if kind not in FIGURES:
        raise ValueError(f"kind must be one of {', '.join(FIGURES)}")
    figure = Figure(figsize=(6.4, 4.8), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)

    for (variant, reuse_window, compute_window, runtime, _, lookahead, _), label, points in figure_lines(report):
        xs = [s["fps"] if kind == "fps" else 100 * s["reuse_rate"] for s in points]
        ys = [100 * s["J&F"] for s in points]
        axes.plot(xs, ys, marker=_MARKERS.get(variant, "o"), color=_COLOURS.get(variant), label=label,
                  markersize=9 if variant == "full" else 5, linewidth=2.0 if lookahead else 1.2,
                  linestyle=_LINESTYLES[bool(reuse_window), bool(compute_window)],
                  markerfacecolor="none" if compute_window else None, alpha=0.45 if runtime == "torch" else 1.0)
        if variant != "full":
            for x, y, s in zip(xs, ys, points):
                axes.annotate(f"{s['tau']:g}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7,
                              color=_COLOURS.get(variant))
    data = report["dataset"]
    axes.set_xlabel("frames per second" if kind == "fps" else "frames reused (%)")
    axes.set_ylabel("J&F-Mean (%)")
    axes.set_title(("J&F vs speed" if kind == "fps" else "J&F vs reuse rate")
                   + f" (DAVIS {data['split']}, {len(data['sequences'])} sequences; points: tau)", fontsize=10)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    figure.text(0.01, 0.005, format_header(report).splitlines()[0], fontsize=6, color="0.4")
    figure.tight_layout(rect=(0, 0.02, 1, 1))
    write_atomically(path, lambda tmp: figure.savefig(tmp, format="png"))

