"""The same PPO settings trained in process vs through the Ray runtime, then scored greedily on the training seeds'
validation accuracy (configs/evaluate/synthetic_cpu.yaml; no evaluation seed is touched).

    OMP_NUM_THREADS=1 python docs/ablations/runtime_gap.py 103 inproc
    OMP_NUM_THREADS=1 python docs/ablations/runtime_gap.py 103 runtime
"""
import sys
import tempfile
from esper.evaluation import load_evaluation_config, InProcessExecutor, Checkpoint, run_episode
from esper.config import load_config
cfg = load_evaluation_config("configs/evaluate/synthetic_cpu.yaml")
seed, mode = int(sys.argv[1]), sys.argv[2]
run = cfg.ppo_run_dict(seed)
d = tempfile.mkdtemp()
if mode == "inproc":
    ck = InProcessExecutor().train_ppo(run, seed, d)
else:
    import ray
    from esper.runtime.session import run_in_session
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    ck = run_in_session(load_config(None, ["nissa.console=false"], base=run), run_dir=d)["checkpoint"]
    ray.shutdown()
c = Checkpoint.load(ck, cfg.run_config().kasmina, name="x")
recs = [run_episode(cfg.run_dict(), c, s) for s in cfg.seeds.train]
print("RESULT", mode, seed, [r.final_val_acc for r in recs], "fossil", [r.seeds_fossilized for r in recs])
