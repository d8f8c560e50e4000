"""The coordinator: the driver's ray.wait-driven loop (docs/architecture.md, "The distributed loop").

  sync   every runner samples with version v; the learner updates on all of them; v+1 goes out.
         Strictly on-policy: the PPO ratio is exactly 1 before the update's first gradient step.
  async  a runner that finishes resamples at once with the newest weights it can get; the learner
         updates whenever it has one batch per runner; data older than max_policy_lag is dropped.

Faults: a runner that dies is restarted by Ray; its interrupted episodes are re-run with attempt
+ 1, and episodes are logged here, when delivered, once per episode id. A learner that dies
restores its last checkpoint (with a new, never-reused version). A stop request (SIGINT/SIGTERM)
ends the loop at once: a final checkpoint of the last published version, telemetry flushed.
"""
from __future__ import annotations

import json
import os
import signal
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass

import ray
from ray.exceptions import ActorUnavailableError, GetTimeoutError, RayActorError, RayTaskError

from esper.config import RunConfig
from esper.leyline import EpisodeSummary
from esper.nissa import get_hub
from esper.nissa.records import emit_episode
from esper.storage import resolve_fs, write_bytes_atomic
from esper.runtime.progress import Progress
from esper.runtime.runner import SampleInfo

WAIT_S = 0.25          # how often the loop looks at the stop flag while waiting
RESTART_TIMEOUT_S = 300.0


@dataclass
class RunState:
    """What a resumed run continues from (saved in checkpoints and state.json)."""

    updates: int = 0
    episodes: int = 0
    env_steps: int = 0
    incarnation: int = 0


class StopRequested(Exception):
    pass


