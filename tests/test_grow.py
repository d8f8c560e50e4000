"""`esper grow` and `kasmina.load_grown`: a controller grows a network on a config's task and host, the
artifact rebuilds it bit for bit with no env and no Ray (weights_only loading), live seeds at the end
follow the documented rule, and bad input (controller, schedule, a checkpoint for another slot count)
is refused before any work. Tiny synthetic task (16×16 images, 256 training images), CPU.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import esper.grow as grow
from esper.cli import main as esper_main
from esper.config import config_to_dict, load_config
from esper.kasmina import (GROWN_FORMAT, LIVE_SEED_RULE, GrownModelError, KasminaConfig, build_grown, build_model,
                           grown_payload, load_grown, read_grown, save_grown, schema_and_space)
from esper.leyline import LEYLINE_VERSION, SeedStage
from esper.simic.environment import make_context
from esper.simic.learning.checkpoint import save_checkpoint
from esper.simic.learning.trainer import make_learner
from tiny import overrides

# tests/test_simic_env.py's TINY_DATA and TINY_LIFE, with gates that never refuse on a measured number,
# so a schedule germinating at step 1 reaches FOSSILIZED at step 7 of 9.
TINY = overrides("kasmina.lifecycle.contribution_threshold=-1.0e9", "kasmina.lifecycle.max_regression=1.0",
                 "simic.env.max_epochs=9")
SETS = [a for o in TINY for a in ("--set", o)]
SCHEDULE = "schedule:block1:conv_enhance:1"
TWO_SLOTS = "kasmina.slots=[block0, block1]"


def run_cli(capsys, *args: str, via_esper: bool = False) -> tuple[int, list[dict], str]:
    argv = [*SETS, *args]
    rc = esper_main(["grow", *argv]) if via_esper else grow.main(argv)
    out, err = capsys.readouterr()
    return rc, [json.loads(line) for line in out.splitlines() if line.strip()], err


@pytest.fixture(scope="module")
def cfg():
    return load_config(None, TINY)


@pytest.fixture(scope="module")
def ctx(cfg):
    return make_context(cfg.kasmina, cfg.tolaria, cfg.simic.env, cfg.simic.ppo.gamma)


@pytest.fixture(scope="module")
def grown(cfg, ctx, tmp_path_factory):
    """One episode with the schedule, through the library: the env's own model and the artifact."""
    path = str(tmp_path_factory.mktemp("grown") / "grown-seed0.pt")
    return grow.grow_one(ctx, cfg, grow.parse_controller(SCHEDULE, cfg), 0, path)


# ------------------------------------------------------------------------------------------ the CLI
def test_cli_grows_with_a_schedule_and_every_artifact_reloads_bit_for_bit(tmp_path, capsys):
    out = tmp_path / "out"
    rc, lines, err = run_cli(capsys, "--controller", SCHEDULE, "--seeds", "0", "1", "--out", str(out),
                             via_esper=True)
    assert rc == 0, err
    assert [line["seed"] for line in lines] == [0, 1]
    for line in lines:
        assert line["artifact"] == f"{out}/grown-seed{line['seed']}.pt"
        assert line["fossils"] == [{"slot": "block1", "blueprint": "conv_enhance"}] and line["dropped"] == []
        # nothing was dropped, so the saved model is the episode's model: the same accuracy, re-measured
        assert line["exported_test_acc"] == line["episode_test_acc"]
        assert line["params_added"] > 0 and line["steps"] == 9

        payload = read_grown(line["artifact"])
        model = load_grown(line["artifact"])
        assert not model.training                                  # load_grown returns eval mode
        assert torch.equal(model(payload["probe"]["input"]), payload["probe"]["output"])
        assert payload["format"] == GROWN_FORMAT and payload["leyline_version"] == LEYLINE_VERSION
        assert payload["live_seed_rule"] == LIVE_SEED_RULE
        assert payload["controller"] == {"kind": "schedule", "spec": SCHEDULE, "slot": "block1", "slot_index": 1,
                                         "blueprint": "conv_enhance", "germinate_at": 1}
        assert json.loads(payload["config"])["simic"]["env"]["max_epochs"] == 9
        slot1 = payload["structure"]["fossils"][1]
        assert slot1["slot"] == "block1" and [f["blueprint"] for f in slot1["fossils"]] == ["conv_enhance"]
        assert slot1["fossils"][0]["params"] == {"width_multiplier": 2.0, "kernel_size": 3}
        assert slot1["fossils"][0]["param_count"] == line["params_added"]
        log = payload["growth_log"]
        moves = [(r["from_stage"], r["to_stage"]) for r in log if r["from_stage"] != r["to_stage"]]
        assert ("DORMANT", "GERMINATED") == moves[0] and ("PROBATIONARY", "FOSSILIZED") in moves
        fossilized = next(r for r in log if r["to_stage"] == "FOSSILIZED")
        assert fossilized["gate"] == "G5" and fossilized["gate_passed"] and fossilized["slot"] == "block1"
        assert fossilized["seed"] == 1 and fossilized["step"] == 7 and fossilized["reason"]
        assert payload["decisions"][1]["action"].startswith("GERMINATE")


