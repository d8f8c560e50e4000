"""Start a run on Ray: connect (or start a local Ray), run it in that session, shut Ray down."""
from __future__ import annotations

import ray

from esper.config import RunConfig
from esper.nissa import reset_hub
from esper.runtime.cluster import connect
from esper.runtime.session import run_in_session, run_namespace


def start_run(cfg: RunConfig, *, run_dir: str, resume: bool = False, init_from: str | None = None,
              address: str | None = None, num_cpus: int | None = None, dashboard: bool = True,
              metrics_port: int | None = None) -> dict:
    where, how = connect(address, run_namespace(run_dir), num_cpus=num_cpus, include_dashboard=dashboard or None,
                         metrics_port=metrics_port)
    print(f"[esper] Ray: {how}", flush=True)
    try:
        return run_in_session(cfg, run_dir=run_dir, resume=resume, init_from=init_from, where=where,
                              handle_signals=True)
    finally:
        reset_hub()
        ray.shutdown()
