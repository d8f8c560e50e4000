"""Esper's custom metrics on Ray's metrics endpoint (the dashboard's Metrics view, Prometheus).

Recorded inside the actors that own the numbers: runners count env steps and episodes, the
learner reports the policy version and its losses.
"""
from __future__ import annotations

from typing import Iterable

from ray.util.metrics import Counter, Gauge

from esper.leyline import EpisodeSummary


class RunnerMetrics:
    def __init__(self, runner: str) -> None:
        keys = ("runner",)
        self.env_steps = Counter("esper_env_steps", "environment steps taken", tag_keys=keys)
        self.episodes = Counter("esper_episodes", "episodes completed", tag_keys=keys)
        self.steps_per_s = Gauge("esper_env_steps_per_second", "env steps/s over the last sample", tag_keys=keys)
        self.mean_return = Gauge("esper_episode_return", "mean return of the episodes just completed", tag_keys=keys)
        self.test_acc = Gauge("esper_final_test_accuracy", "mean final test accuracy of completed episodes",
                              tag_keys=keys)
        self.germinated = Counter("esper_seeds_germinated", "seeds germinated", tag_keys=keys)
        self.fossilized = Counter("esper_seeds_fossilized", "seeds fossilized", tag_keys=keys)
        self.culled = Counter("esper_seeds_culled", "seeds culled", tag_keys=keys)
        for m in (self.env_steps, self.episodes, self.steps_per_s, self.mean_return, self.test_acc,
                  self.germinated, self.fossilized, self.culled):
            m.set_default_tags({"runner": runner})

    def record(self, env_steps: int, seconds: float, episodes: Iterable[EpisodeSummary]) -> None:
        episodes = list(episodes)
        self.env_steps.inc(env_steps)
        self.steps_per_s.set(env_steps / max(seconds, 1e-9))
        if episodes:
            self.episodes.inc(len(episodes))
            self.mean_return.set(sum(e.episode_return for e in episodes) / len(episodes))
            self.test_acc.set(sum(e.final_test_acc for e in episodes) / len(episodes))
            for counter, n in ((self.germinated, sum(e.seeds_germinated for e in episodes)),
                               (self.fossilized, sum(e.seeds_fossilized for e in episodes)),
                               (self.culled, sum(e.seeds_culled for e in episodes))):
                if n:
                    counter.inc(n)


class LearnerMetrics:
    def __init__(self) -> None:
        self.version = Gauge("esper_policy_version", "latest published policy version")
        self.updates = Counter("esper_learner_updates", "PPO updates done")
        self.losses = {name: Gauge(f"esper_learner_{name}", f"learner {name.replace('_', ' ')}")
                       for name in ("policy_loss", "value_loss", "entropy", "approx_kl", "explained_variance")}

    def record(self, stats: dict) -> None:
        self.version.set(stats["policy_version"])
        self.updates.inc()
        for name, gauge in self.losses.items():
            value = stats[name]
            if value == value:      # NaN is not a useful gauge value
                gauge.set(value)
