"""The ``reusevos`` command line: argument parsing only; every command calls the library.

One module per command group, each with a ``register(subparsers)`` that adds its commands and the ``_cmd_<name>``
functions that run them: :mod:`~reusevos.cli.train` (train, train-gate, refit-gate), :mod:`~reusevos.cli.data`
(eval, weights, synth), :mod:`~reusevos.cli.segment` (segment, segment-davis, merge), :mod:`~reusevos.cli.bench`
(benchmark, ablation) and :mod:`~reusevos.cli.app` (app, the web app); the flags they share are in
:mod:`~reusevos.cli.common`. User errors (ReusevosError) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from reusevos import __version__
from reusevos.cli import app, bench, data, segment, train
from reusevos.cli.common import Parser
from reusevos.errors import ReusevosError

GROUPS = (train, data, segment, bench, app)  # in this order in `reusevos --help`


def _build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="reusevos",
                    description="Semi-supervised video object segmentation with a learned reuse gate.")
    parser.add_argument("--version", action="version", version=f"reusevos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in GROUPS:
        group.register(sub)
    return parser


def _stop(signum, frame) -> None:
    raise KeyboardInterrupt  # a polite kill stops as Ctrl-C does: what is done is kept and marked partial


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop)
    try:
        return int(args.func(args) or 0)
    except ReusevosError as exc:
        print(f"reusevos {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reusevos {args.command}: interrupted", file=sys.stderr)
        return 130
