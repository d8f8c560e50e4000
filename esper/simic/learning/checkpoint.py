"""Checkpoints: one file per policy version plus a small `latest` pointer written last.

    RUN_DIR/checkpoints/policy-v00000042.pt    learner state (network, optimizer, normalizer, RNG, version, config)
    RUN_DIR/checkpoints/latest.json             {"version": 42, "file": "policy-v00000042.pt"}
    RUN_DIR/checkpoints/versions.json           {"reserved": 100}: versions up to here may have been published

Every write is atomic (pyarrow.fs; temp + rename locally, one object put on S3/GCS), so a crash
leaves either the old or the new pointer. Versions are reserved in blocks before they are
published, so a learner restored from an older checkpoint never reuses a version number.
"""
from __future__ import annotations

import io
import json
from typing import Any

import torch

from esper.leyline import LEYLINE_VERSION, ActionSpace, TensorSchema, check_compatible
from esper.storage import read_bytes, resolve_fs, write_bytes_atomic

CHECKPOINT_FORMAT = 1
RESERVE_BLOCK = 100


class CheckpointError(ValueError):
    pass


def _ckpt_dir(run_dir: str) -> tuple[Any, str]:
    fs, base = resolve_fs(run_dir)
    return fs, f"{base}/checkpoints"


def checkpoint_payload(learner_state: dict, *, schema: TensorSchema, space: ActionSpace, config: dict | None = None,
                       extra: dict | None = None, **sections: Any) -> dict:
    """What every checkpoint file holds (PPO's and IQL's exports alike): the format and compatibility
    keys `load_checkpoint` checks, the learner state, config and extra as JSON, plus any `sections`."""
    return {"format": CHECKPOINT_FORMAT, "leyline_version": LEYLINE_VERSION,
            "schema_fingerprint": schema.fingerprint, "action_space": space.describe(),
            "learner": learner_state, "config": json.dumps(config or {}), "extra": json.dumps(extra or {}),
            **sections}


def save_checkpoint(run_dir: str, learner_state: dict, *, schema: TensorSchema, space: ActionSpace,
                    config: dict | None = None, extra: dict | None = None) -> str:
    """Write the learner state for its version, then move the `latest` pointer. Returns the file path."""
    version = int(learner_state["version"])
    payload = checkpoint_payload(learner_state, schema=schema, space=space, config=config, extra=extra,
                                 rng={"torch": torch.get_rng_state()})
    buf = io.BytesIO()
    torch.save(payload, buf)
    fs, d = _ckpt_dir(run_dir)
    name = f"policy-v{version:08d}.pt"
    write_bytes_atomic(fs, f"{d}/{name}", buf.getvalue())
    write_bytes_atomic(fs, f"{d}/latest.json", json.dumps({"version": version, "file": name}).encode())
    return f"{d}/{name}"


def latest_version(run_dir: str) -> int | None:
    fs, d = _ckpt_dir(run_dir)
    try:
        return int(json.loads(read_bytes(fs, f"{d}/latest.json"))["version"])
    except FileNotFoundError:
        return None


def load_checkpoint(path_or_run_dir: str, *, schema: TensorSchema, space: ActionSpace) -> dict:
    """Load a checkpoint file, or the `latest` one of a run directory, and check it fits this run."""
    fs, p = resolve_fs(path_or_run_dir)
    if not p.endswith(".pt"):
        try:
            pointer = json.loads(read_bytes(fs, f"{p}/checkpoints/latest.json"))
        except FileNotFoundError:
            raise CheckpointError(f"no checkpoint in {path_or_run_dir} (no checkpoints/latest.json)") from None
        p = f"{p}/checkpoints/{pointer['file']}"
    try:
        payload = torch.load(io.BytesIO(read_bytes(fs, p)), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {p} does not exist") from None
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: checkpoint format {payload.get('format')}, this Esper reads {CHECKPOINT_FORMAT}")
    check_compatible(payload["leyline_version"], what=f"checkpoint {p}")
    schema.check_fingerprint(payload["schema_fingerprint"], what=f"checkpoint {p}")
    if payload["action_space"] != space.describe():
        raise CheckpointError(f"checkpoint {p} is for action space {payload['action_space']}; "
                              f"this run has {space.describe()}")
    payload["config"] = json.loads(payload["config"])
    payload["extra"] = json.loads(payload["extra"])
    return payload


def reserved_version(run_dir: str) -> int:
    fs, d = _ckpt_dir(run_dir)
    try:
        return int(json.loads(read_bytes(fs, f"{d}/versions.json"))["reserved"])
    except FileNotFoundError:
        return 0


def reserve_versions(run_dir: str, upto: int) -> int:
    """Record that versions up to `upto` (rounded up to a block) may be published; returns the new mark."""
    mark = ((upto // RESERVE_BLOCK) + 1) * RESERVE_BLOCK
    fs, d = _ckpt_dir(run_dir)
    write_bytes_atomic(fs, f"{d}/versions.json", json.dumps({"reserved": mark}).encode())
    return mark


def release_versions(run_dir: str, last_published: int) -> None:
    """On a clean stop: nothing past `last_published` was handed out, so a resume continues right after it."""
    fs, d = _ckpt_dir(run_dir)
    write_bytes_atomic(fs, f"{d}/versions.json", json.dumps({"reserved": int(last_published)}).encode())
