"""Settings as dataclasses. Defaults reproduce the paper's (FRTM-fast) settings unless a comment says why not."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

VARIANTS = ("full", "reuse", "copy", "fusion", "oracle", "motion", "flow")
# what runs the frozen backbone; auto = ONNX Runtime on CPUs; openvino-bf16 is the bfloat16 mode (the backbone in
# OpenVINO and FRTM's refinement network in PyTorch both compute in bfloat16)
BACKBONE_RUNTIMES = ("auto", "torch", "onnxruntime", "onnxruntime-int8", "openvino", "openvino-bf16")
DEFAULT_MAX_SIZE = 854  # the longer side the model runs at by default: DAVIS 480p, its training size
BACKBONES = ("mobilenet_v2", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "resnet18", "resnet50",
             "resnet101")
BASE_MODELS = ("frtm", "ttvos")  # the base models a checkpoint can hold (ModelConfig.base)
QUICK_SEQUENCES = 3  # benchmark --quick: blackswan (when the split has it) and the next ones in split order
QUICK_FRAMES = 20  # benchmark --quick: the first frames of each


@dataclass
class TargetModelConfig:
    """The online target model."""

    channels: int = 96  # c: the 1x1 compression's output channels at inference
    proj_reg: float = 1e-4  # L2 penalty on the 1x1 compression weights
    filter_reg: float = 1e-2  # L2 penalty on the 3x3 filter weights
    init_cg_iters: tuple[int, ...] = (5, 10, 10, 10)  # one Gauss-Newton step each, both layers
    update_cg_iters: int = 5  # filter-only refits (the compression is frozen after initialisation)
    # ours, with the memory clock in frames: a refit's CG iterations in proportion to the frames computed since the
    # last refit (update_cg_iters after update_every of them, as at tau 1), never fewer than min_refit_cg_iters.
    # Off: on the train folds it lost 0.8 J&F for a few percent of speed (docs/speed.md, where the default's time goes)
    scale_refits: bool = False
    min_refit_cg_iters: int = 2
    memory_size: int = 80
    memory_lr: float = 0.1  # weight of a new sample; older ones decay by (1 - lr)
    first_frame_weight: float = 2.0  # the start frame's samples count double
    # Against drift, ours, off: measured on a fold of hard train sequences, neither lowered J-Decay (docs/accuracy.md,
    # where J-Decay comes from). start_share: the least share of a refit's weight the start frame's samples keep as their
    # own weights decay (pytracking's floor for initial samples; 0: FRTM's memory, where after 50 frames they weigh about
    # 1% of the newest frame). sample_confidence_power: a tracked frame's sample weighs memory_lr * c ** power, c = 2 m - 1
    # with m its mean probability where it is above 0.5 (0: every sample memory_lr). sample_ignore_band: a tracked frame's
    # sample leaves out (weight 0) a band this wide around the output's object, as a fraction of the object's size
    # (the square root of its area): where an output that under-covers a growing object would teach background (0: none).
    start_share: float = 0.0
    sample_confidence_power: float = 0.0
    sample_ignore_band: float = 0.0
    update_every: int = 8  # re-optimise the filter every n-th computed frame
    min_sample_pixels: int = 10  # a tracked frame adds a sample only if its mask has this many pixels
    num_augmented: int = 4  # augmented copies of the start frame
    # ours: one more copy per factor, the object scaled by it (views of an object that will come closer); () = none.
    # Measured with (1.6, 2.4) on the hard fold: +0.5 J&F, J-Decay unchanged (docs/accuracy.md); off
    augment_scales: tuple[float, ...] = ()
    balance_threshold: float = 0.1  # class balancing when the foreground fraction is below this
    label_stride: int = 4  # labels at image size / 4: far cheaper fits, same separation (docs/method.md)
    min_object_pixels: int = 25  # smaller start masks are refused: too little to fit a model on


@dataclass
class TtvosConfig:
    """The TTVOS base model (Park, Venkatesh and Kwak, arXiv 2011.04445) on our backbone; widths are ours
    (docs/method.md)."""

    channels: int = 64  # the decoder's width at strides 16, 8 and 4 (FRTM's refinement network is 64 wide too)
    feature_channels: int = 128  # the frame's stride-16 feature: f16 and f32 reduced, kept for the next frame
    history: int = 3  # estimated masks of the frames t-1, t-2, t-3 given to both matchings
    # the least share w of a frame the template takes in (w = floor + (1 - floor) * sigmoid): ours, 0 = the paper's
    update_floor: float = 0.0


@dataclass
class ModelConfig:
    """The network: which base model (``frtm`` or ``ttvos``), its backbone and widths."""

    backbone: str = "mobilenet_v2"
    refine_channels: int = 64
    reuse_gate: bool = False  # template matcher, gate, delta generator and refine-translator
    target: TargetModelConfig = field(default_factory=TargetModelConfig)
    base: str = "frtm"  # one of BASE_MODELS; checkpoints written before TTVOS existed hold FRTM
    ttvos: TtvosConfig = field(default_factory=TtvosConfig)  # used when base is "ttvos"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        data = dict(data)
        nested = {}
        for name, kind in (("target", TargetModelConfig), ("ttvos", TtvosConfig)):
            known = {f.name for f in fields(kind)}
            values = data.pop(name, {})
            nested[name] = kind(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items() if k in known})
        known_model = {f.name for f in fields(cls)}
        return cls(**nested, **{k: v for k, v in data.items() if k in known_model})


PAPER_TAU = 0.7  # the paper's default tau, for its variants (reuse, copy, fusion, oracle) and motion
# the flow variant's online: chosen on held-out DAVIS train sequences (docs/speed.md), never on val; kept when checked
# again on the five folds for the Lite0 base with the search margin (session 26, docs/accuracy.md)
FLOW_TAU = 0.92
DEFAULT_VARIANT = "flow"  # ours: on a CPU it is both faster and more accurate than the paper's reuse path
FLOW_GAP_LIMIT = 12  # the longest gap (frames since the anchor) the flow gate is fitted on and may be asked about
FLOW_MAX_GAP = 2  # the flow variant's default longest gap: chosen with FLOW_TAU on held-out train sequences
# the flow variant's with the lookahead: chosen on all 30 train sequences (five folds of the flow gate), again in
# session 25 for the Lite0 base with the search margin (0.75 before; docs/accuracy.md)
LOOKAHEAD_TAU = 0.9
DEFAULT_COMPUTE_WINDOW = 2  # ours: faster and more accurate than whole-frame refinement on DAVIS val (docs/speed.md)
# ours: the coarse score counts only within 2 cells of the object's last output; chosen on held-out train sequences,
# then on DAVIS val +2.8 J&F, J-Decay 4.7 against 10.2, 1.13x the FPS (docs/accuracy.md, session 24)
DEFAULT_SEARCH_MARGIN = 2


def default_tau(variant: str, lookahead: bool = False) -> float:
    """The tau a variant runs at unless told: 1 for ``full``, :data:`FLOW_TAU` for ``flow`` (:data:`LOOKAHEAD_TAU`
    with the lookahead), else the paper's."""
    if variant == "flow":
        return LOOKAHEAD_TAU if lookahead is True else FLOW_TAU
    return 1.0 if variant == "full" else PAPER_TAU


