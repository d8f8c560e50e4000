"""Training and evaluation of one morphogenetic model.

The stage-specific behaviour (isolation in TRAINING, the alpha blend) lives in the slots' forward,
so one training step serves every stage: forward, loss, backward, per-group clip, then step the
host optimizer and every live seed's optimizer. Metrics accumulate in device tensors; the caller
reads them once per environment step.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from esper.kasmina import GradientCollector, MorphogeneticModel
from esper.tolaria.config import TrainingConfig
from esper.tolaria.loader import DeviceData

# Layout of the per-split metric accumulators: [loss * n, correct, n]
LOSS, CORRECT, COUNT = 0, 1, 2


def _sgd(params, lr: float, cfg: TrainingConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay, foreach=True)


class HostTrainer:
    """Owns a model's optimizers (the host's, one per live seed) and its on-device metric accumulators."""

    def __init__(self, model: MorphogeneticModel, cfg: TrainingConfig, collector: GradientCollector) -> None:
        self.model, self.cfg, self.collector = model, cfg, collector
        device = next(model.parameters()).device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and device.type == "cuda"
                         else nullcontext())
        self.train_metrics = torch.zeros(3, device=device)
        self.eval_metrics = torch.zeros(3, device=device)
        self.host_opt = _sgd(list(model.host_parameters()), cfg.lr, cfg)
        self.seed_opts: dict[int, torch.optim.SGD] = {}
        self._opt_key = model.graph_key

    def sync_optimizers(self) -> None:
        """After a lifecycle change: new seeds get an optimizer, fossils join the host's, culled seeds leave."""
        if self.model.graph_key == self._opt_key:
            return
        in_host = {id(p) for g in self.host_opt.param_groups for p in g["params"]}
        fossil_params = [p for p in self.model.host_parameters() if id(p) not in in_host]
        if fossil_params:
            self.host_opt.add_param_group({"params": fossil_params})
        seeds = {i: s.seed for i, s in enumerate(self.model.slots) if s.seed is not None}
        for i in list(self.seed_opts):
            opt_params = self.seed_opts[i].param_groups[0]["params"]
            if i not in seeds or not opt_params or opt_params[0] is not next(seeds[i].parameters()):
                del self.seed_opts[i]
        for i, seed in seeds.items():
            if i not in self.seed_opts:
                self.seed_opts[i] = _sgd(list(seed.parameters()), self.cfg.seed_lr, self.cfg)
        self._opt_key = self.model.graph_key

    def reset(self) -> None:
        """Fresh optimizers for a fresh host (a new episode)."""
        self.host_opt = _sgd(list(self.model.host_parameters()), self.cfg.lr, self.cfg)
        self.seed_opts = {}
        self._opt_key = self.model.graph_key
        self.train_metrics.zero_()
        self.eval_metrics.zero_()

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.host_opt, *self.seed_opts.values()]

    # ------------------------------------------------------------------------------------ steps
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One batch: forward, backward, per-group clip, step every optimizer; accumulate loss and accuracy."""
        model = self.model
        model.train()
        for opt in self.optimizers():
            opt.zero_grad(set_to_none=True)
        with self.autocast:
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        loss.backward()
        self.collector.clip_and_collect(self.cfg.grad_clip)
        for opt in self.optimizers():
            opt.step()
        _accumulate(self.train_metrics, loss.detach(), logits.detach(), y)

    @torch.no_grad()
    def evaluate(self, data: DeviceData, split: str = "val", max_batches: int | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
        """Accumulate [loss*n, correct, n] over a split into `out` (a fresh tensor if None), on the device."""
        out = torch.zeros(3, device=data.device) if out is None else out
        self.model.eval()
        for x, y in data.eval_batches(split, self.cfg.eval_batch_size, max_batches):
            with self.autocast:
                logits = self.model(x)
                loss = F.cross_entropy(logits, y)
            _accumulate(out, loss, logits, y)
        return out


def _accumulate(acc: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
    n = y.shape[0]
    acc[LOSS] += loss.float() * n
    acc[CORRECT] += (logits.argmax(1) == y).sum()
    acc[COUNT] += n


def summarise(acc) -> tuple[float, float]:
    """(mean loss, accuracy) from a host copy of an accumulator."""
    n = max(float(acc[COUNT]), 1.0)
    return float(acc[LOSS]) / n, float(acc[CORRECT]) / n


@contextmanager
def counterfactual(model: nn.Module, slot: int) -> Iterator[None]:
    """Evaluate with one slot's live seed inverted: removed if active, fully added if still in TRAINING."""
    s = model.slots[slot]
    s.counterfactual = True
    try:
        yield
    finally:
        s.counterfactual = False
