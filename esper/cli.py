"""The `esper` command: one entry point for running, inspecting and staging.

  esper run [launch options]            # same as python -m esper.launch
  esper pretrain --runs RUN_DIR ... --out CKPT   # offline IQL on transition telemetry (docs/offline.md)
  esper grow --controller C --out DIR [--config F] [--seeds N ...]   # grow networks, save them (esper.grow)
  esper evaluate --task synthetic [--quick] [--docs docs/results.md]   # the evaluation protocol on Ray
  esper tune --param A.B=SPEC ... [--config F] [--updates U] [--out DIR]   # sweep config keys with Ray Tune
  esper config [--config F] [--set A.B=C ...]   # print the resolved config
  esper data cifar10 --root DIR         # download CIFAR-10 into DIR once (under a file lock)
  esper report RUN_DIR [--out DIR]      # same as python -m esper.nissa.report
  esper export RUN_DIR OUT [--events E] # same as python -m esper.nissa.export (Parquet)
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Callable, Sequence


def _delegate(module: str) -> Callable[[list[str]], int]:
    """A command whose arguments go, untouched, to `module.main` (imported only when the command runs)."""
    def run(argv: list[str]) -> int:
        return importlib.import_module(module).main(argv)
    return run


# Commands that hand their arguments, untouched, to another module's own parser.
DELEGATES: dict[str, tuple[Callable[[list[str]], int], str]] = {
    "run": (_delegate("esper.launch"), "start or resume a run (python -m esper.launch; see `esper run --help`)"),
    "pretrain": (_delegate("esper.pretrain"),
                 "pretrain Tamiyo offline with IQL on transition telemetry (for `esper run --init-from`)"),
    "grow": (_delegate("esper.grow"),
             "run episodes with a controller and save the grown networks (esper.grow; see `esper grow --help`)"),
    "evaluate": (_delegate("esper.runtime.evaluate"),
                 "the evaluation protocol on Ray: frontier, schedules, heuristic, PPO (`esper evaluate --help`)"),
    "tune": (_delegate("esper.runtime.tune"),
             "sweep config keys with Ray Tune, scored on training seeds' validation accuracy (`esper tune --help`)"),
    "report": (_delegate("esper.nissa.report"), "plots and report.md for a run directory (python -m esper.nissa.report)"),
    "export": (_delegate("esper.nissa.export"),
               "telemetry to Parquet, one file per event type (python -m esper.nissa.export)"),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esper", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n")[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_fn, text) in DELEGATES.items():
        sub.add_parser(name, help=text, add_help=False)
    c = sub.add_parser("config", help="print the resolved run config (defaults, then --config, then --set)")
    c.add_argument("--config", help="YAML run config")
    c.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C", help="override (repeatable)")
    d = sub.add_parser("data", help="stage a dataset on this machine")
    d.add_argument("dataset", choices=("cifar10",))
    d.add_argument("--root", required=True, help="folder that will hold cifar-10-batches-py (tolaria.data.root)")
    d.add_argument("--no-download", action="store_true", help="only check that the data is there")
    return p


def _config(args: argparse.Namespace) -> int:
    from esper.config import ConfigError, dump_config, load_config

    try:
        print(dump_config(load_config(args.config, args.overrides)), end="")
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _data(args: argparse.Namespace) -> int:
    from esper.tolaria.datasets import DatasetNotFoundError, ensure_cifar10

    try:
        folder = ensure_cifar10(args.root, download=not args.no_download)
    except DatasetNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:   # network or disk trouble inside torchvision's downloader
        print(f"error: could not download CIFAR-10 into {args.root}: {type(exc).__name__}: {exc}\n"
              f"  Without network access, copy cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) "
              f"to this machine and extract it into {args.root}.", file=sys.stderr)
        return 1
    print(f"CIFAR-10 ready in {folder}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATES:
        return DELEGATES[argv[0]][0](argv[1:])
    args = build_parser().parse_args(argv)
    return {"config": _config, "data": _data}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
