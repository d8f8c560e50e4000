"""Progress reporting: one line per update in the driver log, and a bar when stderr is a terminal."""
from __future__ import annotations

import math
import sys
import time


def _fmt(x: float, spec: str = ".3f") -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, spec)


class Progress:
    def __init__(self, total: int | None, unit: str, *, stream=None, bar: bool | None = None) -> None:
        self.total, self.unit = total, unit
        self.stream = stream or sys.stdout
        self.bar = sys.stderr.isatty() if bar is None else bar
        self.start = time.perf_counter()

    def update(self, done: int, *, episodes: int, env_steps: int, version: int | None = None,
               recent_return: float = float("nan"), recent_test_acc: float = float("nan"),
               stats: dict | None = None) -> None:
        elapsed = time.perf_counter() - self.start
        total = f"/{self.total}" if self.total else ""
        parts = [f"[esper] {self.unit} {done}{total}"]
        if version is not None:
            parts.append(f"v{version}")
        parts += [f"episodes {episodes}", f"env-steps {env_steps} ({env_steps / max(elapsed, 1e-9):.1f}/s)",
                  f"return {_fmt(recent_return, '.2f')}", f"test-acc {_fmt(recent_test_acc)}"]
        if stats:
            parts.append(" ".join(f"{k} {_fmt(stats[key])}" for k, key in (
                ("pl", "policy_loss"), ("vl", "value_loss"), ("ent", "entropy"), ("kl", "approx_kl"),
                ("ev", "explained_variance"))))
        if self.bar:
            sys.stderr.write("\r\033[K")
        print(" | ".join(parts), file=self.stream, flush=True)
        if self.bar and self.total:
            width = 30
            filled = int(width * min(done / self.total, 1.0))
            sys.stderr.write(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{self.total} {self.unit}s "
                             f"{elapsed:.0f}s")
            sys.stderr.flush()

    def close(self) -> None:
        if self.bar:
            sys.stderr.write("\n")
            sys.stderr.flush()
