"""Compute accounting: the FLOPs an episode spends on training, on growth decisions and on evaluation.

Counts come from `torch.utils.flop_counter.FlopCounterMode`, run on a meta-device copy of the model,
so counting moves no statistics, gradients or RNG state of the real model and costs no device time.
A count depends only on the compute graph (`architecture_key`: per slot, the live seed's blueprint,
the stage, the fossils), the batch size and the kind of pass, so each is made once per process and
cached; after that a lookup is a dict access (a few microseconds, no device sync).

    counter = FlopCounter(data.input_shape)     # one per process (EnvContext): the cache is shared
    tally = ComputeTally()                      # one per episode

    # a step's training (after begin_step, so the step's lifecycle change is in the graph)
    tally.add_training(counter.train_flops(model, batch_size), batches=batches_per_step)
    # EnvCore.evaluate: the validation pass is evaluation ...
    tally.add_evaluation(counter.eval_pass_flops(model, n_val, eval_batch_size))
    # ... the counterfactual passes are what only growth needs (decisions)
    if measured and cf_batches is not None:
        tally.add_decision(counter.eval_pass_flops(model, n_val, eval_batch_size, max_batches=cf_batches))
    for i in measured:
        tally.add_decision(counter.eval_pass_flops(model, n_val, eval_batch_size, max_batches=cf_batches,
                                                   counterfactual=i))
    # the baseline at reset, the test pass and a governor's re-evaluation are evaluation too
    summary.update(tally.as_dict())             # {"training_flops": ..., "decision_flops": ..., ...}

What is counted: FlopCounterMode's own rules, i.e. matmuls and convolutions (forward, and in training
their backward: grad input and grad weight), 2 FLOPs per multiply-add. Normalization, activations,
pooling, elementwise ops, the loss and the optimizer step count 0, so a `norm` seed (GroupNorm and a
scale) adds nothing; pass `custom_mapping` (FlopCounterMode's argument: {aten op: formula}) to price
such ops. A TRAINING seed trains on a detached input, so its training costs its forward and its
weight gradients but no gradient into the host; in evaluation it runs only in its counterfactual
("what if fully blended"), while a BLENDING/SHADOWING/PROBATIONARY seed runs in every pass except
its counterfactual ("what if absent"). Mixed precision and memory format do not change the count.
"""
from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from esper.kasmina import MorphogeneticModel


_FOSSIL_KEYS: weakref.WeakKeyDictionary[nn.Module, tuple] = weakref.WeakKeyDictionary()


def _fossil_key(fossil: nn.Module) -> tuple:
    """A fossil's structure: its class and parameter shapes (fossils do not keep their blueprint id).
    A fossil never changes, so its key is remembered per module (walking its parameters costs ~5 us)."""
    key = _FOSSIL_KEYS.get(fossil)
    if key is None:
        key = _FOSSIL_KEYS[fossil] = (type(fossil).__name__, tuple(tuple(p.shape) for p in fossil.parameters()))
    return key


