"""EnvRunner: a Ray actor that owns a VectorEnv of K environments and a GPU slice (or CPU).

`sample(weights, n)` loads the policy version it was handed (a no-op if it already has it), steps
its K envs n times and returns (TrajectoryBatch, SampleInfo). The coordinator passes the batch's
object ref straight to the learner, so trajectories never pass through the driver.
"""
from __future__ import annotations

import json
import os
import signal
import time
import warnings
from dataclasses import dataclass, field

import ray
import torch

from esper.config import RunConfig
from esper.leyline import EpisodeSummary
from esper.runtime.metrics import RunnerMetrics
from esper.nissa import configure_run_telemetry
from esper.simic.environment import SequentialEpisodes, VectorEnv, derive_seed, make_context
from esper.simic.learning.sampler import Sampler


@dataclass
class SampleInfo:
    runner: int
    policy_version: int
    env_steps: int
    seconds: float
    episodes: list[EpisodeSummary] = field(default_factory=list)
    in_progress: dict[int, tuple[int, int]] = field(default_factory=dict)   # env -> (episode seq, attempt)


def was_restarted() -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bool(ray.get_runtime_context().was_current_actor_reconstructed)


class EnvRunner:
    def __init__(self, index: int, config: dict, run_dir: str, incarnation: int = 0) -> None:
        self.index, self.run_dir = index, run_dir
        self.cfg = cfg = RunConfig.model_validate(config)
        self.restarted = was_restarted()
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
        torch.set_num_threads(max(1, int(cpus)))
        gpu = bool(ray.get_gpu_ids())
        self.ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma,
                                device="cuda" if gpu and cfg.tolaria.training.device == "auto" else None)
        self.hub = configure_run_telemetry(run_dir, cfg.nissa.model_copy(update={"console": False}),
                                           f"runner-{index}", self.ctx.schema, self.ctx.space)
        self.episodes = SequentialEpisodes(derive_seed(cfg.seed, 1000 + index, incarnation), prefix=f"i{incarnation}r{index}")
        self.vec = VectorEnv(self.ctx, cfg.runtime.envs_per_runner, self.episodes)
        self.policy = self.ctx.make_policy(cfg.runtime.policy, cfg.tamiyo, seed=derive_seed(cfg.seed, index, incarnation))
        self.sampler = Sampler(self.vec, self.policy, runner=index, on_step=self._fault_point)
        self.metrics = RunnerMetrics(f"esper-runner-{index}")
        self.calls = 0
        self.hub.emit("system", kind="actor_restart" if self.restarted else "actor_start", actor=f"esper-runner-{index}",
                      detail=json.dumps({"device": str(self.ctx.device), "envs": cfg.runtime.envs_per_runner,
                                         "pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}))

    def __repr__(self) -> str:
        # Ray shows this once, after __init__, in the dashboard's Actors view (its Repr column).
        return (f"EnvRunner(runner={self.index}, envs={self.vec.num_envs}, device={self.ctx.device}, "
                f"policy={self.cfg.runtime.policy}, run={os.path.basename(self.run_dir.rstrip('/'))})")

    def resume(self, in_progress: dict[int, tuple[int, int]]) -> None:
        """After a restart: re-run each env's interrupted episode (same seed) with attempt + 1."""
        self.episodes = SequentialEpisodes(self.episodes.base_seed, self.episodes.prefix,
                                           {int(k): (seq, attempt + 1) for k, (seq, attempt) in in_progress.items()})
        self.vec.episodes = self.episodes
        self.sampler.obs = None   # reset the envs on the next sample

    def load_weights(self, weights: dict) -> int:
        """Take a policy version without sampling (used to measure the weight broadcast)."""
        self.policy.load_weights(weights)
        return int(self.policy.version)

    def sample(self, weights: dict | None, n_steps: int):
        self.calls += 1
        if weights is not None:
            self.policy.load_weights(weights)
        start = time.perf_counter()
        batch, episodes = self.sampler.sample(n_steps)
        seconds = time.perf_counter() - start
        steps = n_steps * self.vec.num_envs
        self.metrics.record(steps, seconds, episodes)
        self.hub.flush_due()
        info = SampleInfo(self.index, int(getattr(self.policy, "version", 0)), steps, seconds, episodes,
                          dict(self.episodes.current))
        return batch, info

    @ray.method(concurrency_group="control")
    def flush(self) -> None:
        self.hub.flush()

    def _fault_point(self, step: int) -> None:
        f = self.cfg.runtime.faults
        if f.kill_runner == self.index and not self.restarted and self.calls == f.at_sample_call and step == 0:
            os.kill(os.getpid(), signal.SIGKILL)     # a hard crash: no flush, no cleanup
