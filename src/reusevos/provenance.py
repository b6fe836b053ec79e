"""Where a result came from: versions, machine, source commit, weights. Written next to every result."""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
from pathlib import Path

from reusevos import __version__


def versions() -> dict[str, str | None]:
    """Versions of reusevos and the libraries whose numbers it depends on, the backbone's runtimes included (None:
    not installed)."""
    import av
    import cv2
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    from reusevos.model.onnx_backbone import runtime_versions

    return {"reusevos": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__, "opencv": cv2.__version__,
            "av": av.__version__, "pillow": Image.__version__, **runtime_versions()}


def cpu_model() -> str:
    """The CPU's model name from ``/proc/cpuinfo`` (else ``platform.processor()``, else ``unknown``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _cpu_capability() -> str:
    import torch

    return torch.backends.cpu.get_cpu_capability()


def machine_info() -> dict:
    return {"platform": platform.platform(), "machine": platform.machine(), "cpu_model": cpu_model(),
            "cpu_capability": _cpu_capability(), "cpus": os.cpu_count(), "python": platform.python_version()}


def machine_label() -> str:
    """``CPU model (SIMD level, N cpus)``: what a timing depends on beyond the run's settings."""
    return f"{cpu_model()} ({_cpu_capability()}, {os.cpu_count()} cpus)"


def source_commit() -> dict:
    """``{"commit": sha or "unknown", "dirty": bool or None}`` of the git tree this package runs from."""
    here = Path(__file__).resolve().parent
    try:
        top = subprocess.run(["git", "-C", str(here), "rev-parse", "--show-toplevel"], capture_output=True,
                             text=True, timeout=10)
        if top.returncode or not (Path(top.stdout.strip()) / "src" / "reusevos").is_dir():
            return {"commit": "unknown", "dirty": None}
        sha = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10).stdout.strip()
        status = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=30).stdout.strip()
        return {"commit": sha or "unknown", "dirty": bool(status)}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def source_fingerprint() -> str:
    """A short hash of the package's Python sources: resumed measurements must come from the same code
    (a commit would also change with the docs, and is unknown outside a git checkout)."""
    digest = hashlib.sha256()
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def weights_info(network) -> dict:
    """The weights file a network was loaded from, its sha256, its base model (``frtm`` or ``ttvos``), whether it has
    a reuse gate, and its meta."""
    path = getattr(network, "weights_file", None)
    info = {"file": path, "model": getattr(network, "base", None), "has_gate": bool(getattr(network, "has_gate", False)),
            "meta": getattr(network, "meta", {})}
    if path and Path(path).is_file():
        info["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return info
