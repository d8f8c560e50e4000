"""Screen a PPO setting on TRAINING seeds only: train PPO (in-process, no Ray) for each PPO seed, then score the
greedy policy by final VALIDATION accuracy on the training env seeds, beside the heuristic and the best fixed
schedule of the same evaluation config (also chosen and scored on training seeds' validation accuracy).
The test split is never read, and the evaluation seeds are never touched: this is for choosing defaults.

    OMP_NUM_THREADS=1 python scripts/screen.py --name auto-advance --set simic.env.auto_advance=true
    OMP_NUM_THREADS=1 python scripts/screen.py --name default            # the baseline, same seeds

Prints one JSON line per PPO seed and a summary line (mean ± std, paired differences against the baseline
controllers with esper.stats); `--out FILE` appends the lines to FILE (JSON lines).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from esper.config import config_to_dict, load_config
from esper.evaluation import Checkpoint, Heuristic, InProcessExecutor, load_evaluation_config, run_episode
from esper.evaluation.schedules import schedule_grid, select_best
from esper.stats import mean_std, paired

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--name", required=True, help="what this setting is called in the output")
    p.add_argument("--task", default=str(ROOT / "configs/evaluate/synthetic.yaml"), help="evaluation config")
    p.add_argument("--quick", action="store_true", default=True, help="the task's quick run config (default)")
    p.add_argument("--full", dest="quick", action="store_false", help="the task's full run config")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                   help="run-config override for the PPO runs (repeatable)")
    p.add_argument("--updates", type=int, default=40)
    p.add_argument("--envs", type=int, default=4)
    p.add_argument("--ppo-seeds", type=int, nargs="+", default=[100, 101, 102])
    p.add_argument("--out", help="append the JSON lines to this file")
    p.add_argument("--keep", help="copy each PPO seed's final checkpoint into this folder (ppo-s<SEED>.pt)")
    args = p.parse_args(argv)

    task = load_evaluation_config(args.task, quick=args.quick)
    train_seeds = list(task.seeds.train)
    base = task.run_dict()
    run_cfg = load_config(None, args.overrides, base=base)
    ppo_run = config_to_dict(load_config(None, [f"runtime.total_updates={args.updates}",
                                                f"runtime.envs_per_runner={args.envs}",
                                                f"runtime.steps_per_sample={run_cfg.simic.env.max_epochs}",
                                                "nissa.console=false"], base=config_to_dict(run_cfg)))
    lines = []

    def emit(row: dict) -> None:
        lines.append(json.dumps(row))
        print(lines[-1], flush=True)

    # Baselines on the same training seeds (validation accuracy), in the screened env setting.
    score = lambda c: [run_episode(ppo_run, c, s).final_val_acc for s in train_seeds]  # noqa: E731
    heuristic = score(Heuristic())
    grid = schedule_grid(run_cfg.kasmina, run_cfg.simic.env.max_epochs, task.schedules.germinate_at,
                         task.schedules.blueprints, task.schedules.slots)
    family = [run_episode(ppo_run, c, s) for c in grid for s in train_seeds]
    best = select_best(family, train_seeds)
    best_schedule = [r.final_val_acc for r in family if r.controller == best.name]
    ex = InProcessExecutor()
    per_seed = []
    for seed in args.ppo_seeds:
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="esper-screen-") as d:
            ckpt = ex.train_ppo(ppo_run, seed, d)
            curve = json.loads((Path(d) / "learning_curve.json").read_text())["updates"]
            ctrl = Checkpoint.load(ckpt, run_cfg.kasmina, name=f"ppo-s{seed}")
            if args.keep:
                Path(args.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(ckpt, Path(args.keep) / f"ppo-s{seed}.pt")
            recs = [run_episode(ppo_run, ctrl, s) for s in train_seeds]
        vals = [r.final_val_acc for r in recs]
        tail = curve[-max(1, len(curve) // 5):]
        ev = [r["explained_variance"] for r in tail if r["explained_variance"] is not None]
        per_seed.append(vals)
        emit({"name": args.name, "ppo_seed": seed, "val_acc_mean": mean_std(vals)[0], "val_acc": vals,
              "fossilized": sum(r.seeds_fossilized for r in recs), "germinated": sum(r.seeds_germinated for r in recs),
              "culled": sum(r.seeds_culled for r in recs),
              "training_flops": mean_std([float(r.training_flops) for r in recs])[0],
              "ev_last_fifth": sum(ev) / len(ev) if ev else None, "entropy_end": curve[-1]["entropy"],
              "minutes": round((time.perf_counter() - t0) / 60, 2)})
    mean_ppo = [sum(v[i] for v in per_seed) / len(per_seed) for i in range(len(train_seeds))]
    summary = {"name": args.name, "overrides": args.overrides, "updates": args.updates, "envs": args.envs,
               "train_seeds": train_seeds, "ppo_seeds": args.ppo_seeds,
               "ppo_val_acc": mean_std([m for v in per_seed for m in v]),
               "heuristic_val_acc": mean_std(heuristic), "best_schedule": best.name,
               "best_schedule_val_acc": mean_std(best_schedule),
               "vs_heuristic": paired(mean_ppo, heuristic, a="ppo", b="heuristic").to_dict(),
               "vs_best_schedule": paired(mean_ppo, best_schedule, a="ppo", b="best schedule").to_dict()}
    emit(summary)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
