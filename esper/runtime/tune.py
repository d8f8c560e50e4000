"""`esper tune`: sweep config keys with Ray Tune; the objective is validation accuracy on training seeds.

    esper tune --config configs/smoke.yaml --param simic.ppo.lr=loguniform:1e-4:3e-3 \\
        --param simic.ppo.epochs=choice:2,4,8 --samples 8 --scheduler asha --updates 20 --out runs/tune

Each trial composes the run config (defaults, --config, --set, then the trial's sampled values, the
same `a.b=value` overrides `--set` takes), trains PPO in one process for --updates updates
(`InProcessTrainer`, no actors inside a trial) and reports to Tune after every update: the training
return, explained variance, entropy, PPO's losses, and `val_acc`. Then it runs the greedy policy for
one full episode on each training seed (--train-seeds, env seeds) and reports the final `val_acc`:
the mean over those seeds of the episode's final **validation** accuracy (`EpisodeSummary.final_val_acc`).
Test accuracy is never read: the sweep picks hyperparameters, and picking them on the test split
would be tuning on it. The training seeds must also stay disjoint from the evaluation protocol's
held-out seeds (esper.evaluation.EVAL_SEEDS), so those are refused.

One metric, one name: during training `val_acc` is the running mean of the final validation accuracy
of the training episodes finished so far (NaN until the first one ends; Tune's ASHA skips NaN), so
ASHA can stop a trial early on the same quantity the sweep maximizes; the last report of a trial that
ran to the end carries the greedy evaluation (`evaluated: true`). The best trial is chosen among those,
by their last `val_acc` (mode max); a trial ASHA stopped early has no evaluation and is not eligible.

Parameters (--param KEY=SPEC, repeatable; values parse as YAML, like --set):
  loguniform:LOW:HIGH    log-uniform float in [LOW, HIGH)   (tune.loguniform)
  uniform:LOW:HIGH       uniform float in [LOW, HIGH)       (tune.uniform)
  randint:LOW:HIGH       integer in [LOW, HIGH), HIGH excluded, as in Tune (tune.randint)
  choice:A,B,...         one of the values, at random       (tune.choice)
  grid:A,B,...           every value, each --samples times  (tune.grid_search)
Commas inside [...] or {...} do not split, so `tamiyo.network.hidden=choice:[32,32],[64,64]` works.
Every key and every value it can take is checked against the run config before Ray starts: a typo is
the config's own error naming the field; a bad spec names the forms above.

Search is Tune's default (random sampling and grid expansion); --scheduler asha adds Tune's
AsyncHyperBand (time attribute training_iteration, one per update plus the evaluation). Results go to
OUT/NAME/ (`ray.tune.RunConfig(storage_path=OUT, name=NAME)`) with Tune's default loggers per trial:
progress.csv, result.json and TensorBoard event files (`tensorboard --logdir OUT/NAME`). At the end it
prints the best trial's values and val_acc and writes OUT/NAME/best.json (with a launch command).

Every trial uses the config's global seed (`seed`): the trials differ only in the swept values, a
paired comparison. A trial asks Ray for --cpus-per-trial CPUs (and --gpus-per-trial GPUs) and runs
torch on that many threads; on 2 CPUs two trials run side by side. Ray: a new local Ray unless
--address or $RAY_ADDRESS names a cluster (`esper.runtime.cluster.connect`, as the launcher does); on
a cluster OUT must be shared storage or a URI (s3://, gs://). It is shut down (or left) at the end.
Relative paths in the config resolve against the directory `esper tune` ran in, where that exists.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

from esper.config import ConfigError, config_to_dict, load_config, parse_override
from esper.evaluation import EVAL_SEEDS

METRIC = "val_acc"
MODE = "max"
FORMS = ("loguniform:LOW:HIGH", "uniform:LOW:HIGH", "randint:LOW:HIGH", "choice:A,B,...", "grid:A,B,...")
# The evaluation protocol's held-out seeds: never tuned on.
HELD_OUT_EVAL_SEEDS = tuple(EVAL_SEEDS)
_SCIENTIFIC = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


class TuneError(ValueError):
    """Bad input to `esper tune` (printed as `error: ...`, exit code 2), found before Ray starts."""


# ------------------------------------------------------------------------------------------ parameters
@dataclass(frozen=True)
class Param:
    key: str                 # dotted config field, e.g. simic.ppo.lr
    kind: str                # loguniform | uniform | randint | choice | grid
    values: tuple            # (low, high) for ranges, the values for choice and grid
    text: str                # as given, for messages

    def probes(self) -> list[Any]:
        """The values to check against the config: both ends of a range, every choice."""
        if self.kind == "randint":
            return [self.values[0], self.values[1] - 1]
        return list(self.values)

    def space(self) -> Any:
        from ray import tune

        if self.kind == "loguniform":
            return tune.loguniform(*self.values)
        if self.kind == "uniform":
            return tune.uniform(*self.values)
        if self.kind == "randint":
            return tune.randint(*self.values)
        if self.kind == "choice":
            return tune.choice(list(self.values))
        return tune.grid_search(list(self.values))


def _yaml_value(raw: str, where: str) -> Any:
    try:
        value = parse_override(f"v={raw}")[1]           # the same YAML parsing as --set
    except ConfigError:
        raise TuneError(f"--param {where}: {raw!r} is not a valid YAML value") from None
    if isinstance(value, str) and _SCIENTIFIC.fullmatch(value.strip()):
        value = float(value)                            # YAML 1.1 reads 1e-4 (no dot) as a string
    return value


def _split_top(text: str) -> list[str]:
    """Split on commas outside [...] and {...}."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p.strip() for p in parts]


