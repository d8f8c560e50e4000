"""Is the static frontier reachable by growth at this episode length? On TRAINING seeds only (validation accuracy,
no test split, no evaluation seed): the static hosts of the evaluation config's widths give each seed's frontier
(validation accuracy vs training FLOPs, linear in log FLOPs); every schedule of the family and the fixed multi-seed
plans (multi_seed_headroom.py) are placed against it.

    OMP_NUM_THREADS=1 python docs/ablations/frontier_headroom.py configs/evaluate/synthetic_cpu.yaml
"""
import json
import math
import sys

from esper.evaluation import Static, frontier_widths, load_evaluation_config, run_episode, schedule_grid
from esper.evaluation.frontier import Frontier
from esper.stats import mean_std

from multi_seed_headroom import PLANS

cfg = load_evaluation_config(sys.argv[1])
run, rc, seeds = cfg.run_dict(), cfg.run_config(), list(cfg.seeds.train)
statics = [Static(w.multiplier) for w in frontier_widths(rc, cfg.frontier.param_ratios)]
static_recs = [run_episode(run, c, s) for c in statics for s in seeds]
frontier = {s: Frontier.from_points([(float(r.training_flops), r.final_val_acc) for r in static_recs if r.seed == s])
            for s in seeds}
grid = schedule_grid(rc.kasmina, rc.simic.env.max_epochs, cfg.schedules.germinate_at, cfg.schedules.blueprints,
                     cfg.schedules.slots)
for c in statics + grid + PLANS:
    recs = [r for r in static_recs if r.controller == c.name] or [run_episode(run, c, s) for s in seeds]
    m = [frontier[r.seed].margin(float(r.training_flops), r.final_val_acc) for r in recs]
    m = [x for x in m if not math.isnan(x)]
    print(json.dumps({"task": cfg.task, "controller": c.name, "val_acc": mean_std([r.final_val_acc for r in recs])[0],
                      "training_flops": mean_std([float(r.training_flops) for r in recs])[0],
                      "margin_vs_frontier": mean_std(m)[0] if m else None, "margin_n": len(m),
                      "fossilized": sum(r.seeds_fossilized for r in recs)}), flush=True)
