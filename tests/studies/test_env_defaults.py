"""Study stages over environments whose split names are not 'id' (regression: the
atomic-to-composite study crashed in its first stage asking biographies for split 'id')."""

from postlab.studies.kinds import _env, base_corpus_records


def test_stage_without_split_uses_the_envs_first_split():
    spec = {"env": "biographies", "style": "compact"}
    env = _env(spec)
    assert env.split == type(env).splits[0] != "id"
    records = base_corpus_records(spec, n=5, seed=0)
    assert len(records) == 5 and all(isinstance(r["text"], str) and r["text"] for r in records)


def test_stage_split_is_kept_when_given():
    assert _env({"env": "generalpoints", "split": "ood-rule"}).split == "ood-rule"
