"""The GPU fast path, measured (issue: GPU fast path). CUDA only; writes JSON lines to stdout and, when
$OUT is set, to $OUT/bench_gpu.jsonl as it goes (a timeout still leaves the figures so far).

    python scripts/bench_gpu.py [--quick] [--anchor ../shared/tools/anchor]

Figures: env-epochs/s of the train phase and of the full step, eager vs captured, for the 6k host
with K = 1, 4, 16 and the 374k host; the ratio of the train phase to the raw-loop anchor's best
(CUDA-graph) loop in the same run; eager/captured agreement (bf16) over the 3 batches after each
graph-changing event; recapture counts; peak memory over >= 20 episodes.
The stepping loop under TORCH_CUDA_SANITIZER=1 is the separate `--sanitizer` mode (run it in its own
process: the sanitizer slows everything down).
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from esper.config import load_config
from esper.kasmina import GradientCollector, KasminaConfig, build_model
from esper.simic.environment.context import make_context
from esper.simic.environment.vector_env import SequentialEpisodes, VectorEnv
from esper.tolaria import TrainingConfig
from esper.tolaria.training import HostTrainer

OUT = Path(os.environ["OUT"]) / "bench_gpu.jsonl" if os.environ.get("OUT") else None
WIDTHS = {"6k": (8, 16, 32), "374k": (64, 128, 256)}


def emit(**kw) -> None:
    line = json.dumps(kw)
    print(line, flush=True)
    if OUT is not None:
        with open(OUT, "a") as f:
            f.write(line + "\n")


def config(width: str, quick: bool, capture: bool):
    n = 8192 if quick else 50_000
    return load_config(None, [f"tolaria.data.train_size={n}", "tolaria.data.val_size=5000", "tolaria.data.test_size=5000",
                              "tolaria.training.batch_size=512", "tolaria.training.eval_batch_size=2500",
                              f"tolaria.training.capture={str(capture).lower()}",
                              f"kasmina.host.widths={list(WIDTHS[width])}", "nissa.console=false"])


def throughput(width: str, k: int, capture: bool, quick: bool) -> dict:
    cfg = config(width, quick, capture)
    ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma, "cuda")
    vec = VectorEnv(ctx, k, SequentialEpisodes(0))
    vec.reset()
    cores = vec.cores

    def train_phase() -> float:
        for c in cores:
            c.begin_step(0)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(cores[0].batches_per_step):
            for i, c in enumerate(cores):
                with vec._stream(i):
                    c.train_batch()
        torch.cuda.synchronize()
        return time.perf_counter() - t0

    train_phase()                                   # warm-up and capture
    train_s = min(train_phase() for _ in range(2))
    vec.step(np.zeros(k, dtype=np.int64))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    vec.step(np.zeros(k, dtype=np.int64))
    step_s = time.perf_counter() - t0
    captures = sum(c.trainer.captures for c in cores)
    return {"train_env_epochs_per_s": k / train_s, "step_env_epochs_per_s": k / step_s, "captures": captures}


def anchor_best(anchor_dir: str, width: str, k: int) -> float | None:
    if not anchor_dir or not Path(anchor_dir, "gpu_anchor2.py").exists():
        return None
    sys.path.insert(0, anchor_dir)
    import gpu_anchor2

    b = gpu_anchor2.GraphBench(WIDTHS[width], k)
    b.epoch_graph()
    t = min(b.epoch_graph() for _ in range(2))
    scale = gpu_anchor2.N                             # anchor epochs are N images; ours may differ (quick)
    del b
    torch.cuda.empty_cache()
    return k / t, scale


def agreement() -> None:
    """Eager vs captured, bf16 autocast, over the 3 batches after each graph-changing event."""
    torch.manual_seed(0)
    shape = (3, 32, 32)
    model = build_model(KasminaConfig(), shape).cuda()
    twin = copy.deepcopy(model)
    cfg = TrainingConfig(amp=True)
    t_e = HostTrainer(model, cfg, GradientCollector(model, 1e-7, 1e3), capture=False)
    t_c = HostTrainer(twin, cfg, GradientCollector(twin, 1e-7, 1e3), capture=True)
    g = torch.Generator(device="cuda").manual_seed(1)
    batches = [(torch.randn(512, *shape, device="cuda", generator=g),
                torch.randint(0, 10, (512,), device="cuda", generator=g)) for _ in range(3)]

    def both(fn):
        for m, t in ((model, t_e), (twin, t_c)):
            fn(m, t)

    def germinate(m, t):
        with torch.random.fork_rng(devices=[torch.cuda.current_device()]):
            torch.manual_seed(5)
            m.slots[1].germinate("conv_enhance", 0)
        m.slots[1].tick(0)
        t.sync_optimizers()

    def advance(m, t):
        s = m.slots[1]
        s.observe(val_acc=0.5, contribution=0.1, grad_norm=1.0, vanishing=False, exploding=False)
        s.epochs_in_stage = 5
        s.advance(0)
        t.sync_optimizers()

    def cull(m, t):
        m.slots[1].cull(0, "bench")
        t.sync_optimizers()

    def rollback(m, t):
        t.invalidate()

    def load(m, t):                                   # optimizer state replaced, as on a checkpoint load
        t.host_opt.load_state_dict(copy.deepcopy(t.host_opt.state_dict()))
        t.invalidate()

    for name, event in (("start", lambda m, t: None), ("germination", germinate), ("stage_change", advance),
                        ("cull", cull), ("rollback", rollback), ("checkpoint_load", load)):
        both(event)
        for x, y in batches:
            t_e.train_step(x, y)
            t_c.train_step(x, y)
        torch.cuda.synchronize()
        diff = max(float((a.float() - b.float()).abs().max()) for a, b in
                   zip(model.state_dict().values(), twin.state_dict().values()))
        emit(figure="eager_vs_captured", event=name, max_abs_param_diff=diff,
             train_loss_diff=abs(float(t_e.train_metrics[0] - t_c.train_metrics[0])), captures=t_c.captures)


def memory(episodes: int, quick: bool) -> None:
    cfg = load_config(None, ["tolaria.data.train_size=4096", "tolaria.data.val_size=1024",
                             "tolaria.data.test_size=1024", "tolaria.training.batch_size=512",
                             "kasmina.lifecycle.min_training_epochs=1", "kasmina.lifecycle.blend_steps=2",
                             "kasmina.lifecycle.shadow_steps=1", "kasmina.lifecycle.probation_steps=1",
                             "simic.env.max_epochs=8", "nissa.console=false"])
    ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma, "cuda")
    vec = VectorEnv(ctx, 4, SequentialEpisodes(0))
    vec.reset()
    rng = np.random.default_rng(0)
    peaks, done = [], 0
    torch.cuda.reset_peak_memory_stats()
    while done < episodes:
        masks = vec.action_masks()
        actions = [rng.choice(np.flatnonzero(m)) for m in masks]
        _, _, term, trunc, _ = vec.step(actions)
        for _ in range(int((term | trunc).sum())):
            done += 1
            peaks.append(torch.cuda.max_memory_allocated() / 2**20)
    emit(figure="peak_memory_mib", episodes=done, first=round(peaks[0], 1), last=round(peaks[-1], 1),
         max=round(max(peaks), 1), recaptures=sum(c.trainer.captures for c in vec.cores))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="8k-image epochs instead of 50k")
    p.add_argument("--anchor", default=str(Path(__file__).resolve().parents[2] / "shared" / "tools" / "anchor"))
    p.add_argument("--sanitizer", action="store_true", help="only step a VectorEnv a few times (run under "
                                                            "TORCH_CUDA_SANITIZER=1)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("bench_gpu.py needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.backends.cudnn.benchmark = True
    emit(figure="device", name=torch.cuda.get_device_name(0), torch=torch.__version__, quick=args.quick)
    if args.sanitizer:
        cfg = config("6k", True, False)
        ctx = make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma, "cuda")
        vec = VectorEnv(ctx, 2, SequentialEpisodes(0))
        vec.reset()
        for _ in range(2):
            vec.step(np.zeros(2, dtype=np.int64))
        emit(figure="sanitizer", env=os.environ.get("TORCH_CUDA_SANITIZER"), passed=True)
        return 0
    agreement()
    for width, ks in (("6k", (1, 4, 16)), ("374k", (1, 4))):
        for k in ks:
            row = {}
            for capture in (False, True):
                r = throughput(width, k, capture, args.quick)
                row["captured" if capture else "eager"] = r
            anchor = anchor_best(args.anchor, width, k)
            cap, eag = row["captured"], row["eager"]
            emit(figure="env_epochs_per_s", host=width, k=k, eager_train=round(eag["train_env_epochs_per_s"], 3),
                 captured_train=round(cap["train_env_epochs_per_s"], 3),
                 captured_full_step=round(cap["step_env_epochs_per_s"], 3),
                 eager_full_step=round(eag["step_env_epochs_per_s"], 3), captures=cap["captures"],
                 anchor_best=None if anchor is None else round(anchor[0], 3),
                 ratio_to_anchor=None if anchor is None or args.quick else round(cap["train_env_epochs_per_s"] / anchor[0], 3))
    memory(20, args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
