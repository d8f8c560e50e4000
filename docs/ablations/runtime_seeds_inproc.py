"""PPO trained in process but with the Ray runtime's seeds (runner 0's episode stream and policy-sampling seed), then
scored greedily on the training seeds' validation accuracy: reproduces the runtime's result bit for bit.

    OMP_NUM_THREADS=1 python docs/ablations/runtime_seeds_inproc.py 103          # 40 updates, as the evaluation
    OMP_NUM_THREADS=1 python docs/ablations/runtime_seeds_inproc.py 103 120      # more updates, same seeds
"""
import sys
import tempfile
from esper.config import load_config
from esper.evaluation import load_evaluation_config, Checkpoint, run_episode
from esper.evaluation.episode import context_for
from esper.simic.environment import VectorEnv, SequentialEpisodes, derive_seed
from esper.simic.learning.sampler import Sampler
from esper.simic.learning.trainer import make_learner
from esper.simic.learning.checkpoint import save_checkpoint
cfg = load_evaluation_config("configs/evaluate/synthetic_cpu.yaml")
seed = int(sys.argv[1])
updates = int(sys.argv[2]) if len(sys.argv) > 2 else 40
rc = load_config(None, (), base=cfg.ppo_run_dict(seed))
ctx = context_for(rc)
vec = VectorEnv(ctx, 4, SequentialEpisodes(derive_seed(seed, 1000, 0), prefix="i0r0"))     # the runtime's runner 0
policy = ctx.make_policy("ppo", rc.tamiyo, seed=derive_seed(seed, 0, 0))
learner = make_learner(ctx.schema, ctx.space, rc.simic, rc.tamiyo, seed)
policy.load_weights(learner.weights())
sampler = Sampler(vec, policy)
for u in range(updates):
    batch, _ = sampler.sample(10)
    learner.update([batch])
    policy.load_weights(learner.weights())
d = tempfile.mkdtemp()
ck = save_checkpoint(d, learner.state_dict(), schema=ctx.schema, space=ctx.space)
c = Checkpoint.load(ck, rc.kasmina, name="x")
recs = [run_episode(cfg.run_dict(), c, s) for s in cfg.seeds.train]
print("RESULT runtime-seeds-inproc", seed, "updates", updates, [r.final_val_acc for r in recs], "fossil", [r.seeds_fossilized for r in recs])
