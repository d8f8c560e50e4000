"""Environment benchmark: per-component step cost, env-steps/s, and static vs heuristic test accuracy.

    OMP_NUM_THREADS=1 python scripts/bench_env.py --quick            # small data, about a minute
    OMP_NUM_THREADS=1 python scripts/bench_env.py --out bench.jsonl  # the default config's data (2048 × 32×32)

Prints one JSON line per figure (and writes them to --out):
  setup             device, torch threads, data sizes, batches per step, episode length
  step_components   ms per env step of each phase of one heuristic episode, read through the library's
                    phase hooks (`VectorEnv.timer`, `Sampler(timer=...)`: esper.simic.environment.core.PhaseTimer):
                    begin_step (action + governor snapshot), train (the batches), val_eval, counterfactual (the
                    with/without-seed evaluations), test_eval (last step, amortised), signals (SignalTracker +
                    observation), policy_decision (the heuristic), telemetry (the env's rows built, everything the
                    sampler emits, the final flush; a configured hub writing Arrow files to a temporary directory),
                    governor (snapshot, divergence check, any rollback), probe (diagnostics), finish_other (gates,
                    reward, slot bookkeeping), vector_other (info assembly); plus `overhead_frac` = share of
                    everything but train + val_eval (target < 5%)
  env_throughput    env-steps/s of one MorphogeneticEnv driven by the heuristic, and of VectorEnv
                    with K = 1, 2, 4 through the Sampler (no telemetry configured)
  final_test_acc    per (policy, seed) episode, then `accuracy_summary`: mean ± std per policy and the
                    paired heuristic − static difference (same env seeds, esper.evaluation.run_episode)

The figures are for the device given (CPU by default): on a GPU the train phase would be timed
differently (asynchronous kernels); this script synchronises after each timed call when on CUDA.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager

import torch

from esper.config import RunConfig, load_config
from esper.nissa import TelemetryConfig, available_events, read_events, reset_hub
from esper.simic import MorphogeneticEnv, SequentialEpisodes, VectorEnv, derive_seed, make_context
from esper.simic.learning.sampler import Sampler
from esper.nissa import configure_run_telemetry

from esper.config import config_to_dict
from esper.evaluation import Heuristic, Static, run_episode
from esper.stats import mean_std, paired

QUICK = ["tolaria.data.train_size=512", "tolaria.data.val_size=256", "tolaria.data.test_size=256",
         "tolaria.data.image_size=16"]


class Timers:
    """The phase timer the env and the Sampler call (esper.simic.environment.core.PhaseTimer): wall time per
    phase name. Synchronises CUDA so device work is attributed to the phase that queued it.

    Phases inside the episode reset are booked under "reset:<phase>", so the reset's own evaluation
    does not count as per-step work."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"
        self.stack: list[str] = []
        self.clear()

    def clear(self) -> None:
        self.ms: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    @contextmanager
    def __call__(self, phase: str):
        key = f"reset:{phase}" if "reset" in self.stack else phase
        self.stack.append(phase)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.stack.pop()
            if self.cuda:
                torch.cuda.synchronize()
            self.ms[key] += (time.perf_counter() - t0) * 1e3
            self.calls[key] += 1


def emit(fig: dict, out) -> None:
    line = json.dumps(fig)
    print(line, flush=True)
    if out is not None:
        out.write(line + "\n")
        out.flush()


def r3(x: float) -> float:
    return round(float(x), 3)


