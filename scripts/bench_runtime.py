"""Benchmark the Ray runtime against the in-process trainer on the same envs, the weight broadcast, and
the learner update (issue: Ray actor-learner runtime). Prints one JSON line per figure.

    OMP_NUM_THREADS=1 python scripts/bench_runtime.py --quick
    OMP_NUM_THREADS=1 python scripts/bench_runtime.py --updates 6 --envs 2

Both sides use one environment process with K envs (the in-process trainer, or one EnvRunner) and
the same PPO learner; the ratio is Ray env-steps/s over in-process env-steps/s, after one warm-up
iteration each.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time

import torch

from esper.config import config_to_dict, load_config

QUICK = ["tolaria.data.train_size=256", "tolaria.data.val_size=128", "tolaria.data.test_size=128",
         "tolaria.data.image_size=16", "kasmina.lifecycle.min_training_epochs=1", "kasmina.lifecycle.blend_steps=2",
         "kasmina.lifecycle.shadow_steps=1", "kasmina.lifecycle.probation_steps=1", "simic.env.max_epochs=8"]


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def in_process(cfg, envs: int, steps: int, updates: int) -> float:
    from esper.simic.learning.trainer import InProcessTrainer

    tr = InProcessTrainer.from_config(cfg, num_envs=envs, steps_per_sample=steps, policy="ppo")
    tr.iterate()                                      # warm-up (first episode reset, allocations)
    start = time.perf_counter()
    for _ in range(updates):
        tr.iterate()
    return updates * steps * envs / (time.perf_counter() - start)


def on_ray(cfg, envs: int, steps: int, updates: int, run_dir: str) -> float:
    import ray

    from esper.runtime.actors import start_learner, start_runner

    tree = config_to_dict(cfg)
    tree["runtime"].update(envs_per_runner=envs, steps_per_sample=steps, runners=1)
    learner = start_learner(tree, run_dir, None, {"num_cpus": 1}, 0)
    runner = start_runner(0, tree, run_dir, 0, {"num_cpus": 1}, 0)
    weights = learner.get_weights.remote()

    def iteration(w):
        batch, info = runner.sample.options(num_returns=2).remote(w, steps)
        ray.get(info)
        stats, w = learner.update.options(num_returns=2).remote(batch)
        ray.get(stats)
        return w

    weights = iteration(weights)                      # warm-up
    start = time.perf_counter()
    for _ in range(updates):
        weights = iteration(weights)
    rate = updates * steps * envs / (time.perf_counter() - start)
    ray.kill(runner)
    ray.kill(learner)
    return rate


def broadcast(cfg, runner_counts: list[int], run_dir: str, repeats: int) -> None:
    """Time from a new weights object to every runner having loaded it (one object per version)."""
    import ray

    from esper.runtime.actors import start_learner, start_runner

    tree = config_to_dict(cfg)
    tree["runtime"]["envs_per_runner"] = 1
    learner = start_learner(tree, run_dir, None, {"num_cpus": 0.2}, 0)
    for r in runner_counts:
        runners = [start_runner(i, tree, run_dir, 0, {"num_cpus": 0.2}, 0) for i in range(r)]
        ray.get([x.load_weights.remote(learner.get_weights.remote()) for x in runners])   # actors up
        times = []
        for _ in range(repeats):
            weights = ray.put(ray.get(learner.get_weights.remote()) | {"version": 10_000 + len(times)})
            start = time.perf_counter()
            ray.get([x.load_weights.remote(weights) for x in runners])
            times.append(time.perf_counter() - start)
        times.sort()
        emit(figure="weight_broadcast_ms", runners=r, median=round(1e3 * times[len(times) // 2], 2),
             min=round(1e3 * times[0], 2), weights_bytes=len(ray.cloudpickle.dumps(ray.get(weights))))
        for x in runners:
            ray.kill(x)
    ray.kill(learner)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny data (16 px, 256 images)")
    p.add_argument("--envs", type=int, default=2)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--updates", type=int, default=4)
    p.add_argument("--set", dest="overrides", action="append", default=[])
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    cfg = load_config(None, (QUICK if args.quick else []) + args.overrides)
    torch.set_num_threads(1)
    emit(figure="machine", python=sys.version.split()[0], torch=torch.__version__, cpus=os.cpu_count(),
         platform=platform.platform(), torch_threads=torch.get_num_threads(), quick=args.quick)
    local = in_process(cfg, args.envs, args.steps, args.updates)
    emit(figure="in_process_env_steps_per_s", value=round(local, 3), envs=args.envs)

    import tempfile

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            remote = on_ray(cfg, args.envs, args.steps, args.updates, run_dir)
            emit(figure="ray_env_steps_per_s", value=round(remote, 3), envs=args.envs)
            emit(figure="ray_vs_in_process_ratio", value=round(remote / local, 3), target=0.9)
            broadcast(cfg, [1, 2, 4], run_dir, repeats=10)
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
