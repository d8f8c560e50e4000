"""Connecting to Ray, sizing the runners to what it reports, and checking the run directory is shared."""
from __future__ import annotations

import os

import ray

from esper.storage import is_node_local
from esper.config.runtime import RuntimeConfig


def connect(address: str | None, namespace: str, *, num_cpus: int | None = None,
            include_dashboard: bool | None = None, metrics_port: int | None = None) -> tuple[str, str]:
    """Join the cluster the user asked for — `address` (`--address auto`, `host:port`, `ray://...`), else
    $RAY_ADDRESS (set by `ray job submit`) — or start a new local Ray. A Ray that merely runs on this machine
    is never joined unasked: it may be a previous launch shutting down, which would take our actors with it.
    `address="local"` always starts a new one. Returns ("cluster" | "local", a line saying which and why).
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    env_address = os.environ.get("RAY_ADDRESS") or None
    asked = address or env_address
    if asked and asked != "local":
        ray.init(address=asked, namespace=namespace, log_to_driver=True)
        source = f"--address {address}" if address else f"RAY_ADDRESS={env_address}"
        return "cluster", f"joined the Ray cluster at {ray.get_runtime_context().gcs_address} ({source})"
    ray.init(address="local", namespace=namespace, num_cpus=num_cpus, include_dashboard=include_dashboard,
             log_to_driver=True, _metrics_export_port=metrics_port)
    why = "--address local" if asked == "local" else "no --address or RAY_ADDRESS; join a cluster with --address auto"
    return "local", f"started a new local Ray ({why})"


def alive_nodes() -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def size_runners(rt: RuntimeConfig, resources: dict) -> tuple[int, dict]:
    """(number of runners, Ray options per runner) for the resources Ray reports."""
    gpus = int(resources.get("GPU", 0))
    if gpus > 0:
        count = gpus * rt.runners_per_gpu if rt.runners == "auto" else int(rt.runners)
        return count, {"num_gpus": 1.0 / rt.runners_per_gpu, "num_cpus": 1}
    cpus = int(resources.get("CPU", 1))
    count = max(1, cpus - 1) if rt.runners == "auto" else int(rt.runners)
    return count, {"num_cpus": 1}


def check_shared_run_dir(run_dir: str, nodes: int, declared_shared: bool) -> None:
    """On more than one node every actor writes into one run directory: it must be shared storage."""
    if nodes > 1 and not declared_shared and is_node_local(run_dir):
        raise ValueError(
            f"storage.run_dir={run_dir!r} is on a node-local filesystem, but the cluster has {nodes} nodes: "
            f"runners on other nodes would write where the driver cannot read. Use shared storage "
            f"(an NFS mount, s3://bucket/path or gs://bucket/path), or set storage.shared=true if this path "
            f"is in fact shared by every node.")
