"""Sampler: drives a VectorEnv with a Policy for n steps and returns a TrajectoryBatch.

The same code runs inside each Ray EnvRunner and in the in-process trainer, so their throughput
compares like for like. It emits the envs' step, seed and diagnostic records tagged with the policy
version, and the decision and transition telemetry (the offline dataset). Finished episodes are
returned, tagged with the policy version, not emitted: whoever consumes them emits each once.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numpy as np

from esper.leyline import EpisodeSummary
from esper.nissa import get_hub
from esper.nissa.records import emit_records
from esper.simic.learning.rollout import TrajectoryBatch
from esper.simic.environment.core import PhaseTimer, no_timer
from esper.simic.environment.vector_env import VectorEnv
from esper.tamiyo import Policy


class Sampler:
    def __init__(self, vec: VectorEnv, policy: Policy, runner: int = 0,
                 on_step: Callable[[int], None] | None = None, timer: PhaseTimer = no_timer) -> None:
        """`timer` times the policy's decisions ("policy") and the telemetry written ("emit"); set `vec.timer`
        for the env's phases."""
        self.vec, self.policy, self.runner, self.on_step, self.timer = vec, policy, runner, on_step, timer
        self.obs: np.ndarray | None = None
        self.masks: np.ndarray | None = None
        self.env_steps = 0

    def start(self) -> None:
        self.obs, _ = self.vec.reset()
        self.masks = self.vec.action_masks()
        self.policy.reset(range(self.vec.num_envs))

    def sample(self, n_steps: int) -> tuple[TrajectoryBatch, list[EpisodeSummary]]:
        if self.obs is None:
            self.start()
        vec, K = self.vec, self.vec.num_envs
        D, A = vec.ctx.schema.size, vec.ctx.space.n
        obs_buf = np.zeros((n_steps, K, D), np.float32)
        mask_buf = np.zeros((n_steps, K, A), bool)
        actions = np.zeros((n_steps, K), np.int64)
        logps = np.zeros((n_steps, K), np.float32)
        values = np.zeros((n_steps, K), np.float32)
        rewards = np.zeros((n_steps, K), np.float32)
        dones = np.zeros((n_steps, K), bool)
        episode_ids: list[list[str]] = []
        episodes: list[EpisodeSummary] = []
        hub = get_hub()
        version = int(getattr(self.policy, "version", 0))
        for t in range(n_steps):
            with self.timer("policy"):
                decisions = self.policy.act(self.obs, self.masks)
            obs_buf[t], mask_buf[t] = self.obs, self.masks
            actions[t] = [d.index for d in decisions]
            logps[t] = [d.log_prob for d in decisions]
            values[t] = [d.value for d in decisions]
            episode_ids.append([c.episode_id for c in vec.cores])
            keys = [(c.episode_id, c.attempt, c.epoch) for c in vec.cores]
            next_obs, r, term, trunc, infos = vec.step(actions[t])
            self.env_steps += K
            rewards[t], dones[t] = r, term | trunc
            with self.timer("emit"):
                for records in infos["records"]:
                    emit_records(records, policy_version=version)
            next_masks = vec.action_masks()
            ended = [k for k in range(K) if dones[t, k]]
            final_obs, final_masks = next_obs.copy(), next_masks.copy()
            for k in ended:         # the step's own last observation and mask, not the next episode's first
                final_obs[k] = infos["final_obs"][k]
                final_masks[k] = infos["final_info"]["action_mask"][k]
                episodes.append(replace(infos["final_info"]["esper_episode"][k], policy_version=version))
            with self.timer("emit"):
                self._emit(hub, t, keys, decisions, obs_buf[t], mask_buf[t], rewards[t], dones[t], final_obs,
                           final_masks, version)
            if ended:
                self.policy.reset(ended)
            self.obs, self.masks = next_obs, next_masks
            if self.on_step is not None:
                self.on_step(t)
        batch = TrajectoryBatch(obs_buf, actions, mask_buf, logps, values, rewards, dones, self.obs.copy(), version,
                                self.runner, episode_ids)
        return batch, episodes

    def _emit(self, hub, t, keys, decisions, obs, masks, rewards, dones, next_obs, next_masks, version) -> None:
        K = len(keys)
        if hub.wants("decision"):
            for k, ((eid, attempt, epoch), d) in enumerate(zip(keys, decisions)):
                hub.emit("decision", episode_id=eid, attempt=attempt, env_index=k, epoch=epoch,
                         policy=self.policy.name, policy_version=version, action=d.index, action_name=str(d.action),
                         legal_actions=int(masks[k].sum()), reason=d.reason, confidence=d.confidence,
                         log_prob=d.log_prob)
        if hub.wants("transition"):
            hub.emit_columns("transition", {
                "episode_id": [k[0] for k in keys], "attempt": [k[1] for k in keys], "env_index": list(range(K)),
                "step": [k[2] for k in keys], "obs": obs, "action": [d.index for d in decisions], "mask": masks,
                "reward": rewards, "done": dones, "next_obs": next_obs, "next_mask": next_masks,
                "log_prob": [d.log_prob for d in decisions], "policy_version": [version] * K})