def parse_param(text: str) -> Param:
    forms = ", ".join(FORMS)
    if "=" not in text:
        raise TuneError(f"--param {text!r} must look like section.field=SPEC, e.g. simic.ppo.lr=loguniform:1e-4:3e-3; "
                        f"SPEC is one of {forms}")
    key, spec = (s.strip() for s in text.split("=", 1))
    if not key or any(not p for p in key.split(".")):
        raise TuneError(f"--param {text!r} has an empty field name")
    kind, sep, rest = spec.partition(":")
    if not sep or kind not in ("loguniform", "uniform", "randint", "choice", "grid"):
        raise TuneError(f"--param {text!r}: unknown distribution {spec!r}; valid forms: {forms}")
    if kind in ("choice", "grid"):
        items = _split_top(rest)
        if not rest.strip() or any(not i for i in items):
            raise TuneError(f"--param {text!r}: {kind} needs one or more comma-separated values, e.g. {kind}:2,4,8")
        values = tuple(_yaml_value(i, text) for i in items)
        return Param(key, kind, values, text)
    bounds = rest.split(":")
    if len(bounds) != 2:
        raise TuneError(f"--param {text!r}: {kind} takes two bounds, {kind}:LOW:HIGH; valid forms: {forms}")
    lo, hi = (_yaml_value(b, text) for b in bounds)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi))
    if kind == "randint" and not (numeric and isinstance(lo, int) and isinstance(hi, int)):
        raise TuneError(f"--param {text!r}: randint bounds must be integers, got {lo!r} and {hi!r}")
    if not numeric:
        raise TuneError(f"--param {text!r}: {kind} bounds must be numbers, got {lo!r} and {hi!r}")
    if not lo < hi:
        raise TuneError(f"--param {text!r}: {kind} needs LOW < HIGH, got {lo!r} and {hi!r}")
    if kind == "loguniform" and lo <= 0:
        raise TuneError(f"--param {text!r}: loguniform needs 0 < LOW, got {lo!r}")
    if kind in ("loguniform", "uniform"):
        lo, hi = float(lo), float(hi)
    return Param(key, kind, (lo, hi), text)


def override(key: str, value: Any) -> str:
    """A `--set` override for one value (JSON is YAML, so lists and floats survive)."""
    return f"{key}={json.dumps(value)}"


def check_params(params: Sequence[Param], base: dict) -> None:
    """Every key, with every value it can take (the others at their first), against the run config."""
    keys = [p.key for p in params]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise TuneError(f"--param names {dup} more than once")
    first = [override(p.key, p.probes()[0]) for p in params]
    for i, p in enumerate(params):
        for v in p.probes():
            trial = first[:i] + [override(p.key, v)] + first[i + 1:]
            try:
                load_config(None, trial, base=base)
            except ConfigError as exc:
                raise TuneError(f"--param {p.text}: with {p.key}={v!r} the config is refused:\n{exc}") from None