@pytest.mark.parametrize("controller", ["heuristic", "static"])
def test_cli_grows_with_the_heuristic_and_the_static_controller(tmp_path, capsys, controller):
    rc, lines, err = run_cli(capsys, "--controller", controller, "--out", str(tmp_path))
    assert rc == 0, err
    payload = read_grown(lines[0]["artifact"])
    assert payload["controller"]["kind"] == controller
    assert torch.equal(load_grown(lines[0]["artifact"])(payload["probe"]["input"]), payload["probe"]["output"])
    assert payload["episode"]["epochs"] == 9
    if controller == "static":
        assert lines[0]["fossils"] == [] and payload["growth_log"] == []


# ------------------------------------------------------------------------------------------ load_grown
def test_load_grown_equals_the_grown_model_bit_for_bit(grown):
    model = load_grown(grown.path)
    live = grown.model.eval()
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.equal(model(x), live(x))
    assert model.state_dict().keys() == live.state_dict().keys()
    assert sum(len(s.fossils) for s in model.slots) == 1
    assert [s.fossil_specs for s in model.slots] == [s.fossil_specs for s in live.slots]


def test_load_grown_needs_no_env_no_data_and_no_ray(grown):
    code = ("import sys, torch; from esper.kasmina import load_grown, read_grown; "
            f"m = load_grown({grown.path!r}); p = read_grown({grown.path!r}); "
            "assert torch.equal(m(p['probe']['input']), p['probe']['output']); "
            "bad = sorted(n for n in sys.modules if n == 'ray' or n.startswith(('ray.', 'esper.simic', 'esper.tolaria'))); "
            "assert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_grown_state_dict_needs_the_grown_structure(grown, cfg):
    """The old failure: a freshly built model cannot take a grown state_dict (the fossils' keys)."""
    state = grown.model.state_dict()
    assert any(".fossils." in k for k in state)
    with pytest.raises(RuntimeError, match="fossils"):
        build_model(cfg.kasmina, (3, 16, 16)).load_state_dict(state, strict=True)
    build_grown(grown.payload["structure"]).load_state_dict(state, strict=True)   # the recipe fixes it


def test_the_loaded_model_trains_fossils_included(grown):
    model = load_grown(grown.path).train()
    fossil = model.slots[1].fossils[0]
    ids = {id(p) for p in model.parameters()}
    assert all(id(p) in ids for p in fossil.parameters())
    before = [p.detach().clone() for p in fossil.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, fossil.parameters()))


def test_load_grown_reads_with_weights_only_and_refuses_other_objects(grown, cfg, tmp_path, monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    load_grown(grown.path)
    assert calls == [True]
    monkeypatch.undo()

    bad = tmp_path / "bad.pt"
    torch.save({**grown.payload, "extra": KasminaConfig()}, str(bad))     # an object weights_only refuses
    with pytest.raises(GrownModelError, match="weights_only"):
        load_grown(str(bad))
    other = tmp_path / "other.pt"
    torch.save({"format": 1, "learner": {}}, str(other))
    with pytest.raises(GrownModelError, match="not an Esper grown model"):
        load_grown(str(other))
    with pytest.raises(FileNotFoundError):
        load_grown(str(tmp_path / "missing.pt"))
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"junk")
    with pytest.raises(GrownModelError, match="torch.load cannot read it"):
        load_grown(str(junk))
    with pytest.raises(GrownModelError, match="plain data"):
        grown_payload(grown.model, cfg.kasmina, (3, 16, 16), extra=KasminaConfig())


# ------------------------------------------------------------------------------------------ live seeds
def test_live_seeds_at_the_end_are_dropped_and_the_cost_recorded(cfg, ctx, tmp_path, capsys):
    late = "schedule:block1:conv_enhance:5"       # still BLENDING/SHADOWING when the episode ends
    rc, lines, err = run_cli(capsys, "--controller", late, "--out", str(tmp_path))
    assert rc == 0, err
    assert "will be dropped" in err
    line = lines[0]
    assert line["fossils"] == [] and len(line["dropped"]) == 1
    assert line["dropped"][0]["slot"] == "block1" and line["dropped"][0]["stage"] in ("BLENDING", "SHADOWING",
                                                                                      "PROBATIONARY", "TRAINING")
    assert 0.0 <= line["exported_test_acc"] <= 1.0 and 0.0 <= line["episode_test_acc"] <= 1.0
    payload = read_grown(line["artifact"])
    last = payload["growth_log"][-1]
    assert last["to_stage"] == "CULLED" and "dropped" in last["reason"] and last["seed"] == 1
    assert payload["exported"]["dropped"] == line["dropped"]
    # the saved model is the host alone: a freshly built model takes its state_dict strictly
    build_model(cfg.kasmina, (3, 16, 16)).load_state_dict(payload["state_dict"], strict=True)

    # grown_payload itself refuses a model that still holds a live seed
    model = build_model(cfg.kasmina, (3, 16, 16))
    model.slots[0].germinate("norm", 0)
    assert model.slots[0].stage is SeedStage.GERMINATED
    with pytest.raises(GrownModelError, match="live seed"):
        grown_payload(model, cfg.kasmina, (3, 16, 16))


