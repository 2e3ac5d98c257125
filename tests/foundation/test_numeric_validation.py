"""Every float config value is finite (issue 29): NaN slips through checks written as `x <= 0`, and
"nan" / ".inf" parse as floats, so the config layer (postlab.config._coerce) owns the check for every
float field of every trainer, the rollout job and the study stages (at load and at `study --plan`)."""

import dataclasses
import importlib
import types
import typing

import pytest

from postlab.config import ConfigError, load_config

CONFIGS = {  # class -> overrides that make its defaults valid
    "postlab.trainers.sft:SFTConfig": ["model.preset=nano"],
    "postlab.trainers.rl:RLConfig": ["model.preset=nano"],
    "postlab.trainers.rasft:RASFTConfig": ["model.preset=nano"],
    "postlab.trainers.rft:RFTConfig": ["model.preset=nano"],
    "postlab.trainers.drift:DRIFTConfig": ["model.preset=nano", "data.paths=[t.jsonl]"],
    "postlab.rollout.offline:RolloutJobConfig": ["model=ckpt"],
}


def config_class(name):
    module, cls = name.split(":")
    return getattr(importlib.import_module(module), cls)


def float_keys(cls, prefix=""):
    """Dotted keys of every float leaf (and float tuple) of a config class tree."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
        for a in args:
            if a is float:
                yield prefix + f.name, "{}"
            elif typing.get_origin(a) is tuple and float in typing.get_args(a):
                yield prefix + f.name, "[{}, 0.5]"
            elif dataclasses.is_dataclass(a):
                yield from float_keys(a, prefix + f.name + ".")


CASES = [(name, key, form) for name in CONFIGS for key, form in dict(float_keys(config_class(name))).items()]


def test_the_walk_finds_the_fields_the_issue_names():
    keys = {f"{n.split(':')[1]}.{k}" for n, k, _ in CASES}
    for want in ("RLConfig.optim.lr", "RLConfig.sampling.temperature", "RASFTConfig.routing.rollout_weight_scale",
                 "RASFTConfig.routing.advantage_tanh", "RFTConfig.sampling.temperature", "SFTConfig.optim.grad_clip",
                 "SFTConfig.optim.weight_decay", "DRIFTConfig.weights.format_penalty",
                 "DRIFTConfig.weights.repetition_coef", "RolloutJobConfig.temperature", "SFTConfig.optim.betas"):
        assert want in keys
    assert len(CASES) > 70


@pytest.mark.parametrize("value", ["nan", ".nan", ".inf", "-.inf", "inf", "-inf", "1e999"])
@pytest.mark.parametrize("name,key,form", CASES, ids=[f"{n.split(':')[1]}.{k}" for n, k, _ in CASES])
def test_every_float_field_refuses_non_finite_values(name, key, form, value):
    cls = config_class(name)
    load_config(cls, None, CONFIGS[name])  # the base is valid
    with pytest.raises(ConfigError, match=rf"{key.split('.')[-1]}.*must be a finite number"):
        load_config(cls, None, [*CONFIGS[name], f"{key}={form.format(value)}"])


def test_non_finite_in_a_yaml_file_too(tmp_path):
    from postlab.trainers.sft import SFTConfig

    p = tmp_path / "c.yaml"
    p.write_text("model: {preset: nano}\noptim: {lr: .nan}\n")
    with pytest.raises(ConfigError, match=r"optim\.lr: must be a finite number, got nan"):
        load_config(SFTConfig, p)


def test_a_field_may_allow_non_finite_values():
    @dataclasses.dataclass
    class Limits:
        NONFINITE = ("ceiling",)
        ceiling: float = float("inf")
        floor: float = 0.0

    assert load_config(Limits, None, ["ceiling=.inf"]).ceiling == float("inf")
    with pytest.raises(ConfigError, match="floor: must be a finite number"):
        load_config(Limits, None, ["floor=.inf"])


@pytest.mark.parametrize("argv", [
    ["rejuvenate", "--base", "b", "--sft", "s", "--out", "o", "--alpha", "nan"],
    ["rejuvenate", "--base", "b", "--sft", "s", "--out", "o", "--fraction", "inf"],
    ["rejuvenate", "--base", "b", "--sft", "s", "--out", "o", "--omega", "NaN"],
    ["diagnose", "c", "--base", "b", "--env", "math", "--tau", "nan"],
    ["diagnose", "c", "--base", "b", "--env", "math", "--perturb-eps", "inf"],
    ["eval", "c", "--env", "math", "--temperature", "nan"],
])
def test_cli_float_options_refuse_non_finite_values(argv, capsys):
    from postlab.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "must be a finite number" in capsys.readouterr().err
