"""`esper grow`: run episodes with a chosen controller and keep the networks it grew.

    esper grow --config configs/smoke.yaml --controller schedule:block1:conv_enhance:1 --out grown/
    esper grow --config configs/smoke.yaml --controller runs/20261126-120000-ppo-1a2b --seeds 0 1 2 --out grown/
    python -c "from esper.kasmina import load_grown; print(load_grown('grown/grown-seed0.pt'))"

For each env seed N it runs one episode (`simic.env.max_epochs` steps) of the task and host the
config names, driven by the controller:

  heuristic                       HeuristicTamiyo with the config's tamiyo.heuristic settings
  static                          the host alone (always WAIT)
  static:W                        the host with every width × W (rounded), alone
  schedule:SLOT:BLUEPRINT:STEP    germinate BLUEPRINT in SLOT (a name from kasmina.slots, or its index)
                                  at step STEP, then ADVANCE whenever legal (the gates decide)
  PATH                            a trained policy: a checkpoint file (.pt, PPO or an IQL export) or a run
                                  directory (its latest checkpoint), acting greedily (most likely legal action)

(the controllers are esper.evaluation's, so a grown network and an evaluation episode are driven
alike) and writes OUT/grown-seed<N>.pt (format: esper.kasmina.grown) and one JSON line on stdout.

Live seeds at the end: seeds that did not reach FOSSILIZED are dropped, only seeds that passed every
gate (G0–G5) are kept (`esper.kasmina.LIVE_SEED_RULE`). The saved model is the host plus its fossils;
its validation and test accuracy are measured again after the drop and recorded as `exported` beside
the episode's own (`episode`), so the JSON line shows what dropping cost.

A trained policy fits only hosts with its slot count and blueprint set (its observation layout and
action space): a checkpoint that does not fit the config is refused, naming both, before any work.
Every argument is checked before any data loads; bad input is `error: ...` on stderr, exit code 2.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from esper.config import ConfigError, RunConfig, config_to_dict, load_config
from esper.evaluation.controllers import CONTROLLERS, Controller, Schedule
from esper.evaluation.controllers import parse_controller as evaluation_controller
from esper.kasmina import MorphogeneticModel, drop_live_seeds, grown_payload, save_grown
from esper.leyline import SeedEvent, SeedStage
from esper.simic.environment import EnvContext, MorphogeneticEnv, make_context
from esper.storage import resolve_fs
from esper.tolaria import summarise


class GrowError(ValueError):
    """Bad input to `esper grow` (printed as `error: ...`, exit code 2)."""


@dataclass
class Grown:
    seed: int
    path: str
    model: MorphogeneticModel       # the env's model after the live-seed rule: what the file holds
    payload: dict
    summary: dict                   # the JSON line


# ------------------------------------------------------------------------------------------ controllers
def parse_controller(text: str, cfg: RunConfig) -> Controller:
    """Check --controller against the config (slots, blueprints, episode length, a checkpoint's fit) and
    return it (`esper.evaluation.controllers`: the evaluation's own controllers); no data loads."""
    controller = evaluation_controller(text, cfg)
    if isinstance(controller, Schedule):
        need, max_epochs = cfg.kasmina.lifecycle.shortest_path_to_fossil(), cfg.simic.env.max_epochs
        if controller.germinate_at + need > max_epochs:
            print(f"note: a seed germinated at step {controller.germinate_at} needs {need} steps to reach FOSSILIZED "
                  f"but the episode ends after step {max_epochs - 1}; it will be dropped at the end (only fossils "
                  f"are kept)", file=sys.stderr)
    return controller


# ------------------------------------------------------------------------------------------ one episode
class GrowthLog:
    """Every seed event of an episode as plain rows; `seed` numbers the germinations (which seed it was)."""

    def __init__(self, slot_names: list[str]) -> None:
        self.slot_names = slot_names
        self.rows: list[dict[str, Any]] = []
        self._current: dict[int, int] = {}
        self._count = 0

    def add(self, event: SeedEvent) -> None:
        if event.to_stage == SeedStage.GERMINATED.name and event.from_stage != event.to_stage:
            self._count += 1
            self._current[event.slot] = self._count
        gate = event.gate
        self.rows.append({"step": int(event.epoch), "seed": self._current.get(event.slot),
                          "slot": self.slot_names[event.slot], "slot_index": int(event.slot),
                          "blueprint": event.blueprint, "from_stage": event.from_stage, "to_stage": event.to_stage,
                          "reason": event.reason, "gate": gate.gate if gate else None,
                          "gate_passed": bool(gate.passed) if gate else None,
                          "gate_checks": {k: bool(v) for k, v in gate.checks.items()} if gate else {},
                          "gate_values": {k: float(v) for k, v in gate.values.items()} if gate else {}})


def grow_one(ctx: EnvContext, cfg: RunConfig, controller: Controller, seed: int, out: str, *,
             spec: str | None = None) -> Grown:
    """One episode with env seed `seed`, the live-seed rule, the artifact written to `out`. `spec`: the
    controller as the user wrote it (recorded as the artifact's controller spec; default: its own)."""
    start = time.perf_counter()
    names = list(ctx.kasmina.slots)
    description = {**controller.to_dict(), **({"spec": spec} if spec else {})}
    env = MorphogeneticEnv(ctx)
    policy = controller.policy(ctx, seed)
    obs, info = env.reset(seed=seed, options={"episode_id": f"grow-seed{seed}"})
    policy.reset([0])
    log, decisions = GrowthLog(names), []
    done = False
    while not done:
        decision = policy.act(obs[None], info["action_mask"][None])[0]
        step = env.core.epoch
        obs, _reward, terminated, truncated, info = env.step(decision.index)
        decisions.append({"step": step, "action": str(decision.action), "reason": decision.reason,
                          "confidence": float(decision.confidence)})
        for event in info["seed_events"]:
            log.add(event)
        done = terminated or truncated
    core = env.core
    episode = core.summary().to_dict()
    model = core.model
    dropped = drop_live_seeds(model, core.epoch)
    for event in dropped:
        log.add(event)
    val_loss, val_acc = summarise(core.trainer.evaluate(ctx.data, "val").cpu().numpy())
    test_loss, test_acc = summarise(core.trainer.evaluate(ctx.data, "test").cpu().numpy())
    model.eval()
    fossils = [{"slot": s.name, "blueprint": spec["blueprint"]} for s in model.slots for spec in s.fossil_specs]
    exported = {"val_acc": float(val_acc), "val_loss": float(val_loss), "test_acc": float(test_acc),
                "test_loss": float(test_loss), "params_host": int(model.host_param_count),
                "params_added": int(model.params_added()),
                "dropped": [{"slot": names[e.slot], "blueprint": e.blueprint, "stage": e.from_stage}
                            for e in dropped]}
    payload = grown_payload(model, ctx.kasmina, ctx.data.input_shape, growth_log=log.rows, decisions=decisions,
                            controller=description, env_seed=int(seed), episode=episode,
                            exported=exported, config=json.dumps(config_to_dict(cfg)))
    save_grown(out, payload)
    summary = {"seed": int(seed), "artifact": out, "controller": description["spec"],
               "episode_val_acc": episode["final_val_acc"], "episode_test_acc": episode["final_test_acc"],
               "exported_val_acc": exported["val_acc"], "exported_test_acc": exported["test_acc"],
               "fossils": fossils, "dropped": exported["dropped"], "params_host": exported["params_host"],
               "params_added": exported["params_added"], "steps": episode["epochs"],
               "seconds": round(time.perf_counter() - start, 3)}
    return Grown(int(seed), out, model, payload, summary)


# ------------------------------------------------------------------------------------------ entry point
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esper grow", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--config", help="YAML run config: the task, host, slots, blueprints and episode length")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                   help="override one setting, e.g. --set tolaria.training.device=cpu (repeatable)")
    p.add_argument("--controller", required=True, metavar="CONTROLLER", help=CONTROLLERS)
    p.add_argument("--seeds", nargs="+", type=int, default=[0], metavar="N",
                   help="env seeds, one episode and one artifact each (default: 0)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for grown-seed<N>.pt (local, NFS, s3://, gs://)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
        bad = [s for s in args.seeds if s < 0]
        if bad:
            raise GrowError(f"--seeds must be non-negative integers, got {bad}")
        if len(set(args.seeds)) != len(args.seeds):
            raise GrowError(f"--seeds must be distinct (one artifact each), got {args.seeds}")
        controller = parse_controller(args.controller, cfg)
        cfg = load_config(None, (), base=controller.configure(config_to_dict(cfg)))   # static:W: the widths
        resolve_fs(args.out)
        if "://" not in args.out and os.path.isfile(args.out):
            raise GrowError(f"--out {args.out} is a file; it must be a folder (grown-seed<N>.pt go into it)")
    except (ConfigError, GrowError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out_dir = args.out.rstrip("/") or "/"
    for seed in args.seeds:
        grown = grow_one(ctx, cfg, controller, seed, f"{out_dir}/grown-seed{seed}.pt", spec=args.controller)
        print(json.dumps(grown.summary), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
