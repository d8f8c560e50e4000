"""`esper pretrain`: offline IQL on the transition telemetry of finished runs (docs/offline.md).

    esper pretrain --runs runs/heuristic-a runs/heuristic-b --out iql.pt --config configs/smoke.yaml
    esper run --init-from iql.pt --config configs/smoke.yaml

An entry point: it composes the run config like `esper.launch` does; `esper.simic.learning.iql`,
the library it drives, needs none of it.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from esper.config import ConfigError, config_to_dict, load_config
from esper.kasmina import schema_and_space
from esper.simic.learning.iql import IQL, export_pretrained, load_transitions


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esper pretrain",
                                description="Pretrain Tamiyo offline with IQL on transition telemetry; the output "
                                            "is a checkpoint for `python -m esper.launch --init-from`.")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="run directories with transitions")
    p.add_argument("--out", required=True, metavar="CKPT", help="where to write the pretrained checkpoint (.pt)")
    p.add_argument("--config", help="YAML run config: must describe the same slots/blueprints as the data "
                                    "(use the one the fine-tuning run will use)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                   help="override one setting, e.g. --set simic.iql.temperature=1.0 (repeatable)")
    p.add_argument("--steps", type=int, help="gradient steps (default simic.iql.steps)")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction of episodes held out for the agreement figure")
    p.add_argument("--log-every", type=int, default=200, help="print losses every this many steps")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print(f"error: --steps must be >= 1, got {args.steps}", file=sys.stderr)
        return 2
    if not 0 <= args.holdout < 1:
        print(f"error: --holdout must be in [0, 1), got {args.holdout}", file=sys.stderr)
        return 2
    schema, space = schema_and_space(cfg.kasmina)
    try:
        data = load_transitions(args.runs, schema, space)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    train, held = data.split(args.holdout, seed=cfg.seed)
    counts = np.bincount(train.actions, minlength=space.n)
    print(f"[iql] {len(data)} transitions from {len(np.unique(data.episode_ids))} episodes in {len(args.runs)} run(s); "
          f"train {len(train)}, held out {len(held)}; schema {schema.fingerprint}, {space.n} actions; "
          f"actions taken: {{{', '.join(f'{space.decode(a)}: {int(c)}' for a, c in enumerate(counts) if c)}}}",
          flush=True)
    iql = IQL(schema.size, space.n, cfg.tamiyo.network.hidden, cfg.simic.iql, cfg.simic.ppo.gamma,
              device=args.device, seed=cfg.seed)
    history = iql.train(train, steps=args.steps, log_every=args.log_every,
                        log=lambda line: print(line, flush=True))
    majority = int(counts.argmax())
    result = {"train": iql.agreement(train, majority)}
    if len(held):
        result["held_out"] = iql.agreement(held, majority)
    for name, r in result.items():
        non_wait = f"{r['agreement_non_wait']:.1%} of {r['non_wait']}" if r["non_wait"] else "none in the data"
        print(f"[iql] {name}: greedy action agrees with the recorded one on {r['agreement']:.1%} of "
              f"{r['transitions']} transitions (chance {r['chance']:.1%}, always-{space.decode(majority)} "
              f"{r['majority_baseline']:.1%}; non-WAIT actions: {non_wait}); policy entropy {r['entropy']:.3f} "
              f"of at most {r['max_entropy']:.3f} nats", flush=True)
    extra = {"runs": list(args.runs), "transitions": len(data), "steps": iql.steps_done,
             "first": history[0].__dict__ if history else None, "last": history[-1].__dict__ if history else None,
             "agreement": result}
    export_pretrained(args.out, iql, schema, space, config=config_to_dict(cfg), extra=extra)
    print(f"[iql] wrote {args.out}; fine-tune with: python -m esper.launch --init-from {args.out}"
          + (f" --config {args.config}" if args.config else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