# ------------------------------------------------------------------------------------------ components
def bench_components(cfg: RunConfig, ctx, seed: int) -> dict:
    """One heuristic episode on a VectorEnv(K=1) through the Sampler, every phase timed."""
    tm = Timers(ctx.device)
    vec = VectorEnv(ctx, 1, SequentialEpisodes(derive_seed(seed, 0), prefix="bench"))
    policy = ctx.make_policy("heuristic", cfg.tamiyo)
    sampler = Sampler(vec, policy)
    run_dir = tempfile.mkdtemp(prefix="esper-bench-env-")
    configure_run_telemetry(run_dir, TelemetryConfig(profile="standard", console=False), "bench", ctx.schema,
                            ctx.space)

    vec.timer = sampler.timer = tm            # the library's own phase hooks: nothing is patched
    try:
        t0 = time.perf_counter()
        sampler.start()
        first_reset_ms = (time.perf_counter() - t0) * 1e3
        tm.clear()
        T = ctx.max_epochs
        steps_with_cf = 0
        t0 = time.perf_counter()
        for _ in range(T):                       # step by step, so steps with a measured seed can be counted
            before = tm.calls["counterfactual"]
            _, episodes = sampler.sample(1)
            steps_with_cf += tm.calls["counterfactual"] > before
        total_ms = (time.perf_counter() - t0) * 1e3
        t0 = time.perf_counter()
        reset_hub()                              # flush the telemetry buffers: part of its cost
        flush_ms = (time.perf_counter() - t0) * 1e3
    finally:
        reset_hub()
    rows_written = {et: read_events(run_dir, et).num_rows for et in available_events(run_dir)}
    shutil.rmtree(run_dir, ignore_errors=True)
    ms = tm.ms
    train, val, cf, test = ms["train_batch"], ms["val_eval"], ms["counterfactual"], ms["test_eval"]
    telemetry = ms["records"] + ms["emit"] + flush_ms
    signals = ms["signals"]
    governor = ms["governor"] + ms["governor_snapshot"]          # governor includes the rollback's re-evaluation
    vector_other = ms["vector_step"] - (ms["begin_step"] + train + ms["evaluate"] + ms["device_stats"]
                                        + ms["finish_step"] + ms["reset"] + ms["vector_info"])
    step_ms = (total_ms - ms["reset"] + flush_ms) / T     # the autoreset at the episode's end is reported apart
    comps = {
        "train": train, "val_eval": val, "counterfactual": cf, "test_eval": test, "signals": signals,
        "policy_decision": ms["policy"], "telemetry": telemetry, "governor": governor,
        "begin_other": ms["begin_step"] - ms["governor_snapshot"],
        "finish_other": ms["finish_step"] - (ms["governor"] + signals + ms["records"] + ms["probe"]),
        "probe": ms["probe"],
        "evaluate_other": ms["evaluate"] - (val + cf + test),
        "device_stats": ms["device_stats"], "vector_other": vector_other,
        "sampler_other": total_ms - (ms["vector_step"] + ms["policy"] + ms["emit"]),
    }
    comps = {k: v / T for k, v in comps.items()}
    overhead = step_ms - comps["train"] - comps["val_eval"]
    ep = episodes[0] if episodes else None
    return {
        "figure": "step_components", "unit": "ms per env step", "policy": "heuristic", "steps": T,
        "step_ms": r3(step_ms), **{k: r3(v) for k, v in comps.items()},
        "signals_plus_policy": r3(comps["signals"] + comps["policy_decision"]),
        "telemetry_env_rows": r3(ms["records"] / T),
        "telemetry_emit": r3(ms["emit"] / T),
        "vector_info_ms": r3(ms["vector_info"] / T),
        "overhead_frac": r3(overhead / step_ms),
        "overhead_frac_ex_counterfactual": r3((overhead - comps["counterfactual"]) / step_ms),
        "counterfactual_calls": tm.calls["counterfactual"], "steps_with_counterfactual": steps_with_cf,
        "counterfactual_ms_per_call": r3(cf / max(tm.calls["counterfactual"], 1)),
        "counterfactual_ms_per_measured_step": r3(cf / max(steps_with_cf, 1)),
        "train_batches": tm.calls["train_batch"], "train_ms_per_batch": r3(train / max(tm.calls["train_batch"], 1)),
        "telemetry_flush_ms": r3(flush_ms), "telemetry_rows_written": rows_written,
        "reset_ms": r3(ms["reset"]), "first_reset_ms": r3(first_reset_ms),
        "episode": None if ep is None else {"germinated": ep.seeds_germinated, "fossilized": ep.seeds_fossilized,
                                            "culled": ep.seeds_culled, "final_test_acc": ep.final_test_acc},
    }


# ------------------------------------------------------------------------------------------ throughput
def bench_single_env(cfg: RunConfig, ctx, seed: int, steps: int) -> dict:
    env = MorphogeneticEnv(ctx)
    policy = ctx.make_policy("heuristic", cfg.tamiyo)
    policy.reset([0])
    obs, info = env.reset(seed=derive_seed(seed, 0, 0))
    resets = 0
    t0 = time.perf_counter()
    for t in range(steps):
        d = policy.act(obs[None], info["action_mask"][None])[0]
        obs, _, term, trunc, info = env.step(d.index)
        if (term or trunc) and t + 1 < steps:
            obs, info = env.reset(seed=derive_seed(seed, 0, resets := resets + 1))
            policy.reset([0])
    wall = time.perf_counter() - t0
    return {"figure": "env_throughput", "what": "MorphogeneticEnv", "policy": "heuristic", "num_envs": 1,
            "env_steps": steps, "wall_s": r3(wall), "env_steps_per_s": r3(steps / wall),
            "ms_per_env_step": r3(wall / steps * 1e3), "resets_included": resets}


