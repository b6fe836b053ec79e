"""Shards of a dataset run: which share of the sequences a process takes, and joining the shards' statistics.

A run split into N shards gives shard I (0-based) every N-th sequence from the I-th, in the dataset's order
(:meth:`Shard.take`). The shard comes from ``--shard I/N`` or from the launcher (:func:`shard_from_environment`):
``torchrun`` (``RANK``/``WORLD_SIZE``) or a Slurm array job (``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``, ids
counted from ``SLURM_ARRAY_TASK_MIN`` in steps of ``SLURM_ARRAY_TASK_STEP``). Each shard writes
``stats-IofN.json`` beside the masks; :func:`merge_shards` joins them into the ``stats.json`` an unsharded run writes:

- ``sequences``: the union of the shards' entries (a sequence in two shards is refused), in the dataset's order;
- ``total``: recomputed from that union by :func:`reusevos.runner.totals` (FPS = summed frames / summed seconds);
- ``complete``: true only when every shard is complete and every sequence of the dataset is present;
- ``reusevos``, ``torch``, ``backbone_runtime``, ``weights``, ``settings``, ``dataset``: the same in every shard
  (shards that differ are refused; the dataset's ``root`` may differ, the first shard's is kept);
- ``device``, ``threads``, ``machine``: the value every shard shares, or None when they differ;
- ``shard``: None, as in an unsharded run; ``merged``: each shard's file, index, completeness, sequences, device,
  threads and machine (the one key an unsharded run lacks).

A missing shard, or shards of two different splits (``stats-0of2.json`` beside ``stats-0of3.json``), is refused.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from reusevos.errors import ReusevosError
from reusevos.io.files import write_json
from reusevos.runner import totals

SHARD_FILE = re.compile(r"stats-(\d+)of(\d+)\.json")
SHARED = ("reusevos", "torch", "backbone_runtime", "weights", "model", "settings", "dataset")
"""The fields every shard of one run must agree on."""
PER_SHARD = ("device", "threads", "machine")
"""The fields that may differ between shards (kept per shard under ``merged``)."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based), and what set it: ``--shard``, ``torchrun``, ``slurm`` or ``""``
    (the whole run)."""

    index: int = 0
    count: int = 1
    source: str = ""

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ReusevosError(f"shard {self.index}/{self.count}: need 0 <= I < N")

    def take(self, names: Iterable[str]) -> list[str]:
        """This shard's share of ``names``: every ``count``-th from the ``index``-th."""
        return [name for i, name in enumerate(names) if i % self.count == self.index]

    @property
    def stats_name(self) -> str:
        """``stats.json`` for the whole run, ``stats-IofN.json`` for a shard."""
        return "stats.json" if self.count == 1 else f"stats-{self.index}of{self.count}.json"

    def to_dict(self) -> dict | None:
        return None if self.count == 1 else {"index": self.index, "count": self.count, "source": self.source}


