"""Recipes + overrides -> RunConfig: shipped recipes validate, every override form, errors reported all at once."""

from __future__ import annotations

import ast
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mmpt.config import RECIPES_DIR, config_hash, dump_config, load_config, read_recipe, recipe_names, save_resolved
from mmpt.config.load import component_registries, config_from_dict
from mmpt.config.recipes import read_header, recipe_kind, resolve_recipe
from mmpt.errors import ConfigError
from mmpt.registry import Registry

RECIPE_FILES = sorted(p for p in RECIPES_DIR.rglob("*.yaml") if recipe_kind(p) == "tune")
QUICK = "quick/depth_deep_prompt"


def _name(path: Path) -> str:
    return path.relative_to(RECIPES_DIR).with_suffix("").as_posix()


def _errors(recipe: str | Path, overrides: list[str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(recipe, overrides)
    return info.value.message


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_expected_recipes_are_shipped() -> None:
    expected = {f"nyuv2/{task}/{tuner}" for task in ("depth", "semseg")
                for tuner in ("linear_probe", "deep_prompt", "prompt_pool", "lora", "full")}  # fmt: skip
    quick = {"quick/depth_deep_prompt", "quick/semseg_deep_prompt"}
    pretrain = {"pretrain/multimae_tiny_synth", "pretrain/multimae_tiny_synth_stage1"}
    bench = {"bench/quick_synth", "bench/nyuv2_vitb"}
    assert expected | quick | pretrain | bench == set(recipe_names())


@pytest.mark.parametrize("path", RECIPE_FILES, ids=_name)
def test_every_shipped_recipe_validates(path: Path) -> None:
    raw = read_recipe(path)
    registries = component_registries()
    for kind in ("tuner", "head"):
        registry = registries[kind]
        if registry is not None and raw[kind]["name"] not in registry:
            pytest.skip(f"{kind} '{raw[kind]['name']}' is not registered yet")
    cfg = load_config(path)
    name = _name(path)
    assert cfg.task.name in name and cfg.tuner["name"] in name  # the file name says what it runs
    assert cfg.task.loss == {"depth": "berhu", "semseg": "ce"}[cfg.task.name]
    assert cfg.task.name not in cfg.data.inputs
    command, description = read_header(path)
    assert path.read_text().startswith(f"# mmpt tune {name}")  # the recipe opens with its own command
    assert command.startswith(f"mmpt tune {name}") and len(description) > 40
    if name.startswith("nyuv2/"):
        assert cfg.backbone.source == "multimae-b" and cfg.data.image_size == 256 and "data.root=" in command
    else:
        assert cfg.data.image_size <= 128 and cfg.data.batch_size <= 8 and cfg.train.steps <= 50
        assert cfg.train.eval_every <= cfg.train.steps


def test_a_shipped_name_resolves_with_or_without_suffix_and_a_local_file_wins(tmp_path: Path) -> None:
    shipped = RECIPES_DIR / "nyuv2/depth/lora.yaml"
    assert resolve_recipe("nyuv2/depth/lora") == resolve_recipe("nyuv2/depth/lora.yaml") == shipped
    local = tmp_path / "nyuv2/depth/lora.yaml"
    local.parent.mkdir(parents=True)
    _write(local, "task: {name: semseg}\n")
    assert resolve_recipe(local) == local
    with pytest.raises(ConfigError, match=r"neither a file nor a shipped recipe\. Did you mean 'nyuv2/depth/lora'\?"):
        resolve_recipe("nyuv2/depth/lorra")


def test_top_level_recipes_link_is_the_package_directory() -> None:
    link = Path(__file__).resolve().parent.parent / "recipes"
    if not link.is_symlink():
        pytest.skip("this checkout has no symlink support (recipes resolve from mmpt/recipes regardless)")
    assert link.resolve() == RECIPES_DIR


def test_overrides_of_each_kind(tmp_path: Path) -> None:
    cfg = load_config(
        QUICK,
        [
            "train.lr=3e-4",  # YAML 1.1 would read this as a string
            "train.steps=7",
            "data.augment=false",
            "train.grad_clip=null",
            "backbone=/ckpt/tiny.pth",  # shorthand for backbone.source
            "name=2024",  # a number for a str field
            "tuner.num_tokens=3",
            "data.inputs=rgb",  # a scalar for a list field
        ],
    )
    assert cfg.train.lr == 3e-4 and isinstance(cfg.train.lr, float)
    assert cfg.train.steps == 7 and cfg.data.augment is False and cfg.train.grad_clip is None
    assert cfg.backbone.source == "/ckpt/tiny.pth" and cfg.backbone.num_heads == 4  # the other keys stay
    assert cfg.name == "2024" and cfg.tuner == {"name": "deep_prompt", "num_tokens": 3} and cfg.data.inputs == ["rgb"]
    rgbd = load_config("quick/semseg_deep_prompt", ["data.inputs=[rgb,depth]", "train.lr=1"])
    assert rgbd.data.inputs == ["rgb", "depth"] and rgbd.train.lr == 1.0 and isinstance(rgbd.train.lr, float)


def test_switching_a_component_drops_the_old_options_in_any_order() -> None:
    for overrides in (["tuner=lora", "tuner.rank=4"], ["tuner.rank=4", "tuner.name=lora"]):
        assert load_config(QUICK, overrides).tuner == {"name": "lora", "rank": 4}
    assert load_config(QUICK, ["tuner={name: lora, targets: qkv}"]).tuner == {"name": "lora", "targets": ["qkv"]}
    semseg = load_config("quick/semseg_deep_prompt", ["head=linear", "tuner=deep_prompt"])  # same names: kept
    assert semseg.head == {"name": "linear", "shuffle": 4} and semseg.tuner == {"name": "deep_prompt", "num_tokens": 4}
    heads = component_registries()["head"]
    if heads is not None and "dpt" in heads:  # the recipes' comments offer head=dpt; the linear `shuffle` must go
        assert load_config("quick/semseg_deep_prompt", ["head=dpt"]).head == {"name": "dpt"}


def test_tilde_deletes_a_key_so_it_falls_back_to_its_default() -> None:
    cfg = load_config(QUICK, ["~train.lr", "~tuner.num_tokens", "~backbone", "~train.head_lr"])
    assert cfg.train.lr == 1e-3  # the dataclass default; the recipe says 5e-3
    assert cfg.tuner == {"name": "deep_prompt"} and cfg.backbone.source == "multimae-b"
    message = _errors(QUICK, ["~train.lrr"])
    assert "~train.lrr: unknown key 'train.lrr'. Did you mean 'lr'?" in message


def test_all_problems_are_reported_at_once() -> None:
    message = _errors(
        QUICK,
        ["train.lrr=1", "train.steps=abc", "data.batch_size=0", "tuner.num_tokenz=3", "taks.name=x", "train.lr=-1"],
    )
    assert message.startswith("6 problems in ")
    for part in (
        "unknown key 'train.lrr'. Did you mean 'lr'?",
        "train.steps='abc' has the wrong type (str); expected int.",
        "data.batch_size=0 is invalid; expected > 0.",
        "unknown key 'tuner.num_tokenz'. Did you mean 'num_tokens'?",
        "unknown key 'taks'. Did you mean 'task'? Valid keys at the top level: backbone, data, task, tuner, head,",
        "train.lr=-1.0 is invalid; expected > 0.",  # still checked although train also had a bad key
    ):
        assert part in message


def test_unknown_key_lists_the_valid_keys_at_its_level() -> None:
    message = _errors(QUICK, ["data.imagesize=64"])
    assert "unknown key 'data.imagesize'. Did you mean 'image_size'?" in message
    valid = [f.name for f in dataclasses.fields(load_config(QUICK).data)]
    assert f"Valid keys in data: {', '.join(valid)}." in message
    assert "Valid keys in tuner: name, num_tokens, layers, dropout, gated." in _errors(QUICK, ["tuner.prompts=3"])


def test_wrong_types_name_the_key_the_value_and_the_type() -> None:
    message = _errors(QUICK, ["train.steps=true", "data.inputs={a: 1}", "backbone.num_heads=four", "tuner.gated=2"])
    assert "train.steps=True has the wrong type (bool); expected int." in message
    assert "data.inputs={'a': 1} has the wrong type (dict); expected list of str." in message
    assert "backbone.num_heads='four' has the wrong type (str); expected int or null." in message
    assert "tuner.gated=2 has the wrong type (int); expected bool." in message


def test_bad_values_come_from_the_dataclass_checks() -> None:
    message = _errors(QUICK, ["train.optimizer=adam", "tuner.num_tokens=0"])
    assert "train.optimizer='adam' is invalid; expected 'adamw' or 'sgd'." in message
    assert "tuner: DeepPromptConfig.num_tokens=0 must be an integer >= 1" in message
    # Checks across sections run once every section is valid on its own.
    message = _errors(QUICK, ["data.inputs=[rgb,depth]"])
    assert "data.inputs=['rgb', 'depth'] is invalid; expected input domains without the task's target" in message
    assert "Unknown tuner 'loraa'. Did you mean 'lora'?" in _errors(QUICK, ["tuner=loraa"])


def test_head_options_are_checked_against_the_head_config() -> None:
    if component_registries()["head"] is None:
        pytest.skip("mmpt.heads has no HEADS registry yet")
    assert "unknown key 'head.shufle'. Did you mean 'shuffle'?" in _errors(QUICK, ["head.shufle=4"])
    assert "head: linear head shuffle=3 is invalid" in _errors(QUICK, ["head.shuffle=3"])


@dataclass
class _FakeConfig:
    width: int = 4
    mode: str = "a"

    def __post_init__(self) -> None:
        if self.mode not in ("a", "b"):
            raise ConfigError(f"fake mode={self.mode!r} is invalid; expected 'a' or 'b'.")


@dataclass
class _FakeTask:
    losses: dict = field(default_factory=lambda: {"berhu": None, "l1": None})


def _fake_registries() -> dict[str, Registry | None]:
    tuners, tasks = Registry("tuner"), Registry("task")
    tuners.add("fake", type("FakeTuner", (), {"config_class": _FakeConfig}))
    tasks.add("depth", _FakeTask())
    return {"tuner": tuners, "head": None, "task": tasks}


def test_components_validate_against_any_registered_config_class() -> None:
    registries = _fake_registries()
    data = {"tuner": {"name": "fake", "width": 8}, "head": {"name": "anything", "x": 1}, "task": {"loss": "l1"}}
    cfg = config_from_dict(data, registries=registries)
    assert cfg.tuner == {"name": "fake", "width": 8} and cfg.head == {"name": "anything", "x": 1}  # no HEADS: kept
    bad = {"tuner": {"name": "fake", "widht": 1, "mode": "c"}, "head": {"name": "Bad-Name"}, "task": {"loss": "berhuu"}}
    with pytest.raises(ConfigError) as info:
        config_from_dict(bad, registries=registries)
    message = info.value.message
    assert "unknown key 'tuner.widht'. Did you mean 'width'? Valid keys in tuner: name, width, mode." in message
    assert "tuner: fake mode='c' is invalid" in message and "head.name='Bad-Name' is invalid" in message
    with pytest.raises(ConfigError, match=r"task.loss='berhuu' is not a depth loss. Did you mean 'berhu'\?"):
        config_from_dict({"task": {"loss": "berhuu"}}, registries=registries)


def test_a_float_without_a_dot_in_a_recipe_is_a_float(tmp_path: Path) -> None:
    recipe = _write(tmp_path / "r.yaml", "train: {lr: 1e-3, min_lr: 0}\n")
    cfg = load_config(recipe)
    assert cfg.train.lr == 1e-3 and cfg.train.min_lr == 0.0 and isinstance(cfg.train.min_lr, float)


def test_malformed_overrides_are_refused() -> None:
    for item, match in (("--lr=3", "looks like a flag"), ("train.lr", "has no '='"), ("~train.lr=1", "takes no value")):
        with pytest.raises(ConfigError, match=match):
            load_config(QUICK, [item])
    message = _errors(QUICK, ["data.inputs=[rgb", "train..lr=1", "train.lr.x=1"])
    assert "data.inputs='[rgb': the value is not valid YAML" in message
    assert "override key 'train..lr' is malformed" in message
    assert "train.lr.x: cannot set a key inside train.lr=0.005 (not a mapping)." in message


def test_a_recipe_can_start_from_a_base(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    _write(tmp_path / "base/common.yaml", "train: {lr: 0.01, steps: 9}\ntuner: {name: deep_prompt, num_tokens: 5}\n")
    child = _write(tmp_path / "child.yaml", "defaults: base/common.yaml\ntrain: {steps: 3}\ntuner: {name: lora}\n")
    cfg = load_config(child)
    assert (cfg.train.lr, cfg.train.steps) == (0.01, 3)  # merged key by key
    assert cfg.tuner == {"name": "lora"}  # another tuner replaces the base's options
    _write(tmp_path / "a.yaml", "defaults: b.yaml\n")
    _write(tmp_path / "b.yaml", "defaults: a.yaml\n")
    with pytest.raises(ConfigError, match="Recipe bases form a loop"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(_write(tmp_path / "c.yaml", "defaults: nope.yaml\n"))


@pytest.mark.parametrize("name", ["nyuv2/depth/lora", "nyuv2/semseg/prompt_pool", QUICK])
def test_dump_then_load_gives_the_same_config(name: str, tmp_path: Path) -> None:
    cfg = load_config(name, ["train.grad_clip=null", "train.mixed_precision=no", "name='1e3'", "output_dir=on"])
    assert (cfg.name, cfg.output_dir, cfg.train.mixed_precision) == ("1e3", "on", "no")  # strings, not 1000.0/True
    text = dump_config(cfg)
    assert text.index("backbone:") < text.index("data:") < text.index("train:")  # field order, not sorted
    assert load_config(_write(tmp_path / "dumped.yaml", text)) == cfg
    path = save_resolved(cfg, tmp_path / "run")
    assert path == tmp_path / "run/config.yaml" and load_config(path) == cfg
    assert f"config_hash {config_hash(cfg)}" in path.read_text().splitlines()[0]
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["config.yaml"]  # no temp file left behind


def test_config_hash_is_stable_and_sensitive() -> None:
    a = load_config(QUICK, ["train.lr=3e-4", "tuner.num_tokens=3"])
    b = load_config(QUICK, ["tuner.num_tokens=3", "train.lr=0.0003"])
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12 and int(config_hash(a), 16) >= 0
    assert config_hash(load_config(QUICK, ["train.lr=3.1e-4", "tuner.num_tokens=3"])) != config_hash(a)
    assert config_hash(load_config(QUICK, ["train.lr=3e-4", "tuner.num_tokens=4"])) != config_hash(a)


def test_the_config_package_imports_no_cli_libraries() -> None:
    """`import mmpt` must not pull typer/rich: no module of mmpt.config imports them at module level."""
    for path in (RECIPES_DIR.parent / "config").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:  # module level only; functions may import lazily
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not [n for n in names if n.split(".")[0] in ("typer", "rich", "click")], (path, names)
