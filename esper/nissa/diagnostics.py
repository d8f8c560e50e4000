"""Per-layer gradient diagnostics for one epoch of host training, gated by the telemetry profile.

`minimal`: nothing is registered, no per-batch work. `standard`: per-layer gradient norm and mean
|grad|. `research`: also |grad| quantiles and ε-sharpness on a validation batch. Statistics stay
on the device during the epoch; `epoch_report()` copies them to the host once.

    with DiagnosticTracker(model, cfg) as diag:
        for x, y in batches: ...loss.backward(); opt.step()...
        diag.sharpness(F.cross_entropy, x_val, y_val)    # research only, else a no-op
        rows, narrative = diag.epoch_report()
"""
from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from esper.nissa.config import TelemetryConfig

MODEL_ROW = "(model)"  # the row holding whole-model figures: total gradient norm, sharpness, narrative
QUANTILES = (0.05, 0.5, 0.95)


class _MarkGrad:
    """Post-accumulate hook: remember which parameter got a gradient; the batch is processed once,
    after backward finishes, with fused foreach kernels instead of a few kernels per parameter."""

    def __init__(self, tracker: DiagnosticTracker, index: int) -> None:
        self.tracker, self.index = tracker, index

    def __call__(self, _param: torch.Tensor) -> None:
        t = self.tracker
        if not t._pending:
            torch.autograd.Variable._execution_engine.queue_callback(t._collect)
        t._pending.append(self.index)


