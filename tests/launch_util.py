"""Run `python -m esper.launch` in its own process session, so a test can clean up everything it started."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")


def launch_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"RAY_USAGE_STATS_ENABLED": "0", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def start(args: list[str], **env: str) -> subprocess.Popen:
    if "--address" not in args and "--print-config" not in args:
        args = [*args, "--address", "local"]      # never join a cluster another test (or user) left running
    return subprocess.Popen([sys.executable, "-m", "esper.launch", *args], cwd=ROOT, env=launch_env(**env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def cleanup(proc: subprocess.Popen) -> None:
    """Kill whatever the launcher left in its session (Ray's agents outlive a SIGKILLed driver)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run(args: list[str], timeout: float = 300, **env: str) -> tuple[int, str]:
    proc = start(args, **env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        cleanup(proc)
    return proc.returncode, out


def wait_for_line(proc: subprocess.Popen, needle: str, lines: list[str]) -> bool:
    """Read the launcher's output until a line contains `needle` (or it exits)."""
    for line in proc.stdout:
        lines.append(line)
        if needle in line:
            return True
    return False
