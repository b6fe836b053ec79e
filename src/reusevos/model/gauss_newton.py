"""Gauss-Newton with conjugate gradient for small least-squares problems, on autograd.

The problem is ``min_w 0.5 * ||r(w)||^2`` for a residual function ``r`` returning a flat vector.
Each Gauss-Newton step solves ``(J^T J) dw = -J^T r`` by a few CG iterations, where products with
``J`` and ``J^T`` come from forward- and reverse-mode autograd (``torch.func.jvp`` / ``vjp``): no
hand-written derivatives, so any differentiable residual works. A caller that knows ``J v`` and
``J^T u`` in closed form may pass them (``jacobian``): PyTorch's forward mode costs several forward
passes, and the products are most of a fit's time.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence

import torch

Params = tuple[torch.Tensor, ...]


def _dot(a: Params, b: Params) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _axpy(alpha: torch.Tensor | float, x: Params, y: Params) -> Params:
    return tuple(yi + alpha * xi for xi, yi in zip(x, y))


def gauss_newton_cg(
    residual_fn: Callable[[Params], torch.Tensor],
    params: Sequence[torch.Tensor],
    cg_iters: Sequence[int],
    max_halvings: int = 6,
    jacobian: Callable[[Params], tuple[Callable[[Params], torch.Tensor], Callable[[torch.Tensor], Params]]]
    | None = None,
) -> tuple[Params, list[float]]:
    """Run one Gauss-Newton step per entry of ``cg_iters`` (each with that many CG iterations).

    ``jacobian(params)``, when given, returns the functions ``v -> J v`` (flat like the residual) and
    ``u -> J^T u`` (shaped like ``params``), ``J`` being the residual's Jacobian at ``params``: what
    ``torch.func.jvp`` and ``torch.func.vjp`` compute. It is asked once per Gauss-Newton step, so it can
    prepare what the step's CG iterations share.

    A step that would raise the loss is halved until it does not (at most ``max_halvings`` times,
    then skipped), so the returned losses never increase.

    Returns the new parameters and the loss before the first step and after each step.
    """
    params = tuple(p.detach() for p in params)
    with torch.no_grad():
        residual = residual_fn(params)  # at the current params, kept for the closed-form gradient
    loss = 0.5 * float(residual.square().sum())
    losses = [loss]
    for iters in cg_iters:
        if jacobian is not None:
            jvp, vjp = jacobian(params)
            with torch.no_grad():
                grad = vjp(residual)
            step = _conjugate_gradient(lambda v: vjp(jvp(v)), tuple(-g for g in grad), iters)
        else:
            step = _autograd_step(residual_fn, params, iters)
        scale = 1.0
        for _ in range(max_halvings + 1):
            candidate = _axpy(scale, step, params)
            with torch.no_grad():
                candidate_residual = residual_fn(candidate)
            new_loss = 0.5 * float(candidate_residual.square().sum())
            if new_loss <= loss:
                params, loss, residual = tuple(c.detach() for c in candidate), new_loss, candidate_residual
                break
            scale *= 0.5
        losses.append(loss)
    return params, losses


def _autograd_step(residual_fn: Callable[[Params], torch.Tensor], params: Params, iters: int) -> Params:
    """One Gauss-Newton step's direction with J v and J^T u from forward- and reverse-mode autograd."""
    residual, vjp_fn = torch.func.vjp(residual_fn, params)
    (grad,) = vjp_fn(residual.detach())

    def normal_product(v: Params) -> Params:
        with warnings.catch_warnings():
            # torch's forward-mode decompositions emit a torch.jit deprecation notice on first use.
            warnings.simplefilter("ignore", FutureWarning)
            _, jv = torch.func.jvp(residual_fn, (params,), (v,))
        return vjp_fn(jv)[0]

    return _conjugate_gradient(normal_product, tuple(-g for g in grad), iters)


def _conjugate_gradient(matvec: Callable[[Params], Params], b: Params, iters: int) -> Params:
    """Approximately solve ``A x = b`` for symmetric positive semi-definite ``A``, from x = 0."""
    x = tuple(torch.zeros_like(bi) for bi in b)
    r = b
    p = r
    rs = _dot(r, r)
    for _ in range(iters):
        if float(rs) <= 1e-20:
            break
        ap = matvec(p)
        curvature = _dot(p, ap)
        if float(curvature) <= 0:
            break
        alpha = rs / curvature
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, ap, r)
        rs_new = _dot(r, r)
        p = _axpy(rs_new / rs, p, r)
        rs = rs_new
    return tuple(xi.detach() for xi in x)
