"""One training run inside a Ray session that is already up: size the runners, create the actors, run the
coordinator, remove the actors. The launcher (`python -m esper.launch`) connects, calls this and shuts
Ray down; `esper evaluate` calls it several times in one session, between its episode tasks.
"""
from __future__ import annotations

import json
import os
import re
import signal
import time
from contextlib import contextmanager

import ray
import yaml
from ray.exceptions import RayActorError

from esper.config import RunConfig, config_to_dict
from esper.kasmina import schema_and_space
from esper.nissa import configure_run_telemetry, reset_hub
from esper.runtime.actors import start_learner, start_runner
from esper.runtime.cluster import alive_nodes, check_shared_run_dir, size_runners
from esper.runtime.coordinator import Coordinator, RunState
from esper.storage import read_bytes, resolve_fs, write_bytes_atomic

LEARNER_OPTIONS = {"num_cpus": 1}
SCHEDULE_TIMEOUT_S = 120.0


class UnschedulableError(ValueError):
    """The run's actors cannot be placed on this cluster (the message says what it needs and what there is)."""


def run_namespace(run_dir: str) -> str:
    return "esper-" + re.sub(r"[^A-Za-z0-9_-]", "-", os.path.basename(run_dir.rstrip("/")))


def _load_state(run_dir: str) -> RunState:
    fs, base = resolve_fs(run_dir)
    try:
        return RunState(**json.loads(read_bytes(fs, f"{base}/state.json")))
    except FileNotFoundError:
        return RunState()


def check_fits(count: int, runner_opts: dict, ppo: bool, resources: dict) -> None:
    """Refuse a run whose actors could never all be placed, instead of waiting for them forever."""
    need = {"CPU": count * runner_opts.get("num_cpus", 0) + (LEARNER_OPTIONS["num_cpus"] if ppo else 0),
            "GPU": count * runner_opts.get("num_gpus", 0)}
    short = {k: (v, resources.get(k, 0)) for k, v in need.items() if v > resources.get(k, 0) + 1e-9}
    if short:
        what = ", ".join(f"{v:g} {k} (the cluster has {have:g})" for k, (v, have) in short.items())
        raise UnschedulableError(f"this run needs {what}: {count} runner(s) x {runner_opts}"
                                 + (f" + a learner {LEARNER_OPTIONS}" if ppo else "")
                                 + "; set runtime.runners lower, or start Ray with more resources")


def _wait_until_placed(actors: list, timeout: float) -> None:
    """Every actor answers (its __init__ ran), or an error saying which could not be scheduled in time."""
    pending = {a.__ray_ready__.remote(): a for a in actors}
    ready, not_ready = ray.wait(list(pending), num_returns=len(pending), timeout=timeout)
    ray.get(ready)                                  # an actor whose __init__ failed raises here
    if not_ready:
        raise UnschedulableError(f"{len(not_ready)} of {len(actors)} actor(s) were not scheduled within "
                                 f"{timeout:.0f} s; available now: {ray.available_resources()}")


@contextmanager
def _stop_on_signals(coordinator: Coordinator, enabled: bool):
    if not enabled:
        yield
        return
    previous = {sig: signal.signal(sig, lambda s, _f: coordinator.request_stop(signal.Signals(s).name))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_in_session(cfg: RunConfig, *, run_dir: str, resume: bool = False, init_from: str | None = None,
                   where: str = "local", handle_signals: bool = False,
                   schedule_timeout: float = SCHEDULE_TIMEOUT_S) -> dict:
    """Run `cfg` to its target in the connected Ray session; returns the run's summary (also in summary.json).
    The actors live in the run's own namespace and are removed at the end, so a session can hold many runs."""
    nodes = alive_nodes()
    check_shared_run_dir(run_dir, len(nodes), cfg.storage.shared)
    count, runner_opts = size_runners(cfg.runtime, ray.cluster_resources())
    ppo = cfg.runtime.policy == "ppo"
    check_fits(count, runner_opts, ppo, ray.cluster_resources())
    tree = config_to_dict(cfg)
    tree["runtime"]["runners"] = count
    tree["storage"]["run_dir"] = run_dir
    cfg = RunConfig.model_validate(tree)
    fs, base = resolve_fs(run_dir)
    fs.create_dir(base, recursive=True)
    write_bytes_atomic(fs, f"{base}/config.yaml", yaml.safe_dump(tree, sort_keys=False).encode())
    state = _load_state(run_dir) if resume else RunState()
    if resume:
        state.incarnation += 1
    schema, space = schema_and_space(cfg.kasmina)
    configure_run_telemetry(run_dir, cfg.nissa, "driver", schema, space)
    namespace = run_namespace(run_dir)
    dash = ray.get_runtime_context().gcs_address if where == "cluster" else "local"
    print(f"[esper] run dir: {run_dir}", flush=True)
    print(f"[esper] {count} runner(s) x {cfg.runtime.envs_per_runner} env(s), policy={cfg.runtime.policy}, "
          f"mode={cfg.runtime.mode}, {len(nodes)} node(s), Ray {where} ({dash}), namespace {namespace}"
          + (f", resuming as incarnation {state.incarnation}" if resume else ""), flush=True)
    learner, runners = None, []
    try:
        t0 = time.monotonic()
        learner = start_learner(tree, run_dir, init_from, {**LEARNER_OPTIONS, "namespace": namespace},
                                cfg.runtime.max_restarts) if ppo else None
        runners = [start_runner(i, tree, run_dir, state.incarnation, {**runner_opts, "namespace": namespace},
                                cfg.runtime.max_restarts) for i in range(count)]
        coordinator = Coordinator(cfg, run_dir, runners, learner, state)
        try:
            _wait_until_placed([a for a in (learner, *runners) if a is not None], schedule_timeout)
        except (UnschedulableError, RayActorError) as exc:     # e.g. an actor's __init__ raised
            summary = coordinator.fail(exc)
        else:
            with _stop_on_signals(coordinator, handle_signals):
                summary = coordinator.run()
        print(f"[esper] stopped ({summary['stopped_by']}) after {time.monotonic() - t0:.0f} s; run dir: {run_dir}",
              flush=True)
        return summary
    finally:
        for actor in (learner, *runners):
            if actor is not None:
                ray.kill(actor, no_restart=True)
        reset_hub()
