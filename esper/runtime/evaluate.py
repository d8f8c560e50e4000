"""`esper evaluate`: the evaluation protocol (esper.evaluation) on the Ray cluster it connects to.

    esper evaluate --task synthetic --quick          # a local Ray on this machine, minutes
    esper evaluate --task fashion_mnist --address auto --results results/

Each (controller, seed) episode is a Ray task (one CPU, or a GPU slice with `--gpus-per-episode`), so a
cluster runs the protocol's episodes side by side; PPO is trained through the runtime users run
(`runtime.session.run_in_session`: coordinator, runners, learner) inside the same session, between the
episode batches. Finished work is kept in the results folder (esper.evaluation.store), so a re-run does
exactly what is missing; results land in RESULTS/<task>/ and `--docs` assembles docs/results.md.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import ray
import torch

from esper.config import ConfigError, load_config
from esper.evaluation import (EpisodeRecord, EvaluationConfigError, Job, evaluate, load_evaluation_config,
                              run_episode, write_learning_curve)
from esper.evaluation.results import assemble_docs
from esper.nissa import read_events
from esper.runtime.cluster import connect
from esper.runtime.session import UnschedulableError, run_in_session

TASKS = {"synthetic": "configs/evaluate/synthetic.yaml", "fashion_mnist": "configs/evaluate/fashion_mnist.yaml"}
STALL_S = 600.0        # no episode finished and none running for this long: the tasks cannot be scheduled


@ray.remote(max_retries=0)
def _episode(run_config: dict, controller, seed: int) -> EpisodeRecord:
    torch.set_num_threads(1)            # one CPU per task: threads beyond it only fight each other
    return run_episode(run_config, controller, seed)


class RayExecutor:
    """Episodes as Ray tasks; PPO through the Ray runtime in this session (esper.evaluation.Executor)."""

    name = "ray-runtime"

    def __init__(self, *, cpus_per_episode: float = 1.0, gpus_per_episode: float = 0.0, log=print) -> None:
        self.resources = {"num_cpus": cpus_per_episode, "num_gpus": gpus_per_episode}
        self.log = log

    def run_episodes(self, jobs: Sequence[Job], on_result=None) -> list[EpisodeRecord]:
        self._check_fits()
        refs = [_episode.options(name=f"episode {c.name} seed {s}", **self.resources).remote(r, c, s)
                for r, c, s in jobs]
        where = {ref: i for i, ref in enumerate(refs)}
        out: list[EpisodeRecord | None] = [None] * len(refs)
        pending, last = list(refs), time.monotonic()
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=10.0)
            for ref in ready:
                i = where[ref]
                out[i] = ray.get(ref)            # a failed episode raises here, with its remote traceback
                if on_result is not None:
                    on_result(i, out[i])
                last = time.monotonic()
            if not ready and time.monotonic() - last > STALL_S:
                raise UnschedulableError(f"no episode finished in {STALL_S:.0f} s with {len(pending)} pending; "
                                         f"each needs {self.resources}, the cluster has {ray.available_resources()} "
                                         f"available")
        return out  # type: ignore[return-value]

    def _check_fits(self) -> None:
        have = ray.cluster_resources()
        for key, res in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            if self.resources[key] > have.get(res, 0):
                raise UnschedulableError(f"an episode task needs {self.resources[key]:g} {res}, the cluster has "
                                         f"{have.get(res, 0):g}: lower --cpus-per-episode/--gpus-per-episode")

    def train_ppo(self, run_config: dict, ppo_seed: int, run_dir: str) -> str:
        cfg = load_config(None, [f"seed={ppo_seed}", "nissa.console=false"], base=run_config)
        self.log(f"[evaluate] training PPO seed {ppo_seed}: {cfg.runtime.total_updates} updates through the runtime "
                 f"-> {run_dir}")
        summary = run_in_session(cfg, run_dir=run_dir, where="local")
        if summary["stopped_by"] != "target reached" or not summary.get("checkpoint"):
            raise RuntimeError(f"PPO seed {ppo_seed} did not finish: stopped by {summary['stopped_by']!r} "
                               f"(run dir {run_dir})")
        write_learning_curve(run_dir, learning_curve(run_dir), ppo_seed=ppo_seed, executor=self.name,
                             env_steps=summary["env_steps"], episodes=summary["episodes"])
        return summary["checkpoint"]


def learning_curve(run_dir: str) -> list[dict]:
    """Per update, from the run's telemetry: the learner's statistics and the episodes its input came from
    (sync mode: update v learns from episodes sampled with policy v - 1)."""
    learner = read_events(run_dir, "learner").to_pylist()
    episodes = read_events(run_dir, "episode").to_pylist()
    rows = []
    for u, stats in enumerate(sorted(learner, key=lambda r: r["policy_version"]), start=1):
        mine = [e for e in episodes if e["policy_version"] == stats["policy_version"] - 1]
        mean = (lambda key: sum(e[key] for e in mine) / len(mine) if mine else math.nan)  # noqa: E731
        rows.append({"update": u, "policy_version": stats["policy_version"], "episodes": len(mine),
                     "mean_return": mean("episode_return"), "mean_val_acc": mean("final_val_acc"),
                     "explained_variance": stats["explained_variance"], "entropy": stats["entropy"],
                     "approx_kl": stats["approx_kl"]})
    return rows


class Bar:
    """A progress bar on a terminal, a line per item otherwise (a job log)."""

    def __init__(self, task: str, stream=sys.stderr) -> None:
        self.task, self.stream, self.start = task, stream, time.perf_counter()
        self.tty = stream.isatty()

    def __call__(self, done: int, total: int, what: str) -> None:
        elapsed = time.perf_counter() - self.start
        if self.tty:
            filled = int(30 * done / max(total, 1))
            self.stream.write(f"\r\033[K[{'#' * filled}{'.' * (30 - filled)}] {done}/{total} {self.task} "
                              f"{elapsed:.0f}s {what[:50]}")
            if done >= total:
                self.stream.write("\n")
        else:
            self.stream.write(f"[evaluate] {self.task} {done}/{total} ({elapsed:.0f} s): {what}\n")
        self.stream.flush()


def _missing_transfer_sources(configs: list, results: Path) -> str | None:
    """A transfer source must be evaluated already (its results.json) or earlier in this same command."""
    planned: set[str] = set()
    for cfg in configs:
        for src in cfg.transfer:
            if src not in planned and not (results / cfg.folder_of(src) / "results.json").is_file():
                return (f"{cfg.task}: transfer from {src!r} needs that task's results in "
                        f"{results / cfg.folder_of(src)}; evaluate it first (same --results), or in the same "
                        f"command before this one")
        planned.add(cfg.task)
    return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esper evaluate", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", action="append", choices=sorted(TASKS), help="task to evaluate (repeatable; default: "
                   "both) — its protocol is configs/evaluate/<task>.yaml")
    p.add_argument("--config", help="an evaluation config instead of --task (configs/evaluate/*.yaml format)")
    p.add_argument("--quick", action="store_true", help="the config's quick variant: the whole protocol in minutes")
    p.add_argument("--results", default="results", help="results folder (finished work is kept there and reused)")
    p.add_argument("--docs", metavar="FILE", help="also assemble the tasks' results into FILE (e.g. docs/results.md)")
    p.add_argument("--address", help="Ray cluster to join (as for esper.launch); default: a new local Ray")
    p.add_argument("--num-cpus", type=int, help="CPUs for a new local Ray (default: all)")
    p.add_argument("--cpus-per-episode", type=float, default=1.0)
    p.add_argument("--gpus-per-episode", type=float, default=0.0)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    paths = [args.config] if args.config else [TASKS[t] for t in (args.task or sorted(TASKS))]
    root = Path(__file__).resolve().parents[2]
    try:                                                       # every config checked before Ray starts
        configs = [load_evaluation_config(p if Path(p).exists() else root / p, quick=args.quick) for p in paths]
    except (EvaluationConfigError, ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    missing = _missing_transfer_sources(configs, Path(args.results))
    if missing:
        print(f"error: {missing}", file=sys.stderr)
        return 2
    _, how = connect(args.address, "esper-evaluate", num_cpus=args.num_cpus, include_dashboard=False)
    print(f"[evaluate] Ray: {how}; {ray.cluster_resources().get('CPU', 0):g} CPU(s)", flush=True)
    executor = RayExecutor(cpus_per_episode=args.cpus_per_episode, gpus_per_episode=args.gpus_per_episode)
    try:
        summaries = []
        for cfg in configs:
            t0 = time.perf_counter()
            results = evaluate(cfg, executor, args.results, progress=Bar(cfg.task))
            summaries.append({"task": cfg.task, "minutes": round((time.perf_counter() - t0) / 60, 2),
                              "store": results["store"], "results": results["files"]})
            print(f"[evaluate] {cfg.task}: {json.dumps(summaries[-1])}", flush=True)
        if args.docs:
            assemble_docs(args.results, args.docs)
            print(f"[evaluate] wrote {args.docs}", flush=True)
    except UnschedulableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        ray.shutdown()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    sys.exit(main())
