"""Every shipped study, under every preset, validates: every stage's trainer config, environment,
splits and `data:` / `eval:` keys, before anything runs.

A study runs for tens of minutes before it reaches its later stages; a config that a trainer
rejects (the tiny preset's navigation RL once asked for micro-batches larger than its batch)
must fail here, in a second, not 17 minutes into a run."""

from pathlib import Path

import pytest

from postlab.config import ConfigError
from postlab.studies.runner import StudyRunner
from postlab.studies.spec import load_study, resolve

STUDIES = sorted(Path(__file__).resolve().parents[2].glob("configs/studies/*.yaml"))


def _presets(path: Path) -> list:
    import yaml

    return [None] + list((yaml.safe_load(path.read_text()).get("presets") or {}))


@pytest.mark.parametrize("path", STUDIES, ids=lambda p: p.stem)
def test_every_preset_validates(path, tmp_path):
    for preset in _presets(path):
        study = load_study(str(path), preset=preset)
        StudyRunner(study, out=tmp_path).validate()


def _study(**stage_fields) -> dict:
    base = {"kind": "pretrain", "data": {"n": 10}, "config": {"model": {"preset": "nano"}, "run": {"max_steps": 1}}}
    later = {"kind": "sft", "after": "base", "split": "id", "data": {"n": 10}, "config": {"run": {"max_steps": 1}}}
    later.update(stage_fields)
    return {"name": "t", "env": "toy", "stages": {"base": base, "late": later}}


@pytest.mark.parametrize("fields, words", [
    ({"data": {"n": 10, "base_mixx": 0.3}}, ["late.data.base_mixx", "base_mix"]),
    ({"split": "od"}, ["late", "unknown split 'od'"]),
    ({"config": {"optim": {"lrr": 1e-3}}}, ["late", "optim.lrr"]),
    ({"kind": "eval", "eval": {"n_episode": 4}}, ["late.eval.n_episode", "n_episodes"]),
    ({"kind": "rl", "config": {"env": {"eval_splits": ["nope"]}}}, ["late", "eval_splits", "nope"]),
])
def test_a_typo_in_a_late_stage_fails_before_the_first_stage_runs(fields, words, tmp_path):
    runner = StudyRunner(resolve(_study(**fields)), out=tmp_path)
    with pytest.raises(ConfigError) as e:
        runner.run()
    for w in words:
        assert w in str(e.value)
    assert not runner.calls  # nothing ran


_REPORTED = {"name": "t", "env": "toy",
             "stages": {"base": {"kind": "pretrain", "data": {"n": 10}, "config": {"run": {"max_steps": 1}}},
                        "eval-base": {"kind": "eval", "after": "base", "splits": ["id", "ood"]}},
             "presets": {"more": {"stages": {"eval-more": {"kind": "eval", "after": "base"}}}}}


@pytest.mark.parametrize("report, words", [
    ({"tables": [{"title": "T", "rows": {"b": "eval-bsae"}, "splits": ["id"]}]},
     ["report.tables[0] (T)", "unknown stage 'eval-bsae'", "eval-base"]),
    ({"tables": [{"rows": {"b": "eval-base"}, "splits": {"OOD": "odd"}}]}, ["report.tables[0]", "unknown split 'odd'", "ood"]),
    ({"findings": [{"claim": "C", "metric": {"diff": [["eval-base", "id"], ["eval-base", "ood:wrong_hop=hop1"]]}}]},
     ["report.findings[0] (C)", "diagnostic 'wrong_hop'", "no env of this study records"]),
    ({"findings": [{"claim": "C", "metric": {"delta": ["eval-base", "eval-nope"], "split": "id"}}]},
     ["unknown stage 'eval-nope'"]),
    ({"curves": [{"baseline": "eval-base", "series": {"x": "eval-more"}, "splits": ["iid"]}]},
     ["report.curves[0]", "unknown split 'iid'"]),
    # the dynamics section is checked like the others: its stages, their kind, and KEY@WINDOW columns
    ({"dynamics": [{"title": "D", "rows": {"pre": "bsae"}, "columns": {"e": "entropy@last"}}]},
     ["report.dynamics[0] (D), row 'pre'", "unknown stage 'bsae'", "Stages: base, eval-base, eval-more"]),
    ({"dynamics": [{"rows": {"pre": "base"}, "columns": {"e": "entropy@middle"}}]},
     ["report.dynamics[0]", "'entropy@middle'", "first, last, all, end"]),
    ({"dynamics": [{"rows": {"ev": "eval-base"}, "columns": {"e": "entropy@last"}}]},
     ["report.dynamics[0], row 'ev'", "stage 'eval-base' has kind eval", "pretrain, sft, rl"]),
    # the schema: sections, item keys, finding metrics, kinds a section reads
    ({"tabels": []}, ["report.tabels: unknown section", "Did you mean 'tables'"]),
    ({"tables": [{"rows": {"b": "eval-base"}, "splts": ["id"]}]}, ["report.tables[0]", "unknown key 'splts'", "splits"]),
    ({"tables": [{"title": "T", "rows": {"b": "base"}, "splits": ["id"]}]},
     ["report.tables[0] (T), row 'b'", "stage 'base' has kind pretrain", "stages of kind eval"]),
    ({"findings": [{"claim": "C", "metric": {"delta": ["eval-base", "eval-more"]}}]},
     ["report.findings[0] (C)", "metric.delta must be [STAGE, BASELINE] with split: SPLIT"]),
    ({"findings": [{"claim": "C", "metric": {"value": ["eval-base", "id"]}, "expect": "postive"}]},
     ["report.findings[0] (C)", "expect: 'postive'", "positive, negative or a number"]),
    ({"diagnostics": [{"rows": {"b": "eval-base"}, "columns": {"e": "id:entropy"}}]},
     ["report.diagnostics[0]", "'id:entropy'", "entropy_mean"]),
])
def test_a_typo_in_the_report_section_fails_when_the_study_loads(report, words, tmp_path):
    """The report leaves out what no run produced, so these would otherwise be silently empty columns."""
    import yaml

    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({**_REPORTED, "report": report}))
    with pytest.raises(ConfigError) as e:
        load_study(str(path))
    for w in words:
        assert w in str(e.value)


