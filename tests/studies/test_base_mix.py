"""SFT stages with `data.base_mix`: base-corpus items mixed into the expert data."""

import pytest

from postlab.studies.stage_common import base_corpus_records, base_mix_records

SPEC = {"env": "generalpoints", "style": "compact"}


def test_base_mix_makes_up_the_asked_fraction_of_fresh_corpus_items():
    mix = base_mix_records(SPEC, n_task=70, fraction=0.3, seed=0)
    assert len(mix) == 30  # 30 / (70 + 30) = 0.3
    assert mix == base_mix_records(SPEC, n_task=70, fraction=0.3, seed=0)  # deterministic
    assert all(("text" in r) != ("messages" in r) for r in mix)
    # fresh draws: not the items pre-training saw (corpus seed 0 + study seed)
    pretrain = base_corpus_records(SPEC, n=30, seed=0)
    assert sum(r in pretrain for r in mix) < 5
    assert base_mix_records(SPEC, n_task=70, fraction=0.0, seed=0) == []
    with pytest.raises(ValueError, match=r"base_mix must be in \[0, 1\)"):
        base_mix_records(SPEC, n_task=70, fraction=1.0, seed=0)
