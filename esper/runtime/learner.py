"""Learner: a Ray actor that holds PPO, updates from trajectory batches and publishes weights.

`update(*batches)` returns (stats, weights): the weights are one object per policy version, which
the coordinator hands to every runner (Ray fetches it once per node). On start it restores the
run's latest checkpoint if there is one; versions are reserved before they are published, so a
restored learner never reuses a version number.
"""
from __future__ import annotations

import copy
import json
import os
import signal

import ray
import torch

from esper.config import RunConfig, config_to_dict
from esper.kasmina import schema_and_space
from esper.nissa import configure_run_telemetry
from esper.runtime.metrics import LearnerMetrics
from esper.runtime.runner import was_restarted
from esper.simic.learning.checkpoint import (latest_version, load_checkpoint, release_versions, reserve_versions,
                                    reserved_version, save_checkpoint)
from esper.simic.learning.trainer import make_learner


class Learner:
    def __init__(self, config: dict, run_dir: str, init_from: str | None = None) -> None:
        self.cfg = cfg = RunConfig.model_validate(config)
        self.run_dir = run_dir
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        self.schema, self.space = schema_and_space(cfg.kasmina)
        self.hub = configure_run_telemetry(run_dir, cfg.nissa.model_copy(update={"console": False}), "learner",
                                           self.schema, self.space)
        self.ppo = make_learner(self.schema, self.space, cfg.simic, cfg.tamiyo, cfg.seed)
        self.extra: dict = {}
        self.restored_from: int | None = None
        if latest_version(run_dir) is not None:
            payload = load_checkpoint(run_dir, schema=self.schema, space=self.space)
            self.ppo.load_state_dict(payload["learner"])
            self.extra = payload["extra"]
            self.restored_from = self.ppo.version
        elif init_from:
            from esper.simic.learning.pretrained import load_initial_policy

            load_initial_policy(self.ppo, init_from, self.schema, self.space)
        # Anything up to the reserved mark may have been published before a crash: never reuse it.
        self.ppo.version = max(self.ppo.version, reserved_version(run_dir))
        self.reserved = reserve_versions(run_dir, self.ppo.version)
        self.metrics = LearnerMetrics()
        self.restarted = was_restarted()
        self._published = self._snapshot()
        self.hub.emit("system", kind="actor_restart" if self.restarted else "actor_start", actor="esper-learner",
                      detail=json.dumps({"restored_version": self.restored_from, "next_version": self.ppo.version + 1,
                                         "device": str(self.ppo.device), "pid": os.getpid(),
                                         "node": ray.get_runtime_context().get_node_id()}))

    def __repr__(self) -> str:
        # Ray shows this once, after __init__, in the dashboard's Actors view (its Repr column).
        restored = f", restored=v{self.restored_from}" if self.restored_from is not None else ""
        return (f"Learner(ppo, device={self.ppo.device}, run={os.path.basename(self.run_dir.rstrip('/'))}"
                f"{restored})")

    def _snapshot(self) -> dict:
        return copy.deepcopy(self.ppo.state_dict())

    def info(self) -> dict:
        return {"version": self.ppo.version, "updates_done": self.ppo.updates_done,
                "restored_from": self.restored_from, "extra": self.extra}

    def get_weights(self) -> dict:
        return self.ppo.weights()

    def update(self, *batches):
        if self.cfg.runtime.faults.kill_learner_at_update == self.ppo.updates_done + 1 and not self.restarted:
            os.kill(os.getpid(), signal.SIGKILL)            # injected crash inside an update
        lag = self.cfg.runtime.max_policy_lag if self.cfg.runtime.mode == "async" else None
        stats = self.ppo.update(list(batches), max_policy_lag=lag).to_dict()
        if self.ppo.version > self.reserved:                # reserve before publishing
            self.reserved = reserve_versions(self.run_dir, self.ppo.version)
        self.hub.emit("learner", **stats)
        self.metrics.record(stats)
        self._published = self._snapshot()
        if self.ppo.updates_done % self.cfg.runtime.checkpoint_every == 0:
            self._save(self._published)
        self.hub.flush_due()
        return stats, self.ppo.weights()

    def _save(self, state: dict, extra: dict | None = None) -> str:
        if extra is not None:
            self.extra = extra
        path = save_checkpoint(self.run_dir, state, schema=self.schema, space=self.space,
                               config=config_to_dict(self.cfg), extra=self.extra)
        self.hub.emit("system", kind="checkpoint", actor="esper-learner",
                      detail=json.dumps({"version": state["version"], "path": path}))
        return path

    # The methods below run in the "control" concurrency group, so a stop never waits for an update.
    @ray.method(concurrency_group="control")
    def checkpoint(self, extra: dict | None = None, final: bool = False) -> dict:
        """Checkpoint the last published version; on a clean stop release the unused version reservation.
        Returns {"path", "version", "updates_done"}: what was saved, which may be an update the driver has
        not heard of yet (a stop that arrived while its result was on the way)."""
        state = self._published
        path = self._save(state, extra)
        if final:
            release_versions(self.run_dir, int(state["version"]))
        self.hub.flush()
        return {"path": path, "version": int(state["version"]), "updates_done": int(state["updates_done"])}

    @ray.method(concurrency_group="control")
    def flush(self) -> None:
        self.hub.flush()
