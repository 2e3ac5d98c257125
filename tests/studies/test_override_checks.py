"""Study overrides fail at load / --plan with the key that is wrong (issue 29): a typo'd stage
name gets "no stage X; did you mean Y", and a non-finite stage config value fails `--plan` before
any stage runs."""

import pytest

from postlab.config import ConfigError
from postlab.studies.runner import StudyRunner
from postlab.studies.spec import load_study


def test_typod_stage_name_in_an_override_says_did_you_mean():
    with pytest.raises(ConfigError) as e:
        load_study("drift", preset="demo", overrides=["stages.math-drfit.config.epochs=2"])
    msg = str(e.value)
    assert "no stage 'math-drfit'" in msg and "Did you mean 'math-drift'?" in msg
    assert "kind is missing" not in msg


def test_an_override_may_still_add_a_stage_by_setting_its_kind():
    study = load_study("drift", preset="demo", overrides=["stages.extra-eval.kind=eval",
                                                          "stages.extra-eval.after=math-sft"])
    assert "extra-eval" in list(study.stages)


@pytest.mark.parametrize("override, key", [
    ("stages.math-drift.config.optim.lr=nan", "optim.lr"),
    ("stages.math-drift.config.weights.format_penalty=.inf", "weights.format_penalty"),
    ("stages.math-drift.config.optim.grad_clip=.nan", "optim.grad_clip"),
    ("stages.math-grpo.config.sampling.temperature=nan", "sampling.temperature"),
])
def test_plan_refuses_a_non_finite_stage_value(tmp_path, override, key):
    study = load_study("drift", preset="demo", overrides=[override])
    runner = StudyRunner(study, tmp_path)
    with pytest.raises(ConfigError, match=rf"{key}: must be a finite number"):
        runner.validate(runner.plan())
    assert not any(tmp_path.rglob("config.yaml"))  # no stage started


def test_plan_says_which_stages_a_disabled_stage_took_along(tmp_path, capsys):
    from postlab.cli.main import main

    # disabling an RL stage drops the evaluation that follows it: the plan says so
    assert main(["study", "drift", "--preset", "demo", "--plan", "--out", str(tmp_path),
                 "-s", "stages.math-grpo.enabled=false"]) == 0
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "not planned: eval-math-grpo (after math-grpo, which is disabled" in out
    assert "math-ref" in out  # the stages that stay are listed in the plan table
    assert "after gp-base" not in out  # the preset disables GeneralPoints itself: its design, not news