class Coordinator:
    def __init__(self, cfg: RunConfig, run_dir: str, runners: list, learner, state: RunState,
                 progress: Progress | None = None) -> None:
        self.cfg, self.run_dir, self.runners, self.learner, self.state = cfg, run_dir, runners, learner, state
        rt = cfg.runtime
        self.n_steps = rt.steps_per_sample
        self.in_progress = {i: {k: (0, 0) for k in range(rt.envs_per_runner)} for i in range(len(runners))}
        self.completed: set[str] = set()
        self.duplicates = 0
        self.restarts: Counter[int | str] = Counter()     # runner index, or "learner"
        self.recent: list[EpisodeSummary] = []
        self.version: int | None = None
        self.stop_reason: str | None = None
        self.error: str | None = None
        unit = "update" if learner is not None else "round"
        self.progress = progress or Progress(rt.total_updates if rt.total_episodes is None else None, unit)

    # ------------------------------------------------------------------------------------ control
    def request_stop(self, reason: str) -> None:
        self.stop_reason = self.stop_reason or reason

    def _target_reached(self) -> bool:
        rt = self.cfg.runtime
        if rt.total_episodes is not None and self.state.episodes >= rt.total_episodes:
            return True
        return rt.total_episodes is None and rt.total_updates is not None and self.state.updates >= rt.total_updates

    def _wait(self, refs: list, num_returns: int = 1) -> list:
        while True:
            if self.stop_reason:
                raise StopRequested(self.stop_reason)
            ready, _ = ray.wait(refs, num_returns=num_returns, timeout=WAIT_S)
            if ready:
                return ready

    def _wait_or_stop(self, seconds: float) -> None:
        if self.stop_reason:
            raise StopRequested(self.stop_reason)
        time.sleep(seconds)

    def run(self) -> dict:
        """Run to the target, a stop request or an error; the summary's `stopped_by` says which
        ("target reached", the signal's name, or "error: ..."), and a failed run never reads as a success."""
        try:
            if self.learner is not None:
                self._follow_learner()
            if self.learner is not None and self.cfg.runtime.mode == "async":
                self._run_async()
            else:
                self._run_sync()
        except StopRequested:
            pass
        except Exception as exc:                 # recorded, printed in full, and the run ends as failed
            return self.fail(exc)
        return self._finish()

    def fail(self, exc: BaseException) -> dict:
        """End the run as failed: the traceback printed, `stopped_by: "error: ..."`, what can be saved saved."""
        traceback.print_exception(exc)
        self.error = f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        print(f"[esper] the run failed: {self.error}", flush=True)
        return self._finish()

    # ------------------------------------------------------------------------------------ loops
    def _submit(self, i: int, weights):
        # Named by the policy version, so the dashboard's Tasks view shows the run's progress.
        name = f"sample v{self.version or 0} runner {i}"
        return self.runners[i].sample.options(num_returns=2, name=name).remote(weights, self.n_steps)

    def _run_sync(self) -> None:
        weights = self.learner.get_weights.remote() if self.learner is not None else None
        while not self._target_reached():
            pending = {i: self._submit(i, weights) for i in range(len(self.runners))}
            batches: dict[int, object] = {}
            while pending:
                by_info = {refs[1]: i for i, refs in pending.items()}
                for ref in self._wait(list(by_info)):
                    i = by_info[ref]
                    info = self._get_sample(i, ref)
                    if info is None:                       # runner died and was restored: sample again
                        pending[i] = self._submit(i, weights)
                        continue
                    batches[i] = pending.pop(i)[0]
                    self._record(info)
            if self.learner is None:
                self.state.updates += 1
                self._report(None)
                continue
            stats, new_weights = self._update([batches[i] for i in sorted(batches)])
            weights = new_weights if stats is not None else self._weights_after_restart()

    def _run_async(self) -> None:
        weights = self.learner.get_weights.remote()
        pending = {i: self._submit(i, weights) for i in range(len(self.runners))}
        buffer: list = []
        in_update = None
        while not self._target_reached():
            by_ref = {refs[1]: i for i, refs in pending.items()}
            waits = list(by_ref) + ([in_update[0]] if in_update else [])
            for ref in self._wait(waits):
                if in_update is not None and ref == in_update[0]:
                    stats = self._get_update(in_update[0])
                    weights = in_update[1] if stats is not None else self._weights_after_restart()
                    in_update = None
                    continue
                i = by_ref[ref]
                info = self._get_sample(i, ref)
                if info is not None:
                    buffer.append(pending[i][0])
                    self._record(info)
                pending[i] = self._submit(i, weights)
            if in_update is None and len(buffer) >= len(self.runners) and not self._target_reached():
                in_update = self.learner.update.options(num_returns=2, name=self._update_name()).remote(*buffer)
                buffer = []

    def _update_name(self) -> str:
        v = self.version or 0
        return f"update v{v} -> v{v + 1}"

    def _update(self, batch_refs: list):
        stats_ref, weights_ref = self.learner.update.options(num_returns=2, name=self._update_name()).remote(*batch_refs)
        self._wait([stats_ref])
        return self._get_update(stats_ref), weights_ref

    # ------------------------------------------------------------------------------------ results
    def _get_sample(self, i: int, info_ref) -> SampleInfo | None:
        try:
            return ray.get(info_ref)
        except RayTaskError:
            raise                                          # the task itself failed: not a dead runner
        except RayActorError as exc:
            self._recover_runner(i, exc)
            return None

    def _follow_learner(self) -> None:
        """Take the update count and version from the learner's restored checkpoint: one number for updates,
        whether the driver or the learner was the one that died (the driver's state.json may be ahead of it)."""
        info = ray.get(self.learner.info.remote())
        self.state.updates = int(info["updates_done"])
        self.version = int(info["version"])

    def _weights_after_restart(self):
        """The restored learner's weights, once it answers (it restores its checkpoint on restart)."""
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            ref = self.learner.get_weights.remote()
            try:
                ray.get(ref)
                self._follow_learner()
                return ref
            except ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the learner did not come back within {RESTART_TIMEOUT_S:.0f} s") from None
                self._wait_or_stop(0.5)

    def _get_update(self, stats_ref) -> dict | None:
        try:
            stats = ray.get(stats_ref)
        except RayActorError as exc:
            self.restarts["learner"] += 1
            if self.restarts["learner"] > self.cfg.runtime.max_restarts:
                raise RuntimeError(f"the learner died {self.restarts['learner']} times; giving up") from exc
            get_hub().emit("system", kind="actor_failed", actor="esper-learner", detail=json.dumps({"error": str(exc)[:500]}))
            return None
        self.state.updates += 1
        self.version = stats["policy_version"]
        self._report(stats)
        if self.state.updates == self.cfg.runtime.faults.kill_driver_after_updates:
            os.kill(os.getpid(), signal.SIGKILL)          # injected crash: no checkpoint, no flush
        return stats

    def _recover_runner(self, i: int, exc: Exception) -> None:
        self.restarts[i] += 1
        name = f"esper-runner-{i}"
        if self.restarts[i] > self.cfg.runtime.max_restarts:
            raise RuntimeError(f"{name} died {self.restarts[i]} times (max_restarts="
                               f"{self.cfg.runtime.max_restarts}); giving up") from exc
        get_hub().emit("system", kind="actor_failed", actor=name,
                       detail=json.dumps({"error": str(exc)[:500], "rerun": self.in_progress[i]}))
        print(f"[esper] {name} died; Ray restarts it and its interrupted episodes are re-run", flush=True)
        deadline = time.monotonic() + RESTART_TIMEOUT_S
        while True:
            try:
                ray.get(self.runners[i].resume.remote(self.in_progress[i]))
                return
            except ActorUnavailableError:       # still restarting: ask again shortly
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not come back within {RESTART_TIMEOUT_S:.0f} s") from None
                self._wait_or_stop(0.5)

    def _record(self, info: SampleInfo) -> None:
        self.state.env_steps += info.env_steps
        self.in_progress[info.runner] = info.in_progress
        for e in info.episodes:
            if e.episode_id in self.completed:
                self.duplicates += 1
                continue
            self.completed.add(e.episode_id)
            self.state.episodes += 1
            emit_episode(e, self.cfg.runtime.policy)
            self.recent.append(e)
        self.recent = self.recent[-20:]

    def _report(self, stats: dict | None) -> None:
        recent = self.recent
        mean = lambda xs: sum(xs) / len(xs) if xs else float("nan")  # noqa: E731
        self.progress.update(self.state.updates, episodes=self.state.episodes, env_steps=self.state.env_steps,
                             version=self.version, recent_return=mean([e.episode_return for e in recent]),
                             recent_test_acc=mean([e.final_test_acc for e in recent]), stats=stats)
        self._write_state()

    def _write_state(self) -> None:
        fs, base = resolve_fs(self.run_dir)
        write_bytes_atomic(fs, f"{base}/state.json", json.dumps(asdict(self.state)).encode())

    # ------------------------------------------------------------------------------------ stop
    def _finish(self) -> dict:
        """Final checkpoint and flushed telemetry; quick enough for Ray's job-stop deadline."""
        self.progress.close()
        checkpoint = None
        if self.learner is not None:
            try:
                saved = ray.get(self.learner.checkpoint.remote(asdict(self.state), True), timeout=60)
                # The checkpoint is the record: an update that finished as the stop came counts, once.
                checkpoint, self.version, self.state.updates = saved["path"], saved["version"], saved["updates_done"]
            except (RayActorError, GetTimeoutError) as exc:
                print(f"[esper] final checkpoint failed: {exc}", flush=True)
        try:
            ray.get([r.flush.remote() for r in self.runners], timeout=30)
        except (RayActorError, GetTimeoutError) as exc:
            print(f"[esper] a runner could not flush its telemetry: {exc}", flush=True)
        self._write_state()
        summary = {"stopped_by": self.error or self.stop_reason or "target reached", **asdict(self.state),
                   "policy_version": self.version, "checkpoint": checkpoint, "duplicates_dropped": self.duplicates,
                   "restarts": {str(k): v for k, v in self.restarts.items()}, "run_dir": self.run_dir}
        fs, base = resolve_fs(self.run_dir)
        write_bytes_atomic(fs, f"{base}/summary.json", json.dumps(summary, indent=2).encode())
        get_hub().emit("system", kind="stop", actor="driver", detail=json.dumps(summary))
        get_hub().flush()
        return summary