@dataclass
class SessionConfig:
    """Per-video settings: which frame loop to run. The default is ours, built for CPUs: the flow variant at
    tau 0.92, moving an object for at most 2 frames in a row, with a compute window of 2, online (each frame's
    result as soon as it is processed); :func:`offline_config` (what ``segment_video`` and the commands run
    unless told) adds the lookahead at tau 0.9 and the memory clock in frames; ``SessionConfig("reuse",
    compute_window=0)`` is the paper's.

    variant: ``full`` (never reuse, the base model), ``reuse`` (the paper's reuse path), ``copy``
    (reuse = previous mask unchanged), ``fusion`` (copy above ``tau2``, reuse path between ``tau`` and
    ``tau2``), ``oracle`` (the gate decided by the ground-truth IoU; evaluation only), ``motion`` (ours:
    reuse = the previous mask moved by the object's motion, by phase correlation; ``reusevos.motion``),
    ``flow`` (ours: decided before the backbone by a gate of its own on half-size grey frames; reuse = the
    last computed output warped by optical flow, no network at all; ``reusevos.flow``).
    tau: reuse when the gate's probability is at least ``tau``; 1 never reuses. None (the default): the
    variant's own, :func:`default_tau`.
    flow_gate: the flow variant's gate file (None: the one shipped, ``reusevos/checkpoints/flow_gate.json``).
    flow_max_gap: the flow variant's longest gap, in frames, between an object's last computed frame and a frame
    that takes its warped output; past it the object is computed whatever the gate says. 1 to
    :data:`FLOW_GAP_LIMIT` (the gaps the gate was fitted on); shorter = fewer frames reused, each closer to its anchor.
    None (the default): :data:`FLOW_MAX_GAP` for ``flow``; the other variants take none.
    lookahead: the flow variant only (ours): a frame whose objects were moved waits until each of them is computed
    again (at most ``flow_max_gap`` frames later), and then takes, per object, the last computed output warped
    forward and the next computed output warped backward, blended by their distance in time; the computed frames
    are exactly those without it. For files and offline runs: the results come out in order but up to
    ``flow_max_gap`` frames late, so a :class:`reusevos.Session` with it is fed by ``push()`` and ``finish()``.
    reuse_max_gap: 0 (the paper: no limit) or the gated variants' longest gap (``reuse``, ``copy``, ``fusion``,
    ``oracle``, ``motion``; ours): an object whose last computed frame lies more than this many frames back is computed
    whatever the gate would say (the gate does not run for it), so errors of the reused state stop after this many
    frames. The counterpart of ``flow_max_gap``; measured on G-TTVOS in docs/method.md.
    reuse_window: 0 (the paper) or a margin in stride-16 cells: on the reuse path, the shallow
    refinement levels and the head run only inside the box around the object's last output grown by
    this margin; outside it the last output is kept (the gate has just said the object barely moved).
    memory_clock: how FRTM's target model counts time (ours, experimental): ``computed`` (FRTM's own: each computed
    frame's sample ages the memory by one step and every ``update_every``-th computed frame refits it) or ``frames``
    (by frames elapsed: a sample after g skipped frames ages the memory by g + 1 steps, and a refit is due once
    ``update_every`` frames have passed), so a loop that computes one frame in three adapts as fast as the base
    model. The same at tau = 1.
    compute_window: 0 (the paper) or a margin in stride-16 cells (default 2): on computed frames (any variant), the
    shallow refinement levels and the head run only inside the box holding the cells where this frame's
    coarse score exceeds 0.5 and the object's last output, grown by this margin; outside it the object
    is background (ours; the coarse score has just said it is not there).
    flip: test-time horizontal flip (ours; off by default): a second tracker, with the same settings, follows the
    objects in the mirrored video, and each frame's output is the mean of both trackers' probabilities; both
    trackers remember that mean of what they merged on a frame (target-model samples, last outputs; the flow
    anchors stay each tracker's own, whose warps the flow gate trusts more; since session 22, chosen on held-out train
    sequences over each remembering its own). About twice the time and
    memory per frame, for better masks (measured in docs/accuracy.md). Not with the oracle variant.
    memory_band: FRTM's target model (ours): each tracked frame's sample leaves out a band this wide around the output's
    object, as a fraction of the object's size (:attr:`TargetModelConfig.sample_ignore_band`; 0 = none). None (the
    default): the weights' own setting.
    search_margin: 0 (FRTM: the object is looked for in the whole frame) or a margin in stride-16 cells (ours, default
    2; FRTM weights): on a computed frame the compute window holds the coarse score's cells only within this margin
    of the box around the object's last output, so the output is background beyond it (a distractor far from the
    object is not taken); with no last output the whole frame is searched. A reused frame of the paper's path (no
    ``reuse_window``) is refined the same way, in the box of its S_hat = S_prev + Delta within the margin (since session
    25; before, it was refined over the whole frame and took back what the margin had left out). It works through the
    compute window, so with ``compute_window=0`` (the paper's whole-frame refinement) it has no effect.
    """

    variant: str = DEFAULT_VARIANT
    tau: float | None = None
    tau2: float | None = None
    reuse_window: int = 0
    compute_window: int = DEFAULT_COMPUTE_WINDOW
    flow_gate: str | None = None
    flow_max_gap: int | None = None
    lookahead: bool = False
    memory_clock: str = "computed"
    reuse_max_gap: int = 0
    flip: bool = False
    memory_band: float | None = None
    search_margin: int = DEFAULT_SEARCH_MARGIN

    def __post_init__(self):
        if self.tau is None:
            self.tau = default_tau(self.variant, self.lookahead)
        if self.flow_max_gap is None and self.variant == "flow":
            self.flow_max_gap = FLOW_MAX_GAP
        if self.compute_window == 0:
            self.search_margin = 0  # it works through the compute window: without one, the whole frame is searched

    def validate(self) -> None:
        from reusevos.errors import ReusevosError

        if self.flow_gate is not None and self.variant != "flow":
            raise ReusevosError(f"a flow gate applies to the flow variant only, not {self.variant!r}")
        if self.variant not in VARIANTS:
            raise ReusevosError(f"unknown variant {self.variant!r}; choose one of {', '.join(VARIANTS)}")
        if not 0.0 <= self.tau <= 1.0:
            raise ReusevosError(f"tau must lie in [0, 1], got {self.tau}")
        if self.variant == "fusion":
            if self.tau2 is None or not self.tau < self.tau2 <= 1.0:
                raise ReusevosError(f"the fusion variant needs tau < tau2 <= 1; got tau={self.tau}, tau2={self.tau2}")
        elif self.tau2 is not None:
            raise ReusevosError(f"tau2 only applies to the fusion variant, not {self.variant!r}")
        for name in ("reuse_window", "compute_window"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ReusevosError(f"{name} must be a whole number of cells >= 0 (0 = off), got {value!r}")
        cap = self.reuse_max_gap
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
            raise ReusevosError(f"reuse_max_gap must be a whole number of frames >= 0 (0 = no limit), got {cap!r}")
        if cap and self.variant in ("full", "flow"):
            raise ReusevosError(f"reuse_max_gap applies to the gated variants, not {self.variant!r}"
                                + (" (its own is flow_max_gap)" if self.variant == "flow" else ""))
        gap = self.flow_max_gap
        if self.variant != "flow" and gap is not None:
            raise ReusevosError(f"flow_max_gap applies to the flow variant only, not {self.variant!r}")
        if self.variant == "flow" and (isinstance(gap, bool) or not isinstance(gap, int)
                                       or not 1 <= gap <= FLOW_GAP_LIMIT):
            raise ReusevosError(f"flow_max_gap must be a whole number of frames from 1 to {FLOW_GAP_LIMIT} (the gaps "
                                f"the flow gate was fitted on), got {gap!r}")
        if self.memory_clock not in ("computed", "frames"):
            raise ReusevosError(f"memory_clock must be 'computed' or 'frames', got {self.memory_clock!r}")
        if not isinstance(self.lookahead, bool):
            raise ReusevosError(f"lookahead must be True or False, got {self.lookahead!r}")
        if not isinstance(self.flip, bool):
            raise ReusevosError(f"flip must be True or False, got {self.flip!r}")
        band = self.memory_band
        if band is not None and (isinstance(band, bool) or not isinstance(band, (int, float)) or not 0 <= band <= 1):
            raise ReusevosError(f"memory_band must be a fraction of the object's size from 0 to 1 (0 = none) or None "
                                f"(the weights' own), got {band!r}")
        search = self.search_margin
        if isinstance(search, bool) or not isinstance(search, int) or search < 0:
            raise ReusevosError(f"search_margin must be a whole number of cells >= 0 (0 = the whole frame), "
                                f"got {search!r}")
        if self.flip and self.variant == "oracle":
            raise ReusevosError("flip cannot run with the oracle variant (its gate reads the unmirrored ground truth)")
        if self.lookahead and self.variant != "flow":
            raise ReusevosError(f"lookahead applies to the flow variant only, not {self.variant!r}")
        if self.reuse_window and self.variant in ("full", "copy", "motion", "flow"):
            raise ReusevosError(f"reuse_window applies to the reuse path, which variant {self.variant!r} never takes")


def offline_config() -> SessionConfig:
    """The default of runs over whole videos (``segment_video``, ``segment``, ``segment-davis``, the app) with FRTM
    weights: the flow variant with the lookahead at :data:`LOOKAHEAD_TAU`, longest gap 2, compute window 2, the
    target model's memory counted in frames (chosen on held-out train sequences; docs/speed.md). A live stream,
    which cannot wait for later frames, keeps :class:`SessionConfig`'s online default."""
    return SessionConfig(lookahead=True, memory_clock="frames")


@dataclass
class TrainConfig:
    """Offline training of the refinement network (iterations of ``batch`` crops per process)."""

    iterations: int = 6000
    batch: int = 8  # per process
    crop: int = 256
    lr: float = 1e-3
    lr_drops: tuple[float, ...] = (0.6, 0.85)  # fractions of the run where lr is multiplied by 0.1
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 50
    snapshot_every: int = 0  # iterations between kept copies of the weights (0: none)
    log_every: int = 10


@dataclass
class GateTrainConfig:
    """Training of the dynamic network, starting from a trained base model.

    The paper's recipe, GPU: snippets of 6 frames, batch 8, Adam lr 5e-4, 260 epochs, lr x0.1 at
    epoch 127, margin M(m1=1, m2=0) ramped over ep_T = 120 epochs. Here "epochs" map linearly onto
    ``iterations`` so the schedule keeps the paper's shape at any run length.
    """

    iterations: int = 3000
    batch: int = 4  # snippets per iteration and process
    snippet: int = 6  # frames per snippet, the first one computed (it builds the template)
    crop: int = 256
    max_gaps: tuple[int, ...] = (1, 2, 4, 8)  # each snippet's largest frame gap is one of these
    lr: float = 5e-4
    epochs: float = 260.0
    lr_drop_epoch: float = 127.0
    m1: float = 1.0
    m2: float = 0.0
    ep_t: float = 120.0
    gate_loss: str = "gp"  # "gp" (the paper) or "ngate" (fixed target rate, the ablation)
    ngate_rate: float = 0.5
    threshold: float = 0.5  # tau during training
    gate_init_rate: float = 0.15  # fraction of frames the initial gate reuses
    # Optional teacher-forced warm-up of the reuse-path modules before the paper's training (ours, not the
    # paper's): it skips the costly shallow refinement, so an iteration of it is a fraction of a paper one.
    pretrain_iterations: int = 0
    pretrain_batch: int = 8
    pretrain_lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 25
    snapshot_every: int = 0
    log_every: int = 5

    @property
    def lr_drops(self) -> tuple[float, ...]:
        return (self.lr_drop_epoch / self.epochs,)

    def epoch(self, iteration: int) -> float:
        return iteration / self.iterations * self.epochs


@dataclass
class TtvosTrainConfig:
    """Offline training of the TTVOS base model on snippets of cached frames (``batch`` snippets per iteration
    and process): the first frame's ground truth starts each snippet, the later frames run on the model's own
    estimates, as at test time. Loss = cross-entropy + ``tc_weight`` * the temporal consistency loss (the
    authors' code weighs both 1)."""

    iterations: int = 6000
    batch: int = 4
    snippet: int = 6  # frames per snippet, the first one given
    crop: int = 256
    max_gaps: tuple[int, ...] = (1, 2, 4)  # each snippet's largest frame gap is one of these
    lr: float = 5e-4
    lr_drops: tuple[float, ...] = (0.6, 0.85)
    tc_weight: float = 1.0
    weight_decay: float = 0.0
    seed: int = 0
    checkpoint_every: int = 50
    snapshot_every: int = 0
    log_every: int = 10


@dataclass(frozen=True)
class AblationConfig:
    """The paper's ablation grid (Table 2, Fig. 7 and 8): every variant at every tau; fusion with one tau2."""

    variants: tuple[str, ...] = ("reuse", "copy", "fusion", "oracle")
    taus: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.3, 0.1)
    tau2: float = 0.9


@dataclass(frozen=True)
class GateRefitConfig:
    """The refit. ``holdout_every``: every n-th sequence (sorted) is held out of the fit to measure it
    (0 = fit on all); ``taus``: thresholds the report describes."""

    gaps: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24)
    epochs: int = 60
    batch: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-4
    holdout_every: int = 5
    seed: int = 0
    taus: tuple[float, ...] = (0.9, 0.7, 0.5)