def architecture_key(model: MorphogeneticModel) -> tuple:
    """Everything the compute graph depends on: the host, then per slot (name, live seed's blueprint or
    None, stage name, fossils). Equal keys mean equal FLOPs for the same input shape and batch size.
    A live seed is keyed by its blueprint id, so one FlopCounter assumes one set of blueprint shape
    settings (kasmina.blueprint_params, fixed per run); fossils are keyed by their parameter shapes."""
    host = (type(model.host).__name__, model.host_param_count)
    return host, tuple((s.name, s.blueprint if s.seed is not None else None, s.stage.name,
                        tuple(_fossil_key(f) for f in s.fossils)) for s in model.slots)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` whose tensors all live on the meta device (shapes, no data).

    The real tensors are never copied: each parameter, buffer and tensor attribute is mapped to an
    empty meta tensor through deepcopy's memo, so this is cheap on any device, syncs nothing, and the
    copy carries no gradients or tensor hooks of the original. Module hooks (the slots' grafting
    hooks) are copied and point at the copy's own slots.
    """
    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    for m in model.modules():
        for v in vars(m).values():
            if isinstance(v, torch.Tensor) and id(v) not in memo:
                memo[id(v)] = torch.empty_like(v, device="meta")
    return copy.deepcopy(model, memo)


class FlopCounter:
    """FLOPs per batch for a model with inputs of `input_shape` (C, H, W), cached per architecture.

    `counts` is the number of real counts made (cache misses); `cache` maps
    (kind, batch_size, counterfactual slot, architecture_key) to FLOPs.
    """

    def __init__(self, input_shape: Sequence[int], *, custom_mapping: dict[Any, Any] | None = None) -> None:
        self.input_shape = tuple(int(d) for d in input_shape)
        self.custom_mapping = custom_mapping
        self.cache: dict[tuple, int] = {}
        self.counts = 0

    def train_flops(self, model: MorphogeneticModel, batch_size: int) -> int:
        """One training batch in train mode: forward, cross-entropy and backward (HostTrainer.train_step)."""
        key = ("train", batch_size, None, architecture_key(model))
        flops = self.cache.get(key)
        if flops is None:
            flops = self.cache[key] = self._count(model, batch_size, train=True, counterfactual=None)
        return flops

    def eval_flops(self, model: MorphogeneticModel, batch_size: int, counterfactual: int | None = None) -> int:
        """One evaluation batch in eval mode, forward only; `counterfactual`: the slot whose live seed is
        inverted (training.counterfactual), None for a plain evaluation."""
        key = ("eval", batch_size, counterfactual, architecture_key(model))
        flops = self.cache.get(key)
        if flops is None:
            flops = self.cache[key] = self._count(model, batch_size, train=False, counterfactual=counterfactual)
        return flops

    def eval_pass_flops(self, model: MorphogeneticModel, samples: int, batch_size: int,
                        max_batches: int | None = None, counterfactual: int | None = None) -> int:
        """One `HostTrainer.evaluate` over a split of `samples` images: full batches of `batch_size`, a
        short last one, at most `max_batches` batches (DeviceData.eval_batches)."""
        full, rest = divmod(samples, batch_size)
        if max_batches is not None and max_batches <= full:
            full, rest = max_batches, 0
        total = full * self.eval_flops(model, batch_size, counterfactual) if full else 0
        return total + (self.eval_flops(model, rest, counterfactual) if rest else 0)

    def _count(self, model: MorphogeneticModel, batch_size: int, *, train: bool, counterfactual: int | None) -> int:
        self.counts += 1
        # Meta ops draw no random numbers; fork_rng makes sure. inference_mode(False): a caller's
        # inference mode must not turn the copy's tensors into inference tensors (no backward).
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False):
            twin = meta_copy(model)
            twin.train(train)
            for i, slot in enumerate(twin.slots):
                slot.counterfactual = i == counterfactual
                slot.bypass_live_seed = False
            dtype = next(twin.parameters()).dtype
            x = torch.empty((batch_size, *self.input_shape), device="meta", dtype=dtype)
            y = torch.empty((batch_size,), device="meta", dtype=torch.long)
            mode = FlopCounterMode(display=False, custom_mapping=self.custom_mapping)
            with mode, torch.set_grad_enabled(train):
                loss = F.cross_entropy(twin(x), y)
                if train:
                    loss.backward()
        return int(mode.get_total_flops())


@dataclass
class ComputeTally:
    """One episode's FLOPs: training (forward + backward of the batches trained), decision (the
    counterfactual evaluations only growth needs) and evaluation (validation and test passes).
    Plain integers: adding to it is host arithmetic only."""

    training: int = 0
    decision: int = 0
    evaluation: int = 0

    def add_training(self, flops_per_batch: int, batches: int = 1) -> None:
        self.training += flops_per_batch * batches

    def add_decision(self, flops: int) -> None:
        self.decision += flops

    def add_evaluation(self, flops: int) -> None:
        self.evaluation += flops

    @property
    def total(self) -> int:
        return self.training + self.decision + self.evaluation

    def reset(self) -> None:
        self.training = self.decision = self.evaluation = 0

    def as_dict(self) -> dict[str, int]:
        return {"training_flops": self.training, "decision_flops": self.decision,
                "evaluation_flops": self.evaluation, "total_flops": self.total}
