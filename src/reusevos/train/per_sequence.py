"""One file of results per training sequence, computed once: what the gate refit and the flow gate's fit collect."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

from reusevos.io.davis import DavisDataset, SequenceData, load_sequence
from reusevos.io.files import write_atomically


def collect_per_sequence(dataset: DavisDataset, out_dir: str | os.PathLike, suffix: str,
                         compute: Callable[[SequenceData], dict], save: Callable[[dict, Path], None],
                         log: Callable[[str], None] = lambda _: None) -> list[Path]:
    """``out_dir/<sequence><suffix>`` for every sequence of ``dataset``: ``compute(sequence)``'s pairs written by
    ``save(pairs, tmp)`` atomically; files already there are kept, so a stopped collection resumes."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for number, name in enumerate(dataset.sequences, start=1):
        path = out / f"{name}{suffix}"
        files.append(path)
        if path.is_file():
            continue
        start = time.perf_counter()
        data = load_sequence(dataset, name)
        pairs = compute(data)
        write_atomically(path, lambda tmp: save(pairs, tmp))
        log(f"pairs {name} [{number}/{len(dataset.sequences)}]: {len(data.frames)} frames, {len(pairs['iou'])} "
            f"pairs, {time.perf_counter() - start:.0f} s")
    return files
