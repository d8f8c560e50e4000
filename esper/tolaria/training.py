"""Training and evaluation of one morphogenetic model.

The stage-specific behaviour (isolation in TRAINING, the alpha blend) lives in the slots' forward,
so one training step serves every stage: forward, loss, backward, per-group clip, then step the
host optimizer and every live seed's optimizer. Metrics accumulate in device tensors; the caller
reads them once per environment step.
"""
from __future__ import annotations

import math
from contextlib import contextmanager, nullcontext
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from esper.kasmina import GradientCollector, MorphogeneticModel
from esper.tolaria.capture import CapturedStep, Recording, default_recording
from esper.tolaria.config import TrainingConfig
from esper.tolaria.loader import DeviceData

# Layout of the per-split metric accumulators: [loss * n, correct, n]
LOSS, CORRECT, COUNT = 0, 1, 2


def _sgd(params, lr: torch.Tensor, cfg: TrainingConfig) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                           weight_decay=cfg.weight_decay, foreach=True)


class HostTrainer:
    """Owns a model's optimizers (the host's, one per live seed) and its on-device metric accumulators.

    With `capture` (CUDA by default, see TrainingConfig.capture) train and eval steps replay CUDA
    graphs; `recording_factory` lets tests run the same path on CPU with an eager stand-in.
    """

    def __init__(self, model: MorphogeneticModel, cfg: TrainingConfig, collector: GradientCollector, *,
                 capture: bool | None = None, recording_factory: Callable[[torch.device], Recording] | None = None
                 ) -> None:
        self.model, self.cfg, self.collector = model, cfg, collector
        device = next(model.parameters()).device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cfg.amp and device.type == "cuda"
                         else nullcontext())
        self.train_metrics = torch.zeros(3, device=device)
        self.eval_acc = torch.zeros(3, device=device)           # the captured eval step accumulates here
        # Learning rates are device tensors, so a schedule changes them without recapturing a graph.
        self.lr_host = torch.tensor(cfg.lr, device=device)
        self.lr_seed = torch.tensor(cfg.seed_lr, device=device)
        self.host_opt = _sgd(list(model.host_parameters()), self.lr_host, cfg)
        self.seed_opts: dict[int, torch.optim.SGD] = {}
        self._opt_key = model.graph_key
        if capture is None:
            capture = cfg.capture and device.type == "cuda"
        factory = recording_factory or default_recording
        self.captured_train = CapturedStep(self._train_body, self._train_key, self._train_state, factory) if capture else None
        self.captured_eval = CapturedStep(self._eval_body, self._eval_key, lambda: [self.eval_acc], factory) if capture else None

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
                self.seed_opts[i] = _sgd(list(seed.parameters()), self.lr_seed, self.cfg)
        self._opt_key = self.model.graph_key

    def reset(self) -> None:
        """Fresh optimizers and accumulators for a fresh host (a new episode)."""
        self.host_opt = _sgd(list(self.model.host_parameters()), self.lr_host, self.cfg)
        self.seed_opts = {}
        self._opt_key = self.model.graph_key
        self.set_progress(0.0)
        self.train_metrics.zero_()
        self.eval_acc.zero_()
        self.invalidate()

    def set_progress(self, fraction: float) -> None:
        """Where the episode is (0 at the start, 1 at max_epochs): sets both learning rates."""
        factor = 0.5 * (1.0 + math.cos(math.pi * min(max(fraction, 0.0), 1.0))) \
            if self.cfg.lr_schedule == "cosine" else 1.0
        self.lr_host.fill_(self.cfg.lr * factor)
        self.lr_seed.fill_(self.cfg.seed_lr * factor)

    def invalidate(self) -> None:
        """Tensors a captured step points at were replaced (rollback, loaded state): recapture."""
        for c in (self.captured_train, self.captured_eval):
            if c is not None:
                c.invalidate()

    @property
    def captures(self) -> int:
        return sum(c.captures for c in (self.captured_train, self.captured_eval) if c is not None)

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.host_opt, *self.seed_opts.values()]

    # ------------------------------------------------------------------------------------ steps
    def train_step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """One batch: forward, backward, per-group clip, step every optimizer; accumulate loss and accuracy."""
        self.model.train()
        if self.captured_train is not None:
            self.captured_train(x, y)
        else:
            self._train_body(x, y)

    def _train_key(self) -> tuple:
        return (self.model.graph_key, id(self.host_opt), len(self.host_opt.param_groups),
                tuple((i, id(o)) for i, o in sorted(self.seed_opts.items())))

    def _train_state(self) -> list[torch.Tensor]:
        opt_state = [v for opt in self.optimizers() for st in opt.state.values() for v in st.values()
                     if torch.is_tensor(v)]
        return [*self.model.parameters(), *self.model.buffers(), *opt_state, self.train_metrics,
                *self.collector.accumulators()]

    def _train_body(self, x: torch.Tensor, y: torch.Tensor) -> None:
        model = self.model
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
        full = self.cfg.eval_batch_size
        for x, y in data.eval_batches(split, full, max_batches):
            if self.captured_eval is not None and y.shape[0] == full:   # a short last batch runs eagerly
                self.captured_eval(x, y)
            else:
                self._eval_forward(x, y, out)
        if self.captured_eval is not None:
            out += self.eval_acc
            self.eval_acc.zero_()
        return out

    def _eval_key(self) -> tuple:
        return self.model.graph_key, tuple(s.counterfactual for s in self.model.slots)

    def _eval_body(self, x: torch.Tensor, y: torch.Tensor) -> None:
        with torch.no_grad():
            self._eval_forward(x, y, self.eval_acc)

    def _eval_forward(self, x: torch.Tensor, y: torch.Tensor, out: torch.Tensor) -> None:
        with self.autocast:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
        _accumulate(out, loss, logits, y)


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
