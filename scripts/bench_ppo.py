"""PPO cost: learner update time per 1k transitions, and the in-process trainer's env steps/s.

    python scripts/bench_ppo.py --quick            # tiny data settings for the trainer (seconds)
    python scripts/bench_ppo.py                    # the default data settings (minutes on a laptop CPU)
    python scripts/bench_ppo.py --threads 2 --skip-trainer

Prints one JSON line per figure. The learner figure uses synthetic TrajectoryBatches with the real
shapes (D = schema size, A = action count) and the default PPOConfig on the learner's device
(`--device`, default cpu), a fresh batch per update; it is timed on-policy (batch version == learner version, which includes
the behaviour log-prob recompute) and stale (lag 1, no recompute) so the recompute's cost shows.
target_kl may stop an update's epochs early, so per-epoch figures are printed beside per-update ones.
On a shared machine the figures vary with its load: compare runs made back to back.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from esper.config import load_config
from esper.kasmina import KasminaConfig
from esper.tamiyo.agent import make_network
from esper.simic.config import PPOConfig
from esper.kasmina import schema_and_space
from esper.simic.learning.ppo import PPOLearner
from esper.simic.learning.rollout import TrajectoryBatch
from esper.simic.learning.trainer import InProcessTrainer
from esper.tamiyo import TamiyoConfig

QUICK = ["tolaria.data.train_size=256", "tolaria.data.val_size=128", "tolaria.data.test_size=128",
         "tolaria.data.image_size=16", "kasmina.lifecycle.min_training_epochs=1", "kasmina.lifecycle.blend_steps=2",
         "kasmina.lifecycle.shadow_steps=1", "kasmina.lifecycle.probation_steps=1", "simic.env.max_epochs=8"]


def synthetic_batch(T: int, K: int, D: int, A: int, rng: np.random.Generator, episode_len: int = 25) -> TrajectoryBatch:
    masks = rng.random((T, K, A)) < 0.4
    masks[..., 0] = True
    actions = np.array([[rng.choice(np.flatnonzero(masks[t, k])) for k in range(K)] for t in range(T)], np.int64)
    steps = (np.arange(T)[:, None] + rng.integers(0, episode_len, K)[None]) % episode_len
    return TrajectoryBatch(obs=rng.normal(size=(T, K, D)).astype(np.float32), actions=actions, masks=masks,
                           log_probs=np.log(1.0 / masks.sum(-1)).astype(np.float32),
                           values=rng.normal(size=(T, K)).astype(np.float32),
                           rewards=rng.normal(0, 0.1, size=(T, K)).astype(np.float32),
                           dones=steps == episode_len - 1, last_obs=rng.normal(size=(K, D)).astype(np.float32),
                           policy_version=0)


def bench_learner(T: int, K: int, repeats: int, device: str) -> list[dict]:
    schema, space = schema_and_space(KasminaConfig())
    cfg = PPOConfig()
    torch.manual_seed(0)
    learner = PPOLearner(make_network(schema, space, TamiyoConfig().network.hidden), cfg, schema, space,
                         torch.device(device))
    rng = np.random.default_rng(0)
    batches = [synthetic_batch(T, K, schema.size, space.n, rng) for _ in range(repeats + 1)]
    out = []
    for mode in ("on_policy", "stale"):
        times, epochs = [], []
        for i, batch in enumerate(batches):          # fresh data each update; the first is warm-up
            batch.policy_version = learner.version - (1 if mode == "stale" else 0)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            stats = learner.update([batch])
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i:
                times.append(time.perf_counter() - t0)
                epochs.append(stats.epochs_run)
        n = batch.num_transitions
        med = float(np.median(times))
        per_epoch = float(np.median([t / e for t, e in zip(times, epochs)]))
        out.append({"figure": "learner_update", "device": device, "mode": mode, "T": T, "K": K,
                    "transitions": n, "D": schema.size, "A": space.n, "epochs": cfg.epochs,
                    "minibatches": cfg.minibatches, "mean_epochs_run": float(np.mean(epochs)),
                    "ms_per_update_median": round(med * 1e3, 2),
                    "ms_per_1k_transitions": round(med / n * 1e6, 2),
                    "transitions_per_s": round(n / med), "ms_per_epoch_median": round(per_epoch * 1e3, 2),
                    "ms_per_1k_transitions_per_epoch": round(per_epoch / n * 1e6, 2)})
    return out


def bench_trainer(quick: bool, num_envs: int, steps: int, iterations: int) -> dict:
    cfg = load_config(None, (QUICK if quick else []) + ["tolaria.training.device=cpu", "simic.ppo.device=cpu"])
    t0 = time.perf_counter()
    trainer = InProcessTrainer.from_config(cfg, seed=0, num_envs=num_envs, steps_per_sample=steps, policy="ppo",
                                           device="cpu")
    setup = time.perf_counter() - t0
    sample_s = update_s = 0.0
    episodes = 0
    for i in range(iterations + 1):                  # the first iteration is warm-up
        t0 = time.perf_counter()
        batch, eps = trainer.collect()
        t1 = time.perf_counter()
        trainer.learner.update([batch])
        trainer.policy.load_weights(trainer.learner.weights())
        t2 = time.perf_counter()
        if i:
            sample_s += t1 - t0
            update_s += t2 - t1
            episodes += len(eps)
    env_steps = iterations * num_envs * steps
    data = cfg.tolaria.data
    return {"figure": "in_process_trainer", "settings": "quick" if quick else "default", "device": "cpu",
            "train_size": data.train_size, "val_size": data.val_size, "image_size": data.image_size,
            "max_epochs": cfg.simic.env.max_epochs, "num_envs": num_envs, "steps_per_sample": steps,
            "iterations": iterations, "env_steps": env_steps, "episodes_done": episodes,
            "setup_s": round(setup, 2), "sample_s": round(sample_s, 2), "update_s": round(update_s, 3),
            "env_steps_per_s": round(env_steps / (sample_s + update_s), 3),
            "env_steps_per_s_sampling_only": round(env_steps / sample_s, 3),
            "update_share": round(update_s / (sample_s + update_s), 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny data settings for the trainer figure")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--device", default="cpu", help="learner device for the update figure")
    ap.add_argument("--repeats", type=int, default=5, help="timed updates per learner shape")
    ap.add_argument("--shapes", default="8x8,16x32,32x64", help="TxK learner batch shapes")
    ap.add_argument("--num-envs", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="trainer steps per sample")
    ap.add_argument("--iterations", type=int, default=None, help="timed trainer iterations (default 3 quick, 1 otherwise)")
    ap.add_argument("--skip-learner", action="store_true")
    ap.add_argument("--skip-trainer", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    print(json.dumps({"figure": "setup", "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                      "interop_threads": torch.get_num_interop_threads()}), flush=True)
    if not args.skip_learner:
        for shape in args.shapes.split(","):
            T, K = (int(x) for x in shape.split("x"))
            for row in bench_learner(T, K, args.repeats, args.device):
                print(json.dumps(row), flush=True)
    if not args.skip_trainer:
        iterations = args.iterations or (3 if args.quick else 1)
        print(json.dumps(bench_trainer(args.quick, args.num_envs, args.steps, iterations)), flush=True)


if __name__ == "__main__":
    main()