# ------------------------------------------------------------------------------------------ the objective
def validation_objective(episodes: Iterable[Any]) -> float:
    """The sweep's objective: mean final *validation* accuracy of the episodes (never their test accuracy)."""
    accs = [float(e.final_val_acc) for e in episodes]
    if not accs:
        raise ValueError("the objective needs at least one finished episode")
    return sum(accs) / len(accs)


class _SeedEpisodes:
    """Env k runs env seed seeds[k]: one greedy episode per training seed."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = list(seeds)

    def __call__(self, k: int) -> tuple[str, int, int]:
        return f"tune-seed{self.seeds[k]}", int(self.seeds[k]), 0


def greedy_episodes(trainer: Any, seeds: Sequence[int]) -> dict[int, Any]:
    """One full episode per env seed with the trainer's policy acting greedily; {seed: EpisodeSummary}."""
    from esper.simic.environment.vector_env import VectorEnv
    from esper.simic.learning.sampler import Sampler

    policy = trainer.policy
    policy.greedy = True
    sampler = Sampler(VectorEnv(trainer.ctx, len(seeds), _SeedEpisodes(seeds)), policy)
    found: dict[int, Any] = {}
    for _ in range(4):                                   # an episode is at most max_epochs steps
        _, episodes = sampler.sample(trainer.ctx.max_epochs)
        for e in episodes:
            found.setdefault(int(e.env_seed), e)         # the first episode of each seed
        if len(found) == len(seeds):
            return found
    raise RuntimeError(f"greedy evaluation finished episodes for seeds {sorted(found)} of {list(seeds)}")


def _nanmean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else math.nan


def run_trial(params: dict[str, Any], *, base: dict, updates: int, train_seeds: Sequence[int],
              report: Callable[[dict], None], threads: int = 1) -> dict:
    """One trial, without Ray: train, report after every update, evaluate greedily, report the objective.
    `report` is `ray.tune.report` inside Tune (any callable taking a metrics dict here)."""
    import torch

    from esper.simic.learning.trainer import InProcessTrainer

    torch.set_num_threads(max(1, int(threads)))
    cfg = load_config(None, [override(k, v) for k, v in params.items()], base=base)
    trainer = InProcessTrainer.from_config(cfg, policy="ppo")
    val_accs: list[float] = []                           # final validation accuracy of every training episode
    returns: list[float] = []
    last: dict = {}
    for u in range(1, updates + 1):
        stats, episodes = trainer.iterate()
        val_accs += [float(e.final_val_acc) for e in episodes]
        ep_returns = [float(e.episode_return) for e in episodes]
        returns += ep_returns
        last = {METRIC: _nanmean(val_accs), "train_val_acc": _nanmean(val_accs), "evaluated": False,
                "update": u, "policy_version": stats.policy_version, "episodes": len(val_accs),
                "episode_return": _nanmean(ep_returns), "mean_return": _nanmean(returns),
                "explained_variance": stats.explained_variance, "entropy": stats.entropy,
                "policy_loss": stats.policy_loss, "value_loss": stats.value_loss, "approx_kl": stats.approx_kl,
                "clip_fraction": stats.clip_fraction, "learning_rate": stats.learning_rate}
        report(dict(last))
    start = time.perf_counter()
    by_seed = greedy_episodes(trainer, train_seeds)
    objective = validation_objective(by_seed[s] for s in train_seeds)
    final = {**last, METRIC: objective, "greedy_val_acc": objective, "evaluated": True,
             "eval_seconds": time.perf_counter() - start,
             **{f"val_acc_seed{s}": float(by_seed[s].final_val_acc) for s in train_seeds},
             **{f"return_seed{s}": float(by_seed[s].episode_return) for s in train_seeds}}
    report(final)
    return final


def trial(config: dict, *, base: dict, updates: int, train_seeds: list[int], threads: int,
               origin: str) -> None:
    from ray import tune

    if os.path.isdir(origin):                           # Tune starts a trial in its own directory
        os.chdir(origin)
    run_trial(config, base=base, updates=updates, train_seeds=train_seeds, report=tune.report, threads=threads)


