"""``reusevos app``: the web app (:mod:`reusevos.app`) on this machine, for the ``app`` extra."""

from __future__ import annotations

import argparse
import importlib.util

from reusevos.cli.common import add_backbone_runtime, add_device, add_threads, add_weights, note, set_threads
from reusevos.errors import ReusevosError

INSTALL = "pip install 'reusevos[app]'"  # in a clone: pip install '.[app]'


def register(sub: argparse._SubParsersAction) -> None:
    """Adds ``app``."""
    app = sub.add_parser(
        "app", help="a page in the browser: open a video, mark the objects, watch them segmented, download the masks",
        description="Serves a page on which you open a video file, the frames of a folder or a synthetic demo clip; "
                    "draw a box or click on each object (or upload a mask) and see its start mask; run with a "
                    "progress bar and a live preview, stop, correct a frame and run again; and download the masks "
                    "(the formats of `reusevos segment --format`) and the overlay video. It reads only the files you "
                    "upload, and listens on this machine only unless --host says otherwise. Needs the app extra: "
                    f"{INSTALL}.",
        epilog="example: reusevos app, then open http://127.0.0.1:7860/ in a browser")
    app.add_argument("--host", default="127.0.0.1",
                     help="address to listen on; 0.0.0.0 lets other machines of the network open the page")
    app.add_argument("--port", type=int, default=7860, help="port to listen on")
    add_weights(app)
    add_device(app)
    add_threads(app, "CPU threads for torch and OpenCV (default: torch's choice, usually the core count)", "N")
    add_backbone_runtime(app)
    app.set_defaults(func=_cmd_app)


def _cmd_app(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise ReusevosError(f"the web app needs Gradio, which is not installed; install the app extra: {INSTALL} "
                            "(in a clone of the repository: pip install '.[app]')")
    if not 0 < args.port < 65536:
        raise ReusevosError(f"--port {args.port}: give a port from 1 to 65535")
    from reusevos.api import load_model, resolve_device
    from reusevos.model.onnx_backbone import check_runtime

    check_runtime(args.backbone_runtime)
    set_threads(args.threads)
    network = load_model(args.weights, device=resolve_device(args.device))  # before listening: errors come first
    network.backbone.runtime = args.backbone_runtime  # every run of the page, and its command, use it
    from reusevos.app.page import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        note(f"listening on {args.host}: other machines that reach it can open the page and upload files")
    serve(network, args.host, args.port, on_ready=lambda url: note(f"serving the page at {url} (Ctrl-C stops it)"))
    return 0
