"""Does learned growth beat the alternatives? The evaluation protocol, on the built-in task (CPU) or
CIFAR-10 (GPU, --config configs/cifar10.yaml).

Controllers, all on the same task, host, epoch budget and evaluation seeds:
  static          the host alone (always WAIT)
  static-wide     a static host widened to the grown models' final parameter count, same epochs
  schedule        a fixed schedule: germinate conv_enhance in slot 1 at epoch 1, advance whenever legal
  heuristic       HeuristicTamiyo with its defaults (frozen before any PPO tuning)
  ppo             PPO trained from scratch for --updates updates
  ppo-iql         IQL pretrained on heuristic transitions, then PPO fine-tuned for the same updates
Score: held-out test accuracy at the end of the episode (test is never used in training or
decisions), with parameters added and epochs; mean ± std over the evaluation seeds, which are
disjoint from every seed used in training; a paired comparison (same env seed = same data order
and host initialisation) of the learned policies against each baseline.

    OMP_NUM_THREADS=1 python scripts/evaluate.py                 # CPU preset, writes docs/results.md
    OMP_NUM_THREADS=1 python scripts/evaluate.py --quick         # minutes: a smoke test of the protocol
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from esper.config import RunConfig, config_to_dict, load_config
from esper.stats import paired as compare
from esper.kasmina import build_host
from esper.leyline import EpisodeSummary
from esper.nissa import TelemetryConfig, reset_hub
from esper.simic.environment.context import EnvContext, make_context
from esper.simic.learning.iql import IQL, export_pretrained, load_transitions
from esper.simic.learning.pretrained import load_initial_policy
from esper.simic.learning.sampler import Sampler
from esper.nissa import configure_run_telemetry
from esper.simic.learning.trainer import InProcessTrainer
from esper.simic.environment.vector_env import VectorEnv
from esper.tamiyo import ScheduledPolicy

ROOT = Path(__file__).resolve().parents[1]
# The CPU preset: the built-in task at 16 px so a full evaluation fits in about an hour on 2 cores.
CPU_PRESET = ["tolaria.data.train_size=1024", "tolaria.data.val_size=512", "tolaria.data.test_size=1024",
              "tolaria.data.image_size=16", "simic.env.max_epochs=20", "nissa.console=false"]
QUICK = CPU_PRESET + ["tolaria.data.train_size=256", "tolaria.data.val_size=128", "tolaria.data.test_size=256",
                      "simic.env.max_epochs=12"]
EVAL_SEEDS = [10_001, 10_002, 10_003, 10_004, 10_005]     # never used for training (training seeds derive from 0..)


def log(msg: str) -> None:
    print(f"[evaluate] {msg}", flush=True)


class FixedEpisodes:
    """Env k runs the episode with seed seeds[k] (the same for every controller: a paired design)."""

    def __init__(self, seeds: list[int]) -> None:
        self.seeds = seeds

    def __call__(self, k: int) -> tuple[str, int, int]:
        return f"eval-{self.seeds[k]}", self.seeds[k], 0


def run_episodes(ctx: EnvContext, policy, seeds: list[int]) -> list[EpisodeSummary]:
    vec = VectorEnv(ctx, len(seeds), FixedEpisodes(seeds))
    _, episodes = Sampler(vec, policy).sample(ctx.max_epochs)
    by_seed = {e.env_seed: e for e in episodes}
    return [by_seed[s] for s in seeds]


def train_ppo(cfg: RunConfig, ctx: EnvContext, updates: int, envs: int, init_from: str | None, label: str):
    tr = InProcessTrainer.from_config(cfg, num_envs=envs, steps_per_sample=ctx.max_epochs, policy="ppo", ctx=ctx)
    if init_from:
        load_initial_policy(tr.learner, init_from, ctx.schema, ctx.space)
        tr.policy.load_weights(tr.learner.weights())
    history = []
    start = time.perf_counter()
    for u in range(updates):
        stats, episodes = tr.iterate()
        row = stats.to_dict() | {"update": u + 1, "mean_return": float(np.mean([e.episode_return for e in episodes])),
                                 "mean_test_acc": float(np.mean([e.final_test_acc for e in episodes]))}
        history.append(row)
        if (u + 1) % 5 == 0 or u == 0:
            log(f"{label} update {u + 1}/{updates}: return {row['mean_return']:.2f} test {row['mean_test_acc']:.3f} "
                f"ev {row['explained_variance']:.2f} ent {row['entropy']:.2f} kl {row['approx_kl']:.4f} "
                f"({time.perf_counter() - start:.0f}s)")
    tr.policy.greedy = True
    return tr.policy, history


def pretrain_iql(cfg: RunConfig, ctx: EnvContext, rounds: int, envs: int, out: str, workdir: str) -> dict:
    """Heuristic episodes -> transition telemetry -> IQL -> a checkpoint for load_initial_policy."""
    data_dir = os.path.join(workdir, "heuristic-data")
    configure_run_telemetry(data_dir, TelemetryConfig(console=False), "evaluate", ctx.schema, ctx.space)
    tr = InProcessTrainer.from_config(cfg, seed=cfg.seed + 1, num_envs=envs, steps_per_sample=ctx.max_epochs,
                                      policy="heuristic", ctx=ctx)
    for _ in range(rounds):
        tr.iterate()
    reset_hub()                                   # flush the transitions
    data = load_transitions([data_dir], ctx.schema, ctx.space)
    train, held = data.split(0.2, seed=cfg.seed)
    iql = IQL(ctx.schema.size, ctx.space.n, cfg.tamiyo.network.hidden, cfg.simic.iql, cfg.simic.ppo.gamma,
              seed=cfg.seed)
    history = iql.train(train, log=None)
    export_pretrained(out, iql, ctx.schema, ctx.space, config=config_to_dict(cfg))
    result = {"transitions": len(data), "held_out": iql.agreement(held), "first": history[0].__dict__,
              "last": history[-1].__dict__}
    log(f"IQL on {len(data)} heuristic transitions: held-out agreement {result['held_out']['agreement']:.1%} "
        f"(chance {result['held_out']['chance']:.1%})")
    return result


def widened(cfg: RunConfig, target_params: float) -> tuple[RunConfig, int]:
    """The reference host with every width scaled so its parameter count is closest to target_params."""
    base = cfg.kasmina.host.widths
    best = None
    for scale in np.arange(1.0, 4.01, 0.05):
        widths = tuple(max(1, int(round(w * scale))) for w in base)
        n = sum(p.numel() for p in build_host(cfg.kasmina.host.model_copy(update={"widths": widths})).parameters())
        if best is None or abs(n - target_params) < abs(best[1] - target_params):
            best = (widths, n)
    tree = config_to_dict(cfg)
    tree["kasmina"]["host"]["widths"] = list(best[0])
    return RunConfig.model_validate(tree), best[1]


def summarise(name: str, eps: list[EpisodeSummary]) -> dict:
    acc = np.array([e.final_test_acc for e in eps])
    return {"controller": name, "test_acc_mean": float(acc.mean()), "test_acc_std": float(acc.std(ddof=1)),
            "params_host": eps[0].params_host, "params_added_mean": float(np.mean([e.params_added for e in eps])),
            "epochs": eps[0].epochs, "germinated": float(np.mean([e.seeds_germinated for e in eps])),
            "fossilized": float(np.mean([e.seeds_fossilized for e in eps])),
            "culled": float(np.mean([e.seeds_culled for e in eps])), "per_seed": acc.round(4).tolist()}


def paired(a: dict, b: dict) -> dict:
    return compare(a["per_seed"], b["per_seed"], a=a["controller"], b=b["controller"]).to_dict()


def write_results(out_md: Path, rows: list[dict], pairs: list[dict], histories: dict, iql: dict | None,
                  meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig_dir = out_md.parent / "results"
    fig_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar([r["controller"] for r in rows], [r["test_acc_mean"] for r in rows],
           yerr=[r["test_acc_std"] for r in rows], capsize=4, color="#4c72b0")
    ax.set_ylabel("final test accuracy")
    ax.set_title(f"{meta['task']}: mean ± std over {len(meta['eval_seeds'])} evaluation seeds")
    fig.tight_layout()
    fig.savefig(fig_dir / "controllers.png", dpi=120)
    plt.close(fig)
    if histories:
        fig, axes = plt.subplots(1, 4, figsize=(14, 3))
        for label, h in histories.items():
            u = [r["update"] for r in h]
            for ax, key in zip(axes, ("mean_test_acc", "explained_variance", "entropy", "approx_kl")):
                ax.plot(u, [r[key] for r in h], label=label)
                ax.set_title(key)
                ax.set_xlabel("update")
        axes[0].legend()
        fig.tight_layout()
        fig.savefig(fig_dir / "ppo_learning.png", dpi=120)
        plt.close(fig)
    lines = [
        "# Results", "",
        f"Produced by `{meta['command']}` on {meta['machine']} in {meta['minutes']:.0f} min "
        f"({meta['date']}). Every figure below comes from that run; rerun the command to reproduce it.", "",
        f"Task: {meta['task']}. Evaluation seeds {meta['eval_seeds']} (disjoint from training seeds). "
        f"PPO: {meta['updates']} updates × {meta['envs']} envs × one episode each.", "",
        "| controller | test accuracy (mean ± std) | host params | params added | epochs | germinated | fossilized | culled |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['controller']} | {r['test_acc_mean']:.3f} ± {r['test_acc_std']:.3f} | {r['params_host']} | "
                     f"{r['params_added_mean']:.0f} | {r['epochs']} | {r['germinated']:.1f} | {r['fossilized']:.1f} | "
                     f"{r['culled']:.1f} |")
    lines += ["", "Paired comparison (a − b per evaluation seed):", "",
              "| a | b | mean diff ± std | t | wins / ties / losses |", "|---|---|---|---|---|"]
    for p in pairs:
        lines.append(f"| {p['a']} | {p['b']} | {p['diff_mean']:+.3f} ± {p['diff_std']:.3f} | {p['t']:.2f} | "
                     f"{p['wins']} / {p['ties']} / {p['losses']} |")
    if iql:
        h = iql["held_out"]
        lines += ["", f"IQL pretraining: {iql['transitions']} heuristic transitions; greedy action agrees with the "
                  f"heuristic's on {h['agreement']:.1%} of held-out transitions (chance {h['chance']:.1%})."]
    lines += ["", "![controllers](results/controllers.png)", ""]
    if histories:
        lines += ["PPO learning curves (explained variance is the value-collapse check):", "",
                  "![ppo](results/ppo_learning.png)", ""]
    lines += ["CIFAR-10 (configs/cifar10.yaml, GPU): not measured — no GPU run has produced these rows yet.", ""]
    out_md.write_text("\n".join(lines))
    (fig_dir / "results.json").write_text(json.dumps({"meta": meta, "controllers": rows, "paired": pairs,
                                                      "iql": iql, "ppo_history": histories}, indent=1))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config")
    p.add_argument("--set", dest="overrides", action="append", default=[])
    p.add_argument("--quick", action="store_true", help="tiny data and few updates: checks the protocol in minutes")
    p.add_argument("--updates", type=int, default=60, help="PPO updates (each: --envs full episodes)")
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--iql-rounds", type=int, default=10, help="rounds of --envs heuristic episodes for IQL data")
    p.add_argument("--seeds", default=",".join(map(str, EVAL_SEEDS)))
    p.add_argument("--out", default=str(ROOT / "docs" / "results.md"))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    preset = [] if args.config else (QUICK if args.quick else CPU_PRESET)
    if args.quick:
        args.updates, args.iql_rounds = min(args.updates, 3), min(args.iql_rounds, 2)
    cfg = load_config(args.config, preset + args.overrides)
    seeds = [int(s) for s in args.seeds.split(",")]
    started = time.perf_counter()
    ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma)
    results: dict[str, list[EpisodeSummary]] = {}
    baselines = {"static": ctx.make_policy("static", cfg.tamiyo),
                 "schedule": ScheduledPolicy(ctx.space, 1, 1, "conv_enhance", ctx.max_epochs,
                                             ctx.schema.index("epoch_frac")),
                 "heuristic": ctx.make_policy("heuristic", cfg.tamiyo)}
    for name, policy in baselines.items():
        results[name] = run_episodes(ctx, policy, seeds)
        log(f"{name}: test {np.mean([e.final_test_acc for e in results[name]]):.3f}")
    histories = {}
    policy, histories["ppo"] = train_ppo(cfg, ctx, args.updates, args.envs, None, "ppo")
    results["ppo"] = run_episodes(ctx, policy, seeds)
    with tempfile.TemporaryDirectory() as work:
        ckpt = os.path.join(work, "iql.pt")
        iql = pretrain_iql(cfg, ctx, args.iql_rounds, args.envs, ckpt, work)
        policy, histories["ppo-iql"] = train_ppo(cfg, ctx, args.updates, args.envs, ckpt, "ppo-iql")
        results["ppo-iql"] = run_episodes(ctx, policy, seeds)
    grown = max(np.mean([e.params_added for e in results[k]]) for k in ("heuristic", "ppo", "ppo-iql", "schedule"))
    wide_cfg, wide_params = widened(cfg, results["static"][0].params_host + grown)
    wide_ctx = make_context(wide_cfg.kasmina, wide_cfg.tolaria, wide_cfg.simic.env, wide_cfg.simic.ppo.gamma)
    results["static-wide"] = run_episodes(wide_ctx, wide_ctx.make_policy("static", wide_cfg.tamiyo), seeds)
    order = ["static", "static-wide", "schedule", "heuristic", "ppo", "ppo-iql"]
    rows = [summarise(n, results[n]) for n in order]
    by = {r["controller"]: r for r in rows}
    pairs = [paired(by[a], by[b]) for a in ("ppo", "ppo-iql") for b in order if b != a]
    data = cfg.tolaria.data
    meta = {"command": "python scripts/evaluate.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d"),
            "machine": f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {args.threads} thread(s)",
            "minutes": (time.perf_counter() - started) / 60, "eval_seeds": seeds, "updates": args.updates,
            "envs": args.envs, "task": f"{data.dataset} {data.image_size}px, {data.train_size} train / {data.val_size} "
                                        f"val / {data.test_size} test, {cfg.simic.env.max_epochs} epochs",
            "static_wide_params": wide_params}
    write_results(Path(args.out), rows, pairs, histories, iql, meta)
    for r in rows:
        log(f"{r['controller']:12s} {r['test_acc_mean']:.3f} ± {r['test_acc_std']:.3f}  +{r['params_added_mean']:.0f} params")
    log(f"wrote {args.out} ({meta['minutes']:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