# ------------------------------------------------------------------------------------------ the command
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="esper tune", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    p.add_argument("--config", help="YAML run config (defaults, then this, then --set, then the trial's values)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="A.B=C",
                   help="override for every trial (repeatable)")
    p.add_argument("--param", dest="params", action="append", default=[], required=True, metavar="A.B=SPEC",
                   help=f"a swept key (repeatable); SPEC: {', '.join(FORMS)}")
    p.add_argument("--samples", type=int, default=1, help="Tune's num_samples (each grid point this many times)")
    p.add_argument("--scheduler", choices=("none", "asha"), default="none", help="trial scheduler")
    p.add_argument("--grace-period", type=int, default=1, help="ASHA: reports before a trial may be stopped")
    p.add_argument("--reduction-factor", type=float, default=2.0, help="ASHA: reduction factor")
    p.add_argument("--updates", type=int, default=10, help="PPO updates per trial")
    p.add_argument("--train-seeds", type=int, nargs="+", default=[0, 1, 2], metavar="SEED",
                   help="env seeds of the greedy evaluation episodes (one each); the objective is their mean "
                        "final validation accuracy")
    p.add_argument("--out", default="runs/tune", help="Tune's storage_path (a folder, or s3://... / gs://...)")
    p.add_argument("--name", help="experiment name (default tune-YYYYmmdd-HHMMSS): results in OUT/NAME")
    p.add_argument("--address", help="join this Ray cluster (auto, host:port, ray://...); default: a new local Ray "
                                     "unless $RAY_ADDRESS is set; `local` always starts one")
    p.add_argument("--num-cpus", type=int, help="CPUs of the local Ray (default: all)")
    p.add_argument("--cpus-per-trial", type=int, default=1, help="CPUs (and torch threads) per trial")
    p.add_argument("--gpus-per-trial", type=float, default=0.0, help="GPUs per trial")
    p.add_argument("--max-concurrent", type=int, default=0, help="most trials at once (0: as many as fit)")
    return p


@dataclass
class Plan:
    base: dict                      # the composed config every trial starts from
    params: list[Param]
    out: str                        # absolute path or URI
    name: str


def plan(args: argparse.Namespace) -> Plan:
    """Everything `esper tune` can check without Ray; a TuneError names what is wrong."""
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        raise TuneError(str(exc)) from None
    if cfg.runtime.policy != "ppo":
        raise TuneError(f"esper tune trains PPO, but runtime.policy={cfg.runtime.policy!r}; drop that setting "
                        f"or --set runtime.policy=ppo")
    for flag, value, least in (("--updates", args.updates, 1), ("--samples", args.samples, 1),
                               ("--cpus-per-trial", args.cpus_per_trial, 1), ("--max-concurrent", args.max_concurrent, 0),
                               ("--grace-period", args.grace_period, 1)):
        if value < least:
            raise TuneError(f"{flag} must be at least {least}, got {value}")
    if args.gpus_per_trial < 0 or args.reduction_factor <= 1:
        raise TuneError("--gpus-per-trial must be >= 0 and --reduction-factor > 1")
    if len(set(args.train_seeds)) != len(args.train_seeds) or min(args.train_seeds) < 0:
        raise TuneError(f"--train-seeds must be distinct non-negative integers, got {args.train_seeds}")
    held = sorted(set(args.train_seeds) & set(HELD_OUT_EVAL_SEEDS))
    if held:
        raise TuneError(f"--train-seeds {held} are the evaluation protocol's held-out seeds "
                        f"{list(HELD_OUT_EVAL_SEEDS)} (esper.evaluation.EVAL_SEEDS); tuning on them would leak into "
                        f"the evaluation. Choose other seeds.")
    base = config_to_dict(cfg)
    params = [parse_param(t) for t in args.params]
    check_params(params, base)
    out = args.out if "://" in args.out else os.path.abspath(os.path.expanduser(args.out))
    return Plan(base, params, out, args.name or time.strftime("tune-%Y%m%d-%H%M%S"))


def _values(result_config: dict, params: Sequence[Param]) -> dict:
    return {p.key: result_config.get(p.key) for p in params}


