"""What every command group shares: the parser class and its help formatter, the flags several commands take
(--davis/--split, --sequences, --weights, --device, --threads, the session flags) and their parsers.

Nothing here imports torch: ``reusevos --help`` builds every sub-parser, so heavy imports wait in the functions
that run a command.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from reusevos.config import (BACKBONE_RUNTIMES, BASE_MODELS, FLOW_GAP_LIMIT, FLOW_MAX_GAP, VARIANTS, SessionConfig,
                             default_tau, offline_config)
from reusevos.errors import ReusevosError

THREADS_HELP = "torch CPU threads (default: torch's choice)"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, except where there is none to show (None, a switch)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.nargs == 0 or action.default is None or action.default == argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """Every (sub-)parser uses HelpFormatter; a flag given no help text still shows its default.

    Sub-parsers are made with the class of their parent, so setting it on the top-level parser covers all.
    """

    def __init__(self, *args, **kwargs):
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        if not action.help and action.nargs != 0 and action.default is not None and action.default != argparse.SUPPRESS:
            action.help = "default: %(default)s"
        return action


# -- flags several commands take ----------------------------------------------------------------------------------

def add_davis(parser: argparse.ArgumentParser, split: str, split_help: str, *, positional: bool = False,
              layout: str = "") -> None:
    """The DAVIS root (``--davis``, or an optional DAVIS_ROOT argument) and ``--split``; ``layout`` names the
    layouts the command reads (", 2016 layout"), where that matters."""
    root_help = f"DAVIS root{layout} (default: $REUSEVOS_DAVIS)"
    if positional:
        parser.add_argument("davis", metavar="DAVIS_ROOT", nargs="?", default=None, help=root_help)
    else:
        parser.add_argument("--davis", default=None, help=root_help)
    parser.add_argument("--split", default=split, help=split_help)


def parse_sequences(text: str) -> list[str] | None:
    """``--sequences a,b``: the names in order; empty = None, every sequence of the split."""
    return [name for name in text.split(",") if name] or None


def add_sequences(parser: argparse.ArgumentParser, default: str = "all") -> None:
    """``--sequences``, read into a list by argparse (None when not given); ``default`` says what None means."""
    parser.add_argument("--sequences", type=parse_sequences, default=None,
                        help=f"comma-separated subset of the split (default: {default})")


def add_weights(parser: argparse.ArgumentParser, what: str = "checkpoint file", model: bool = False) -> None:
    """``--weights FILE``; None loads the shipped weights (reusevos.api.load_model's default). With ``model``, also
    ``--model NAME`` (None: whichever base model the weights hold, FRTM when none are given): pass both to
    ``load_model(args.weights, model=args.model)``."""
    parser.add_argument("--weights", default=None, metavar="FILE",
                        help=f"{what}, or the name of weights shipped with reusevos: frtm, ttvos, frtm-mobilenet_v2 "
                             "(the FRTM default before issue 17, faster and less accurate) (default: "
                             + ("those of --model)" if model else "frtm)"))
    if model:
        parser.add_argument("--model", default=None, choices=BASE_MODELS,
                            help="the base model: frtm (the default, FRTM with the paper's reuse gate) or ttvos "
                                 "(TTVOS: variants full and flow, and with a trained gate, G-TTVOS, every variant), "
                                 "with the weights shipped for it; with --weights, the model the file must hold")


def add_device(parser: argparse.ArgumentParser, default: str = "auto", note: str = "") -> None:
    """``--device``; ``auto`` is named only where it is the default (the commands that resolve it)."""
    names = "auto (CUDA, else MPS, else CPU), cpu, cuda or mps" if default == "auto" else "cpu, cuda or mps"
    parser.add_argument("--device", default=default, help=names + note)


def add_threads(parser: argparse.ArgumentParser, help: str = THREADS_HELP, metavar: str | None = None) -> None:
    """``--threads``, applied by :func:`set_threads`."""
    parser.add_argument("--threads", type=int, default=None, metavar=metavar, help=help)


def set_threads(threads: int | None) -> None:
    """The one place ``--threads`` takes effect: torch's and OpenCV's thread pools; None leaves both alone."""
    if threads is None:
        return
    if threads < 1:
        raise ReusevosError(f"--threads {threads}: give 1 or more")
    cpus = os.cpu_count() or 1
    if threads > 4 * cpus:
        raise ReusevosError(f"--threads {threads}: this machine has {cpus} CPUs; more threads than CPUs only slows the "
                            f"work down (give at most {4 * cpus})")
    import cv2
    import torch

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)


def csv_list(text: str, flag: str, kind=str, expected: str = "comma-separated numbers, for example 1,0.7") -> list:
    """A comma-separated flag value as a list; a value ``kind`` cannot read is a ReusevosError saying what is
    ``expected``."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return [kind(item) for item in items]
    except ValueError:
        raise ReusevosError(f"{flag} {text!r}: give {expected}") from None


def command_line() -> str:
    """This run's command, quoted so that it can be pasted back into a shell (for the provenance records)."""
    return shlex.join(["reusevos", *sys.argv[1:]])


def log(message: str) -> None:
    """Progress lines of long runs, flushed so that they show up at once in a log file."""
    print(message, flush=True)


def note(message: str) -> None:
    """A status line on stderr (stdout keeps only the command's result)."""
    print(f"reusevos: {message}", file=sys.stderr, flush=True)


# -- the session flags (segment, segment-davis) -------------------------------------------------------------------

def add_session_flags(parser: argparse.ArgumentParser) -> None:
    """--variant, --tau, --tau2, --reuse-window, --compute-window, --flow-gate, --flow-max-gap, --reuse-max-gap,
    --memory-clock, --lookahead, --flip, --search-margin: map one to one onto SessionConfig; what is not given takes
    SessionConfig's default. Also --backbone-runtime."""
    # oracle needs the ground truth: the benchmark's and the ablation's, not a video's
    parser.add_argument("--variant", default=None, choices=[v for v in VARIANTS if v != "oracle"],
                        help="flow (ours, the default): decide before the backbone and warp the last computed mask "
                             "by optical flow, no network on reused frames; reuse: the paper's reuse path; copy: "
                             "reuse = keep the previous mask; fusion: copy above --tau2, reuse path between --tau and "
                             "--tau2; motion (ours): reuse = the previous mask shifted by the object's translation; "
                             "full: never reuse (the base model). reuse, copy, fusion and motion need weights with a "
                             "trained reuse gate (the shipped ones have one)")
    parser.add_argument("--tau", type=float, default=None, metavar="T",
                        help="reuse a frame when the gate's probability is at least T, in [0, 1]: lower = faster, "
                             f"less accurate; 1 = never reuse. Default: {default_tau('flow', True):g} for flow with "
                             f"the lookahead, {default_tau('flow'):g} without (both chosen on held-out training "
                             f"sequences), {default_tau('reuse'):g} (the paper's) for the others")
    parser.add_argument("--tau2", type=float, default=None, metavar="T2",
                        help="--variant fusion only: copy the previous mask when the gate's probability is at least "
                             "T2 (tau < T2 <= 1)")
    parser.add_argument("--reuse-window", type=int, default=None, metavar="CELLS",
                        help="on the reuse path, refine only a box around the object's last mask grown by CELLS "
                             "cells of 16 pixels, keeping the last mask outside it (faster; see docs/speed.md). "
                             f"Default: {SessionConfig.reuse_window}, the paper's whole-frame refinement")
    parser.add_argument("--compute-window", type=int, default=None, metavar="CELLS",
                        help="on computed frames, refine only a box around where the coarse score and the last mask "
                             "find the object, grown by CELLS cells of 16 pixels; background outside it (faster and, "
                             f"on DAVIS val, more accurate; see docs/speed.md). Default: {SessionConfig.compute_window}"
                             "; 0 = the paper's whole-frame refinement")
    parser.add_argument("--search-margin", type=int, default=None, metavar="CELLS",
                        help="with a compute window (FRTM weights): the coarse score counts only within CELLS cells "
                             "of 16 pixels around the object's last mask, so a look-alike farther away is not taken "
                             f"(ours; default: {SessionConfig.search_margin}, chosen on held-out training sequences: "
                             "more accurate and faster on DAVIS val, see docs/accuracy.md); 0 = the whole frame, FRTM's")
    parser.add_argument("--flow-gate", default=None, metavar="FILE",
                        help="--variant flow only: the gate file written by `reusevos fit-flow-gate` (default: the "
                             "one shipped)")
    parser.add_argument("--flow-max-gap", type=int, default=None, metavar="FRAMES",
                        help="--variant flow only: compute an object again at the latest FRAMES frames after its last "
                             f"computed frame, whatever the gate says (1 to {FLOW_GAP_LIMIT}; default: "
                             f"{FLOW_MAX_GAP}, chosen on held-out training sequences)")
    parser.add_argument("--reuse-max-gap", type=int, default=None, metavar="FRAMES",
                        help="the gated variants (reuse, copy, fusion, motion): compute an object again at the "
                             "latest FRAMES frames after its last computed frame, whatever the gate says (ours; "
                             "default: 0, no limit, the paper's)")
    parser.add_argument("--memory-clock", default=None, choices=("computed", "frames"),
                        help="how FRTM's target model counts time: frames (ours, the default with the lookahead: "
                             "its memory ages and refits by frames elapsed, so moving frames does not slow its "
                             "adaptation) or computed (FRTM's: by computed frames; the default otherwise)")
    ahead = parser.add_mutually_exclusive_group()
    ahead.add_argument("--lookahead", action="store_true", default=None,
                       help="--variant flow only, its default here: a frame whose objects were moved waits until they "
                            "are computed again (at most --flow-max-gap frames) and blends the warps of the computed "
                            "masks before and after it; more accurate moved frames, the same computed ones, masks "
                            "written up to that many frames late (see docs/speed.md)")
    ahead.add_argument("--no-lookahead", action="store_false", dest="lookahead", default=None,
                       help="--variant flow: each frame's mask as soon as it is processed (tau 0.92 unless told)")
    parser.add_argument("--flip", action="store_true", default=None,
                        help="test-time horizontal flip (ours): a second tracker follows the objects in the mirrored "
                             "video and each frame takes the mean of both trackers' probabilities; better masks for "
                             "about twice the time and memory (docs/accuracy.md)")
    add_backbone_runtime(parser)


def add_backbone_runtime(parser: argparse.ArgumentParser) -> None:
    """--backbone-runtime (segment, segment-davis, app)."""
    parser.add_argument("--backbone-runtime", default="auto", choices=BACKBONE_RUNTIMES,
                        help="what runs the frozen backbone on a CPU: onnxruntime (about 1.5x as fast, the same "
                             "features up to float rounding), torch, onnxruntime-int8 (the default model's backbone in "
                             "int8 with ranges calibrated on DAVIS train frames: faster on every CPU, slightly "
                             "different masks), openvino (pip install openvino; float32, the "
                             "same features), openvino-bf16 (the bfloat16 mode: the backbone in OpenVINO and FRTM's "
                             "refinement network in PyTorch both compute in bfloat16; faster on CPUs with AVX512-BF16 "
                             "or AMX, slightly different masks; refused on others), or auto (onnxruntime when "
                             "installed). GPUs always use torch")


def session_options(args: argparse.Namespace) -> SessionConfig | None:
    """SessionConfig from the session flags, validated; what is not given takes SessionConfig's default, but the
    flow variant looks ahead unless ``--no-lookahead``, and then counts the memory's time in frames unless
    ``--memory-clock`` says otherwise (these commands run whole videos, see :func:`reusevos.config.offline_config`);
    None when no flag is given (the run's own default)."""
    names = ("variant", "tau", "tau2", "reuse_window", "compute_window", "flow_gate", "flow_max_gap", "lookahead",
             "memory_clock", "reuse_max_gap", "flip", "search_margin")
    given = {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}
    if not given:
        return None
    if given.get("variant") == "full" and given.get("tau", 1.0) != 1.0:
        raise ReusevosError(f"--tau {args.tau} has no effect with --variant full, which never reuses; drop one of them")
    if "lookahead" not in given and given.get("variant", "flow") == "flow":
        given["lookahead"] = True  # the offline default: these commands segment whole videos
    if "memory_clock" not in given and given.get("lookahead"):
        given["memory_clock"] = offline_config().memory_clock
    options = SessionConfig(**given)
    options.validate()
    return options
