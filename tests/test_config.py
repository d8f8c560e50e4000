"""esper.config: composition of the packages' settings, YAML + --set overrides, errors that name the field."""
from __future__ import annotations

import importlib.resources

import pytest
import yaml

from esper.config import (
    DEFAULT_CONFIG_PATH,
    ConfigError,
    RunConfig,
    config_to_dict,
    default_config,
    dump_config,
    load_config,
    parse_override,
)
from esper.leyline import BLUEPRINT_IDS


def _write(tmp_path, tree, name="run.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(tree) if not isinstance(tree, str) else tree)
    return path


# ------------------------------------------------------------------------------------------ defaults
def test_defaults_validate():
    cfg = default_config()
    assert isinstance(cfg, RunConfig)
    # every default value passes full validation (pydantic does not validate defaults on its own)
    assert RunConfig.model_validate(config_to_dict(cfg)) == cfg
    assert load_config() == cfg
    assert cfg.kasmina.lifecycle.shortest_path_to_fossil() <= cfg.simic.env.max_epochs
    assert cfg.kasmina.blueprints == list(BLUEPRINT_IDS)


def test_packaged_default_file_is_the_dump_of_the_defaults():
    assert DEFAULT_CONFIG_PATH.is_file(), "esper/configs/default.yaml must ship with the package"
    assert DEFAULT_CONFIG_PATH.read_text() == dump_config(default_config()), \
        "regenerate esper/configs/default.yaml from dump_config(default_config())"
    shipped = importlib.resources.files("esper").joinpath("configs/default.yaml").read_text()
    assert shipped == DEFAULT_CONFIG_PATH.read_text()
    assert load_config(DEFAULT_CONFIG_PATH) == default_config()


def test_dump_load_round_trip(tmp_path):
    cfg = load_config(None, ["simic.env.max_epochs=40", "kasmina.host.widths=[16, 32, 64]",
                             "tolaria.training.grad_clip=null", "nissa.profile=research",
                             "kasmina.blueprint_params.conv_enhance.kernel_size=5", "runtime.runners=3"])
    text = dump_config(cfg)
    path = _write(tmp_path, text)
    again = load_config(path)
    assert again == cfg
    assert dump_config(again) == text
    assert again.kasmina.host.widths == (16, 32, 64)
    assert again.tolaria.training.grad_clip is None


# ------------------------------------------------------------------------------------------ files and overrides
def test_yaml_file_then_overrides(tmp_path):
    path = _write(tmp_path, {"seed": 7, "simic": {"env": {"max_epochs": 30}},
                             "tolaria": {"training": {"batch_size": 32}}})
    cfg = load_config(path, ["simic.env.max_epochs=40", "nissa.console=false", "tamiyo.network.hidden=[64, 32]",
                             "runtime.envs_per_runner=4", "simic.ppo.lr=1.5e-4", "storage.run_dir=/tmp/runs"])
    assert cfg.seed == 7 and cfg.tolaria.training.batch_size == 32          # from the file
    assert cfg.simic.env.max_epochs == 40                                   # the override wins over the file
    assert cfg.nissa.console is False
    assert cfg.tamiyo.network.hidden == [64, 32]
    assert cfg.runtime.envs_per_runner == 4 and isinstance(cfg.runtime.envs_per_runner, int)
    assert cfg.simic.ppo.lr == pytest.approx(1.5e-4)
    assert cfg.storage.run_dir == "/tmp/runs"
    assert cfg.simic.env.reward == default_config().simic.env.reward         # untouched sections keep defaults


@pytest.mark.parametrize(("text", "path", "value"), [
    ("a.b=3", ["a", "b"], 3),
    ("a.b=true", ["a", "b"], True),
    ("a.b=[1, 2]", ["a", "b"], [1, 2]),
    ("a.b=0.5", ["a", "b"], 0.5),
    ("a.b=x=y", ["a", "b"], "x=y"),
    ("a.b=", ["a", "b"], None),
    (" seed = 4 ", ["seed"], 4),
])
def test_parse_override_types(text, path, value):
    assert parse_override(text) == (path, value)


def test_override_errors():
    with pytest.raises(ConfigError, match="section.field=value"):
        load_config(None, ["simic.env.max_epochs"])
    with pytest.raises(ConfigError, match="empty field name"):
        load_config(None, ["=3"])
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(None, ["seed=[1, 2"])


def test_override_into_a_value_is_refused(tmp_path):
    path = _write(tmp_path, {"seed": 3})
    with pytest.raises(ConfigError, match="seed is a value, not a section"):
        load_config(path, ["seed.x=1"])


def test_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- 1\n- 2\n"))
    assert load_config(_write(tmp_path, "", name="empty.yaml")) == default_config()


# ------------------------------------------------------------------------------------------ errors name the field
@pytest.mark.parametrize(("override", "dotted", "valid"), [
    ("kasmina.lifecyle.blend_steps=2", "kasmina.lifecyle", ["lifecycle", "host", "slots"]),
    ("simic.env.rewrd.param_rent=0.1", "simic.env.rewrd", ["reward", "max_epochs", "governor"]),
    ("tolaria.training.batchsize=8", "tolaria.training.batchsize", ["batch_size", "lr"]),
    ("seeed=1", "seeed", ["seed", "kasmina", "simic"]),
])
def test_unknown_field_names_it_and_lists_valid_fields(override, dotted, valid):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    msg = str(info.value)
    assert f"{dotted}: unknown field" in msg
    for name in valid:
        assert repr(name) in msg


def test_unknown_field_in_a_file(tmp_path):
    path = _write(tmp_path, {"kasmina": {"host": {"widht": [8, 8, 8]}}})
    with pytest.raises(ConfigError, match=r"kasmina\.host\.widht: unknown field.*'widths'"):
        load_config(path)


@pytest.mark.parametrize(("override", "field", "hint"), [
    ("tolaria.training.batch_size=0", "tolaria.training.batch_size", "greater than or equal to 1"),
    ("tolaria.training.lr=fast", "tolaria.training.lr", "fast"),
    ("nissa.profile=verbose", "nissa.profile", "research"),
    ("kasmina.host.kind=vgg", "kasmina.host.kind", "resnet18"),
    ("kasmina.host.widths=[8, 16]", "kasmina.host.widths", ""),
    ("kasmina.blueprints=[norm, bogus]", "kasmina.blueprints", "conv_enhance"),
    ("kasmina.blueprint_params.norm.group=2", "kasmina.blueprint_params", "groups"),
    ("kasmina.blueprint_params.resnext.depth=2", "kasmina.blueprint_params", "resnext"),
    ("runtime.mode=eventually", "runtime.mode", "async"),
    ("tolaria.data.train_size=10", "tolaria.data.train_size", "64"),
])
def test_bad_value_names_the_field(override, field, hint):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    msg = str(info.value)
    assert f"  {field}" in msg and hint in msg


def test_max_epochs_shorter_than_the_lifecycle_is_refused():
    need = default_config().kasmina.lifecycle.shortest_path_to_fossil()
    with pytest.raises(ConfigError, match=r"simic\.env\.max_epochs=5") as info:
        load_config(None, ["simic.env.max_epochs=5"])
    assert str(need) in str(info.value)
    load_config(None, [f"simic.env.max_epochs={need}"])                        # exactly enough is fine
    with pytest.raises(ConfigError, match="max_epochs"):
        load_config(None, ["kasmina.lifecycle.blend_steps=30"])                  # or a lifecycle too long
    assert load_config(None, ["kasmina.lifecycle.blend_steps=30", "simic.env.max_epochs=60"])


def test_restricting_blueprints_keeps_the_default_settings_valid():
    cfg = load_config(DEFAULT_CONFIG_PATH, ["kasmina.blueprints=[norm, depthwise]"])
    assert cfg.kasmina.blueprints == ["norm", "depthwise"]


def test_dataset_specific_values():
    cfg = load_config(None, ["tolaria.data.dataset=cifar10", "tolaria.data.root=/data", "tolaria.data.train_size=0"])
    assert cfg.tolaria.data.train_size == 0
    with pytest.raises(ConfigError, match="tolaria.data.train_size"):
        load_config(None, ["tolaria.data.train_size=0"])                        # synthetic needs a size


def test_load_config_leaves_its_base_tree_untouched():
    base = {"nissa": {"console": True}, "seed": 3}
    cfg = load_config(None, ["nissa.console=false", "seed=4"], base=base)
    assert cfg.nissa.console is False and cfg.seed == 4
    assert base == {"nissa": {"console": True}, "seed": 3}
