"""Run heuristic and static (always-WAIT) episodes in-process (no Ray) and compare them, paired.

    python scripts/run_episodes.py                                   # default config, 1 episode, seeds 0,1,2
    python scripts/run_episodes.py --episodes 4 --envs 2 --policies heuristic,static --seeds 0,1
    python scripts/run_episodes.py --config configs/smoke.yaml --set simic.env.max_epochs=12 \
        --set tolaria.data.train_size=512

Each (seed, policy) gets an `InProcessTrainer` over one shared EnvContext (the data is loaded once).
Env seeds derive from the global seed alone (`SequentialEpisodes(derive_seed(seed, 0))`), so every
policy plays exactly the same host initialisations and batch orders: the comparison is paired.
Prints one line per episode and a final table of mean ± std test accuracy per policy, plus the paired
difference against the first policy. `--out FILE` also writes every episode as a JSON line.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from esper.config import RunConfig, load_config
from esper.leyline import EpisodeSummary
from esper.simic import EnvContext, make_context
from esper.tamiyo.policies import POLICY_KINDS
from esper.simic.learning.trainer import InProcessTrainer
from esper.stats import mean_std


@dataclass
class EpisodeResult:
    policy: str
    seed: int
    summary: EpisodeSummary
    wall_s: float          # wall time of the sample call that produced it (shared by the K envs stepped together)
    num_envs: int

    def row(self) -> dict:
        s = self.summary
        return {"policy": self.policy, "seed": self.seed, "episode_id": s.episode_id, "env_seed": s.env_seed,
                "epochs": s.epochs, "final_val_acc": s.final_val_acc, "final_test_acc": s.final_test_acc,
                "best_val_acc": s.best_val_acc, "seeds_germinated": s.seeds_germinated,
                "seeds_fossilized": s.seeds_fossilized, "seeds_culled": s.seeds_culled,
                "params_host": s.params_host, "params_added": s.params_added, "rollbacks": s.rollbacks,
                "episode_return": s.episode_return, "actions": s.actions, "wall_s": round(self.wall_s, 3),
                "num_envs": self.num_envs}


def run_policy(cfg: RunConfig, ctx: EnvContext, policy: str, seed: int, episodes: int, num_envs: int,
               on_episode=None) -> list[EpisodeResult]:
    """`episodes` complete episodes of `policy` with the env seeds of global seed `seed`.

    All K envs run in lockstep and finish together every max_epochs steps; the first `episodes` in
    (episode number, env) order are kept, so they are the same env seeds whatever the policy."""
    k = max(1, min(num_envs, episodes))
    trainer = InProcessTrainer.from_config(cfg, seed=seed, num_envs=k, steps_per_sample=ctx.max_epochs, policy=policy,
                                           ctx=ctx)
    out: list[EpisodeResult] = []
    while len(out) < episodes:
        t0 = time.perf_counter()
        _, finished = trainer.collect()
        wall = time.perf_counter() - t0
        finished.sort(key=lambda s: _order(s.episode_id))
        for s in finished[:episodes - len(out)]:
            result = EpisodeResult(policy, seed, s, wall, k)
            out.append(result)
            if on_episode is not None:
                on_episode(result)
    return out


def _order(episode_id: str) -> tuple[int, int]:
    """'r0e<env>-<n>' -> (n, env)."""
    env, n = episode_id.rsplit("e", 1)[1].split("-")
    return int(n), int(env)


def print_episode(r: EpisodeResult, file=sys.stdout) -> None:
    s = r.summary
    print(f"{r.policy:<10} seed={r.seed:<3} {s.episode_id:<10} env_seed={s.env_seed:<20} "
          f"val={s.final_val_acc:.4f} test={s.final_test_acc:.4f} "
          f"germ/foss/cull={s.seeds_germinated}/{s.seeds_fossilized}/{s.seeds_culled} "
          f"params+={s.params_added:<6} wall={r.wall_s:.1f}s" + (f" (K={r.num_envs})" if r.num_envs > 1 else ""),
          file=file, flush=True)


def summary_table(results: list[EpisodeResult], policies: list[str]) -> list[dict]:
    rows = []
    for p in policies:
        rs = [r for r in results if r.policy == p]
        test_m, test_s = mean_std([r.summary.final_test_acc for r in rs], ignore_nan=True)
        val_m, val_s = mean_std([r.summary.final_val_acc for r in rs], ignore_nan=True)
        rows.append({"policy": p, "episodes": len(rs), "test_acc_mean": test_m, "test_acc_std": test_s,
                     "val_acc_mean": val_m, "val_acc_std": val_s,
                     "params_added_mean": statistics.fmean(r.summary.params_added for r in rs) if rs else 0.0,
                     "germinated": sum(r.summary.seeds_germinated for r in rs),
                     "fossilized": sum(r.summary.seeds_fossilized for r in rs),
                     "culled": sum(r.summary.seeds_culled for r in rs)})
    # paired differences against the first policy: same (seed, env seed) episodes
    base = {(r.seed, r.summary.env_seed): r.summary.final_test_acc for r in results if r.policy == policies[0]}
    for row in rows[1:]:
        diffs = [r.summary.final_test_acc - base[(r.seed, r.summary.env_seed)] for r in results
                 if r.policy == row["policy"] and (r.seed, r.summary.env_seed) in base]
        m, s = mean_std(diffs, ignore_nan=True)
        row.update({f"paired_diff_vs_{policies[0]}_mean": m, f"paired_diff_vs_{policies[0]}_std": s,
                    "pairs": len(diffs)})
    return rows


def print_table(rows: list[dict], policies: list[str], file=sys.stdout) -> None:
    print("\npolicy      episodes  test acc (mean ± std)   val acc (mean ± std)   params added  germ/foss/cull",
          file=file)
    for row in rows:
        print(f"{row['policy']:<11} {row['episodes']:>8}  {row['test_acc_mean']:.4f} ± {row['test_acc_std']:.4f}"
              f"        {row['val_acc_mean']:.4f} ± {row['val_acc_std']:.4f}       {row['params_added_mean']:>9.0f}"
              f"  {row['germinated']}/{row['fossilized']}/{row['culled']}", file=file)
    for row in rows[1:]:
        key = f"paired_diff_vs_{policies[0]}"
        print(f"{row['policy']} − {policies[0]} (test acc, {row['pairs']} paired episodes): "
              f"{row[key + '_mean']:+.4f} ± {row[key + '_std']:.4f}", file=file)


def parse_list(text: str, kind=str) -> list:
    return [kind(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", help="a run config YAML (default: the embedded default)")
    ap.add_argument("--set", action="append", default=[], metavar="a.b=c", help="override a config field (repeatable)")
    ap.add_argument("--episodes", type=int, default=1, help="episodes per (seed, policy)")
    ap.add_argument("--policies", default="heuristic,static", help="comma-separated: heuristic, static")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated global seeds (env seeds derive from them)")
    ap.add_argument("--envs", type=int, default=1, help="K envs stepped together in one VectorEnv")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: leave torch's)")
    ap.add_argument("--out", help="also write one JSON line per episode and per policy summary to this file")
    args = ap.parse_args(argv)

    policies, seeds = parse_list(args.policies), parse_list(args.seeds, int)
    bad = [p for p in policies if p not in POLICY_KINDS or p == "ppo"]
    if bad or not policies:
        ap.error(f"--policies: unknown or unsupported {bad}; choose from heuristic, static")
    if args.episodes < 1 or args.envs < 1 or not seeds:
        ap.error("--episodes and --envs must be >= 1 and --seeds non-empty")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.set)
    ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma)
    d = cfg.tolaria.data
    print(f"device={ctx.device} torch_threads={torch.get_num_threads()} dataset={d.dataset} "
          f"train/val/test={len(ctx.data.train_y)}/{len(ctx.data.val_y)}/{len(ctx.data.test_y)} "
          f"image={d.image_size} max_epochs={ctx.max_epochs} batches/step={ctx.tolaria.training.batches_per_step} "
          f"policies={policies} seeds={seeds} episodes={args.episodes} envs={args.envs}", flush=True)
    out = open(args.out, "w") if args.out else None
    results: list[EpisodeResult] = []
    try:
        for seed in seeds:
            for policy in policies:
                def emit(r: EpisodeResult) -> None:
                    print_episode(r)
                    if out:
                        out.write(json.dumps({"kind": "episode", **r.row()}) + "\n")
                        out.flush()
                results += run_policy(cfg, ctx, policy, seed, args.episodes, args.envs, emit)
        rows = summary_table(results, policies)
        print_table(rows, policies)
        if out:
            for row in rows:
                out.write(json.dumps({"kind": "summary", **row}) + "\n")
    finally:
        if out:
            out.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
