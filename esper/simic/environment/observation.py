"""Writes one environment's observation (TensorSchema layout) into a preallocated row."""
from __future__ import annotations

import numpy as np

from esper.kasmina import GradientHealth, MorphogeneticModel
from esper.leyline import FastTrainingSignals, SlotSignals, TensorSchema
from esper.tamiyo import TrackedSignals


def write_observation(buf: np.ndarray, schema: TensorSchema, sig: TrackedSignals, max_epochs: int,
                      health: GradientHealth | None, model: MorphogeneticModel, fossils: int) -> None:
    host_params = float(model.host_param_count)
    live = sum(s.is_live for s in model.slots)
    base = FastTrainingSignals(
        sig.epoch / max_epochs, sig.train_loss, sig.train_acc, sig.val_loss, sig.val_acc, sig.loss_delta,
        sig.acc_delta, sig.best_val_acc, float(sig.plateau_epochs), *sig.acc_history, *sig.loss_history,
        _finite(health.mean_norm[0]) if health else 0.0,
        float(health.vanishing[0]) if health else 0.0,
        float(health.exploding[0]) if health else 0.0,
        model.params_added() / host_params, float(live), float(fossils), float(sig.sanitized))
    bp_index = {b: i for i, b in enumerate(schema.blueprint_ids)}
    slots = []
    for i, s in enumerate(model.slots):
        c = s.last_contribution
        slots.append(SlotSignals(
            int(s.stage), bp_index.get(s.blueprint, -1) if s.blueprint else -1, float(s.epochs_in_stage),
            float(s.alpha), _finite(health.mean_norm[i + 1]) if health else 0.0,
            float(health.vanishing[i + 1]) if health else 0.0, float(health.exploding[i + 1]) if health else 0.0,
            0.0 if c is None else c, 0.0 if c is None else 1.0, s.val_acc - s.val_acc_at_germination if s.is_live else 0.0,
            s.seed_param_count() / host_params, float(s.embargo_left), float(len(s.fossils))))
    schema.write(buf, base, slots)


def _finite(x: float, cap: float = 1e6) -> float:
    """Gradient norms enter the observation clipped and finite (the flags carry the bad news)."""
    return min(float(x), cap) if x == x else cap
