"""The diagnostics probe: every `nissa.diagnostics_every` steps (standard and research profiles), one
extra forward/backward on a validation batch with a DiagnosticTracker attached, returned as `diagnostic` rows (per-layer gradient
statistics and a one-line narrative) for the env's driver to emit.

It runs beside training, not inside it: the training step stays a single capturable graph with no
hooks, and the probe's cost is one batch every N steps. The model is in eval mode (BatchNorm
statistics untouched) and no optimizer steps; gradients are cleared afterwards.
"""
from __future__ import annotations

import torch.nn.functional as F

from esper.kasmina import MorphogeneticModel
from esper.nissa import get_hub
from esper.nissa.diagnostics import DiagnosticTracker
from esper.tolaria import DeviceData


def diagnostic_probe(model: MorphogeneticModel, data: DeviceData, batch_size: int, key: dict,
                     epoch: int) -> list[dict]:
    """The probe's rows when this process's telemetry profile wants diagnostics at this epoch, else []."""
    hub = get_hub()
    if not hub.wants("diagnostic") or epoch % hub.cfg.diagnostics_every:
        return []
    x, y = next(data.eval_batches("val", batch_size))
    was_training = model.training
    model.eval()
    try:
        with DiagnosticTracker(model, hub.cfg) as tracker:
            F.cross_entropy(model(x), y).backward()
            tracker.sharpness(F.cross_entropy, x, y)          # research profile only
            rows, _ = tracker.epoch_report()
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return [{**key, "epoch": epoch, **row} for row in rows]

