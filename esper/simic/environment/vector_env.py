"""VectorEnv: K morphogenetic environments in one process on one device.

Control flow is inverted: instead of stepping env 1 for an epoch, then env 2, it loops over
batches and dispatches every env's batch (each on its own CUDA stream), so kernel launches from
K envs overlap; all data is one device-resident copy shared by the K envs; metrics stay on the
device and the whole step synchronises once. Envs that finish reset at once (Gymnasium's
SAME_STEP autoreset: the returned observation starts the new episode, the last one is in
`infos["final_obs"]`, its info in `infos["final_info"]`, the episode's `EpisodeSummary` in
`infos["final_info"]["esper_episode"]`). Each env's telemetry rows come back in
`infos["records"]` (an object array, one list per env) for the driver to emit. On CPU the same
code runs without streams.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Callable

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces
from gymnasium.vector import AutoresetMode

from esper.simic.environment.context import EnvContext
from esper.simic.environment.core import EnvCore, PhaseTimer, derive_seed, no_timer

# (env_index) -> (episode_id, env_seed, attempt) for the next episode of that env
EpisodeSource = Callable[[int], tuple[str, int, int]]


class SequentialEpisodes:
    """Default episode numbering: `<prefix>e<env>-<n>` with seeds derived from a base seed."""

    def __init__(self, base_seed: int, prefix: str = "", start: dict[int, tuple[int, int]] | None = None) -> None:
        self.base_seed, self.prefix = base_seed, prefix
        self.next_seq: dict[int, int] = {k: s for k, (s, _) in (start or {}).items()}
        self.attempts: dict[int, int] = {k: a for k, (_, a) in (start or {}).items()}
        self.current: dict[int, tuple[int, int]] = {}

    def __call__(self, env_index: int) -> tuple[str, int, int]:
        seq = self.next_seq.get(env_index, 0)
        attempt = self.attempts.pop(env_index, 0)     # a re-run applies to the first episode only
        self.next_seq[env_index] = seq + 1
        self.current[env_index] = (seq, attempt)
        return f"{self.prefix}e{env_index}-{seq}", derive_seed(self.base_seed, env_index, seq), attempt


class VectorEnv(gym.vector.VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, ctx: EnvContext, num_envs: int, episodes: EpisodeSource | None = None,
                 base_seed: int = 0) -> None:
        self.ctx = ctx
        self.num_envs = num_envs
        self.cores = [EnvCore(ctx, k) for k in range(num_envs)]
        self.episodes = episodes or SequentialEpisodes(base_seed)
        self.single_observation_space = spaces.Box(-np.inf, np.inf, (ctx.schema.size,), np.float32)
        self.single_action_space = spaces.Discrete(ctx.space.n)
        self.observation_space = spaces.Box(-np.inf, np.inf, (num_envs, ctx.schema.size), np.float32)
        self.action_space = spaces.MultiDiscrete(np.full(num_envs, ctx.space.n))
        on_cuda = ctx.device.type == "cuda"
        self.streams = [torch.cuda.Stream(ctx.device) if on_cuda else None for _ in range(num_envs)]
        self.obs = np.zeros((num_envs, ctx.schema.size), dtype=np.float32)
        self.timer: PhaseTimer = no_timer

    @property
    def timer(self) -> PhaseTimer:
        return self._timer

    @timer.setter
    def timer(self, timer: PhaseTimer) -> None:
        """Time this vector env's phases and its envs' (see core.PhaseTimer)."""
        self._timer = timer
        for core in self.cores:
            core.timer = timer

    def _stream(self, k: int):
        return torch.cuda.stream(self.streams[k]) if self.streams[k] is not None else nullcontext()

    def _reset_env(self, k: int) -> dict:
        episode_id, seed, attempt = self.episodes(k)
        with self.timer("reset"):
            obs, info = self.cores[k].reset(seed, episode_id, attempt)
        self.obs[k] = obs
        return info

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.episodes = SequentialEpisodes(seed)
        infos = [self._reset_env(k) for k in range(self.num_envs)]
        return self.obs.copy(), self._vector_info(infos)

    def action_masks(self) -> np.ndarray:
        return np.stack([c.action_mask() for c in self.cores])

    def step(self, actions):
        with self.timer("vector_step"):
            return self._step(np.asarray(actions).reshape(self.num_envs))

    def _step(self, actions: np.ndarray):
        cores, timer = self.cores, self.timer
        for core, a in zip(cores, actions):
            with timer("begin_step"):
                core.begin_step(int(a))
        if self.streams[0] is not None:
            current = torch.cuda.current_stream(self.ctx.device)
            for s in self.streams:
                s.wait_stream(current)
        for _ in range(cores[0].batches_per_step):
            for k, core in enumerate(cores):
                with self._stream(k), timer("train_batch"):
                    core.train_batch()
        for k, core in enumerate(cores):
            with self._stream(k), timer("evaluate"):
                core.evaluate()
        if self.streams[0] is not None:
            for s in self.streams:
                current.wait_stream(s)
        with timer("device_stats"):
            stats = torch.stack([c.device_stats() for c in cores]).cpu().numpy()   # one sync for all K envs
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminated = np.zeros(self.num_envs, dtype=bool)
        truncated = np.zeros(self.num_envs, dtype=bool)
        infos: list[dict] = []
        for k, core in enumerate(cores):
            with timer("finish_step"):
                obs, r, term, trunc, info = core.finish_step(stats[k])
            rewards[k], terminated[k], truncated[k] = r, term, trunc
            self.obs[k] = obs
            if term or trunc:
                info["final_obs"] = obs
                info["final_info"] = dict(info)
                reset_info = self._reset_env(k)
                info["action_mask"] = reset_info["action_mask"]
                info["episode_id"] = reset_info["episode_id"]
            infos.append(info)
        with timer("vector_info"):
            vector_infos = self._vector_info(infos)
        return self.obs.copy(), rewards, terminated, truncated, vector_infos

    def _vector_info(self, infos: list[dict]) -> dict:
        out: dict = {}
        for k, info in enumerate(infos):
            out = self._add_info(out, info, k)
        return out
