"""Who runs the work: the `Executor` protocol, and the in-process one (serial, no Ray).

The protocol (`esper.evaluation.protocol.evaluate`) hands an executor two kinds of work:

    executor.run_episodes(jobs, on_result=None) -> list[EpisodeRecord]     # in job order
    executor.train_ppo(run_config, ppo_seed, run_dir) -> checkpoint path

A job is `Job(run_config, controller, seed)` (a NamedTuple: a plain `(dict, controller, int)` tuple
works too) and its result is `run_episode(*job)`, a pure function, so an executor may run jobs in
any order, anywhere, in parallel. `on_result(i, record)`, when given, should be called as each job
finishes (the result store saves it at once, so a crash loses only unfinished jobs, and the
progress bar moves); an executor may ignore it and only return the list. `train_ppo` trains PPO
for `run_config["runtime"]["total_updates"]` updates with global seed `ppo_seed`, writes its
checkpoints under `run_dir/checkpoints/` (esper.simic.learning.checkpoint) and its learning curve
to `run_dir/learning_curve.json` (`write_learning_curve`: one row per update with at least
`update`, `mean_return`, `explained_variance`, `entropy`), and returns the final checkpoint's path.
`name` says how PPO is trained (it is part of a trained checkpoint's key in the store: two executors'
PPO runs are never taken for each other).
"""
from __future__ import annotations

import json
import math
import time
from typing import Any, Callable, NamedTuple, Protocol, Sequence, runtime_checkable

import numpy as np

from esper.config import load_config
from esper.simic.learning.checkpoint import save_checkpoint
from esper.simic.learning.trainer import InProcessTrainer
from esper.storage import resolve_fs, write_bytes_atomic

from esper.evaluation.controllers import Controller
from esper.evaluation.episode import EpisodeRecord, context_for, run_episode

LEARNING_CURVE_FILE = "learning_curve.json"


class Job(NamedTuple):
    run_config: dict
    controller: Controller
    seed: int


OnResult = Callable[[int, EpisodeRecord], None]


@runtime_checkable
class Executor(Protocol):
    name: str

    def run_episodes(self, jobs: Sequence[Job], on_result: OnResult | None = None) -> list[EpisodeRecord]: ...

    def train_ppo(self, run_config: dict, ppo_seed: int, run_dir: str) -> str: ...


def write_learning_curve(run_dir: str, rows: list[dict[str, Any]], **meta: Any) -> str:
    """`run_dir/learning_curve.json`: {"updates": rows, **meta}; NaN becomes null."""
    fs, base = resolve_fs(run_dir)
    clean = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()} for r in rows]
    path = f"{base}/{LEARNING_CURVE_FILE}"
    write_bytes_atomic(fs, path, json.dumps({**meta, "updates": clean}, indent=1).encode())
    return path


class InProcessExecutor:
    """Runs every job in this process, one after another; trains PPO with the in-process trainer."""

    name = "in-process"

    def __init__(self, log: Callable[[str], None] | None = None) -> None:
        self.log = log

    def run_episodes(self, jobs: Sequence[Job], on_result: OnResult | None = None) -> list[EpisodeRecord]:
        out = []
        for i, (run, controller, seed) in enumerate(jobs):
            record = run_episode(run, controller, seed)
            if on_result is not None:
                on_result(i, record)
            out.append(record)
        return out

    def train_ppo(self, run_config: dict, ppo_seed: int, run_dir: str) -> str:
        cfg = load_config(None, (), base=run_config)
        trainer = InProcessTrainer.from_config(cfg, seed=ppo_seed, policy="ppo", ctx=context_for(cfg))
        updates = int(cfg.runtime.total_updates or cfg.simic.ppo.total_updates)
        rows, start = [], time.perf_counter()
        for u in range(updates):
            stats, episodes = trainer.iterate()
            rows.append({"update": u + 1, "policy_version": stats.policy_version, "episodes": len(episodes),
                         "mean_return": float(np.mean([e.episode_return for e in episodes])) if episodes else math.nan,
                         "mean_val_acc": float(np.mean([e.final_val_acc for e in episodes])) if episodes else math.nan,
                         "explained_variance": stats.explained_variance, "entropy": stats.entropy,
                         "approx_kl": stats.approx_kl, "seconds": time.perf_counter() - start})
            if self.log is not None:
                r = rows[-1]
                self.log(f"ppo seed {ppo_seed} update {u + 1}/{updates}: return {r['mean_return']:.2f} "
                         f"ev {r['explained_variance']:.2f} entropy {r['entropy']:.2f}")
        ctx = trainer.ctx
        path = save_checkpoint(run_dir, trainer.learner.state_dict(), schema=ctx.schema, space=ctx.space,
                               config=run_config, extra={"ppo_seed": ppo_seed, "trainer": self.name})
        write_learning_curve(run_dir, rows, ppo_seed=ppo_seed, executor=self.name)
        return path
