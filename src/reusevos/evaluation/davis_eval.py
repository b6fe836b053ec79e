"""Scoring a results folder against a DAVIS root, as the official semi-supervised evaluation does.

A results folder holds ``<sequence>/<frame>.png`` label maps (palette PNGs as written by
``reusevos.io.masks.write_mask``; 0 = background, ids as in the ground truth), one per annotated
frame, named like the annotation files. Per sequence:

- the objects are the ids annotated anywhere in the ground truth (void, 255, is background, as in
  the toolkit); for DAVIS these are ``1..K`` of the first frame, the toolkit's rule;
- the first and the last frame are not scored, so their predictions may be absent;
- an object missing from a prediction is an empty mask there; an id the ground truth lacks, a
  missing file or a size different from the ground truth is a ReusevosError naming the file.

The per-object statistics are averaged over all objects of all sequences (each object weighs the
same, whatever its sequence's length), and J&F-Mean = (J-Mean + F-Mean) / 2.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reusevos.errors import ReusevosError
from reusevos.evaluation.metrics import BOUND_TH, frame_scores
from reusevos.evaluation.statistics import Statistics, davis_statistics
from reusevos.io.davis import VOID_LABEL, DavisDataset
from reusevos.io.masks import read_mask

GLOBAL_KEYS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
"""The global figures, in the toolkit's order."""


@dataclass
class ObjectScores:
    """One object's per-frame J and F over the scored frames of its sequence.

    ``j`` and ``f`` are ``(N,)`` float64, N = frames of the sequence minus the first and the last;
    ``frame_ids`` names those frames.
    """

    sequence: str
    object_id: int
    frame_ids: list[str]
    j: np.ndarray
    f: np.ndarray
    j_stats: Statistics = field(init=False)
    f_stats: Statistics = field(init=False)

    def __post_init__(self) -> None:
        self.j_stats = davis_statistics(self.j)
        self.f_stats = davis_statistics(self.f)

    @property
    def key(self) -> str:
        """``<sequence>_<id>``, the toolkit's name for the object."""
        return f"{self.sequence}_{self.object_id}"


@dataclass
class DavisScores:
    """The scores of a whole evaluation: every object of every sequence, in sequence order."""

    objects: list[ObjectScores]

    @property
    def sequences(self) -> list[str]:
        return list(dict.fromkeys(o.sequence for o in self.objects))

    @property
    def num_frames(self) -> int:
        """Scored frames, counted once per sequence."""
        seen: dict[str, int] = {}
        for o in self.objects:
            seen[o.sequence] = len(o.frame_ids)
        return sum(seen.values())

    def global_scores(self) -> dict[str, float]:
        """The global figures (fractions): means over all objects of their Mean, Recall and Decay."""
        if not self.objects:
            raise ReusevosError("nothing was scored: no sequence with an annotated object")
        j = np.array([o.j_stats for o in self.objects], dtype=np.float64)  # (objects, 3)
        f = np.array([o.f_stats for o in self.objects], dtype=np.float64)
        j_mean, j_recall, j_decay = (float(v) for v in j.mean(axis=0))
        f_mean, f_recall, f_decay = (float(v) for v in f.mean(axis=0))
        return {
            "J&F-Mean": (j_mean + f_mean) / 2,
            "J-Mean": j_mean,
            "J-Recall": j_recall,
            "J-Decay": j_decay,
            "F-Mean": f_mean,
            "F-Recall": f_recall,
            "F-Decay": f_decay,
        }

    def per_object(self) -> dict[str, dict[str, float]]:
        """``{"<seq>_<id>": {"J-Mean": .., "F-Mean": ..}}`` in sequence order."""
        return {o.key: {"J-Mean": o.j_stats.mean, "F-Mean": o.f_stats.mean} for o in self.objects}

    def to_dict(self) -> dict:
        """The JSON form: ``{"global": {...}, "per_object": {...}}``, fractions, the golden file's keys."""
        return {"global": self.global_scores(), "per_object": self.per_object()}

    def global_table(self) -> str:
        """The global figures as a two-line text table (fractions, 3 decimals)."""
        scores = self.global_scores()
        widths = [max(len(k), 6) for k in GLOBAL_KEYS]
        head = "  ".join(k.rjust(w) for k, w in zip(GLOBAL_KEYS, widths))
        row = "  ".join(f"{scores[k]:.3f}".rjust(w) for k, w in zip(GLOBAL_KEYS, widths))
        return f"{head}\n{row}"

    def object_table(self) -> str:
        """One line per object (``<seq>_<id>``, J&F, J-Mean, F-Mean), the toolkit's per-sequence table."""
        names = [o.key for o in self.objects]
        width = max([len("Sequence")] + [len(n) for n in names])
        lines = [f"{'Sequence'.ljust(width)}  {'J&F':>6}  {'J-Mean':>6}  {'F-Mean':>6}"]
        for o in self.objects:
            jm, fm = o.j_stats.mean, o.f_stats.mean
            lines.append(f"{o.key.ljust(width)}  {(jm + fm) / 2:6.3f}  {jm:6.3f}  {fm:6.3f}")
        return "\n".join(lines)


