"""Start a run on Ray: size the runners, create the actors, run the coordinator, stop cleanly."""
from __future__ import annotations

import json
import os
import re
import signal

import ray
import yaml

from esper.config import RunConfig, config_to_dict
from esper.kasmina import schema_and_space
from esper.nissa import configure_run_telemetry, reset_hub
from esper.storage import read_bytes, resolve_fs, write_bytes_atomic
from esper.runtime.actors import start_learner, start_runner
from esper.runtime.cluster import alive_nodes, check_shared_run_dir, connect, size_runners
from esper.runtime.coordinator import Coordinator, RunState


def _load_state(run_dir: str) -> RunState:
    fs, base = resolve_fs(run_dir)
    try:
        return RunState(**json.loads(read_bytes(fs, f"{base}/state.json")))
    except FileNotFoundError:
        return RunState()


def start_run(cfg: RunConfig, *, run_dir: str, resume: bool = False, init_from: str | None = None,
              address: str | None = None, num_cpus: int | None = None, dashboard: bool = True,
              metrics_port: int | None = None) -> dict:
    namespace = "esper-" + re.sub(r"[^A-Za-z0-9_-]", "-", os.path.basename(run_dir.rstrip("/")))
    where, how = connect(address, namespace, num_cpus=num_cpus, include_dashboard=dashboard or None,
                         metrics_port=metrics_port)
    print(f"[esper] Ray: {how}", flush=True)
    try:
        nodes = alive_nodes()
        check_shared_run_dir(run_dir, len(nodes), cfg.storage.shared)
        count, runner_opts = size_runners(cfg.runtime, ray.cluster_resources())
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
        ppo = cfg.runtime.policy == "ppo"
        dash = ray.get_runtime_context().gcs_address if where == "cluster" else "local"
        print(f"[esper] run dir: {run_dir}", flush=True)
        print(f"[esper] {count} runner(s) x {cfg.runtime.envs_per_runner} env(s), policy={cfg.runtime.policy}, "
              f"mode={cfg.runtime.mode}, {len(nodes)} node(s), Ray {where} ({dash}), namespace {namespace}"
              + (f", resuming as incarnation {state.incarnation}" if resume else ""), flush=True)
        learner = start_learner(config_to_dict(cfg), run_dir, init_from, {"num_cpus": 1},
                                cfg.runtime.max_restarts) if ppo else None
        runners = [start_runner(i, config_to_dict(cfg), run_dir, state.incarnation, runner_opts,
                                cfg.runtime.max_restarts) for i in range(count)]
        coordinator = Coordinator(cfg, run_dir, runners, learner, state)
        previous = {sig: signal.signal(sig, lambda s, _f: coordinator.request_stop(signal.Signals(s).name))
                    for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            summary = coordinator.run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        print(f"[esper] stopped ({summary['stopped_by']}); run dir: {run_dir}", flush=True)
        return summary
    finally:
        reset_hub()
        ray.shutdown()