def test_fossil_specs_follow_the_fossils(cfg):
    model = build_model(cfg.kasmina, (3, 16, 16))
    slot = model.slots[2]
    slot.add_fossil("depthwise", {"kernel_size": 5})
    assert slot.fossil_specs == [{"blueprint": "depthwise", "params": {"kernel_size": 5}}] and len(slot.fossils) == 1
    slot.reset()
    assert slot.fossil_specs == [] and len(slot.fossils) == 0


def test_save_and_load_through_the_library(grown, tmp_path):
    path = save_grown(str(tmp_path / "copy.pt"), grown.payload)
    x = grown.payload["probe"]["input"]
    assert torch.equal(load_grown(path)(x), grown.payload["probe"]["output"])


# ------------------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def two_slot_run(tmp_path_factory):
    """A PPO checkpoint (fresh learner) for a 2-slot config."""
    cfg2 = load_config(None, TINY + [TWO_SLOTS])
    schema, space = schema_and_space(cfg2.kasmina)
    learner = make_learner(schema, space, cfg2.simic, cfg2.tamiyo, seed=0)
    run_dir = str(tmp_path_factory.mktemp("ppo-run"))
    path = save_checkpoint(run_dir, learner.state_dict(), schema=schema, space=space, config=config_to_dict(cfg2))
    return run_dir, path


def _no_work(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("esper grow started work before refusing its arguments")

    monkeypatch.setattr(grow, "make_context", fail)


@pytest.mark.parametrize("which", ["run_dir", "file"])
def test_a_checkpoint_for_another_slot_count_is_refused_with_a_clear_message(two_slot_run, tmp_path, capsys,
                                                                               monkeypatch, which):
    _no_work(monkeypatch)
    controller = two_slot_run[0] if which == "run_dir" else two_slot_run[1]
    rc, lines, err = run_cli(capsys, "--controller", controller, "--out", str(tmp_path / "out"))
    assert rc == 2 and lines == []
    assert err.startswith("error: ") and "Traceback" not in err
    assert "trained for 2 slot(s)" in err and "this config has 3 slot(s)" in err
    assert "kasmina.slots=['block0', 'block1']" in err and "fits only hosts with its slot count" in err
    assert not (tmp_path / "out").exists()


def test_a_fitting_checkpoint_grows_greedily(two_slot_run, tmp_path, capsys):
    rc, lines, err = run_cli(capsys, "--set", TWO_SLOTS, "--controller", two_slot_run[0], "--out", str(tmp_path))
    assert rc == 0, err
    payload = read_grown(lines[0]["artifact"])
    assert payload["controller"]["kind"] == "checkpoint" and payload["controller"]["greedy"] is True
    assert payload["structure"]["slots"] == ["block0", "block1"]
    assert all("most likely" in d["reason"] for d in payload["decisions"])
    assert torch.equal(load_grown(lines[0]["artifact"])(payload["probe"]["input"]), payload["probe"]["output"])


# ------------------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("controller, expected", [
    ("ppo", "pass its file (.pt) or run directory"),
    ("heuristics", "is not a controller"),
    ("schedule", "schedule:SLOT:BLUEPRINT:STEP"),
    ("schedule:block1:conv_enhance", "schedule:SLOT:BLUEPRINT:STEP"),
    ("schedule:block9:conv_enhance:1", "['block0', 'block1', 'block2']"),
    ("schedule:7:conv_enhance:1", "unknown slot '7'"),
    ("schedule:block1:nope:1", "kasmina.blueprints are ['norm', 'attention', 'depthwise', 'conv_enhance']"),
    ("schedule:block1:conv_enhance:9", "STEP must be an integer in [0, 9)"),
    ("schedule:block1:conv_enhance:x", "STEP must be an integer"),
])
def test_bad_controllers_are_refused_before_any_work(tmp_path, capsys, monkeypatch, controller, expected):
    _no_work(monkeypatch)
    rc, lines, err = run_cli(capsys, "--controller", controller, "--out", str(tmp_path / "out"))
    assert rc == 2 and lines == []
    assert err.startswith("error: ") and expected in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unusable_checkpoints_and_bad_arguments_are_refused(tmp_path, capsys, monkeypatch):
    _no_work(monkeypatch)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    empty = tmp_path / "empty-run"
    empty.mkdir()
    cases = [(["--controller", str(junk)], "cannot use this checkpoint"),
             (["--controller", str(empty)], "no checkpoint in"),
             (["--controller", "static", "--seeds", "-1"], "non-negative"),
             (["--controller", "static", "--seeds", "1", "1"], "distinct"),
             (["--controller", "static", "--out", str(junk)], "is a file")]
    for args, expected in cases:
        argv = list(args) if "--out" in args else [*args, "--out", str(tmp_path / "out")]
        rc, lines, err = run_cli(capsys, *argv)
        assert rc == 2 and lines == [], (args, err)
        assert err.startswith("error: ") and expected in err and "Traceback" not in err, (args, err)
