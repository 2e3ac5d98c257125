"""`postlab train STAGE --config-help` lists every config key with its default, valid values and
meaning, generated from the config classes (issue 29: `--help` showed only `config` and `overrides`)."""

import dataclasses
import typing

import pytest

from postlab.cli.main import main
from postlab.confighelp import describe, field_comments
from postlab.trainers.registry import TRAINERS


def leaf_keys(cls, prefix=""):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaf_keys(hints[f.name], prefix + f.name + ".")
        elif f.init:
            yield prefix + f.name


@pytest.mark.parametrize("stage", list(TRAINERS))
def test_every_key_of_every_trainer_is_listed(stage, capsys):
    cls, _ = TRAINERS[stage].load()
    assert main(["train", stage, "--config-help"]) == 0
    out = capsys.readouterr().out
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert set(leaf_keys(cls)) <= listed
    assert "optim.lr" in listed and "[float, finite]" in out
    documented = [k for k, _, valid, meaning in describe(cls) if valid != "section" and meaning]
    assert len(documented) >= 10  # keys carry their meaning from the source comments (where the source has one)


def test_trainer_help_points_to_config_help(capsys):
    with pytest.raises(SystemExit):
        main(["train", "rl", "--help"])
    assert "--config-help" in capsys.readouterr().out


def test_rollout_config_help(capsys):
    assert main(["rollout", "--config-help"]) == 0
    out = capsys.readouterr().out
    assert "samples_per_prompt" in out and "DRIFT: 16 trajectories per prompt" in out


def test_comments_come_from_the_source_so_they_cannot_drift():
    from postlab.config import LoRAConfig, OptimConfig

    assert "peft's target_modules" in field_comments(LoRAConfig)["target_modules"]
    assert field_comments(OptimConfig)["warmup_ratio"] == "used when warmup_steps == 0"