def bench_vector_env(cfg: RunConfig, ctx, seed: int, k: int, steps: int) -> dict:
    vec = VectorEnv(ctx, k, SequentialEpisodes(derive_seed(seed, 0), prefix="bench"))
    sampler = Sampler(vec, ctx.make_policy("heuristic", cfg.tamiyo))
    sampler.start()                               # the first resets are not timed
    t0 = time.perf_counter()
    _, episodes = sampler.sample(steps)
    wall = time.perf_counter() - t0
    n = k * steps
    return {"figure": "env_throughput", "what": "VectorEnv+Sampler", "policy": "heuristic", "num_envs": k,
            "env_steps": n, "wall_s": r3(wall), "env_steps_per_s": r3(n / wall), "ms_per_env_step": r3(wall / n * 1e3),
            "episodes_finished": len(episodes)}


# ------------------------------------------------------------------------------------------ accuracy
def bench_accuracy(cfg: RunConfig, ctx, seeds: list[int], episodes: int, num_envs: int, out) -> None:
    """Static and heuristic episodes on the same env seeds (esper.evaluation.run_episode): a paired design."""
    run = config_to_dict(cfg)
    env_seeds = [seed * 1000 + k for seed in seeds for k in range(episodes)]
    results = {}
    for name, controller in (("static", Static()), ("heuristic", Heuristic())):
        results[name] = [run_episode(run, controller, s) for s in env_seeds]
        for r in results[name]:
            emit({"figure": "final_test_acc", "policy": name, **r.to_dict()}, out)
    summary = {"figure": "accuracy_summary", "seeds": seeds, "episodes_per_seed": episodes, "env_seeds": env_seeds}
    for name, recs in results.items():
        m, s = mean_std([r.final_test_acc for r in recs], ignore_nan=True)
        summary[f"{name}_test_acc_mean"], summary[f"{name}_test_acc_std"] = round(m, 5), round(s, 5)
    cmp = paired([r.final_test_acc for r in results["heuristic"]], [r.final_test_acc for r in results["static"]],
                 a="heuristic", b="static")
    summary.update({"paired_diff_heuristic_minus_static_mean": round(cmp.diff_mean, 5),
                    "paired_diff_heuristic_minus_static_std": round(cmp.diff_std, 5), "pairs": cmp.n,
                    "heuristic_wins": cmp.wins, "ties": cmp.ties,
                    **{f"heuristic_seeds_{what}": sum(getattr(r, f"seeds_{what}") for r in results["heuristic"])
                       for what in ("germinated", "fossilized", "culled")}})
    emit(summary, out)


# ------------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small data (512 train / 256 val / 256 test, 16×16)")
    ap.add_argument("--config", help="a run config YAML (default: the embedded default)")
    ap.add_argument("--set", action="append", default=[], metavar="a.b=c", help="override a config field (repeatable)")
    ap.add_argument("--device", default="cpu", help="device for the environments (default cpu)")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--steps", type=int, default=None, help="steps per throughput measurement (default: one episode)")
    ap.add_argument("--envs", default="1,2,4", help="VectorEnv sizes to measure")
    ap.add_argument("--seeds", default="0,1,2", help="seeds for the static vs heuristic accuracy comparison")
    ap.add_argument("--episodes", type=int, default=1, help="episodes per (policy, seed) in the accuracy comparison")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: components,throughput,accuracy")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    overrides = (QUICK if args.quick else []) + [f"tolaria.training.device={args.device}"] + args.set
    cfg = load_config(args.config, overrides)
    skip = set(filter(None, args.skip.split(",")))
    out = open(args.out, "a") if args.out else None
    try:
        t0 = time.perf_counter()
        ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma)
        steps = args.steps or ctx.max_epochs
        d = cfg.tolaria.data
        emit({"figure": "setup", "quick": args.quick, "device": str(ctx.device),
              "torch_threads": torch.get_num_threads(),
              "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "torch": torch.__version__,
              "cpu_count": os.cpu_count(), "dataset": d.dataset, "train": len(ctx.data.train_y),
              "val": len(ctx.data.val_y), "test": len(ctx.data.test_y), "image_size": d.image_size,
              "batch_size": cfg.tolaria.training.batch_size,
              "batches_per_step": MorphogeneticEnv(ctx).core.batches_per_step,
              "max_epochs": ctx.max_epochs, "host_widths": list(cfg.kasmina.host.widths),
              "context_s": r3(time.perf_counter() - t0)}, out)
        if "components" not in skip:
            emit(bench_components(cfg, ctx, seed=0), out)
        if "throughput" not in skip:
            emit(bench_single_env(cfg, ctx, seed=0, steps=steps), out)
            for k in (int(x) for x in args.envs.split(",") if x):
                emit(bench_vector_env(cfg, ctx, seed=0, k=k, steps=steps), out)
        if "accuracy" not in skip:
            bench_accuracy(cfg, ctx, [int(s) for s in args.seeds.split(",") if s], args.episodes, 1, out)
    finally:
        if out is not None:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
