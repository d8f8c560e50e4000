"""Every performance figure Esper's issues name, gathered in one run, written as JSON and a Markdown table.

    OMP_NUM_THREADS=1 python scripts/bench.py --quick        # minutes on a 2-core CPU
    OMP_NUM_THREADS=1 python scripts/bench.py                # default data (much longer)

It runs the focused benchmark scripts one after another in this process's environment and
collects their JSON lines, so ratios (Ray vs in-process, eager vs captured, Esper vs the raw-loop
anchor) are measured side by side in the same run on the same machine:
  bench_env.py        env-steps/s for one env and VectorEnv K = 1, 2, 4, 8; per-component step cost
  bench_gpu.py        (CUDA only) eager vs captured and the ratio to ../shared/tools/anchor
  bench_runtime.py    Ray runtime vs the in-process trainer; weight broadcast for R = 1, 2, 4
  bench_ppo.py        learner update time per 1k transitions
  bench_telemetry.py  µs per telemetry event, diagnostics overhead
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def machine() -> dict:
    import torch

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        import ray

        info["ray"] = ray.__version__
    except ImportError:
        pass
    return info


def run_part(name: str, args: list[str], timeout: float) -> tuple[list[dict], float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})
    rows = []
    for line in proc.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                rows.append({"part": name, **json.loads(line)})
            except json.JSONDecodeError:
                pass
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
    return rows, time.perf_counter() - start, status


ID_KEYS = ("figure", "what", "mode", "profile", "event", "settings", "policy", "device", "host", "num_envs", "envs",
           "runners", "k", "T", "K")


def _label(row: dict) -> str:
    return ", ".join(f"{k}={row[k]}" for k in ID_KEYS if k in row)


def _numbers(row: dict) -> str:
    skip = set(ID_KEYS) | {"part"}
    return ", ".join(f"{k}={v}" for k, v in row.items()
                     if k not in skip and isinstance(v, (int, float)) and not isinstance(v, bool))


def to_markdown(meta: dict, parts: dict, rows: list[dict]) -> str:
    lines = ["# Benchmarks", "", f"`{meta['command']}` on {meta['machine']['platform']}, {meta['machine']['cpus']} CPUs"
             + (f", {meta['machine']['gpu']}" if meta["machine"].get("gpu") else ", no GPU")
             + f", torch {meta['machine']['torch']}, {meta['date']}.", "",
             "| part | status | seconds |", "|---|---|---|"]
    lines += [f"| {p} | {v['status']} | {v['seconds']:.0f} |" for p, v in parts.items()]
    lines += ["", "| part | figure | numbers |", "|---|---|---|"]
    lines += [f"| {r['part']} | {_label(r)} | {_numbers(r)} |" for r in rows if r.get("figure") not in ("setup", "machine")]
    return "\n".join(lines) + "\n"


def rewrite(out_dir: Path) -> None:
    """Re-render bench.md from an existing bench.json."""
    data = json.loads((out_dir / "bench.json").read_text())
    (out_dir / "bench.md").write_text(to_markdown(data["meta"], data["parts"], data["figures"]))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out-dir", default=str(ROOT / "docs" / "bench"))
    p.add_argument("--skip", default="", help="comma-separated parts to skip: env,gpu,runtime,ppo,telemetry")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per part")
    p.add_argument("--render-only", action="store_true", help="rewrite bench.md from bench.json")
    args = p.parse_args()
    if args.render_only:
        rewrite(Path(args.out_dir))
        return 0
    import torch

    q = ["--quick"] if args.quick else []
    plan = {
        "env": ["bench_env.py", *q, "--envs", "1,2,4,8", "--skip", "accuracy"],
        "gpu": ["bench_gpu.py", *q],
        "runtime": ["bench_runtime.py", *q],
        "ppo": ["bench_ppo.py", *q],
        "telemetry": ["bench_telemetry.py", "--rounds", "3" if args.quick else "10"],
    }
    if not torch.cuda.is_available():
        plan.pop("gpu")
    skip = {s for s in args.skip.split(",") if s}
    meta = {"command": "python scripts/bench.py " + " ".join(sys.argv[1:]), "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine()}
    rows: list[dict] = []
    parts: dict[str, dict] = {}
    for name, cmd in plan.items():
        if name in skip:
            continue
        print(f"[bench] {name}: {' '.join(cmd)}", flush=True)
        got, seconds, status = run_part(name, cmd, args.timeout)
        rows += got
        parts[name] = {"status": status, "seconds": seconds, "figures": len(got)}
        print(f"[bench] {name}: {status}, {len(got)} figures, {seconds:.0f} s", flush=True)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps({"meta": meta, "parts": parts, "figures": rows}, indent=1))
    (out / "bench.md").write_text(to_markdown(meta, parts, rows))
    print(f"[bench] wrote {out / 'bench.json'} and {out / 'bench.md'}", flush=True)
    return 0 if all(v["status"] == "ok" for v in parts.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
