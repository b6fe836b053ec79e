"""Where results go. The rules, enforced here and nowhere else:

- an output never overwrites an input: the input video, frame folder, mask file or folder and the
  weights are refused as outputs (paths resolved, symbolic and hard links followed), and so is an
  output folder that holds an input;
- a results folder holds one run: a folder with another run's files is refused, or with ``overwrite``
  the new run is written beside it (``OUT.partial``) and replaces it whole at the end;
- a run that stops early leaves the previous complete result, or its own files marked partial
  (``stats.json`` says ``"complete": false`` with the frames done), never a mix described as complete;
- every location is checked writable (a real write: permission bits lie for root and on some mounts)
  before the model loads.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Mapping

from reusevos.errors import ReusevosError

PARTIAL_SUFFIX = ".partial"


def refuse_inputs_as_outputs(outputs: Mapping[str, str | os.PathLike | None],
                             inputs: Iterable[str | os.PathLike | None]) -> None:
    """Raise if an output (``{flag: path}``) is an input, a link to one, or a folder holding one."""
    inputs = [Path(p).expanduser() for p in inputs if p is not None]
    for flag, output in outputs.items():
        if output is None:
            continue
        output = Path(output).expanduser()
        resolved = output.resolve()
        for source in inputs:
            held = source.resolve() == resolved or resolved in source.resolve().parents
            linked = output.is_file() and source.is_file() and os.path.samefile(output, source)
            if held or linked:
                what = "is" if source.resolve() == resolved or linked else "holds"
                raise ReusevosError(f"{flag} {output} {what} the input {source}; outputs never overwrite inputs, so "
                                    f"choose another {flag}")


def check_outputs(inputs: Iterable[str | os.PathLike | None],
                  files: Mapping[str, str | os.PathLike | None] | None = None,
                  folders: Mapping[str, str | os.PathLike | None] | None = None) -> None:
    """The rules for output files and folders (``{flag: path}``; None is skipped) before any work starts: none is
    an input or holds one, a file is not a folder (nor a folder a file), and each can be written."""
    files, folders = files or {}, folders or {}
    refuse_inputs_as_outputs({**files, **folders}, inputs)
    for flag, path in files.items():
        if path is not None:
            path = Path(path).expanduser()
            if path.is_dir():
                raise ReusevosError(f"{flag} {path} is a folder; give a file name")
            probe_writable(path.parent, f"{flag} {path}")
    for flag, path in folders.items():
        if path is not None:
            path = Path(path).expanduser()
            if path.exists() and not path.is_dir():
                raise ReusevosError(f"{flag} {path} is a file; give a folder")
            probe_writable(path, f"{flag} {path}")


def probe_writable(path: str | os.PathLike, what: str) -> None:
    """Raise unless a file can be created in ``path`` (a folder) or in its nearest existing parent."""
    folder = Path(path).expanduser()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise ReusevosError(f"{what}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise ReusevosError(f"cannot write {what} in {folder}: {exc.strerror or exc}; choose a folder you can "
                            "write to") from exc


class ResultFolder:
    """One run's results folder. ``path`` must be missing or empty, or ``overwrite`` given: then this run is
    written to ``path.partial`` and :meth:`commit` replaces ``path`` with it whole."""

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, flag: str = "--out"):
        self.path = Path(path).expanduser()
        if self.path.exists() and not self.path.is_dir():
            raise ReusevosError(f"{flag} {self.path} is a file; choose a folder name (it is created if missing)")
        held = sorted(p.name for p in self.path.iterdir()) if self.path.is_dir() else []
        if held and not overwrite:
            shown = ", ".join(held[:3]) + (", ..." if len(held) > 3 else "")
            raise ReusevosError(f"{flag} {self.path} already holds {len(held)} files ({shown}); results of two runs are "
                                "never mixed: choose another folder, or pass --overwrite to replace it whole at the end")
        self.staging = self.path.with_name(self.path.name + PARTIAL_SUFFIX) if held else None
        self.folder = self.staging or self.path  # where this run writes
        probe_writable(self.folder, f"{flag} {self.path}")

    def open(self) -> Path:
        """Create the folder this run writes to (a partial folder left by an earlier run is replaced)."""
        if self.staging is not None and self.staging.exists():
            if not is_partial(self.staging):
                raise ReusevosError(f"{self.staging} is in the way of replacing {self.path}; move or remove it")
            shutil.rmtree(self.staging)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReusevosError(f"cannot create {self.folder}: {exc.strerror or exc}") from exc
        return self.folder

    def commit(self) -> None:
        """Put this run's folder in place of the old one (nothing to do when it wrote to ``path`` itself)."""
        if self.staging is None:
            return
        old = self.path.with_name(self.path.name + ".replaced")
        try:
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.path, old)
            os.replace(self.staging, self.path)
            shutil.rmtree(old)
        except OSError as exc:
            raise ReusevosError(f"cannot replace {self.path} with {self.staging}: {exc.strerror or exc}") from exc


def is_partial(folder: Path) -> bool:
    """Whether ``folder`` holds a run of ours that did not finish (its stats.json says so)."""
    try:
        return json.loads((folder / "stats.json").read_text()).get("complete") is False
    except (OSError, ValueError, AttributeError):
        return False
