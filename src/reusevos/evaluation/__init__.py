"""DAVIS evaluation: J (region IoU), F (boundary F-measure) and the benchmark statistics.

``metrics`` holds the per-frame measures, ``statistics`` the per-object Mean / Recall / Decay and
``davis_eval`` the scoring of a results folder (or of in-memory masks) against a DAVIS root.
"""

from reusevos.evaluation.davis_eval import DavisScores, ObjectScores, evaluate_davis, evaluate_sequence, score_sequence
from reusevos.evaluation.metrics import boundary_f_measure, boundary_map, frame_scores, region_similarity
from reusevos.evaluation.statistics import Statistics, davis_statistics

__all__ = [
    "DavisScores",
    "ObjectScores",
    "Statistics",
    "boundary_f_measure",
    "boundary_map",
    "davis_statistics",
    "evaluate_davis",
    "evaluate_sequence",
    "frame_scores",
    "region_similarity",
    "score_sequence",
]
