"""Hot-path training signals: NamedTuples that write themselves into a preallocated observation buffer.

The observation layout (TensorSchema) is derived from these fields, so adding a field here grows
the schema and changes its fingerprint; nothing is counted by hand.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from esper.leyline.stages import SeedStage

HISTORY = 4  # how many past validation accuracies/losses the observation carries


class FastTrainingSignals(NamedTuple):
    """The base block: one per environment per step."""

    epoch_frac: float          # epoch / max_epochs
    train_loss: float
    train_acc: float
    val_loss: float
    val_acc: float
    loss_delta: float          # previous val loss - current (positive = improving)
    acc_delta: float           # current val acc - previous
    best_val_acc: float
    plateau_epochs: float      # steps since best_val_acc last improved
    acc_hist_0: float          # val acc one step ago, ... HISTORY steps ago
    acc_hist_1: float
    acc_hist_2: float
    acc_hist_3: float
    loss_hist_0: float
    loss_hist_1: float
    loss_hist_2: float
    loss_hist_3: float
    host_grad_norm: float
    grad_vanishing: float      # 1 if the host's gradients vanished this step
    grad_exploding: float      # 1 if they exploded
    params_added_frac: float   # seed + fossil params / host params
    live_seeds: float
    fossilized_seeds: float
    sanitized: float           # 1 if a NaN/inf input was replaced this step

    def write_into(self, buf: Any, offset: int = 0) -> int:
        """Write into a 1-D numpy array or torch tensor at `offset`; return the offset after the block."""
        end = offset + len(self)
        buf[offset:end] = _as_row(buf, self)
        return end


class SlotSignals(NamedTuple):
    """One slot's block. `stage` and `blueprint` expand to one-hots when written."""

    stage: int                 # SeedStage value
    blueprint: int             # index into the schema's blueprint ids, -1 when the slot is empty
    epochs_in_stage: float
    alpha: float
    seed_grad_norm: float
    seed_grad_vanishing: float
    seed_grad_exploding: float
    contribution: float        # counterfactual val acc with - without the seed
    contribution_measured: float
    acc_since_germination: float
    seed_params_frac: float    # seed params / host params
    embargo_left: float
    fossils: float             # seeds fossilized in this slot so far

    @staticmethod
    def empty() -> "SlotSignals":
        return SlotSignals(int(SeedStage.DORMANT), -1, *([0.0] * (len(SlotSignals._fields) - 2)))

    def write_into(self, buf: Any, offset: int, num_blueprints: int) -> int:
        """Write the block (stage one-hot, blueprint one-hot, then the scalars); return the end offset."""
        n_stages = len(SeedStage)
        end = offset + n_stages + num_blueprints + len(self) - 2
        buf[offset:end] = 0.0
        buf[offset + int(self.stage)] = 1.0
        if self.blueprint >= 0:
            buf[offset + n_stages + int(self.blueprint)] = 1.0
        buf[offset + n_stages + num_blueprints:end] = _as_row(buf, self[2:])
        return end


def _as_row(buf: Any, values: tuple) -> Any:
    """numpy assigns a tuple directly; a torch tensor needs one of its own kind (duck-typed: no torch import)."""
    return buf.new_tensor(values) if hasattr(buf, "new_tensor") else values
