"""The ``reusevos`` command line: argument parsing only; every command calls the library.

Each command registers its sub-parser in ``_build_parser`` and is run by a ``_cmd_<name>`` function.
User errors (ReusevosError) become one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from reusevos import __version__
from reusevos.errors import ReusevosError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reusevos",
        description="Semi-supervised video object segmentation with a learned reuse gate.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"reusevos {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    # Commands register below, one block each.
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ReusevosError as exc:
        print(f"reusevos {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reusevos {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
