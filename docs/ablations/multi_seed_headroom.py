"""Headroom beyond the schedule family, on TRAINING seeds only: fixed plans that germinate in several slots (one
slot per step, the gates advancing: `simic.env.auto_advance` as in the evaluation configs) against the family's
single-seed best. Validation accuracy; no evaluation seed and no test split is read.

    OMP_NUM_THREADS=1 python docs/ablations/multi_seed_headroom.py configs/evaluate/synthetic_cpu.yaml
"""
import json
import sys
from dataclasses import dataclass

from esper.evaluation import load_evaluation_config, run_episode
from esper.leyline import Action, ActionKind, TamiyoDecision


class PlanPolicy:
    """Germinate plan[step] = (slot index, blueprint) when legal; otherwise WAIT (the gates advance)."""

    def __init__(self, space, plan, max_epochs, epoch_index):
        self.space, self.plan, self.max_epochs, self.epoch_index = space, plan, max_epochs, epoch_index

    def reset(self, env_indices):
        pass

    def act(self, obs, masks):
        out = []
        for o, m in zip(obs, masks):
            step = int(round(float(o[self.epoch_index]) * self.max_epochs))
            if step in self.plan:
                i = self.space.encode(Action(ActionKind.GERMINATE, *self.plan[step]))
                if m[i]:
                    out.append(TamiyoDecision(self.space.decode(i), i, "plan: germinate", 1.0))
                    continue
            out.append(TamiyoDecision(Action(ActionKind.WAIT), 0, "plan: wait", 1.0))
        return out


@dataclass(frozen=True)
class Plan:
    steps: tuple            # ((step, (slot index, blueprint)), ...)

    @property
    def name(self):
        return "plan:" + "+".join(f"slot{s}:{b}@{t}" for t, (s, b) in self.steps)

    def configure(self, run):
        return run

    def policy(self, ctx, seed):
        return PlanPolicy(ctx.space, dict(self.steps), ctx.max_epochs, ctx.schema.index("epoch_frac"))


CE = "conv_enhance"
PLANS = [Plan(steps) for steps in (
    ((1, (1, CE)),), ((3, (2, CE)),),                                  # single seeds (family members)
    ((1, (1, CE)), (2, (2, CE))), ((1, (2, CE)), (2, (1, CE))), ((1, (1, CE)), (2, (0, CE))),
    ((0, (1, CE)), (1, (2, CE)), (2, (0, CE))))]


def main(path: str) -> None:
    cfg = load_evaluation_config(path)
    run = cfg.run_dict()
    assert cfg.run_config().simic.env.auto_advance, "the plans rely on the gates advancing seeds"
    for plan in PLANS:
        recs = [run_episode(run, plan, s) for s in cfg.seeds.train]
        vals = [r.final_val_acc for r in recs]
        print(json.dumps({"task": cfg.task, "plan": plan.name, "train_seeds": list(cfg.seeds.train), "val_acc": vals,
                          "mean": sum(vals) / len(vals), "fossilized": [r.seeds_fossilized for r in recs],
                          "params_added": [r.params_added for r in recs]}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
