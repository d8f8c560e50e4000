"""Telemetry cost: amortized µs per event (flushes to local disk included) and diagnostics overhead.

    python scripts/bench_telemetry.py [--events 100000] [--rounds 5] [--steps 20] [--device cpu|cuda] [--dir DIR]

Prints one JSON line per figure. Target (DESIGN.md): <= 5 µs per event amortized.

`us_per_event` is the whole cost of `hub.emit(...)` in a loop plus every flush (each round starts a
fresh hub and ends with its final flush), median over rounds; `_best` is the fastest round, which on
a shared machine is the figure least disturbed by other load. `us_caller_baseline` is the same loop
calling a do-nothing `emit(event_type, **fields)`: the cost of building the keyword arguments, which
any keyword API pays. `us_telemetry` is the difference (best vs best). Diagnostics: per-step times
of alternating rounds with and without the tracker; min and median per arm.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from typing import Any, Callable

import numpy as np

from esper.leyline.events import transition_schema
from esper.nissa import TelemetryConfig, configure_hub, read_events, reset_hub

OBS, ACTIONS = 99, 12


def _noop(event_type: str, **fields: Any) -> None:
    pass


def _loop(kind: str, n: int, emit: Callable[..., None], emit_columns: Callable[..., None] | None,
          batch: int | None, obs: np.ndarray) -> None:
    mask = np.ones(ACTIONS, dtype=bool)
    if kind == "step":
        for i in range(n):
            emit("step", episode_id="ep-17", attempt=0, env_index=3, epoch=i, policy_version=12, action="WAIT",
                 train_loss=1.25, train_acc=0.5, val_loss=1.5, val_acc=0.45, reward=0.01, reward_acc_gain=0.01,
                 reward_contribution=0.0, reward_rent=0.0, reward_shaping=0.0, reward_terminal=0.0,
                 params_added=0, live_seeds=1, rolled_back=False, sanitized=False)
    elif batch is None:
        for i in range(n):
            emit("transition", episode_id="ep-17", attempt=0, env_index=3, step=i, obs=obs[i], action=2, mask=mask,
                 reward=0.1, done=False, next_obs=obs[i], next_mask=mask, log_prob=-1.2, policy_version=12)
    else:  # a rollout's transitions as columns, `batch` rows per call
        for s in range(0, n, batch):
            e = min(s + batch, n)
            m = e - s
            emit_columns("transition", {
                "episode_id": ["ep-17"] * m, "step": np.arange(s, e, dtype=np.int32), "obs": obs[s:e],
                "action": np.full(m, 2, np.int32), "mask": np.ones((m, ACTIONS), bool), "reward": np.zeros(m, np.float32),
                "done": np.zeros(m, bool), "next_obs": obs[s:e], "next_mask": np.ones((m, ACTIONS), bool),
                "log_prob": np.zeros(m, np.float32), "policy_version": np.full(m, 12)})


def bench_events(root: str, profile: str, kind: str, n: int, rounds: int, batch: int | None = None) -> dict:
    cfg = TelemetryConfig(profile=profile, console=False)
    obs = np.random.default_rng(0).random((n, OBS), dtype=np.float32)
    totals, written = [], 0
    for r in range(rounds):
        run_dir = f"{root}/{profile}-{kind}-{batch}-{r}"
        hub = configure_hub(run_dir, cfg, "bench", transition_schema=transition_schema(OBS, ACTIONS, "bench"))
        t0 = time.perf_counter()
        _loop(kind, n, hub.emit, hub.emit_columns, batch, obs)
        reset_hub()  # flushes the remainder: part of the cost
        totals.append(time.perf_counter() - t0)
        written += read_events(run_dir, kind).num_rows if kind in cfg.events else 0
    base = []
    if batch is None:
        for _ in range(rounds):
            t0 = time.perf_counter()
            _loop(kind, n, _noop, None, batch, obs)
            base.append(time.perf_counter() - t0)
    best = min(totals) / n * 1e6
    base_us = min(base) / n * 1e6 if base else 0.0
    return {"figure": "event_cost", "profile": profile, "event": kind if batch is None else f"{kind}_columns{batch}",
            "events_per_round": n, "rounds": rounds, "rows_written": written,
            "us_per_event": round(statistics.median(totals) / n * 1e6, 3), "us_per_event_best": round(best, 3),
            "us_caller_baseline_best": round(base_us, 3), "us_telemetry_best": round(best - base_us, 3),
            "rows_per_s_best": round(n / min(totals)), "flush_rows": cfg.flush_rows}


def bench_diagnostics(steps: int, rounds: int, profile: str, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from esper.kasmina import KasminaConfig, build_model
    from esper.nissa import DiagnosticTracker

    torch.manual_seed(0)
    model = build_model(KasminaConfig(), (3, 32, 32)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(64, 3, 32, 32, device=device), torch.randint(0, 10, (64,), device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    def step() -> float:
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        sync()
        return time.perf_counter() - t0

    for _ in range(5):
        step()
    # Alternate the two arms so drift on a shared machine hits both.
    base: list[float] = []
    diag: list[float] = []
    report: list[float] = []
    for _ in range(rounds):
        base += [step() for _ in range(steps)]
        with DiagnosticTracker(model, TelemetryConfig(profile=profile)) as tracker:
            diag += [step() for _ in range(steps)]
            t0 = time.perf_counter()
            tracker.epoch_report()
            report.append(time.perf_counter() - t0)
    return {"figure": "diagnostics_overhead", "profile": profile, "device": device, "batch": 64,
            "torch_threads": torch.get_num_threads(),
            "params": sum(p.numel() for p in model.parameters()), "steps_per_arm": len(base),
            "ms_per_step_without_min": round(min(base) * 1e3, 3), "ms_per_step_with_min": round(min(diag) * 1e3, 3),
            "overhead_pct_min": round((min(diag) / min(base) - 1) * 100, 2),
            "ms_per_step_without_median": round(statistics.median(base) * 1e3, 3),
            "ms_per_step_with_median": round(statistics.median(diag) * 1e3, 3),
            "overhead_pct_median": round((statistics.median(diag) / statistics.median(base) - 1) * 100, 2),
            "epoch_report_ms_median": round(statistics.median(report) * 1e3, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="training steps per arm per round")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: on a small shared VM more threads mostly add contention noise)")
    parser.add_argument("--dir", default=None, help="local directory for the files (default: a temp dir)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as root:
        for profile in ("minimal", "standard"):
            for kind, batch in (("step", None), ("transition", None), ("transition", 8), ("transition", 256)):
                print(json.dumps(bench_events(root, profile, kind, args.events, args.rounds, batch)), flush=True)
    import torch

    torch.set_num_threads(args.threads)
    for profile in ("standard", "research"):
        print(json.dumps(bench_diagnostics(args.steps, args.rounds, profile, args.device)), flush=True)


if __name__ == "__main__":
    main()
