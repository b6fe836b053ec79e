"""The refinement windows (ours): which cells of the stride-16 grid the shallow levels refine.

Boxes are ``(y0, y1, x0, x1)`` in cells of the grid over the image; None means the whole frame.
"""

from __future__ import annotations

import torch


def span(start: int, stop: int, cells: int, size: int) -> slice:
    """Cells ``start:stop`` of a grid of ``cells`` as a slice of an axis of ``size`` (same proportion)."""
    return slice(start * size // cells, stop * size // cells)


def box_slices(box: tuple[int, int, int, int], grid: tuple[int, int], size: tuple[int, int]) -> tuple[slice, slice]:
    """The rows and columns of a map of ``size`` ``(h, w)`` that a ``box`` of cells of ``grid`` covers."""
    return span(box[0], box[1], grid[0], size[0]), span(box[2], box[3], grid[1], size[1])


def _cells_above(prob: torch.Tensor, grid: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """The cells ``(y0, y1, x0, x1)`` of a ``grid`` over ``prob`` ``(H, W)`` holding its values above 0.5; None
    when there are none. ``prob`` may be at the grid's own resolution (a score map) or finer (an output)."""
    inside = prob > 0.5
    rows = torch.nonzero(inside.any(dim=1)).flatten()
    if rows.numel() == 0:
        return None
    cols = torch.nonzero(inside.any(dim=0)).flatten()
    (height, width), (grid_h, grid_w) = prob.shape, grid
    return (int(rows[0]) * grid_h // height, int(rows[-1]) * grid_h // height + 1,
            int(cols[0]) * grid_w // width, int(cols[-1]) * grid_w // width + 1)


def _grown(boxes: list[tuple[int, int, int, int] | None], grid: tuple[int, int],
           margin: int) -> tuple[int, int, int, int] | None:
    """The box holding every box of ``boxes`` grown by ``margin`` cells and clipped to the ``grid``; None
    when all are None or the result is the whole grid."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    grid_h, grid_w = grid
    y0, x0 = max(min(b[0] for b in boxes) - margin, 0), max(min(b[2] for b in boxes) - margin, 0)
    y1, x1 = min(max(b[1] for b in boxes) + margin, grid_h), min(max(b[3] for b in boxes) + margin, grid_w)
    if (y0, y1, x0, x1) == (0, grid_h, 0, grid_w):
        return None
    return y0, y1, x0, x1


def window_box(prob: torch.Tensor, grid: tuple[int, int], margin: int) -> tuple[int, int, int, int] | None:
    """The cells ``(y0, y1, x0, x1)`` of a ``grid`` over the image that hold ``prob > 0.5`` (``(H, W)``),
    grown by ``margin`` cells and clipped; None when nothing is above 0.5 or the box is the whole grid."""
    return _grown([_cells_above(prob, grid)], grid, margin)


def score_box(score: torch.Tensor, prob_prev: torch.Tensor | None, margin: int,
              search: int = 0) -> tuple[int, int, int, int] | None:
    """The box of a computed frame: the cells where the coarse ``score`` ``(h, w)`` exceeds 0.5 together with
    those of the last output ``prob_prev`` ``(H, W)``, grown by ``margin`` cells; None when neither has
    anything above 0.5 (the object is not found: refine the whole frame) or the box is the whole grid.
    ``search`` > 0: only the score's cells within ``search`` cells of the last output's box count (a distractor
    farther away is left out); with no last output the whole score counts."""
    grid = tuple(score.shape)
    last = None if prob_prev is None else _cells_above(prob_prev, grid)
    if search and last is not None:
        near = _grown([last], grid, search)
        if near is not None:
            inside = torch.zeros_like(score, dtype=torch.bool)
            inside[near[0]:near[1], near[2]:near[3]] = True
            score = torch.where(inside, score, torch.zeros_like(score))
    return _grown([_cells_above(score, grid), last], grid, margin)
