"""Export a run's telemetry to Parquet, one file per event type, for tools that prefer it.

    python -m esper.nissa.export RUN_DIR OUT_DIR [--events step,episode]
"""
from __future__ import annotations

import argparse
import sys
from typing import Sequence

import pyarrow.parquet as pq

from esper.leyline.events import EVENT_TYPES
from esper.nissa.reader import available_events, read_events
from esper.storage import resolve_fs


def export_parquet(run_dir: str, out_dir: str, events: Sequence[str] | None = None) -> dict[str, str]:
    """Write `<out_dir>/<event_type>.parquet` for each event type present; returns type -> path."""
    unknown = [e for e in events or () if e not in EVENT_TYPES]
    if unknown:
        raise ValueError(f"unknown event type(s) {unknown}; valid types are {list(EVENT_TYPES)}")
    present = available_events(run_dir)
    chosen = [e for e in (events or present) if e in present]
    fs, base = resolve_fs(out_dir)
    fs.create_dir(base, recursive=True)
    written = {}
    for event_type in chosen:
        path = f"{base}/{event_type}.parquet"
        pq.write_table(read_events(run_dir, event_type), path, filesystem=fs)
        written[event_type] = path
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m esper.nissa.export", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="run directory (local path, NFS path, s3:// or gs:// URI)")
    parser.add_argument("out_dir", help="where to write <event_type>.parquet")
    parser.add_argument("--events", default="", help=f"comma-separated subset of {','.join(EVENT_TYPES)}")
    args = parser.parse_args(argv)
    events = [e for e in args.events.split(",") if e] or None
    written = export_parquet(args.run_dir, args.out_dir, events)
    if not written:
        print(f"no telemetry found under {args.run_dir}/telemetry", file=sys.stderr)
        return 1
    for event_type, path in written.items():
        print(f"{event_type}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
