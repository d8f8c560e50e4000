"""The result store: finished work as small JSON files, so a re-run does exactly what is missing.

    TASK_DIR/episodes/<key>.json     one finished episode: {"key", "job", "record"}
    TASK_DIR/ppo/<key>.json          one finished PPO training run: {"key", "job", "checkpoint", "sha256", "run_dir"}
    TASK_DIR/ppo/<key>/              that run's directory (checkpoints/, learning_curve.json)

An episode's key is the SHA-256 of (the run config tree, the code version, the controller's
`identity()` — for a checkpoint its file's SHA-256, not its path — and the env seed); a PPO run's
of (its run config tree, the code version, its seed, the executor's name). The code version is the
installed package version plus a hash of every esper source file except the presentation-only
ones (`PRESENTATION_ONLY`), so any change that could change an outcome gets new keys: a changed
config value, a changed source file or another checkpoint re-runs; nothing from two protocols is
ever mixed. Files are written atomically (esper.storage), one per finished job, so an interrupted
protocol keeps everything that finished.

`StoredExecutor` wraps an executor: it returns stored results, sends only the missing jobs on (in
one batch, so a parallel executor sees them all), saves each as it arrives, and reports progress.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Sequence

from esper.storage import read_bytes, resolve_fs, write_bytes_atomic

from esper.evaluation.controllers import file_sha256
from esper.evaluation.episode import EpisodeRecord
from esper.evaluation.executor import Executor, Job

PACKAGE_ROOT = Path(__file__).resolve().parents[1]        # esper/
PRESENTATION_ONLY = ("evaluation/results.py",)            # cannot change any episode or checkpoint

Progress = Callable[[int, int, str], None]


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, str]:
    """{"esper": package version, "source_sha256": hash over esper/**/*.py (paths and bytes)}; once per process."""
    try:
        version = metadata.version("esper")
    except metadata.PackageNotFoundError:
        version = "unknown"
    h = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        rel = path.relative_to(PACKAGE_ROOT).as_posix()
        if rel in PRESENTATION_ONLY:
            continue
        h.update(rel.encode() + b"\0" + path.read_bytes() + b"\0")
    return {"esper": version, "source_sha256": h.hexdigest()}


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def episode_key(job: Job) -> str:
    run, controller, seed = job
    return _hash({"kind": "episode", "run": run, "code": code_version(), "controller": controller.identity(),
                  "seed": int(seed)})[:32]


def ppo_key(run_config: dict, ppo_seed: int, executor: str) -> str:
    return _hash({"kind": "ppo", "run": run_config, "code": code_version(), "seed": int(ppo_seed),
                  "executor": executor})[:32]


class ResultStore:
    """Finished episodes and PPO runs under one task folder (a local path)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.fs, _ = resolve_fs(str(self.root))

    def _read(self, path: Path) -> dict | None:
        try:
            return json.loads(read_bytes(self.fs, str(path)))
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def _write(self, path: Path, obj: dict) -> None:
        write_bytes_atomic(self.fs, str(path), json.dumps(obj, indent=1, sort_keys=True).encode())

    # ---------------------------------------------------------------------------------- episodes
    def episode_path(self, job: Job) -> Path:
        return self.root / "episodes" / f"{episode_key(job)}.json"

    def get(self, job: Job) -> EpisodeRecord | None:
        entry = self._read(self.episode_path(job))
        if entry is None:
            return None
        return dataclasses.replace(EpisodeRecord.from_dict(entry["record"]), controller=job[1].name)

    def put(self, job: Job, record: EpisodeRecord) -> None:
        run, controller, seed = job
        if record.seed != int(seed):
            raise ValueError(f"record for seed {record.seed} stored as a job for seed {seed}")
        self._write(self.episode_path(job), {
            "key": episode_key(job), "record": record.to_dict(),
            "job": {"controller": controller.identity(), "seed": int(seed), "run_sha256": _hash(run),
                    "code": code_version()}})

    # ---------------------------------------------------------------------------------- PPO runs
    def ppo_dir(self, run_config: dict, ppo_seed: int, executor: str) -> Path:
        return self.root / "ppo" / f"seed{ppo_seed}-{ppo_key(run_config, ppo_seed, executor)}"

    def get_ppo(self, run_config: dict, ppo_seed: int, executor: str) -> dict | None:
        """The finished run's entry, if its checkpoint is still there unchanged."""
        d = self.ppo_dir(run_config, ppo_seed, executor)
        entry = self._read(d.with_suffix(".json"))
        if entry is None:
            return None
        ckpt = str(self.root / entry["checkpoint"])
        if not os.path.exists(ckpt) or file_sha256(ckpt) != entry["sha256"]:
            return None
        return {**entry, "checkpoint": ckpt, "run_dir": str(self.root / entry["run_dir"])}

    def put_ppo(self, run_config: dict, ppo_seed: int, executor: str, checkpoint: str, run_dir: Path) -> dict:
        """Record a finished run; `run_dir` is the folder `ppo_dir` gave before training (one key, computed once)."""
        d = Path(run_dir)
        entry = {"key": ppo_key(run_config, ppo_seed, executor), "ppo_seed": int(ppo_seed), "executor": executor,
                 "checkpoint": os.path.relpath(checkpoint, self.root), "sha256": file_sha256(checkpoint),
                 "run_dir": os.path.relpath(d, self.root), "run_sha256": _hash(run_config), "code": code_version()}
        self._write(d.with_suffix(".json"), entry)
        return {**entry, "checkpoint": checkpoint, "run_dir": str(d)}


