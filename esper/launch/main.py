"""The launcher behind `python -m esper.launch` and `esper run`.

  python -m esper.launch                                   # embedded default, local Ray or the running cluster
  python -m esper.launch --config configs/smoke.yaml --set runtime.mode=async
  python -m esper.launch --resume runs/2026-11-26-1200-ppo # continue a stopped or killed run
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import sys

import pyarrow.fs as pafs

from esper.config import ConfigError, RunConfig, dump_config, load_config
from esper.storage import read_bytes, resolve_fs


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m esper.launch", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", help="YAML run config (overrides the embedded default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                   help="override one setting, e.g. --set runtime.mode=async (repeatable)")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--policy", choices=("ppo", "heuristic", "static"), help="shorthand for --set runtime.policy=...")
    p.add_argument("--seed", type=int, help="shorthand for --set seed=...")
    p.add_argument("--eager", action="store_true", help="never capture CUDA graphs (debugging); "
                                                          "shorthand for --set tolaria.training.capture=false")
    p.add_argument("--run-dir", help="where config, checkpoints and telemetry go (local path, NFS, s3://, gs://); "
                                     "default: a new folder under $ESPER_RUN_ROOT, else under ./runs")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its latest checkpoint")
    p.add_argument("--init-from", metavar="CHECKPOINT", help="start PPO from a pretrained policy (e.g. IQL)")
    p.add_argument("--address", help="Ray cluster to join: 'auto' (the one `ray start` started here), host:port or "
                                     "ray://...; default $RAY_ADDRESS (as `ray job submit` sets it), else a new "
                                     "local Ray ('local' always starts one)")
    p.add_argument("--num-cpus", type=int, help="CPUs for a new local Ray (default: all)")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard with a new local Ray")
    p.add_argument("--metrics-port", type=int, help="Prometheus metrics port of a new local Ray (default: Ray's choice)")
    return p


def _resolve_config(args: argparse.Namespace) -> tuple[RunConfig, str | None]:
    overrides = list(args.overrides)
    if args.policy:
        overrides.append(f"runtime.policy={args.policy}")
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.eager:
        overrides.append("tolaria.training.capture=false")
    if args.run_dir:
        overrides.append(f"storage.run_dir={args.run_dir}")
    base = None
    if args.resume:
        fs, path = resolve_fs(args.resume)
        try:
            import yaml

            base = yaml.safe_load(read_bytes(fs, f"{path}/config.yaml"))
        except FileNotFoundError:
            raise ConfigError(f"--resume {args.resume}: no config.yaml there; is it an Esper run directory?") from None
        base["storage"]["run_dir"] = args.resume
    return load_config(args.config, overrides, base=base), args.resume


RUN_ROOT_ENV = "ESPER_RUN_ROOT"


def _holds_a_run(run_dir: str) -> bool:
    fs, base = resolve_fs(run_dir)
    return fs.get_file_info(f"{base}/config.yaml").type != pafs.FileType.NotFound


def _new_run_dir(cfg: RunConfig) -> str:
    """storage.run_dir if set; else a new folder under $ESPER_RUN_ROOT (a cluster sets it to shared
    storage, e.g. s3://bucket/esper-runs, so a bare `ray job submit -- python -m esper.launch` works) or ./runs."""
    if cfg.storage.run_dir:
        return cfg.storage.run_dir
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    root = os.environ.get(RUN_ROOT_ENV, "").rstrip("/") or "runs"
    name = f"{stamp}-{cfg.runtime.policy}-{secrets.token_hex(2)}"
    return f"{root}/{name}" if "://" in root else os.path.join(root, name)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg, resume = _resolve_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    run_dir = resume or _new_run_dir(cfg)
    if resume is None and _holds_a_run(run_dir):
        print(f"error: --run-dir {run_dir} already holds a run (its config.yaml); continue it with --resume "
              f"{run_dir}, or choose a new directory", file=sys.stderr)
        return 2
    from esper.launch.run import start_run   # imports ray: only once we really run

    try:
        summary = start_run(cfg, run_dir=run_dir, resume=resume is not None,
                            init_from=args.init_from, address=args.address, num_cpus=args.num_cpus,
                            dashboard=not args.no_dashboard, metrics_port=args.metrics_port)
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 1 if summary["stopped_by"].startswith("error") else 0     # a stop request (signal) is a clean exit

