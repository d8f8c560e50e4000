"""Start PPO from a pretrained policy: `python -m esper.launch --init-from CHECKPOINT`.

The checkpoint is esper.simic.learning.checkpoint's format (so the same leyline-version, schema-fingerprint
and action-space checks apply): either an IQL export (`python -m esper.simic.learning.iql`, `kind: "iql"`)
or an ordinary PPO checkpoint (a `.pt` file or a run directory, whose `latest` is used). Only the
ActorCritic weights and the observation normalizer are taken; the optimiser starts fresh and the
policy version and update count stay 0, so the fine-tuning run is a new run that happens to start
from these weights (`--resume` is the way to continue a run).
"""
from __future__ import annotations

from esper.leyline import ActionSpace, TensorSchema
from esper.simic.learning.checkpoint import CheckpointError, load_checkpoint
from esper.simic.learning.ppo import PPOLearner


def load_initial_policy(ppo: PPOLearner, path: str, schema: TensorSchema, space: ActionSpace) -> dict:
    """Load network + normalizer from `path` into a fresh PPOLearner. Returns the checkpoint's `extra`."""
    if ppo.version != 0 or ppo.updates_done != 0:
        raise CheckpointError(f"--init-from {path}: the learner is already at version {ppo.version}; "
                              f"a pretrained policy only initialises a fresh run")
    payload = load_checkpoint(path, schema=schema, space=space)     # format, leyline, fingerprint, action space
    state = payload.get("learner") or {}
    if "network" not in state or "normalizer" not in state:
        raise CheckpointError(f"--init-from {path}: checkpoint holds no policy network and normalizer")
    mine = ppo.network.state_dict()
    theirs = state["network"]
    if set(theirs) != set(mine) or any(theirs[k].shape != mine[k].shape for k in mine):
        hidden = state.get("hidden") or _hidden_of(theirs)
        raise CheckpointError(
            f"--init-from {path}: the checkpoint's network (hidden layers {hidden}) does not fit this run's "
            f"(tamiyo.network.hidden={list(ppo.network.hidden)}); set tamiyo.network.hidden={hidden} or "
            f"pretrain with this run's config")
    ppo.network.load_state_dict(theirs)
    ppo.normalizer.load_state_dict(state["normalizer"])
    ppo.optimizer.state.clear()        # fresh Adam moments (the parameters are the same tensors)
    ppo.version = 0
    ppo.updates_done = 0
    return payload.get("extra", {})


def _hidden_of(network_state: dict) -> list[int]:
    """Hidden widths from an ActorCritic state dict (its actor trunk's Linear layers)."""
    return [int(v.shape[0]) for k, v in network_state.items()
            if k.startswith("actor_features.net.") and k.endswith(".weight") and v.dim() == 2]