def test_the_report_may_name_stages_of_other_presets_and_env_diagnostics(tmp_path):
    import yaml

    path = tmp_path / "t.yaml"
    report = {"tables": [{"rows": {"m": "eval-more", "b": "eval-base"}, "splits": ["id", "ood"]}],
              "findings": [{"claim": "C", "metric": {"value": ["eval-base", "id"]}}],
              "dynamics": [{"rows": {"pre-training": "base"}, "columns": {"loss, last ¼": "loss@last"}}]}
    path.write_text(yaml.safe_dump({**_REPORTED, "env": "generalpoints", "report": {
        **report, "tables": [{"rows": {"b": "eval-base"}, "splits": ["id", "ood-rule:face_rule=other"]}]}}))
    load_study(str(path))  # eval-more exists only in a preset; face_rule is GeneralPoints' diagnostic
    path.write_text(yaml.safe_dump({**_REPORTED, "report": report}))
    load_study(str(path))
    # an env this process has not registered (a custom one): its splits and diagnostics are not checked
    path.write_text(yaml.safe_dump({**_REPORTED, "env": "my-env", "report": {
        "tables": [{"rows": {"b": "eval-base"}, "splits": ["mine:my_diag=x"]}]}}))
    load_study(str(path))


def test_a_preset_that_moves_the_study_to_another_env_needs_that_envs_splits_in_its_report(tmp_path):
    """spectrum's `math` preset once kept GeneralPoints' `ood-rule` findings: the load-time check
    sees the union of the study's envs (generalpoints has the split) and the report failed only
    after the whole study ran. The study after its preset reads every split from its stage's env."""
    import yaml

    table = {"title": "T", "rows": {"b": "eval-base"}, "splits": {"rule OOD": "ood-rule@sampled"}}
    study = {"name": "t", "env": "generalpoints",
             "stages": {"base": {"kind": "pretrain", "data": {"n": 10}, "config": {"run": {"max_steps": 1}}},
                        "eval-base": {"kind": "eval", "after": "base", "splits": ["id"]}},
             "report": {"tables": [table]},
             "presets": {"math": {"env": "math", "defaults": {"*": {"env": "math", "env_args": None}}}}}
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(study))
    load_study(str(path))  # GeneralPoints: the split exists
    with pytest.raises(ConfigError) as e:
        load_study(str(path), preset="math")
    for w in ["report.tables[0] (T), row 'b'", "stage 'eval-base' runs env 'math'", "no split 'ood-rule'",
              "Did you mean 'ood'", "Its splits: id, ood", "presets.NAME.report"]:
        assert w in str(e.value)
    # the preset's own report replaces the table; it is read against math's splits
    study["presets"]["math"]["report"] = {"tables": [{**table, "splits": {"OOD": "ood@sampled"}}]}
    path.write_text(yaml.safe_dump(study))
    assert load_study(str(path), preset="math").report["tables"][0]["splits"] == {"OOD": "ood@sampled"}
    # and checked when the study loads, under any preset, named by its preset
    study["presets"]["math"]["report"] = {"findings": [{"claim": "C", "metric": {"delta": ["eval-bsae", "eval-base"],
                                                                                "split": "id"}}]}
    path.write_text(yaml.safe_dump(study))
    with pytest.raises(ConfigError) as e:
        load_study(str(path))
    assert "presets.math: report.findings[0] (C)" in str(e.value) and "unknown stage 'eval-bsae'" in str(e.value)
