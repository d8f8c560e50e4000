"""Gradient isolation for TRAINING seeds (docs/architecture.md, "The seed lifecycle").

The slot outputs a value exactly equal to the host activation h, while the seed output s receives
the gradient that flows into the slot's output. s's values are never added, so even a NaN seed
cannot reach the host's forward value or its gradients.
"""
from __future__ import annotations

import torch
from torch import nn


class _StraightThrough(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 - s only receives a gradient
        return h.view_as(h)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return grad, grad


def isolated_output(h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Forward value h; d(out)/dh = I and the seed output s gets the same upstream gradient."""
    return _StraightThrough.apply(h, s)


class GradientIsolationMonitor:
    """Checks, around one backward pass, that the host got exactly its host-only gradients.

        with GradientIsolationMonitor(model, x, loss_fn, y) as mon:
            loss_fn(model(x), y).backward()
        mon.max_host_deviation   # 0.0 when isolation holds for the TRAINING seeds
        mon.seed_grad_norms      # {slot name: norm}: nonzero when the seeds learn

    On exit it recomputes the host-only gradient (every slot bypassed) and compares.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, loss_fn, y: torch.Tensor) -> None:
        self.model, self.x, self.loss_fn, self.y = model, x, loss_fn, y
        self.max_host_deviation = float("nan")
        self.seed_grad_norms: dict[str, float] = {}

    def __enter__(self) -> "GradientIsolationMonitor":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            return
        host_params = list(self.model.host_parameters())
        seen = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in host_params]
        self.seed_grad_norms = {
            slot.name: float(torch.linalg.vector_norm(torch.stack(
                [p.grad.norm() for p in slot.seed.parameters() if p.grad is not None] or [torch.zeros(())])))
            for slot in self.model.slots if slot.seed is not None
        }
        with _all_bypassed(self.model):
            ref = torch.autograd.grad(self.loss_fn(self.model(self.x), self.y), host_params, allow_unused=True)
        dev = [(a - (b if b is not None else torch.zeros_like(a))).abs().max() for a, b in zip(seen, ref)]
        self.max_host_deviation = float(torch.stack(dev).max()) if dev else 0.0


class _all_bypassed:
    def __init__(self, model: nn.Module) -> None:
        self.slots = list(model.slots)

    def __enter__(self) -> None:
        for s in self.slots:
            s.bypass_live_seed = True

    def __exit__(self, *exc) -> None:
        for s in self.slots:
            s.bypass_live_seed = False

