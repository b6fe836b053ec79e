"""Writing files so that an interrupted or failed write never leaves a truncated file behind."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from reusevos.errors import ReusevosError


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a temporary name beside ``path``, then rename it to ``path``.

    The temporary name keeps the suffix (``x.tmp.png``) so writers that choose a format by suffix work.
    An OSError becomes a ReusevosError naming ``path``. The temporary file is removed whatever stops the write, a
    stop (KeyboardInterrupt, which SIGTERM raises in the command line) included.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ReusevosError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise


def write_text(path: str | os.PathLike, text: str) -> None:
    write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json(path: str | os.PathLike, data: Any) -> None:
    """JSON with one-space indentation and a final newline, written atomically."""
    write_text(path, json.dumps(data, indent=1) + "\n")
