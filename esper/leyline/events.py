"""Telemetry event types and their Arrow schemas (docs/architecture.md, "Telemetry").

Every event row carries `time` (UTC) and `process` (who wrote it). Schemas are versioned: the
version, the Leyline version and, for transitions, the observation fingerprint go into each
file's metadata so a reader can refuse data it cannot interpret.
"""
from __future__ import annotations

import pyarrow as pa

from esper.leyline.version import LEYLINE_VERSION

EVENT_SCHEMA_VERSION = "1"

_COMMON = [pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False), pa.field("process", pa.string(), nullable=False)]
_EPISODE_KEY = [pa.field("episode_id", pa.string()), pa.field("attempt", pa.int32()), pa.field("env_index", pa.int32())]


def _schema(event_type: str, fields: list[pa.Field], **extra_meta: str) -> pa.Schema:
    meta = {
        "esper.event": event_type,
        "esper.event_schema_version": EVENT_SCHEMA_VERSION,
        "esper.leyline_version": LEYLINE_VERSION,
        **extra_meta,
    }
    return pa.schema(_COMMON + fields, metadata={k.encode(): v.encode() for k, v in meta.items()})


STEP = _schema("step", _EPISODE_KEY + [
    pa.field("epoch", pa.int32()),
    pa.field("policy_version", pa.int64()),
    pa.field("action", pa.string()),
    pa.field("train_loss", pa.float32()),
    pa.field("train_acc", pa.float32()),
    pa.field("val_loss", pa.float32()),
    pa.field("val_acc", pa.float32()),
    pa.field("reward", pa.float32()),
    pa.field("reward_acc_gain", pa.float32()),
    pa.field("reward_contribution", pa.float32()),
    pa.field("reward_rent", pa.float32()),
    pa.field("reward_shaping", pa.float32()),
    pa.field("reward_terminal", pa.float32()),
    pa.field("params_added", pa.int64()),
    pa.field("live_seeds", pa.int32()),
    pa.field("rolled_back", pa.bool_()),
    pa.field("sanitized", pa.bool_()),
])

SEED = _schema("seed", _EPISODE_KEY + [
    pa.field("epoch", pa.int32()),
    pa.field("slot", pa.int32()),
    pa.field("blueprint", pa.string()),
    pa.field("from_stage", pa.string()),
    pa.field("to_stage", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("gate", pa.string()),
    pa.field("gate_passed", pa.bool_()),
    pa.field("gate_checks", pa.string()),   # JSON object: check name -> bool
    pa.field("gate_values", pa.string()),   # JSON object: value name -> float
])

DECISION = _schema("decision", _EPISODE_KEY + [
    pa.field("epoch", pa.int32()),
    pa.field("policy", pa.string()),
    pa.field("policy_version", pa.int64()),
    pa.field("action", pa.int32()),
    pa.field("action_name", pa.string()),
    pa.field("legal_actions", pa.int32()),
    pa.field("reason", pa.string()),
    pa.field("confidence", pa.float32()),
    pa.field("log_prob", pa.float32()),
])

EPISODE = _schema("episode", _EPISODE_KEY + [
    pa.field("env_seed", pa.int64()),
    pa.field("policy", pa.string()),
    pa.field("policy_version", pa.int64()),
    pa.field("epochs", pa.int32()),
    pa.field("episode_return", pa.float32()),
    pa.field("final_val_acc", pa.float32()),
    pa.field("final_test_acc", pa.float32()),
    pa.field("best_val_acc", pa.float32()),
    pa.field("seeds_germinated", pa.int32()),
    pa.field("seeds_fossilized", pa.int32()),
    pa.field("seeds_culled", pa.int32()),
    pa.field("params_host", pa.int64()),
    pa.field("params_added", pa.int64()),
    pa.field("rollbacks", pa.int32()),
    pa.field("actions", pa.string()),        # JSON object: action kind -> count
    # Added later (files written before lack them: readers see nulls there).
    pa.field("training_flops", pa.int64()),
    pa.field("decision_flops", pa.int64()),
    pa.field("evaluation_flops", pa.int64()),
    pa.field("wall_seconds", pa.float32()),
])

LEARNER = _schema("learner", [
    pa.field("policy_version", pa.int64()),
    pa.field("transitions", pa.int64()),
    pa.field("dropped_stale", pa.int64()),
    pa.field("policy_loss", pa.float32()),
    pa.field("value_loss", pa.float32()),
    pa.field("entropy", pa.float32()),
    pa.field("approx_kl", pa.float32()),
    pa.field("clip_fraction", pa.float32()),
    pa.field("explained_variance", pa.float32()),
    pa.field("learning_rate", pa.float32()),
    pa.field("entropy_coef", pa.float32()),
    pa.field("epochs_run", pa.int32()),
    pa.field("mean_policy_lag", pa.float32()),
    pa.field("update_seconds", pa.float32()),
])

SYSTEM = _schema("system", [
    pa.field("kind", pa.string()),        # actor_start, actor_restart, rollback, checkpoint, stop, ...
    pa.field("actor", pa.string()),
    pa.field("detail", pa.string()),      # JSON object
])

DIAGNOSTIC = _schema("diagnostic", _EPISODE_KEY + [
    pa.field("epoch", pa.int32()),
    pa.field("layer", pa.string()),
    pa.field("grad_norm", pa.float32()),
    pa.field("grad_mean_abs", pa.float32()),
    pa.field("grad_q05", pa.float32()),     # quantiles and sharpness only in the research profile
    pa.field("grad_q50", pa.float32()),
    pa.field("grad_q95", pa.float32()),
    pa.field("sharpness", pa.float32()),
    pa.field("narrative", pa.string()),
])


def transition_schema(obs_size: int, num_actions: int, obs_fingerprint: str) -> pa.Schema:
    """Transitions for offline RL; obs/mask are fixed-size lists so a column reads as one 2-D array."""
    return _schema("transition", _EPISODE_KEY + [
        pa.field("step", pa.int32()),
        pa.field("obs", pa.list_(pa.float32(), obs_size)),
        pa.field("action", pa.int32()),
        pa.field("mask", pa.list_(pa.bool_(), num_actions)),
        pa.field("reward", pa.float32()),
        pa.field("done", pa.bool_()),
        pa.field("next_obs", pa.list_(pa.float32(), obs_size)),
        pa.field("next_mask", pa.list_(pa.bool_(), num_actions)),
        pa.field("log_prob", pa.float32()),
        pa.field("policy_version", pa.int64()),
    ], **{"esper.obs_fingerprint": obs_fingerprint, "esper.obs_size": str(obs_size), "esper.num_actions": str(num_actions)})


EVENT_SCHEMAS: dict[str, pa.Schema] = {
    "step": STEP, "seed": SEED, "decision": DECISION, "episode": EPISODE,
    "learner": LEARNER, "system": SYSTEM, "diagnostic": DIAGNOSTIC,
}
EVENT_TYPES = tuple(EVENT_SCHEMAS) + ("transition",)
