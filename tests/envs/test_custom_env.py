"""Bring your own environment: a class outside postlab, named by import path, trains (`postlab train rl`),
evaluates (`postlab eval`) and runs as a study stage without being registered; the env registry rejects
duplicate names; bad import paths fail with an error that names the key, the module and what is valid."""

import json
import sys
import textwrap

import pytest

from postlab.cli.main import main
from postlab.config import ConfigError
from postlab.envs import ENV_REGISTRY, Env, make, register_env
from postlab.envs.base import env_class, is_single_answer, missing_single_answer_methods

MODULE = "byo_echo_env"  # a name no other test uses: the module stays in sys.modules for this file only
KEY = f"{MODULE}:EchoDigit"

ENV_SOURCE = textwrap.dedent('''
    """A custom environment outside postlab: say the digit you are shown."""

    from postlab.envs import Env, Observation, StepResult


    class EchoDigit(Env):
        """Say the digit shown; OOD shows digits that ID never does."""

        splits = ("id", "ood")
        diagnostics = ("first_char",)  # a category evaluation counts on each first attempt

        def reset(self, seed):
            self.digit = str(seed % 5 + (5 if self.split == "ood" else 0))
            return Observation([{"role": "user", "content": f"say {self.digit}"}])

        def step(self, text):
            ok = self.check_answer(text.strip())
            kind = "digit" if text[:1].isdigit() else "other"
            return StepResult([], 1.0 if ok else 0.0, True, ok, {"first_char": kind})

        def expert(self):
            return self.digit

        # the optional single-answer protocol (postlab.envs.base.SingleAnswerEnv): RASFT, RFT and
        # the unary-feedback wrapper can use this env too
        def check_answer(self, answer):
            return answer == self.digit

        def expert_answer(self):
            return self.digit

        def base_corpus(self, n, seed=0):
            return [f"say {i % 10} gives {i % 10}" for i in range(n)]


    def not_an_env():
        return 1
''')

RUN = {"progress": False, "tensorboard": False, "device": "cpu"}


@pytest.fixture(scope="module")
def env_dir(tmp_path_factory):
    """The custom env's folder, on sys.path (as PYTHONPATH puts it there for `postlab ...`)."""
    d = tmp_path_factory.mktemp("byo")
    (d / f"{MODULE}.py").write_text(ENV_SOURCE)
    (d / "broken_env.py").write_text("import byo_missing_dependency  # noqa\n")
    sys.path.insert(0, str(d))
    yield d
    sys.path.remove(str(d))
    for name in (MODULE, "broken_env"):
        sys.modules.pop(name, None)


@pytest.fixture
def fresh_names():
    """Names registered by a test are removed afterwards: the registry is process-global."""
    before = set(ENV_REGISTRY)
    yield
    for name in set(ENV_REGISTRY) - before:
        del ENV_REGISTRY[name]


# ----------------------------------------------------------------------------- end to end


