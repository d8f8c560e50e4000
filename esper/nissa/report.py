"""A run report: PNG plots and a `report.md` summarising what a run's telemetry shows.

    python -m esper.nissa.report RUN_DIR [--out DIR]

Sections whose events are missing (e.g. `decision` under the minimal profile) are skipped with a note;
an unreadable (torn) telemetry file is left out with a warning naming it, the rest still reported.
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from esper.nissa.reader import available_events, read_events


def _mean(table: pa.Table, column: str) -> str:
    value = pc.mean(table[column]).as_py() if table.num_rows else None
    return "n/a" if value is None else f"{value:.4f}"


def _sum(table: pa.Table, column: str) -> int:
    return int(pc.sum(table[column]).as_py() or 0) if table.num_rows else 0


def _missing(event_type: str, why: str, unreadable: set[str]) -> str:
    if event_type in unreadable:
        return f"_Every `{event_type}` file in this run is unreadable (see the warnings); section skipped._\n"
    return f"_No `{event_type}` events in this run ({why}); section skipped._\n"


def build_report(run_dir: str, out_dir: str | None = None) -> str:
    """Write the plots and `report.md` into `out_dir` (default `<run_dir>/report`); returns the md path."""
    from esper.nissa import plots  # matplotlib only when a report is made

    present = set(available_events(run_dir))
    if not present:
        raise FileNotFoundError(f"no telemetry under {run_dir}/telemetry")
    out_dir = out_dir or os.path.join(run_dir, "report")
    os.makedirs(out_dir, exist_ok=True)
    tables = {et: read_events(run_dir, et) for et in present if et != "transition"}
    rows = {et: t.num_rows for et, t in tables.items()}
    if "transition" in present:  # no section reads transitions: count them without loading observations
        rows["transition"] = read_events(run_dir, "transition", columns=["time"]).num_rows
    lines = ["# Esper run report\n", f"Run directory: `{run_dir}`\n", "| event | rows |", "|---|---|"]
    lines += [f"| {et} | {n} |" for et, n in sorted(rows.items())]
    lines.append("")
    # A type whose every file was unreadable (each named in a TornFileWarning) has no rows to show.
    unreadable = {et for et, t in tables.items() if not t.num_rows}
    tables = {et: t for et, t in tables.items() if et not in unreadable}

    lines.append("## Episodes\n")
    if "episode" in tables:
        ep = tables["episode"]
        lines.append(f"{ep.num_rows} episodes; mean final validation accuracy {_mean(ep, 'final_val_acc')}, "
                     f"mean final test accuracy {_mean(ep, 'final_test_acc')}, mean return {_mean(ep, 'episode_return')}. "
                     f"Seeds germinated {_sum(ep, 'seeds_germinated')}, fossilized {_sum(ep, 'seeds_fossilized')}, "
                     f"culled {_sum(ep, 'seeds_culled')}.\n")
    else:
        lines.append(_missing("episode", "no episode finished yet", unreadable))

    lines.append("## Validation accuracy\n")
    if "step" in tables:
        n = plots.plot_val_acc(tables["step"], tables.get("seed"), os.path.join(out_dir, "val_acc.png"))
        lines.append(f"Validation accuracy over epochs for the first {n} episodes; markers show seeds "
                     f"germinated (▲), fossilized (★) and culled (✕).\n\n![validation accuracy](val_acc.png)\n")
    else:
        lines.append(_missing("step", "no environment step recorded", unreadable))

    lines.append("## Seed lifecycle\n")
    if "seed" in tables:
        n = plots.plot_seed_timeline(tables["seed"], tables.get("step"), os.path.join(out_dir, "seed_timeline.png"))
        lines.append(f"Stage of each slot over epochs for the first {n} episodes with seeds.\n\n"
                     f"![seed timeline](seed_timeline.png)\n")
    else:
        lines.append(_missing("seed", "no seed was ever germinated", unreadable))

    lines.append("## Actions\n")
    if "decision" in tables:
        fractions = plots.plot_actions(tables["decision"], os.path.join(out_dir, "actions.png"))
        summary = ", ".join(f"{k} {v:.1%}" for k, v in fractions.items())
        lines.append(f"Overall: {summary}.\n\n![action distribution](actions.png)\n")
    else:
        lines.append(_missing("decision", "the minimal profile does not record decisions", unreadable))

    lines.append("## Learner\n")
    if "learner" in tables:
        learner = tables["learner"].sort_by("policy_version")
        shown = plots.plot_learner(learner, os.path.join(out_dir, "learner.png"))
        last = learner.slice(learner.num_rows - 1).to_pylist()[0]
        final = ", ".join(f"{m} {last[m]:.4g}" for m in shown if last[m] is not None)
        lines.append(f"{learner.num_rows} updates, last policy version {last['policy_version']}; "
                     f"final {final}.\n\n![learner curves](learner.png)\n")
    else:
        lines.append(_missing("learner", "no PPO update, e.g. a heuristic run", unreadable))

    path = os.path.join(out_dir, "report.md")
    with open(path, "w") as f:
        f.write("\n".join(lines))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esper.nissa.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run directory (local path or URI)")
    parser.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    args = parser.parse_args(argv)
    if "://" in args.run_dir and args.out is None:
        parser.error("--out is required when RUN_DIR is a URI (the report is written locally)")
    try:
        print(build_report(args.run_dir, args.out))
    except FileNotFoundError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
