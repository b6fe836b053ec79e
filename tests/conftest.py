"""Shared fixtures: the real shared data, the backbone with its ImageNet weights."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import subprocess
import sys
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(os.environ.get("REUSEVOS_SHARED", Path(__file__).resolve().parents[2] / "shared"))
BLACKSWAN = SHARED / "data" / "davis2016-blackswan"

torch.set_num_threads(min(2, torch.get_num_threads()))
_INTERPRETER_WARNING_FILTERS = list(warnings.filters)  # what a fresh `python -m reusevos` starts with


@pytest.fixture(scope="session")
def blackswan_root() -> Path:
    if not (BLACKSWAN / "JPEGImages").is_dir():
        pytest.skip(f"shared blackswan clip not found at {BLACKSWAN} (set REUSEVOS_SHARED)")
    return BLACKSWAN


@pytest.fixture(scope="session")
def blackswan(blackswan_root):
    """The first frames and masks of the real blackswan clip: lists of (H, W, 3) uint8 and (H, W) uint8."""
    from PIL import Image

    from reusevos.io.masks import read_mask

    frames = sorted((blackswan_root / "JPEGImages" / "480p" / "blackswan").glob("*.jpg"))
    masks = sorted((blackswan_root / "Annotations" / "480p" / "blackswan").glob("*.png"))
    return [np.array(Image.open(p).convert("RGB")) for p in frames], [read_mask(p) for p in masks]


@pytest.fixture(scope="session")
def backbone():
    """MobileNetV2 with its verified ImageNet weights (the README's set-up command fetches them)."""
    from reusevos.model.backbone import load_backbone

    return load_backbone("mobilenet_v2", fetch=False)


@pytest.fixture(scope="module")
def tiny_davis(tmp_path_factory):
    """A tiny DAVIS root for training runs: two 5-frame 64x96 clips (1 and 2 objects) in its train split."""
    from reusevos.synthetic import SyntheticConfig, write_clip

    root = tmp_path_factory.mktemp("davis")
    for i in range(2):
        write_clip(root, f"clip{i}", SyntheticConfig(size=(64, 96), num_frames=5, num_objects=1 + i, speed=2.0,
                                                      seed=i), split="train")
    return root


FAST = ["--threads", "1"]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes: compare before and after to see what a command touched."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def run_segment(*args, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "reusevos", "segment", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=timeout)


def cli(*args, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``reusevos ARGS`` run in this process, seen as ``python -m reusevos ARGS`` would be: its exit code, stdout
    and stderr. Saves the 3-5 s of a new interpreter importing torch, which refusal tests pay many times over.

    ``env``: the whole environment during the call, as for ``subprocess.run``. An exception escaping ``main`` is
    written to stderr as the interpreter would (a traceback, exit 1); warnings print to stderr under the
    interpreter's default filters (not pytest's); torch's thread count, the SIGTERM handler and the environment
    are put back afterwards. What it cannot see: writes of native code to file descriptor 2 (a video decoder's
    complaints) and anything about the interpreter's start or exit, so tests that feed bad video, stop a run by a
    signal or check the entry point itself still run ``python -m reusevos``.
    """
    from reusevos.cli import main

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    threads, handler, environ = torch.get_num_threads(), signal.getsignal(signal.SIGTERM), dict(os.environ)

    def show(message, category, filename, lineno, file=None, line=None):
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    if env is not None:
        os.environ.clear()
        os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
            warnings.resetwarnings()  # (which also empties the modules' caches of shown warnings)
            warnings.filters.extend(_INTERPRETER_WARNING_FILTERS)
            warnings.showwarning = show
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse's refusals and --help
                if exc.code is None or isinstance(exc.code, int):
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
            except Exception:  # what the interpreter would print, for the test to see
                traceback.print_exc()
                code = 1
    finally:
        torch.set_num_threads(threads)
        signal.signal(signal.SIGTERM, handler)
        if env is not None:
            os.environ.clear()
            os.environ.update(environ)
    return subprocess.CompletedProcess(["reusevos", *argv], code, out.getvalue(), err.getvalue())


def one_error(proc: subprocess.CompletedProcess, *phrases: str, code: int = 2) -> str:
    """The one line a refused command printed (exit ``code``, no traceback), checked to hold every phrase."""
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(p in lines[0] for p in phrases), lines[0]
    return lines[0]


@pytest.fixture(scope="session")
def weights(tmp_path_factory) -> dict[str, Path]:
    """Random checkpoints: ``base`` (no gate) and ``gate`` (with the reuse-path modules)."""
    folder = tmp_path_factory.mktemp("weights")
    paths = {}
    from reusevos.config import ModelConfig
    from reusevos.model.backbone import Backbone
    from reusevos.model.network import VOSNetwork, save_checkpoint

    torch.manual_seed(0)
    for name, gate in (("base", False), ("gate", True)):
        net = VOSNetwork(ModelConfig(reuse_gate=gate), Backbone("mobilenet_v2"))
        paths[name] = folder / f"{name}.pt"
        save_checkpoint(paths[name], net, meta={"name": f"random-{name}"})
    return paths