def _ground_truth_objects(gt: np.ndarray, sequence: str) -> list[int]:
    """Map void to background in place in ``gt`` ``(T, H, W)`` uint8; return the ids annotated anywhere."""
    present = np.zeros(256, dtype=np.int64)
    for frame in gt:  # per frame: a histogram of the whole clip would need 8 bytes a pixel
        frame[frame == VOID_LABEL] = 0
        present += np.bincount(frame.reshape(-1), minlength=256)
    ids = [int(i) for i in np.flatnonzero(present[1:]) + 1]
    if not ids:
        raise ReusevosError(f"the ground truth of sequence {sequence} annotates no object; nothing to score")
    return ids


def _check_length(sequence: str, num_frames: int) -> None:
    if num_frames < 3:
        raise ReusevosError(
            f"sequence {sequence} has {num_frames} annotated frame(s); DAVIS scoring leaves out the first "
            "and the last frame, so it needs at least 3"
        )


def score_sequence(
    gt: np.ndarray,
    pred: np.ndarray,
    sequence: str = "sequence",
    frame_ids: Sequence[str] | None = None,
    bound_th: float = BOUND_TH,
) -> list[ObjectScores]:
    """Score in-memory predictions of one sequence.

    Args:
        gt: ``(T, H, W)`` uint8 ground-truth labels of every frame (255 = void).
        pred: ``(T, H, W)`` uint8 predicted labels; frames 0 and T-1 are ignored.
        sequence: the name used in the object keys.
        frame_ids: T frame names (default ``00000``, ...).

    Returns:
        one ObjectScores per ground-truth object, ids ascending.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.ndim != 3 or gt.shape != pred.shape:
        raise ReusevosError(
            f"sequence {sequence}: ground truth {gt.shape} and prediction {pred.shape} must both be (T, H, W)"
        )
    if gt.dtype != np.uint8 or pred.dtype != np.uint8:
        raise ReusevosError(f"sequence {sequence}: label maps must be uint8, got {gt.dtype} and {pred.dtype}")
    num_frames = gt.shape[0]
    _check_length(sequence, num_frames)
    frame_ids = list(frame_ids) if frame_ids is not None else [f"{t:05d}" for t in range(num_frames)]
    if len(frame_ids) != num_frames:
        raise ValueError(f"{len(frame_ids)} frame ids for {num_frames} frames")
    gt = gt.copy()  # void is mapped to background in place
    ids = _ground_truth_objects(gt, sequence)

    def predictions():
        for t in range(1, num_frames - 1):
            _check_ids(pred[t], ids, f"sequence {sequence} frame {frame_ids[t]}")
            yield pred[t]

    return _score(gt, predictions(), ids, sequence, frame_ids, bound_th)


def _check_ids(pred: np.ndarray, ids: list[int], where: str) -> None:
    top = int(pred.max(initial=0))
    if top <= len(ids) and ids[-1] == len(ids):
        return  # the usual case, ids 1..K: no label can be foreign
    present = np.bincount(pred.reshape(-1), minlength=256)
    present[0] = 0
    extra = [int(i) for i in np.flatnonzero(present) if int(i) not in ids]
    if extra:
        raise ReusevosError(
            f"{where} holds object id(s) {', '.join(map(str, extra))} that the ground truth lacks "
            f"(it has {', '.join(map(str, ids))}); write only the ground truth's ids"
        )


def _score(
    gt: np.ndarray,
    predictions: Iterable[np.ndarray],
    ids: list[int],
    sequence: str,
    frame_ids: list[str],
    bound_th: float,
) -> list[ObjectScores]:
    """Score frames 1..T-2 of ``gt`` ``(T, H, W)`` against the T-2 predictions, streamed."""
    num_scored = gt.shape[0] - 2
    j = np.empty((len(ids), num_scored), dtype=np.float64)
    f = np.empty((len(ids), num_scored), dtype=np.float64)
    for i, pred in enumerate(predictions):
        j[:, i], f[:, i] = frame_scores(gt[i + 1], pred, ids, bound_th)
    scored_ids = frame_ids[1:-1]
    return [ObjectScores(sequence, obj, scored_ids, j[k], f[k]) for k, obj in enumerate(ids)]


def evaluate_sequence(
    dataset: DavisDataset,
    sequence: str,
    results_dir: str | os.PathLike,
    bound_th: float = BOUND_TH,
) -> list[ObjectScores]:
    """Score ``results_dir/<sequence>/<frame>.png`` against one sequence of ``dataset``.

    Returns one ObjectScores per ground-truth object. Raises ReusevosError for a missing folder or
    file, a size mismatch or an object id the ground truth lacks.
    """
    results_dir = Path(results_dir)
    mask_paths = dataset.mask_paths(sequence)
    num_frames = len(dataset.frame_paths(sequence))
    if len(mask_paths) != num_frames:
        raise ReusevosError(
            f"sequence {sequence} has annotations for {len(mask_paths)} of its {num_frames} frames; "
            "scoring needs every frame annotated (use a split with full ground truth, e.g. val)"
        )
    _check_length(sequence, len(mask_paths))
    pred_dir = results_dir / sequence
    if not pred_dir.is_dir():
        raise ReusevosError(
            f"no results for sequence {sequence}: {pred_dir} is missing (expected "
            f"{results_dir}/<sequence>/<frame>.png for every sequence of the split, or pass --sequences)"
        )
    frame_ids = [p.stem for p in mask_paths]
    gt = dataset.read_masks(sequence)
    ids = _ground_truth_objects(gt, sequence)
    height, width = gt.shape[1:]

    def predictions():
        for frame_id in frame_ids[1:-1]:
            path = pred_dir / f"{frame_id}.png"
            if not path.is_file():
                raise ReusevosError(
                    f"prediction {path} is missing; write one PNG per annotated frame, named like the "
                    "annotation (the first and last frame may be left out)"
                )
            pred = read_mask(path)
            if pred.shape != (height, width):
                raise ReusevosError(
                    f"prediction {path} is {pred.shape[1]}x{pred.shape[0]} but the ground truth is "
                    f"{width}x{height}; write masks at the annotation's size"
                )
            _check_ids(pred, ids, f"prediction {path}")
            yield pred

    return _score(gt, predictions(), ids, sequence, frame_ids, bound_th)


def _evaluate_one(job: tuple[DavisDataset, str, str, float]) -> list[ObjectScores]:
    dataset, sequence, results_dir, bound_th = job
    return evaluate_sequence(dataset, sequence, results_dir, bound_th)


def evaluate_davis(
    results_dir: str | os.PathLike,
    davis: DavisDataset | str | os.PathLike | None = None,
    split: str = "val",
    sequences: Iterable[str] | None = None,
    *,
    workers: int = 1,
    bound_th: float = BOUND_TH,
) -> DavisScores:
    """Score a results folder on a DAVIS split.

    Args:
        results_dir: folder of ``<sequence>/<frame>.png`` predictions.
        davis: a DavisDataset, or a DAVIS root (``None`` = ``$REUSEVOS_DAVIS``), read with ``split``
            and ``sequences``.
        split: the split to score when ``davis`` is a root.
        sequences: a subset of the split (default: all of it) when ``davis`` is a root.
        workers: processes scoring sequences in parallel (1 = in this process).

    Returns:
        DavisScores; ``.to_dict()`` gives the toolkit's global and per-object figures.
    """
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ReusevosError(f"results folder {results_dir} does not exist; give the folder holding <sequence>/*.png")
    if isinstance(davis, DavisDataset):
        dataset = davis if sequences is None else DavisDataset(davis.root, davis.split, sequences, davis.resolution)
    else:
        dataset = DavisDataset(davis, split, sequences)
    jobs = [(dataset, seq, str(results_dir), bound_th) for seq in dataset.sequences]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            per_sequence = list(pool.map(_evaluate_one, jobs))
    else:
        per_sequence = [_evaluate_one(job) for job in jobs]
    return DavisScores([obj for objs in per_sequence for obj in objs])