class DiagnosticTracker:
    """Accumulates per-layer gradient statistics over an epoch via gradient hooks.

    Parameters are those of `model` at construction; create a new tracker per epoch so seeds
    germinated since are included.
    """

    def __init__(self, model: nn.Module, cfg: TelemetryConfig, *, vanish_threshold: float = 1e-7,
                 explode_threshold: float = 1e3, quantile_sample: int = 4096, seed: int = 0) -> None:
        self.model, self.cfg = model, cfg
        self.vanish_threshold, self.explode_threshold = vanish_threshold, explode_threshold
        self.enabled, self.research = cfg.diagnostics, cfg.quantiles
        self._named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        self._handles: list[Any] = []
        self._pending: list[int] = []
        self._index_cache: dict[tuple[int, ...], torch.Tensor] = {}
        self.batches = 0
        self._sharpness: torch.Tensor | None = None
        if not self.enabled or not self._named:
            return
        device = self._named[0][1].device
        n = len(self._named)
        self._norm_sum = torch.zeros(n, device=device)
        self._abs_sum = torch.zeros(n, device=device)
        self._count = torch.zeros(n, device=device)
        self._total_sum = torch.zeros((), device=device)
        self._numel = torch.tensor([float(p.numel()) for _, p in self._named], device=device)
        if self.research:
            self._q = torch.tensor(QUANTILES, device=device)
            self._q_sum = torch.zeros(n, len(QUANTILES), device=device)
            # A fixed random subsample per large tensor: quantiles of 4k values are plenty for a
            # diagnostic and torch.quantile refuses inputs above 16M elements.
            gen = torch.Generator().manual_seed(seed)
            self._sample = [torch.randperm(p.numel(), generator=gen)[:quantile_sample].to(device)
                            if p.numel() > quantile_sample else None for _, p in self._named]
        self._handles = [p.register_post_accumulate_grad_hook(_MarkGrad(self, i))
                         for i, (_, p) in enumerate(self._named)]

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> DiagnosticTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Remove every hook; the model is left exactly as it was before the tracker."""
        for h in self._handles:
            h.remove()
        self._handles = []

    @property
    def hooks(self) -> int:
        return len(self._handles)

    # -- per batch (device only) -------------------------------------------------------------------

    @torch.no_grad()
    def _collect(self) -> None:
        idx, self._pending = self._pending, []
        key = tuple(idx)
        index = self._index_cache.get(key)
        if index is None:
            index = self._index_cache[key] = torch.tensor(idx, device=self._count.device)
        named = [self._named[i] for i in idx]
        grads = [p.grad for _, p in named]           # every one set: the hook fired after accumulation
        norms = torch.stack(torch._foreach_norm(grads)).float()
        l1 = torch.stack(torch._foreach_norm(grads, 1)).float()
        self._norm_sum.index_add_(0, index, norms)
        self._abs_sum.index_add_(0, index, l1 / self._numel[index])
        self._count.index_add_(0, index, torch.ones_like(norms))
        self._total_sum += torch.linalg.vector_norm(norms)
        if self.research:
            qs = [torch.quantile(self._sampled(i, g).abs().float(), self._q) for i, g in zip(idx, grads)]
            self._q_sum.index_add_(0, index, torch.stack(qs))
        self.batches += 1

    def _sampled(self, i: int, grad: torch.Tensor) -> torch.Tensor:
        flat = grad.reshape(-1)
        sample = self._sample[i]
        return flat if sample is None else flat[sample]

    # -- per epoch ---------------------------------------------------------------------------------

    def sharpness(self, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                  y: torch.Tensor, epsilon: float | None = None) -> torch.Tensor | None:
        """Relative loss increase when each weight moves by ε·|w| along the sign of its gradient.

        Research profile only (returns None otherwise). Runs in eval mode on a validation batch,
        leaves `.grad` untouched and restores the weights bit for bit. Returns a device scalar.
        """
        if not (self.enabled and self.research and self._named):
            return None
        eps = self.cfg.sharpness_epsilon if epsilon is None else epsilon
        params = [p for _, p in self._named]
        saved = [p.detach().clone() for p in params]
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                base = loss_fn(self.model(x), y)
                grads = torch.autograd.grad(base, params, allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.addcmul_(p.abs(), g.sign(), value=eps)
                perturbed = loss_fn(self.model(x), y)
        finally:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
            self.model.train(was_training)
        base = base.detach()
        self._sharpness = ((perturbed - base) / base.abs().clamp_min(1e-12)).float()
        return self._sharpness

    def epoch_report(self) -> tuple[list[dict[str, Any]], str]:
        """(rows for the `diagnostic` event, one-sentence narrative); one host sync, then reset."""
        if not self.enabled:
            return [], "diagnostics off (minimal profile)"
        if not self._named:
            return [], "no trainable parameters"
        count = self._count.clamp_min(1)
        parts = [self._norm_sum / count, self._abs_sum / count, self._count,
                 (self._total_sum / max(self.batches, 1)).reshape(1),
                 (self._sharpness if self._sharpness is not None else self._total_sum.new_full((), math.nan)).reshape(1)]
        if self.research:
            parts.append((self._q_sum / count[:, None]).reshape(-1))
        stats = torch.cat(parts).cpu().tolist()  # the one sync
        n = len(self._named)
        norm, mean_abs, seen = stats[:n], stats[n:2 * n], stats[2 * n:3 * n]
        total, sharp = stats[3 * n], stats[3 * n + 1]
        quant = stats[3 * n + 2:]
        rows: list[dict[str, Any]] = []
        vanishing, exploding = [], []
        for i, (name, _) in enumerate(self._named):
            if not seen[i]:
                continue  # no gradient reached this parameter this epoch (e.g. frozen by isolation)
            row = {"layer": name, "grad_norm": norm[i], "grad_mean_abs": mean_abs[i]}
            if self.research:
                row.update(grad_q05=quant[3 * i], grad_q50=quant[3 * i + 1], grad_q95=quant[3 * i + 2])
            rows.append(row)
            if not math.isfinite(norm[i]) or norm[i] > self.explode_threshold:
                exploding.append(name)
            elif norm[i] < self.vanish_threshold:
                vanishing.append(name)
        narrative = self._narrative(len(rows), vanishing, exploding)
        if rows:
            rows.append({"layer": MODEL_ROW, "grad_norm": total,
                         "sharpness": None if math.isnan(sharp) else sharp, "narrative": narrative})
        self._reset()
        return rows, narrative

    @staticmethod
    def _narrative(layers: int, vanishing: list[str], exploding: list[str]) -> str:
        if layers == 0:
            return "no gradients recorded this epoch"

        def names(items: list[str]) -> str:
            shown = ", ".join(items[:3])
            return f"{shown}, ..." if len(items) > 3 else shown

        def plural(k: int) -> str:
            return f"{k} layer" if k == 1 else f"{k} layers"

        problems = [f"{kind} gradients in {plural(len(items))} ({names(items)})"
                    for kind, items in (("vanishing", vanishing), ("exploding", exploding)) if items]
        return "; ".join(problems) if problems else f"gradients healthy across {plural(layers)}"

    def _reset(self) -> None:
        for t in (self._norm_sum, self._abs_sum, self._count, self._total_sum):
            t.zero_()
        if self.research:
            self._q_sum.zero_()
        self.batches = 0
        self._sharpness = None
