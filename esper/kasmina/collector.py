"""The on-device gradient collector: per-group gradient norms (host, then each slot's seed), clipping,
and the vanishing/exploding flags. Nothing here syncs with the host; `read()` happens once per step.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import torch
from torch import nn


def grad_norm(params: Sequence[nn.Parameter]) -> torch.Tensor:
    """L2 norm of all gradients in `params`, as a device tensor (0 when there are none)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=params[0].device if params else "cpu")
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def layer_grad_norms(named_params: Sequence[tuple[str, nn.Parameter]]) -> tuple[list[str], torch.Tensor]:
    """Per-parameter gradient norms (names, one device tensor) for diagnostics."""
    pairs = [(n, p.grad) for n, p in named_params if p.grad is not None]
    if not pairs:
        return [], torch.zeros(0)
    return [n for n, _ in pairs], torch.stack(torch._foreach_norm([g for _, g in pairs]))


class GradientHealth(NamedTuple):
    """Host-side view of one step's gradients: index 0 is the host, 1.. the slots."""

    mean_norm: list[float]
    max_norm: list[float]
    vanishing: list[bool]
    exploding: list[bool]
    nonfinite: list[bool]


class GradientCollector:
    """Accumulates, per batch, the gradient norm of each parameter group and clips each group on its own.

    Groups are clipped separately so a diverging seed cannot scale the host's gradients.
    """

    def __init__(self, model: nn.Module, vanish_threshold: float, explode_threshold: float) -> None:
        self.model = model
        self.vanish, self.explode = vanish_threshold, explode_threshold
        n = len(model.slots) + 1
        device = next(model.parameters()).device
        self.sum = torch.zeros(n, device=device)
        self.max = torch.zeros(n, device=device)
        self.batches = torch.zeros((), device=device)     # a tensor: counted inside captured steps too
        self._groups_key: tuple | None = None
        self._groups: list[list[nn.Parameter]] = []

    def groups(self) -> list[list[nn.Parameter]]:
        key = self.model.graph_key
        if key != self._groups_key:
            self._groups = [list(self.model.host_parameters())] + [
                self.model.seed_parameters(i) for i in range(len(self.model.slots))]
            self._groups_key = key
        return self._groups

    def clip_and_collect(self, max_norm: float | None) -> None:
        norms = []
        for params in self.groups():
            if not params:
                norms.append(self.sum.new_zeros(()))
            elif max_norm is None:
                norms.append(grad_norm(params))
            else:
                norms.append(torch.nn.utils.clip_grad_norm_(params, max_norm, foreach=True))
        stacked = torch.stack(norms).to(self.sum.dtype)
        self.sum.add_(stacked)
        torch.maximum(self.max, stacked, out=self.max)
        self.batches.add_(1)

    def accumulators(self) -> list[torch.Tensor]:
        return [self.sum, self.max, self.batches]

    def reset(self) -> None:
        self.sum.zero_()
        self.max.zero_()
        self.batches.zero_()
        self._groups_key = None

    def device_stats(self) -> torch.Tensor:
        """[mean norms..., max norms...] for the step so far, still on the device."""
        return torch.cat([self.sum / self.batches.clamp(min=1), self.max])

    def health(self, stats: Sequence[float]) -> GradientHealth:
        """Interpret `device_stats()` after it has been copied to the host."""
        n = len(self.model.slots) + 1
        mean, mx = list(stats[:n]), list(stats[n:2 * n])
        nonfinite = [not (m == m and abs(m) != float("inf")) or not (x == x and abs(x) != float("inf"))
                     for m, x in zip(mean, mx)]
        has_params = [bool(g) for g in self.groups()]
        vanishing = [hp and not nf and m < self.vanish for hp, nf, m in zip(has_params, nonfinite, mean)]
        exploding = [hp and (nf or x > self.explode) for hp, nf, x in zip(has_params, nonfinite, mx)]
        return GradientHealth(mean, mx, vanishing, exploding, nonfinite)
