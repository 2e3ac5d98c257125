"""Study stages over environments whose split names are not 'id' (regression: the
atomic-to-composite study crashed in its first stage asking biographies for split 'id')."""

from postlab.studies.stage_common import base_corpus_records, stage_env


def test_stage_without_split_uses_the_envs_first_split():
    spec = {"env": "biographies", "style": "compact"}
    env = stage_env(spec)
    assert env.split == type(env).splits[0] != "id"
    records = base_corpus_records(spec, n=5, seed=0)
    assert len(records) == 5 and all(isinstance(r["text"], str) and r["text"] for r in records)


def test_stage_split_is_kept_when_given():
    assert stage_env({"env": "generalpoints", "split": "ood-rule"}).split == "ood-rule"


def test_a_trainer_stage_fills_its_env_section_from_the_stage_where_the_config_sets_none():
    """One fill-in for every trainer stage with an `env:` section (rl, rl-probe, rasft, rft): the stage's
    env, split, style, env_args and max_turns, evaluated on the training split; the config's own keys win."""
    from types import SimpleNamespace

    from postlab.studies.stage_common import fill_stage_env

    ctx = SimpleNamespace(spec={"env": "generalpoints", "split": "ood-rule", "style": "reason",
                                "env_args": {"face_value": 11}, "max_turns": 3})
    data = fill_stage_env(ctx, {"env": {"style": "compact"}, "optim": {"lr": 1e-4}})
    assert data == {"env": {"name": "generalpoints", "split": "ood-rule", "style": "compact",
                            "kwargs": {"face_value": 11}, "max_turns": 3, "eval_splits": ["ood-rule"]},
                    "optim": {"lr": 1e-4}}
    # a stage without split / style / max_turns leaves those to the trainer's defaults, except the split ('id')
    assert fill_stage_env(SimpleNamespace(spec={"env": "toy"}), {}) == {
        "env": {"name": "toy", "split": "id", "eval_splits": ["id"]}}
