"""The timed stages of a frame, and the timer that measures them.

Every stage is a direct call in the frame loop (``with timed(Stage.GATE): p = gate(d)``), so a reader can
follow a frame and a measuring tool reads the seconds the loop reports, never patches it.
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from enum import Enum
from typing import Iterator


class Stage(str, Enum):
    """The timed stages of a frame, in the order of the paper's Fig. 2, TTVOS's own among them; see
    :data:`SUB_STAGES`."""

    BACKBONE_TO_F8 = "backbone_to_f8"
    BACKBONE_F8_TO_F32 = "backbone_f8_to_f32"
    TEMPLATE_MATCH = "template_match"
    GATE = "gate"
    TARGET_MODEL_APPLY = "target_model_apply"
    REFINE_REDUCE_DEEP = "refine_reduce_deep"
    REFINE_DEEP = "refine_deep"
    REFINE_LEVEL32 = "refine_level32"
    REFINE_LEVEL16 = "refine_level16"
    DELTA = "delta"
    TRANSLATOR = "translator"
    REFINE_REDUCE_SHALLOW = "refine_reduce_shallow"
    REFINE_SHALLOW = "refine_shallow"
    REFINE_LEVEL8 = "refine_level8"
    REFINE_LEVEL4 = "refine_level4"
    REFINE_HEAD = "refine_head"
    SHORT_TERM = "short_term"  # TTVOS: the frame's stride-16 feature (once per frame) and short-term matching
    LONG_TERM = "long_term"  # TTVOS: the template attention
    DECODER = "decoder"  # TTVOS's decoder
    MEMORY_UPDATE = "memory_update"  # TTVOS: the mask history, last feature and template taking in this frame
    MOTION = "motion"
    INITIALISATION = "initialisation"
    MERGE = "merge"
    TARGET_MODEL_UPDATE = "target_model_update"
    TARGET_MODEL_ADD_SAMPLE = "target_model_add_sample"
    TARGET_MODEL_REOPTIMISE = "target_model_reoptimise"


SUB_STAGES = {Stage.REFINE_DEEP: (Stage.REFINE_LEVEL32, Stage.REFINE_LEVEL16),
              Stage.REFINE_SHALLOW: (Stage.REFINE_LEVEL8, Stage.REFINE_LEVEL4, Stage.REFINE_HEAD),
              Stage.TARGET_MODEL_UPDATE: (Stage.TARGET_MODEL_ADD_SAMPLE, Stage.TARGET_MODEL_REOPTIMISE)}
"""The parts a stage is measured in, each counted inside its parent too. The other stages never overlap:
together they add up to the frame's time, and work inside an object's start counts as initialisation only."""
_PARENT = {child: parent for parent, children in SUB_STAGES.items() for child in children}


class StageTimer:
    """Seconds per stage of one frame: a stage counts when no other stage is open, a sub-stage when just its
    parent is (so nothing is counted twice, and nothing inside an initialisation but the initialisation)."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: list[Stage] = []

    @contextmanager
    def __call__(self, stage: Stage) -> Iterator[None]:
        counted = not self._open or (len(self._open) == 1 and _PARENT.get(stage) is self._open[0])
        self._open.append(stage)
        start = time.perf_counter()
        try:
            yield
        finally:
            self._open.pop()
            if counted:
                self.seconds[stage.value] += time.perf_counter() - start

    def refiner_part(self, part: str):
        """The context for the refiner's own part ``part`` (``level8``, ``head``, ...)."""
        return self(Stage(f"refine_{part}"))
