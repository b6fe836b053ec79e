"""The frame-loop settings a benchmark compares: a SessionConfig with a short name, and how to list them."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, replace
from typing import Iterable

from reusevos.config import FLOW_GAP_LIMIT, FLOW_MAX_GAP, VARIANTS, SessionConfig
from reusevos.errors import ReusevosError
from reusevos.model.onnx_backbone import check_runtime


GATE_FREE = ("full", "flow")  # the variants that run without the dynamic network's reuse gate


# -- settings -----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Setting:
    """One frame-loop setting: a :class:`SessionConfig` with a short name (``full``, ``reuse@0.7``,
    ``fusion@0.5/0.9``, ``reuse@0.7+w2+c2``, ``flow@0.9+g3+c2``, ``flow@0.85+g3+la+c2`` with the lookahead), and the
    backbone's runtime when the setting fixes it (``+torch``, ``+ort``, ``+ortint8``, ``+ov``, ``+ovbf16``; None runs
    the model's own choice). A flow setting's name shows its longest gap (``+g3``) unless it is
    :data:`FLOW_GAP_LIMIT`, so a name keeps its meaning when the session's default changes; a gated variant's shows
    its ``reuse_max_gap`` the same way (``+g2``) unless it is 0 (no limit, the paper's)."""

    variant: str
    tau: float
    tau2: float | None = None
    window: int = 0  # SessionConfig.reuse_window
    compute_window: int = 0  # SessionConfig.compute_window
    runtime: str | None = None  # Backbone.runtime while the setting runs (a key of _RUNTIME_SUFFIXES)
    flow_max_gap: int | None = None  # SessionConfig.flow_max_gap: flow only, where None means FLOW_GAP_LIMIT
    lookahead: bool = False  # SessionConfig.lookahead: flow only (``+la``)
    memory_clock: str = "computed"  # SessionConfig.memory_clock (``+mf``: "frames")
    reuse_max_gap: int = 0  # SessionConfig.reuse_max_gap: the gated variants' (``+gN``), 0 = no limit
    flip: bool = False  # SessionConfig.flip (``+flip``): test-time horizontal flip, named settings only
    memory_band: float | None = None  # SessionConfig.memory_band (``+band0.1``; None: the weights'), named settings only
    search_margin: int = 0  # SessionConfig.search_margin (``+search4``, after the compute window), named settings only

    def __post_init__(self):
        if self.variant == "flow" and self.flow_max_gap is None:
            object.__setattr__(self, "flow_max_gap", FLOW_GAP_LIMIT)

    @property
    def key(self) -> str:
        name = "full" if self.variant == "full" else (
            f"{self.variant}@{self.tau:g}" + (f"/{self.tau2:g}" if self.tau2 is not None else "")
            + (f"+w{self.window}" if self.window else "")
            + (f"+g{self.flow_max_gap}" if self.flow_max_gap not in (None, FLOW_GAP_LIMIT) else "")
            + (f"+g{self.reuse_max_gap}" if self.reuse_max_gap else "")
            + ("+la" if self.lookahead else "") + ("+mf" if self.memory_clock == "frames" else ""))
        runtime = f"+{_RUNTIME_SUFFIXES[self.runtime]}" if self.runtime else ""
        band = f"+band{self.memory_band:g}" if self.memory_band is not None else ""
        return name + (f"+c{self.compute_window}" if self.compute_window else "") \
            + (f"+search{self.search_margin}" if self.search_margin else "") + ("+flip" if self.flip else "") \
            + band + runtime

    def options(self) -> SessionConfig:
        options = SessionConfig(self.variant, self.tau, self.tau2, reuse_window=self.window,
                                compute_window=self.compute_window,
                                flow_max_gap=self.flow_max_gap, lookahead=self.lookahead,
                                memory_clock=self.memory_clock, reuse_max_gap=self.reuse_max_gap, flip=self.flip,
                                memory_band=self.memory_band, search_margin=self.search_margin)
        options.validate()
        return options


def build_settings(variants: Iterable[str], taus: Iterable[float], tau2s: Iterable[float] = (0.9,),
                   has_gate: bool = True, windows: Iterable[int] = (0,),
                   compute_windows: Iterable[int] = (0,),
                   runtimes: Iterable[str | None] = (None,),
                   flow_max_gaps: Iterable[int] = (FLOW_MAX_GAP,),
                   lookaheads: Iterable[bool] = (False,),
                   memory_clocks: Iterable[str] = ("computed",),
                   reuse_max_gaps: Iterable[int] = (0,),
                   search_margins: Iterable[int] = (0,)) -> tuple[list[Setting], list[dict]]:
    """The cross product of ``variants`` and ``taus`` (``fusion`` also with each ``tau2``; the variants with a
    reuse path, at tau < 1, also with each ``reuse_window`` in ``windows``), then each with every
    ``compute_window`` in ``compute_windows``, in that order, each of them with every backbone runtime in
    ``runtimes`` in turn (None: the model's own). ``flow`` at tau < 1 runs at each longest gap in ``flow_max_gaps``
    (default: the session's), with and/or without the lookahead as ``lookaheads`` says (default: without), and with
    each of ``memory_clocks`` (default: FRTM's, ``computed``). The gated variants (all but ``full`` and ``flow``)
    at tau < 1 run at each of ``reuse_max_gaps`` (default: 0, no limit). Settings with a compute window run at each
    of ``search_margins`` (default: 0, the whole frame searched; those without one at 0).

    ``full`` appears once (it has no tau). Combinations that cannot run are returned apart, each as
    ``{"setting", "variant", "tau", "tau2", "reason"}``: fusion with ``tau2 <= tau``, and every variant
    but ``full`` and ``flow`` when the weights have no reuse gate. Raises ReusevosError for an unknown variant or a
    tau outside [0, 1], or a runtime that cannot run here.
    """
    variants, taus, tau2s = list(dict.fromkeys(variants)), list(dict.fromkeys(taus)), list(dict.fromkeys(tau2s))
    # auto is what the model does anyway: the same setting as None, with the same name
    runtimes = list(dict.fromkeys(None if r in (None, "auto") else check_runtime(r) for r in runtimes)) or [None]
    windows, compute_windows = list(dict.fromkeys(windows)), list(dict.fromkeys(compute_windows))
    flow_max_gaps = list(dict.fromkeys(flow_max_gaps))
    lookaheads = list(dict.fromkeys(lookaheads))
    if not lookaheads or any(not isinstance(ahead, bool) for ahead in lookaheads):
        raise ReusevosError(f"the lookahead is on or off, got {lookaheads}")
    memory_clocks = list(dict.fromkeys(memory_clocks))
    if not memory_clocks:
        raise ReusevosError("give at least one memory clock (computed, frames)")
    for clock in memory_clocks:
        SessionConfig("flow", memory_clock=clock).validate()
    for name, values in (("reuse", windows), ("compute", compute_windows)):
        if any(isinstance(w, bool) or not isinstance(w, int) or w < 0 for w in values) or not values:
            raise ReusevosError(f"{name} windows must be whole numbers of cells >= 0 (0 = off), got {values}")
    reuse_max_gaps = list(dict.fromkeys(reuse_max_gaps))
    searches = list(dict.fromkeys(search_margins))
    if not searches or any(isinstance(m, bool) or not isinstance(m, int) or m < 0 for m in searches):
        raise ReusevosError(f"search margins must be whole numbers of cells >= 0 (0 = the whole frame), got {searches}")
    if not reuse_max_gaps:
        raise ReusevosError("give at least one longest gap for the gated variants (0: no limit)")
    for cap in reuse_max_gaps:
        SessionConfig("reuse", reuse_max_gap=cap).validate()
    if not flow_max_gaps:
        raise ReusevosError("give at least one longest gap for the flow variant")
    for gap in flow_max_gaps:
        SessionConfig("flow", flow_max_gap=gap).validate()
    if not variants:
        raise ReusevosError("give at least one variant")
    for variant in variants:
        if variant not in VARIANTS:
            raise ReusevosError(f"unknown variant {variant!r}; choose among {', '.join(VARIANTS)}")
    for value in [*taus, *tau2s]:
        if not 0.0 <= value <= 1.0:
            raise ReusevosError(f"tau and tau2 must lie in [0, 1], got {value}")
    if any(v != "full" for v in variants) and not taus:
        raise ReusevosError("give at least one tau")
    settings: list[Setting] = []
    skipped: list[dict] = []

    def skip(setting: Setting, reason: str) -> None:
        skipped.append({"setting": setting.key, "variant": setting.variant, "tau": setting.tau,
                        "tau2": setting.tau2, "reason": reason})

    for variant, compute_window, runtime in itertools.product(variants, compute_windows, runtimes):
        if variant == "full":
            settings.append(Setting("full", 1.0, compute_window=compute_window, runtime=runtime))
            continue
        for tau in taus:
            for tau2 in (tau2s if variant == "fusion" else [None]):
                # copy, motion and flow have no reuse path to window; tau = 1 never reuses
                moving = variant == "flow" and tau < 1.0
                gated = variant != "flow" and tau < 1.0
                for window, gap, ahead, clock, cap in itertools.product(
                        windows if variant not in ("copy", "motion", "flow") and tau < 1.0 else [0],
                        flow_max_gaps if moving else [None], lookaheads if moving else [False],
                        memory_clocks if moving else ["computed"], reuse_max_gaps if gated else [0]):
                    setting = Setting(variant, float(tau), None if tau2 is None else float(tau2), window,
                                      compute_window, runtime, gap, ahead, clock, cap)
                    if not has_gate and variant not in GATE_FREE:
                        skip(setting, "the weights have no reuse gate")
                    elif variant == "fusion" and not tau < tau2:
                        skip(setting, f"fusion needs tau < tau2 = {tau2:g}")
                    else:
                        settings.append(setting)
    # each setting with a compute window at every search margin, in turn (without one a margin changes nothing)
    settings = [replace(s, search_margin=m) for s in settings for m in (searches if s.compute_window else [0])]
    return list(dict.fromkeys(settings)), skipped


# Setting.runtime -> its part of the name
_RUNTIME_SUFFIXES = {"torch": "torch", "onnxruntime": "ort", "onnxruntime-int8": "ortint8", "openvino": "ov",
                     "openvino-bf16": "ovbf16"}
_SUFFIX_RUNTIMES = {suffix: runtime for runtime, suffix in _RUNTIME_SUFFIXES.items()}
_KEY = re.compile(r"(?P<variant>[a-z]+)(?:@(?P<tau>[0-9.e-]+)(?:/(?P<tau2>[0-9.e-]+))?)?(?:\+w(?P<window>\d+))?"
                  r"(?:\+g(?P<gap>\d+))?(?P<lookahead>\+la)?(?P<clock>\+mf)?(?:\+c(?P<compute>\d+))?"
                  r"(?:\+search(?P<search>\d+))?(?P<flip>\+flip)?(?:\+band(?P<band>[0-9.]+))?"
                  r"(?:\+(?P<runtime>" + "|".join(sorted(_SUFFIX_RUNTIMES, key=len, reverse=True)) + "))?")


def parse_setting(key: str) -> Setting:
    """The setting a name of :attr:`Setting.key` stands for (``full+c2+ort``, ``reuse@0.7+w2+c2``,
    ``reuse@0.7+w2+g2+c2``, ``fusion@0.5/0.9``, ``flow@0.9+g3+c2``, ``flow@0.85+g3+la+c2``, ``full+c2+flip``,
    ``full+c2+band0.1``, ``full+c2+search4``, ``full+torch``): the inverse of ``key``.
    Raises ReusevosError for anything else."""
    match = _KEY.fullmatch(key.strip())
    example = "full, full+c2+ort, reuse@0.7+w2+c2 or fusion@0.5/0.9"
    if match is None:
        raise ReusevosError(f"setting {key!r} is not a setting name such as {example}")
    variant, tau, tau2 = match["variant"], match["tau"], match["tau2"]
    if variant not in VARIANTS:
        raise ReusevosError(f"setting {key!r}: unknown variant {variant!r}; choose among {', '.join(VARIANTS)}")
    if variant == "full" and tau is not None:
        raise ReusevosError(f"setting {key!r}: full never reuses, so it takes no tau; write full")
    if variant != "full" and tau is None:
        raise ReusevosError(f"setting {key!r}: give the variant's tau, as in {variant}@0.7")
    try:
        tau_value, tau2_value = float(tau or 1.0), None if tau2 is None else float(tau2)
    except ValueError:
        raise ReusevosError(f"setting {key!r}: tau must be a number, as in {variant}@0.7") from None
    runtime = _SUFFIX_RUNTIMES.get(match["runtime"])
    gap = int(match["gap"]) if match["gap"] else None  # flow's flow_max_gap, the others' reuse_max_gap
    setting = Setting(variant, tau_value, tau2_value, int(match["window"] or 0), int(match["compute"] or 0),
                      None if runtime is None else check_runtime(runtime),
                      gap if variant == "flow" else None, bool(match["lookahead"]),
                      "frames" if match["clock"] else "computed", 0 if variant == "flow" else gap or 0,
                      bool(match["flip"]), None if match["band"] is None else _band(key, match["band"]),
                      int(match["search"] or 0))
    setting.options()  # tau in [0, 1], fusion's tau < tau2, a reuse window only where there is a reuse path
    return setting


def _band(key: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ReusevosError(f"setting {key!r}: +band takes a fraction of the object's size, as in +band0.1") from None


def select_settings(keys: Iterable[str], has_gate: bool = True) -> tuple[list[Setting], list[dict]]:
    """Exactly the settings named by ``keys`` (see :func:`parse_setting`), in that order, instead of a cross
    product; like :func:`build_settings` it returns those that cannot run (no reuse gate) apart."""
    settings = list(dict.fromkeys(parse_setting(key) for key in keys))
    if not settings:
        raise ReusevosError("give at least one setting")
    runnable = [s for s in settings if has_gate or s.variant in GATE_FREE]
    skipped = [{"setting": s.key, "variant": s.variant, "tau": s.tau, "tau2": s.tau2,
                "reason": "the weights have no reuse gate"} for s in settings if s not in runnable]
    return runnable, skipped


def runnable_settings(settings: list[Setting], skipped: list[dict], network) -> tuple[list[Setting], list[dict]]:
    """``settings`` as ``network``'s base model runs them (:meth:`reusevos.base_models.BaseModel.runnable`), in
    order and each once; those it refuses join ``skipped``; a setting a base model runs as another (a gated variant
    at tau 1 on weights without a gate runs as ``full``) is named as it runs."""
    from reusevos.base_models import base_model

    base = base_model(network)
    skipped, kept = list(skipped), []
    for setting in settings:
        try:
            runs = base.runnable(setting.options())
        except ReusevosError as exc:
            skipped.append({"setting": setting.key, "variant": setting.variant, "tau": setting.tau,
                            "tau2": setting.tau2, "reason": str(exc)})
            continue
        kept.append(replace(setting, variant=runs.variant, tau=runs.tau, tau2=runs.tau2, window=runs.reuse_window,
                            compute_window=runs.compute_window, reuse_max_gap=runs.reuse_max_gap))
    return list(dict.fromkeys(kept)), skipped