def parse_shard(text: str) -> Shard:
    """``--shard I/N``."""
    try:
        index, count = (int(v) for v in text.split("/"))
    except ValueError:
        raise ReusevosError(f"--shard {text!r}: write I/N, for example 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ReusevosError(f"--shard {text!r}: need 0 <= I < N")
    return Shard(index, count, "--shard")


def shard_from_environment(environ: Mapping[str, str] | None = None) -> Shard:
    """The shard a launcher gives this process: ``torchrun``'s ``RANK`` of ``WORLD_SIZE``, or a Slurm array task
    (``SLURM_ARRAY_TASK_ID`` among ``SLURM_ARRAY_TASK_COUNT`` tasks, counted from ``SLURM_ARRAY_TASK_MIN`` in steps of
    ``SLURM_ARRAY_TASK_STEP``); the whole run when neither splits it. Both splitting it at once is refused."""
    env = os.environ if environ is None else environ
    found = []
    if "WORLD_SIZE" in env or "RANK" in env:
        size, rank = _number(env, "WORLD_SIZE", "torchrun", 1), _number(env, "RANK", "torchrun", 0)
        if size < 1 or not 0 <= rank < size:
            raise ReusevosError(f"RANK={rank} WORLD_SIZE={size} (torchrun): need 0 <= RANK < WORLD_SIZE; or give "
                                "--shard I/N")
        if size > 1:
            found.append(Shard(rank, size, "torchrun"))
    if "SLURM_ARRAY_TASK_ID" in env:
        task = _number(env, "SLURM_ARRAY_TASK_ID", "Slurm")
        count = _number(env, "SLURM_ARRAY_TASK_COUNT", "Slurm")
        first = _number(env, "SLURM_ARRAY_TASK_MIN", "Slurm", 0)
        step = _number(env, "SLURM_ARRAY_TASK_STEP", "Slurm", 1)
        offset = task - first
        if count < 1 or step < 1 or offset < 0 or offset % step or offset // step >= count:
            raise ReusevosError(f"Slurm array task {task} (min {first}, step {step}, {count} tasks) is not one of "
                                f"{count} evenly spaced tasks from {first}; give --shard I/N")
        if count > 1:
            found.append(Shard(offset // step, count, "slurm"))
    if len(found) > 1:
        raise ReusevosError(f"both torchrun (RANK {found[0].index} of {found[0].count}) and a Slurm array (task "
                            f"{found[1].index} of {found[1].count}) split this run; give --shard I/N")
    return found[0] if found else Shard()


def _number(env: Mapping[str, str], name: str, launcher: str, default: int | None = None) -> int:
    text = env.get(name)
    if text is None and default is not None:
        return default
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ReusevosError(f"{name}={text!r} ({launcher}): not a whole number; fix the launcher's environment or "
                            "give --shard I/N") from None


def merge_shards(out_root: str | os.PathLike) -> dict:
    """The ``stats.json`` of the shards in ``out_root`` joined as the module's docstring says (not written: see
    :func:`write_merged`). Raises ReusevosError when no shard is there, when one is missing, when shards overlap or
    ran with other settings, or when ``stats.json`` holds an unsharded run."""
    out_root = Path(out_root).expanduser()
    if not out_root.is_dir():
        raise ReusevosError(f"{out_root} is not a folder; give the RESULTS_DIR the shards wrote to")
    found = {}
    for path in sorted(out_root.glob("stats-*of*.json")):
        match = SHARD_FILE.fullmatch(path.name)
        if match:
            found[path] = (int(match[1]), int(match[2]))
    if not found:
        raise ReusevosError(f"{out_root} holds no shard statistics (stats-IofN.json); run segment-davis with --shard "
                            "I/N, under torchrun or as a Slurm array job first")
    counts = sorted({count for _, count in found.values()})
    if len(counts) > 1:
        names = ", ".join(p.name for p in found)
        raise ReusevosError(f"{out_root} holds shards of runs split {' and '.join(map(str, counts))} ways ({names}); "
                            "their sequences overlap: keep one run's stats-IofN.json files")
    count = counts[0]
    missing = sorted(set(range(count)) - {index for index, _ in found.values()})
    if missing:
        raise ReusevosError(f"shard(s) {', '.join(map(str, missing))} of {count} missing in {out_root} (no "
                            f"{', '.join(f'stats-{i}of{count}.json' for i in missing)}); run them and merge again")
    _refuse_unsharded(out_root / "stats.json")
    reports = [(path, _read(path)) for path, _ in sorted(found.items(), key=lambda item: item[1])]
    first_path, first = reports[0]
    for path, report in reports[1:]:
        for key in SHARED:
            if _comparable(key, report.get(key)) != _comparable(key, first.get(key)):
                raise ReusevosError(f"{path.name} and {first_path.name} differ in {key!r}; the shards of one run share "
                                    "it: rerun the odd shard into this folder with the others' settings")
    owner: dict[str, str] = {}
    for path, report in reports:
        for name in report.get("sequences", {}):
            if name in owner:
                raise ReusevosError(f"sequence {name} is in both {owner[name]} and {path.name}: the shards overlap; "
                                    "remove the stray file")
            owner[name] = path.name
    order = list((first.get("dataset") or {}).get("sequences", []))
    ranked = {name: i for i, name in enumerate(order)}
    union = {name: entry for _, report in reports for name, entry in report.get("sequences", {}).items()}
    sequences = {name: union[name] for name in sorted(union, key=lambda n: (ranked.get(n, len(order)), n))}
    merged = {key: value for key, value in first.items() if key not in ("merged",)}
    for key in PER_SHARD:
        values = [report.get(key) for _, report in reports]
        merged[key] = values[0] if all(v == values[0] for v in values) else None
    merged.update({
        "complete": all(report.get("complete") is True for _, report in reports) and set(order) <= set(sequences),
        "shard": None, "sequences": sequences, "total": totals(sequences.values()),
        "merged": [{"file": path.name, **(report.get("shard") or {}), "complete": report.get("complete") is True,
                    "sequences": len(report.get("sequences", {})), **{key: report.get(key) for key in PER_SHARD}}
                   for path, report in reports]})
    return merged


def _comparable(key: str, value):
    """A shared field as shards must agree on it: the dataset's root may be mounted elsewhere on another machine."""
    if key == "dataset" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k != "root"}
    return value


def write_merged(out_root: str | os.PathLike, merged: Mapping) -> Path:
    """``out_root/stats.json``, written atomically; its path."""
    path = Path(out_root).expanduser() / "stats.json"
    write_json(path, dict(merged))
    return path


def _refuse_unsharded(path: Path) -> None:
    """A ``stats.json`` there must be an earlier merge's (replaced), never a run's own."""
    if path.is_file() and "merged" not in _read(path):
        raise ReusevosError(f"{path} is the statistics of an unsharded run in the same folder; a folder holds one run: "
                            "move it away (or merge into a copy of the shards' folder)")


def _read(path: Path) -> dict:
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReusevosError(f"cannot read {path} ({exc}); rerun that shard into this folder") from None
    if not isinstance(report, dict):
        raise ReusevosError(f"{path} is not a run's statistics; rerun that shard into this folder")
    return report
