"""Ray actor classes for the runner and the learner, with their restart and concurrency settings."""
from __future__ import annotations

import ray

from esper.runtime.learner import Learner
from esper.runtime.runner import EnvRunner

# "control" methods (checkpoint, flush) run beside a long sample()/update(), so a stop never waits for one.
RemoteRunner = ray.remote(concurrency_groups={"control": 1})(EnvRunner)
RemoteLearner = ray.remote(concurrency_groups={"control": 1})(Learner)


def start_runner(index: int, config: dict, run_dir: str, incarnation: int, options: dict, max_restarts: int):
    return RemoteRunner.options(name=f"esper-runner-{index}", max_restarts=max_restarts, max_task_retries=0,
                                **options).remote(index, config, run_dir, incarnation)


def start_learner(config: dict, run_dir: str, init_from: str | None, options: dict, max_restarts: int):
    return RemoteLearner.options(name="esper-learner", max_restarts=max_restarts, max_task_retries=0,
                                 **options).remote(config, run_dir, init_from)