def test_custom_env_trains_evaluates_and_runs_as_a_study_stage(env_dir, tmp_path, capsys):
    base = tmp_path / "base"
    assert main(["model", "init", "--preset", "nano", "--out", str(base)]) == 0

    # postlab train rl with env.name: module:Class
    cfg = tmp_path / "rl.yaml"
    cfg.write_text(json.dumps({
        "model": {"path": str(base)},
        "env": {"name": KEY, "eval_splits": ["ood"], "eval_episodes": 4},
        "batch": {"prompts_per_step": 2, "samples_per_prompt": 2, "micro_batch_sequences": 4},
        "sampling": {"max_new_tokens": 3},
        "run": {**RUN, "out_dir": str(tmp_path / "rl"), "max_steps": 2, "log_every": 1},
    }))  # JSON is YAML
    assert main(["train", "rl", str(cfg)]) == 0
    final = tmp_path / "rl" / "final"
    assert (final / "model.safetensors").exists()
    rows = [json.loads(x) for x in (tmp_path / "rl" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "reward_mean" in r] == [1, 2]
    assert any("eval_ood_success" in r for r in rows)

    # postlab eval --env module:Class; the file form names the same class without PYTHONPATH
    out = tmp_path / "eval.json"
    file_key = f"{env_dir / (MODULE + '.py')}:EchoDigit"
    for key in (KEY, file_key):
        assert main(["eval", str(final), "--env", key, "--split", "id", "--split", "ood", "--episodes", "4",
                     "--max-new-tokens", "3", "--out", str(out)]) == 0
        results = json.loads(out.read_text())
        assert [(r["env"], r["split"], r["n_episodes"]) for r in results] == [(key, "id", 4), (key, "ood", 4)]
        # the custom class's own `diagnostics` are counted (resolved by import path, not the registry)
        assert set(results[0]["diagnostics"]) == {"first_char"}

    # a study whose stages all play the custom env: pretrain on its base corpus, RL, ID/OOD eval
    study = tmp_path / "byo.yaml"
    study.write_text(json.dumps({
        "name": "byo", "env": KEY, "seeds": 1,
        "defaults": {"*": {"config": {"run": RUN}}},
        "stages": {
            "base": {"kind": "pretrain", "data": {"n": 16},
                     "config": {"model": {"preset": "nano"}, "run": {"max_steps": 1},
                                "batch": {"sequences_per_step": 8, "micro_batch_sequences": 8}}},
            "rl": {"kind": "rl", "after": "base",
                   "config": {"env": {"eval_splits": []}, "sampling": {"max_new_tokens": 3}, "run": {"max_steps": 1},
                              "batch": {"prompts_per_step": 2, "samples_per_prompt": 2, "micro_batch_sequences": 4}}},
            "eval-rl": {"kind": "eval", "after": "rl", "splits": ["id", "ood"], "drift": False,
                        "eval": {"n_episodes": 4, "max_new_tokens": 3}},
        },
        # checked against the custom env's own splits before the first stage runs
        "report": {"tables": [{"title": "final", "rows": {"rl": "eval-rl"}, "splits": {"ID": "id", "OOD": "ood"}}]},
    }))
    assert main(["study", str(study), "--out", str(tmp_path / "studies"), "--no-report"]) == 0
    [ev] = (tmp_path / "studies" / "byo").rglob("eval-rl-*/result.json")
    assert set(json.loads(ev.read_text())["success"]) == {"id", "ood"}


def test_a_study_report_naming_a_split_the_custom_env_lacks_fails_at_load(env_dir):
    from postlab.studies.spec import check_report_references

    def study(env, split):
        return {"name": "s", "env": env,
                "stages": {"base": {"kind": "pretrain"}, "ev": {"kind": "eval", "after": "base"}},
                "report": {"tables": [{"rows": {"x": "ev"}, "splits": {"c": split}}]}}

    check_report_references(study(KEY, "ood"), {}, "s")
    with pytest.raises(ConfigError, match="unknown split"):
        check_report_references(study(KEY, "oodd"), {}, "s")
    # an import path that does not resolve leaves the check to the stage's own validation
    check_report_references(study("byo_no_such_module:Env", "oodd"), {}, "s")


# ----------------------------------------------------------------------------- resolution and errors


def test_import_path_resolves_an_unregistered_env_subclass(env_dir):
    cls = env_class(KEY)
    assert issubclass(cls, Env) and cls.name == KEY and KEY not in ENV_REGISTRY
    env = make(KEY, split="ood")
    assert env.reset(seed=3).messages[0]["content"] == "say 8" and env.step("8").success
    assert is_single_answer(env) and env_class(KEY) is cls  # imported once
    # the file form, once per file: the same module on every lookup
    file_key = f"{env_dir / (MODULE + '.py')}:EchoDigit"
    assert env_class(file_key) is env_class(file_key)
    # the wrappers take an import path as their inner env too
    wrapped = make("unary-feedback", env=KEY, split="id")
    wrapped.reset(seed=2)
    assert wrapped.step("<answer>2</answer>").success


@pytest.mark.parametrize("key,words", [
    ("byo_no_such_module:EchoDigit", ["environment 'byo_no_such_module:EchoDigit'", "no module named "
                                      "'byo_no_such_module'", "PYTHONPATH", "path/to/file.py:ClassName"]),
    ("byo_no_such_pkg.sub:EchoDigit", ["no module named 'byo_no_such_pkg.sub'"]),
    (f"{MODULE}:EchoDigt", [f"module '{MODULE}' has no attribute 'EchoDigt'", "Env subclasses there: EchoDigit",
                            "Did you mean 'EchoDigit'?"]),
    (f"{MODULE}:not_an_env", [f"{MODULE}:not_an_env is <function", "not a subclass of postlab.envs.Env"]),
    (f"{MODULE}:Env", ["is postlab's base class Env itself, not a task"]),  # imported there, not a task
    ("broken_env:X", ["importing module 'broken_env' failed", "byo_missing_dependency"]),
    (f"{MODULE}:", ["expected 'package.module:ClassName'"]),
    (":EchoDigit", ["expected 'package.module:ClassName'"]),
    ("no/such/dir/env.py:EchoDigit", ["no Python file", "env.py"]),
    ("echo-digit", ["unknown environment 'echo-digit'", "valid: ", "generalpoints", "package.module:ClassName"]),
])
def test_bad_env_names_say_what_is_wrong_and_what_is_valid(env_dir, key, words):
    with pytest.raises(ValueError) as info:
        env_class(key)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_trainer_config_rejects_a_bad_import_path_before_loading_a_model(env_dir):
    from postlab.trainers.rl import RLEnvConfig, validate_env

    validate_env(RLEnvConfig(name=KEY, eval_splits=("id", "ood")))
    with pytest.raises(ConfigError, match=rf"environment '{MODULE}:Nope': module '{MODULE}' has no attribute"):
        validate_env(RLEnvConfig(name=f"{MODULE}:Nope"))
    with pytest.raises(ConfigError, match=rf"env.eval_splits: .*unknown split 'oodd'; valid: id, ood"):
        validate_env(RLEnvConfig(name=KEY, eval_splits=("oodd",)))


# ----------------------------------------------------------------------------- registry


def test_registering_a_taken_name_is_an_error(fresh_names):
    @register_env("byo-dup")
    class First(Env):
        pass

    class Second(Env):
        pass

    with pytest.raises(ValueError, match=r"environment 'byo-dup' is already registered \(by .*First\); pick another"):
        register_env("byo-dup")(Second)
    assert ENV_REGISTRY["byo-dup"] is First
    with pytest.raises(ValueError, match="environment 'math' is already registered"):
        register_env("math")(Second)  # a plugin cannot silently replace a built-in


def test_the_same_definition_may_register_again(fresh_names):
    """A module reloaded (or a factory run twice) re-registers the same definition: it replaces the entry."""
    def define(length):
        @register_env("byo-again")
        class Sized(Env):
            size = length

        return Sized

    first, second = define(1), define(2)
    assert first is not second and ENV_REGISTRY["byo-again"] is second and second.name == "byo-again"


def test_register_env_rejects_import_path_names_and_non_envs(fresh_names):
    with pytest.raises(ValueError, match="without ':'"):
        register_env("mypkg:Env")
    with pytest.raises(TypeError, match="not a subclass of postlab.envs.Env"):
        register_env("byo-not-env")(dict)


def test_single_answer_protocol_is_declared_once():
    assert is_single_answer(make("math")) and is_single_answer(env_class("generalpoints"))
    assert missing_single_answer_methods(make("toy")) == ["check_answer", "expert_answer"]
