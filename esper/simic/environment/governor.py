"""The governor: detects a diverging step and undoes it.

At the start of every step it snapshots the host (its parameters, buffers such as BatchNorm
statistics, fossils, and the host optimizer's state). When a step ends with a non-finite or
exploding loss or gradients, the seeds to blame are culled and, if the host itself was affected,
it is restored to that snapshot. The episode goes on; the event is reported.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from esper.kasmina import GradientHealth, MorphogeneticModel
from esper.leyline import ACTIVE_STAGES
from esper.simic.config import GovernorConfig


@dataclass
class Verdict:
    diverged: bool
    host_affected: bool
    culprits: list[int] = field(default_factory=list)     # slot indices whose seeds must be culled
    reason: str = ""


class Governor:
    def __init__(self, cfg: GovernorConfig) -> None:
        self.cfg = cfg
        self._tensors: list[torch.Tensor] = []
        self._saved: list[torch.Tensor] = []
        self._opt_saved: dict = {}

    def snapshot(self, model: MorphogeneticModel, host_opt: torch.optim.Optimizer) -> None:
        if not self.cfg.enabled:
            return
        tensors = list(model.host_parameters()) + list(model.host.buffers()) + [
            b for s in model.slots for b in s.fossils.buffers()]
        if len(tensors) != len(self._tensors) or any(a is not b for a, b in zip(tensors, self._tensors)):
            self._tensors = tensors
            self._saved = [t.detach().clone() for t in tensors]
        else:
            torch._foreach_copy_(self._saved, [t.detach() for t in tensors])
        self._opt_saved = {(id(p), k): (v.clone() if torch.is_tensor(v) else v)
                           for p, st in host_opt.state.items() for k, v in st.items()}

    def judge(self, model: MorphogeneticModel, train_loss: float, health: GradientHealth) -> Verdict:
        if not self.cfg.enabled:
            return Verdict(False, False)
        loss_bad = not math.isfinite(train_loss) or train_loss > self.cfg.loss_ceiling
        host_bad = loss_bad or health.nonfinite[0] or health.exploding[0]
        culprits = [i for i, s in enumerate(model.slots)
                    if s.seed is not None and (health.nonfinite[i + 1] or health.exploding[i + 1])]
        if host_bad and not culprits:    # only seeds that reach the host's forward can have caused it
            culprits = [i for i, s in enumerate(model.slots) if s.seed is not None and s.stage in ACTIVE_STAGES]
        if not (host_bad or culprits):
            return Verdict(False, False)
        parts = []
        if loss_bad:
            parts.append(f"train loss {train_loss:.4g}")
        if health.nonfinite[0] or health.exploding[0]:
            parts.append(f"host grad norm {health.max_norm[0]:.4g}")
        parts += [f"slot {i} seed grad norm {health.max_norm[i + 1]:.4g}" for i in culprits]
        return Verdict(True, host_bad, culprits, "diverged: " + ", ".join(parts))

    def rollback(self, host_opt: torch.optim.Optimizer) -> None:
        """Restore the host and its optimizer to the snapshot taken at the start of the step."""
        with torch.no_grad():
            torch._foreach_copy_([t.detach() for t in self._tensors], self._saved)
            for p, st in host_opt.state.items():
                for k in list(st):
                    saved = self._opt_saved.get((id(p), k))
                    if saved is None:              # created during the bad step (e.g. first momentum buffer)
                        del st[k]
                    elif torch.is_tensor(saved):
                        st[k].copy_(saved)
                    else:
                        st[k] = saved