class StoredExecutor:
    """An executor behind a store: stored results are returned, missing work runs and is saved.

    `ran` / `reused` count episodes, `trained` / `reused_training` PPO runs; `progress(done, total,
    what)` is called after each finished or reused item once `expect(total)` set the total."""

    def __init__(self, executor: Executor, store: ResultStore, progress: Progress | None = None) -> None:
        self.executor, self.store, self.progress = executor, store, progress
        self.name = getattr(executor, "name", type(executor).__name__)
        self.ran = self.reused = self.trained = self.reused_training = 0
        self.done = self.total = 0

    def expect(self, total: int) -> None:
        self.total = total

    def _tick(self, what: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, max(self.total, self.done), what)

    def run_episodes(self, jobs: Sequence[Job]) -> list[EpisodeRecord]:
        jobs = [Job(*j) for j in jobs]
        results: list[EpisodeRecord | None] = [self.store.get(j) for j in jobs]
        for j, r in zip(jobs, results):
            if r is not None:
                self.reused += 1
                self._tick(f"{j.controller.name} seed {j.seed} (stored)")
        missing = [i for i, r in enumerate(results) if r is None]
        saved: set[int] = set()

        def on_result(k: int, record: EpisodeRecord) -> None:
            i = missing[k]
            if i in saved:
                return
            job = jobs[i]
            if record.seed != job.seed or record.controller != job.controller.name:
                raise RuntimeError(f"executor {self.name} returned {record.controller} seed {record.seed} "
                                   f"for job {job.controller.name} seed {job.seed}: results must be in job order")
            self.store.put(job, record)
            saved.add(i)
            self.ran += 1
            self._tick(f"{jobs[i].controller.name} seed {jobs[i].seed}")

        if missing:
            out = self.executor.run_episodes([jobs[i] for i in missing], on_result=on_result)
            if len(out) != len(missing):
                raise RuntimeError(f"executor {self.name} returned {len(out)} records for {len(missing)} jobs")
            for k, record in enumerate(out):
                on_result(k, record)
                results[missing[k]] = record
        return [r for r in results if r is not None]

    def train_ppo(self, run_config: dict, ppo_seed: int) -> dict:
        """The PPO run's entry ({"checkpoint", "sha256", "run_dir", ...}), trained only if not stored."""
        entry = self.store.get_ppo(run_config, ppo_seed, self.name)
        if entry is not None:
            self.reused_training += 1
            self._tick(f"PPO seed {ppo_seed} (stored)")
            return entry
        run_dir = self.store.ppo_dir(run_config, ppo_seed, self.name)
        run_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = self.executor.train_ppo(run_config, ppo_seed, str(run_dir))
        self.trained += 1
        entry = self.store.put_ppo(run_config, ppo_seed, self.name, checkpoint, run_dir)
        self._tick(f"PPO seed {ppo_seed} trained")
        return entry

    def counts(self) -> dict[str, int]:
        return {"episodes_run": self.ran, "episodes_reused": self.reused, "ppo_trained": self.trained,
                "ppo_reused": self.reused_training}