def summarise(results: Any, plan_: Plan, args: argparse.Namespace) -> dict:
    """The best evaluated trial (max last val_acc) and a row per trial."""
    rows = []
    for r in results:
        m = r.metrics or {}
        rows.append({"trial_id": m.get("trial_id"), "path": r.path, "values": _values(r.config or {}, plan_.params),
                     METRIC: m.get(METRIC), "evaluated": bool(m.get("evaluated")),
                     "updates": m.get("update"), "error": None if r.error is None else str(r.error).splitlines()[0]})
    done = [(row, r) for row, r in zip(rows, results)
            if row["evaluated"] and isinstance(row[METRIC], (int, float)) and math.isfinite(row[METRIC])]
    best = None
    if done:
        row, r = max(done, key=lambda x: x[0][METRIC])
        overrides = [override(k, v) for k, v in row["values"].items()]
        launch = shlex.join(["python", "-m", "esper.launch", *(["--config", args.config] if args.config else []),
                             *(a for o in [*args.overrides, *overrides] for a in ("--set", o))])
        best = {**row, "overrides": overrides,
                "val_acc_per_seed": {str(s): r.metrics.get(f"val_acc_seed{s}") for s in args.train_seeds},
                "launch": launch}
    return {"metric": METRIC, "mode": MODE, "objective": "mean final validation accuracy of one greedy episode "
            "per training seed (test accuracy is never used)", "train_seeds": list(args.train_seeds),
            "updates": args.updates, "config": args.config, "set": list(args.overrides),
            "params": [p.text for p in plan_.params], "scheduler": args.scheduler, "samples": args.samples,
            "experiment": f"{plan_.out}/{plan_.name}", "best": best, "trials": rows}


def run(args: argparse.Namespace, plan_: Plan) -> int:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from esper.runtime.cluster import connect
    from esper.storage import resolve_fs, write_bytes_atomic

    where, line = connect(args.address, "esper-tune", num_cpus=args.num_cpus, include_dashboard=False)
    print(f"[tune] {line}", flush=True)
    try:
        scheduler = None
        if args.scheduler == "asha":     # training_iteration: one per update, then the evaluation
            scheduler = ASHAScheduler(time_attr="training_iteration", max_t=args.updates + 1,
                                      grace_period=args.grace_period, reduction_factor=args.reduction_factor)
        resources = {"cpu": args.cpus_per_trial, **({"gpu": args.gpus_per_trial} if args.gpus_per_trial else {})}
        trainable = tune.with_resources(
            tune.with_parameters(trial, base=plan_.base, updates=args.updates, train_seeds=list(args.train_seeds),
                                 threads=args.cpus_per_trial, origin=os.getcwd()), resources)
        tuner = tune.Tuner(
            trainable,
            param_space={p.key: p.space() for p in plan_.params},
            tune_config=tune.TuneConfig(metric=METRIC, mode=MODE, num_samples=args.samples, scheduler=scheduler,
                                        max_concurrent_trials=args.max_concurrent or None),
            run_config=tune.RunConfig(storage_path=plan_.out, name=plan_.name, verbose=1))
        results = tuner.fit()
        summary = summarise(results, plan_, args)
        fs, path = resolve_fs(f"{plan_.out}/{plan_.name}/best.json")
        write_bytes_atomic(fs, path, json.dumps(summary, indent=2, default=str).encode())
    finally:
        ray.shutdown()
    failed = [t for t in summary["trials"] if t["error"]]
    for t in failed:
        print(f"[tune] trial {t['trial_id']} {t['values']} failed: {t['error']}", file=sys.stderr)
    best = summary["best"]
    print(f"[tune] {len(summary['trials'])} trial(s), {len(failed)} failed; results in {summary['experiment']}")
    if best is None:
        print("[tune] no trial finished its evaluation; no best trial", file=sys.stderr)
        return 1
    print(f"[tune] best trial {best['trial_id']}: {METRIC}={best[METRIC]:.4f} (mean over training seeds "
          f"{summary['train_seeds']}: {best['val_acc_per_seed']})")
    for k, v in best["values"].items():
        print(f"[tune]   {k} = {v!r}")
    print(f"[tune] {summary['experiment']}/best.json; train with it: {best['launch']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        plan_ = plan(args)
    except TuneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run(args, plan_)


if __name__ == "__main__":
    sys.exit(main())
