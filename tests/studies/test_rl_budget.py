"""Issue 25's measuring tools: sampled evaluation in studies, drift from the start, and the RL budget probe."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "eval"))

import toy_env  # noqa: E402,F401 - registers toy-copy

from postlab.envs.base import Env, Observation, StepResult, register_env  # noqa: E402
from postlab.studies import StudyRunner, resolve  # noqa: E402
from postlab.studies.report_data import split_metric  # noqa: E402
from postlab.studies.report_stats import findings  # noqa: E402

RUN = {"tensorboard": False, "progress": False, "device": "cpu"}


@register_env("toy-parity")
class ToyParity(Env):
    """Succeeds when the answer starts with a character of even code: about half of an untrained
    model's samples, so groups mix success and failure and RL has a signal."""

    splits = ("id",)

    def reset(self, seed):
        return Observation([{"role": "user", "content": f"say {seed % 5}"}])

    def step(self, text):
        ok = bool(text) and ord(text[0]) % 2 == 0
        return StepResult([], 1.0 if ok else 0.0, True, ok, {})

    def expert(self):
        return "0"

    def base_corpus(self, n, seed=0):
        return [f"say {i % 5} gives {i % 3}" for i in range(n)]


# ----------------------------------------------------------------------------- report metrics


def test_pass_at_k_from_a_sampled_split_is_the_unbiased_estimator():
    """n = 4 samples; 1, 0 and 4 of them right: pass@2 = 1 - C(3,2)/C(4,2) = 0.5, 0 and 1."""
    results = {"id@sampled": {"decoding": "sampled", "n_samples": 4, "success_rate": 5 / 12,
                              "per_problem": [0.25, 0.0, 1.0]},
               "id": {"decoding": "greedy", "n_samples": 1, "success_rate": 1 / 3, "per_problem": [0, 0, 1]}}
    value, per_problem = split_metric(results, "id@sampled:pass@2")
    assert per_problem == pytest.approx([0.5, 0.0, 1.0]) and value == pytest.approx(0.5)
    assert split_metric(results, "id@sampled:pass@1")[0] == pytest.approx(5 / 12)  # pass@1 = mean success
    assert split_metric(results, "id@sampled")[0] == pytest.approx(5 / 12)
    assert split_metric(results, "id@sampled:pass@5") == (None, None)  # k > n: no unbiased estimate
    assert split_metric(results, "id:pass@2") == (None, None)  # greedy has one answer per problem


def _point(step, kl, per_problem):
    return {"step": step, "flops": float(step),
            "results": {"id": {"success_rate": sum(per_problem) / len(per_problem), "per_problem": per_problem}},
            "drift": {"kl": kl, "kl_per_problem": [kl] * len(per_problem), "kl_per_token": kl / 10,
                      "param_distance": kl * 2, "param_distance_rel": kl / 100}}


def test_findings_at_matched_kl_compare_with_the_point_that_moved_as_far():
    """RL ends at KL 0.45 from the start; SFT's points are at 0.1, 0.5 and 2.0: matched KL picks 0.5."""
    rl = {"points": [_point(10, 0.2, [0, 0, 0, 0] * 8), _point(20, 0.45, [1, 1, 0, 0] * 8)]}
    sft = {"points": [_point(5, 0.1, [0, 0, 0, 0] * 8), _point(10, 0.5, [1, 0, 0, 0] * 8),
                      _point(40, 2.0, [1, 1, 1, 1] * 8)]}
    diff = {"diff": [["rl", "id"], ["sft", "id"]]}
    run = {"study": {"report": {"findings": [
        {"claim": "final", "metric": diff},
        {"claim": "kl", "metric": {**diff, "match_kl": True}},
        {"claim": "drift", "metric": {"diff": [["rl", "drift:kl"], ["sft", "drift:kl"]], "match_kl": True}},
    ]}}, "results": {str(s): {"rl": rl, "sft": sft} for s in range(2)}}
    by = {f["claim"]: f for f in findings(run)}
    assert by["final"]["mean"] == pytest.approx(0.5 - 1.0)
    assert by["kl"]["mean"] == pytest.approx(0.5 - 0.25) and by["kl"]["reproduced"] == "yes"
    assert by["drift"]["mean"] == pytest.approx(0.45 - 0.5)
    assert "KL 0.45 vs 0.50 at step 10" in by["kl"]["measured"]
    # SFT's nearest point moved 7x as far (2.47 vs 0.33): no comparison at matched KL, and it says so
    far = {"points": [_point(100, 2.47, [1, 0, 0, 0] * 8), _point(200, 2.68, [1, 1, 0, 0] * 8)]}
    rl_small = {"points": [_point(10, 0.33, [1, 1, 0, 0] * 8)]}
    run["results"] = {str(s): {"rl": rl_small, "sft": far} for s in range(2)}
    by = {f["claim"]: f for f in findings(run)}
    assert by["kl"]["reproduced"].startswith("not comparable: no point of sft within 2x of rl's KL")
    assert "KL 0.33 vs 2.47 at step 100" in by["kl"]["measured"] and by["final"]["reproduced"] != "not run"


def test_report_check_accepts_sampled_splits_and_drift_keys_and_rejects_typos():
    from postlab.config import ConfigError

    def study(ref):
        return {"name": "s", "env": "toy-copy", "stages": {
            "base": {"kind": "pretrain"}, "ev": {"kind": "eval", "after": "base"}},
            "report": {"tables": [{"rows": {"x": "ev"}, "splits": {"c": ref}}]}}

    from postlab.studies.report_schema import check_report_references

    for ok in ("id@sampled", "ood@sampled:pass@4", "drift:kl", "drift:param_distance_rel"):
        check_report_references(study(ok), {}, "s")
    for bad, words in (("id@greedy", "unknown decoding"), ("id:pass@4", "pass@K needs a sampled split"),
                       ("drift:kll", "unknown drift key"), ("idd@sampled", "unknown split")):
        with pytest.raises(ConfigError, match=words):
            check_report_references(study(bad), {}, "s")


# ----------------------------------------------------------------------------- drift


def _nudged(model, seed: int):
    """A copy of `model` with its LM head moved by 0.05 x Gaussian noise: a continuation that moved a little."""
    other = type(model)(model.config)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.lm_head.weight.add_(0.05 * torch.randn_like(other.lm_head.weight,
                                                          generator=torch.Generator().manual_seed(seed)))
    return other.eval()


def _target_logps(m, enc) -> list[float]:
    """log p of every trained token of one encoded sequence, by a plain transformers forward."""
    ids = torch.tensor([enc.input_ids])
    logp = torch.log_softmax(m(input_ids=ids).logits[0, :-1].double(), -1)
    return [float(logp[t, ids[0, t + 1]]) for t in range(len(enc.input_ids) - 1) if enc.loss_mask[t + 1]]


def test_drift_is_zero_against_itself_and_equals_a_plain_forward_kl_estimate(nano_model, char_tokenizer):
    from postlab.envs import make
    from postlab.eval.drift import DriftOptions, DriftReference

    model, tok = nano_model, char_tokenizer
    opts = DriftOptions(split="id", n_problems=3, samples=2, max_new_tokens=6)
    ref = DriftReference(model, tok, lambda: make("toy-copy", split="id"), opts)
    same = ref.measure(model)
    assert same["kl"] == 0.0 and same["kl_per_problem"] == [0.0] * 3 and same["param_distance"] == 0.0
    other = _nudged(model, 1)
    d = ref.measure(other)
    with torch.no_grad():  # the same Monte Carlo estimate written out with plain transformers forwards
        ratios = [sum(_target_logps(model, e)) - sum(_target_logps(other, e)) for e in ref.sequences]
    expect = [sum(ratios[p * 2:(p + 1) * 2]) / 2 for p in range(3)]
    assert d["kl_per_problem"] == pytest.approx(expect, abs=1e-5)
    assert d["kl"] == pytest.approx(sum(expect) / 3, abs=1e-5)
    delta = (other.lm_head.weight - model.lm_head.weight).double().norm().item()
    assert d["param_distance"] == pytest.approx(delta, rel=1e-6)


def test_corpus_nll_is_the_held_out_base_corpus_nll_and_its_increase_over_the_start(nano_model, char_tokenizer):
    """Forgetting of the base corpus: the mean per-token NLL of held-out items (a generator seed no pre-training
    draws), zero increase for the start itself, and by hand with plain transformers forwards for a moved model."""
    from postlab.data.records import encode_all
    from postlab.envs import make
    from postlab.eval.drift import DriftOptions, DriftReference
    from postlab.seeds import HELD_OUT_CORPUS

    model, tok = nano_model, char_tokenizer
    env = lambda: make("toy-copy", split="id")  # noqa: E731
    ref = DriftReference(model, tok, env, DriftOptions(n_problems=2, samples=1, max_new_tokens=4, corpus_items=5))
    same = ref.measure(model)
    assert same["corpus_items"] == 5 and same["corpus_nll_increase"] == 0.0 and same["corpus_nll"] > 0
    assert same["corpus_nll_increase_per_item"] == [0.0] * 5
    other = _nudged(model, 2)
    d = ref.measure(other)

    def nll(m, enc):
        logps = _target_logps(m, enc)
        return -sum(logps) / len(logps)

    items = encode_all(tok, env().base_corpus_records(5, seed=HELD_OUT_CORPUS))
    with torch.no_grad():
        expect = [nll(other, e) - nll(model, e) for e in items]
    assert d["corpus_nll_increase_per_item"] == pytest.approx(expect, abs=1e-5)
    assert d["corpus_nll_increase"] == pytest.approx(sum(expect) / 5, abs=1e-5)
    # an env without a base corpus measures no corpus NLL (and says nothing of it)
    assert "corpus_nll" not in DriftReference(model, tok, lambda: make("toy"), DriftOptions(n_problems=1, samples=1,
                                                                                         max_new_tokens=2)).measure(model)


def test_base_corpus_seeds_keep_the_held_out_items_apart():
    from postlab.envs import make
    from postlab.seeds import HELD_OUT_CORPUS, corpus_generator_seed

    gp = make("generalpoints")
    pretrain = [str(x) for x in gp.base_corpus(2000, seed=corpus_generator_seed(0, "pretrain"))]
    held_out = [str(x) for x in gp.base_corpus(200, seed=corpus_generator_seed(0, "held_out"))]
    # fresh draws of the same distribution: short items (binary facts, rule sentences) recur, as they do
    # within pre-training itself (measured: 58 of 200 held-out items occur among 2,000 pre-training ones)
    assert held_out != pretrain[:200] and sum(x in set(pretrain) for x in held_out) < 100

    assert corpus_generator_seed(3, "held_out") == corpus_generator_seed(0, "held_out") == HELD_OUT_CORPUS
    assert HELD_OUT_CORPUS not in {corpus_generator_seed(s, p) for s in range(HELD_OUT_CORPUS) for p in ("pretrain", "base_mix")}
    with pytest.raises(ValueError, match="run seeds 0..7917"):
        corpus_generator_seed(HELD_OUT_CORPUS, "pretrain")


# ----------------------------------------------------------------------------- a study with a probe


def _study(scripted: bool, grid: dict, distill: bool = False):
    """base -> probe -> rl (after [base, probe]) -> eval; `scripted`: toy-copy that never succeeds on a
    first attempt (the gate), else toy-parity (about half the samples succeed). `distill`: rl is on-policy
    distillation from a second pretrained model, after [base, teacher, probe] (the spectrum study's form)."""
    rl_cfg = {"run": {**RUN}, "batch": {"prompts_per_step": 2, "samples_per_prompt": 2, "micro_batch_sequences": 4},
              "sampling": {"max_new_tokens": 4}}
    env_args = {"scripted": True} if scripted else None
    stage = lambda **kw: {k: v for k, v in kw.items() if v is not None}  # noqa: E731
    return {
        "name": "budget", "env": "toy-copy" if scripted else "toy-parity",
        "defaults": {"*": {"config": {"run": RUN}}, "rl": {"config": rl_cfg}},
        "stages": {
            "base": {"kind": "pretrain", "data": {"n": 64},
                     "config": {"model": {"preset": "nano"}, "batch": {"sequences_per_step": 8, "micro_batch_sequences": 8},
                                "run": {"max_steps": 4}}},
            **({"teacher": {"kind": "pretrain", "data": {"n": 64}, "config": {"model": {"preset": "nano"},
                            "batch": {"sequences_per_step": 8, "micro_batch_sequences": 8}, "run": {"max_steps": 6}}}}
               if distill else {}),
            "probe": stage(kind="rl-probe", after="base", env_args=env_args, probe={"steps": 2, "grid": grid}),
            "rl": stage(kind="rl", after=["base", "teacher", "probe"] if distill else ["base", "probe"],
                        env_args=env_args,
                        config={"run": {"max_steps": 2}, **({"algorithm": "opd"} if distill else {})}),
            "eval-rl": stage(kind="eval", after="rl", splits=["id"], env_args=env_args,
                             sampled={"samples": 3, "k": 2}, drift={"n_problems": 3, "samples": 2},
                             eval={"n_episodes": 4, "max_new_tokens": 4}),
        },
    }


def test_probe_with_a_frozen_lr_gains_exactly_nothing_and_the_rl_stage_takes_the_choice(tmp_path):
    """lr 1e-30 leaves the policy bit-identical (every update is below float32 resolution), and the
    frozen replay uses the same problems and sampling seeds, so its on-policy success equals the
    frozen success step by step: gain exactly 0."""
    runner = StudyRunner(resolve(_study(False, {"optim.lr": [1.0e-30, 1.0e-2], "batch.prompts_per_step": [2]})), tmp_path)
    res = runner.run()[0]
    probes = res["probe"]["probes"]
    assert [p["setting"]["optim.lr"] for p in probes] == [1.0e-30, 1.0e-2]
    assert probes[0]["gain"] == 0.0 and probes[0]["on_policy_success"] == probes[0]["frozen_success"]
    best = max(probes, key=lambda p: (p["gain"], -p["sequences_per_step"]))
    assert res["probe"]["chosen"] == best["setting"] and res["probe"]["skip"] is False
    assert res["probe"]["compute"]["tokens_generated"] > 0
    plan = runner.plan()[0]
    assert not (plan["probe"] / "probe-0" / "run" / "final").exists()  # probe models are not kept
    rows = [json.loads(x) for x in (plan["probe"] / "probe-0" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("eval_") for r in rows for k in r)  # no evaluation problem was played
    import yaml

    rl_cfg = yaml.safe_load((plan["rl"] / "run" / "config.yaml").read_text())
    assert rl_cfg["optim"]["lr"] == best["setting"]["optim.lr"] and res["rl"]["probe_choice"] == best["setting"]
    point = res["eval-rl"]["points"][-1]
    sampled = point["results"]["id@sampled"]
    assert sampled["n_samples"] == 3 and sampled["k"] == 2 and len(sampled["per_problem"]) == 4
    assert point["results"]["id"]["decoding"] == "greedy"
    assert point["drift"]["n_problems"] == 3 and len(point["drift"]["kl_per_problem"]) == 3
    gain = res["rl"]["training_gain"]  # the probe's test on the real run: its last window (1 step) vs frozen
    assert gain["window"] == 1 and len(gain["success_by_step"]) == 2
    if best["setting"]["optim.lr"] == 1.0e-30:
        assert point["drift"]["kl"] == 0.0 and gain["gain"] == 0.0
    from postlab.studies.report import build_report

    md = build_report(runner.root)[1].read_text()
    assert "RL budget probe probe, seed 0" in md and "optim.lr=1e-30, batch.prompts_per_step=2" in md
    assert md.count("| chosen |") == 1
    assert "RL training success vs the frozen start on the same problems" in md


def test_a_distillation_stage_takes_its_teacher_and_the_probes_lr(tmp_path):
    """after: [START, TEACHER, PROBE]: the teacher is the second input's checkpoint, the lr the probe's choice."""
    import yaml

    runner = StudyRunner(resolve(_study(False, {"optim.lr": [1.0e-30, 1.0e-2]}, distill=True)), tmp_path)
    res = runner.run()[0]
    plan = runner.plan()[0]
    cfg = yaml.safe_load((plan["rl"] / "run" / "config.yaml").read_text())
    assert cfg["algorithm"] == "opd" and cfg["teacher"] == str(plan["teacher"] / "run" / "final")
    chosen = res["probe"]["chosen"]
    assert cfg["optim"]["lr"] == chosen["optim.lr"] and res["rl"]["probe_choice"] == chosen
    assert res["rl"]["steps"] == 2


def test_probe_gate_does_not_skip_an_algorithm_that_learns_beyond_its_rewards(tmp_path):
    """No group ever succeeds, but on-policy distillation's signal is its teacher: it runs at its config's lr."""
    import yaml

    runner = StudyRunner(resolve(_study(True, {"optim.lr": [1.0e-3]}, distill=True)), tmp_path)
    res = runner.run()[0]
    assert res["probe"]["skip"] is True and res["rl"]["steps"] == 2 and not res["rl"].get("skipped")
    assert res["rl"]["probe_choice"] is None and res["rl"]["compute"]["tokens_trained"] > 0
    cfg = yaml.safe_load((runner.plan()[0]["rl"] / "run" / "config.yaml").read_text())
    assert cfg["optim"]["lr"] != 1.0e-3  # the config's lr: the probe chose nothing


def test_probe_gate_skips_rl_where_no_group_ever_succeeds(tmp_path):
    """The scripted toy env never succeeds on a first attempt: no group has a success, RL is skipped
    and the rl stage's checkpoint is its start."""
    runner = StudyRunner(resolve(_study(True, {"optim.lr": [1.0e-3]})), tmp_path)
    res = runner.run()[0]
    assert res["probe"]["skip"] is True and res["probe"]["chosen"] is None
    assert res["probe"]["probes"][0]["frozen_groups_solved"] == 0.0
    assert res["rl"]["skipped"] and res["rl"]["compute"]["tokens_trained"] == 0
    plan = runner.plan()[0]
    assert (plan["rl"] / res["rl"]["checkpoint"]).resolve() == (plan["base"] / "run" / "final").resolve()
    assert res["eval-rl"]["points"][-1]["drift"]["kl"] == 0.0  # it did not move


def test_probe_settings_are_checked_before_anything_runs(tmp_path):
    from postlab.config import ConfigError

    bad = _study(False, {"run.max_steps": [3]})
    with pytest.raises(ConfigError, match="run, model and env are the study's"):
        StudyRunner(resolve(bad), tmp_path).run()
    bad = _study(False, {"optim.lrr": [1e-3]})
    with pytest.raises(ConfigError, match="lrr"):
        StudyRunner(resolve(bad), tmp_path).run()
    assert not any(tmp_path.rglob("DONE"))


def test_probe_select_ranks_by_the_mean_gain_or_by_its_cis_lower_end():
    """seed 1 of atomic-to-composite lab-probe: the noisy small-batch probe has the largest mean, the
    large-batch one the largest lower bound; equal ranks go to the cheaper setting."""
    from postlab.config import ConfigError
    from postlab.studies.probe import choose, probe_options

    def probe(lr, prompts, gain, low):
        return {"setting": {"optim.lr": lr, "batch.prompts_per_step": prompts}, "sequences_per_step": prompts * 4,
                "gain": gain, "gain_ci": [low, 2 * gain - low]}

    probes = [probe(1e-4, 8, 0.023, -0.016), probe(1e-4, 64, 0.005, -0.002), probe(3e-4, 8, 0.031, -0.094),
              probe(3e-4, 64, 0.008, -0.010)]
    assert choose(probes)["setting"] == {"optim.lr": 3e-4, "batch.prompts_per_step": 8}
    assert choose(probes, "ci_low")["setting"] == {"optim.lr": 1e-4, "batch.prompts_per_step": 64}
    tied = [probe(1e-4, 64, 0.01, 0.0), probe(3e-4, 8, 0.01, 0.0)]
    assert choose(tied, "ci_low")["setting"]["batch.prompts_per_step"] == 8
    assert probe_options({"grid": {"optim.lr": [1e-4]}}, "p")["select"] == "gain"
    with pytest.raises(ConfigError, match=r"stages.p.probe.select: 'ci'; valid: gain, ci_low"):
        probe_options({"grid": {"optim.lr": [1e-4]}, "select": "ci"}, "stages.p.probe")


def test_a_shared_probe_is_reported_once_per_directory():
    """A shared probe ran once (one directory under every seed): one table naming the seeds it served;
    per-seed probes (a directory each) keep a table each."""
    from postlab.studies.report_tables import probe_tables

    probe = {"steps": 8, "window": 4, "skip": False, "chosen": {"optim.lr": 1e-4}, "reason": "largest gain",
             "probes": [{"setting": {"optim.lr": 1e-4}, "sequences_per_step": 512, "on_policy_success": 0.3,
                         "frozen_success": 0.25, "gain": 0.05, "gain_ci": [0.01, 0.09], "frozen_groups_solved": 0.7}]}
    run = {"stages": {"shared-probe": {"kind": "rl-probe"}, "own-probe": {"kind": "rl-probe"}},
           "results": {s: {"shared-probe": probe, "own-probe": probe} for s in ("0", "1", "2")},
           "dirs": {s: {"shared-probe": "shared/shared-probe-abc", "own-probe": f"seed_{s}/own-probe-{s}"}
                    for s in ("0", "1", "2")}}
    titles = [t["title"] for t in probe_tables(run)]
    assert [t.split(":")[0] for t in titles] == ["RL budget probe shared-probe, seeds 0, 1, 2 (shared)"] + [
        f"RL budget probe own-probe, seed {s}" for s in range(3)]


def test_rl_gain_command_replays_a_run_as_the_stage_does(tmp_path, capsys):
    """`postlab rl-gain RUN` gives the rl stage's own `training_gain` (same window, same replay), so a run
    without a probe (or outside a study) can be asked the same question; bad directories are refused."""
    from postlab.cli.main import main

    runner = StudyRunner(resolve(_study(False, {"optim.lr": [1.0e-2]})), tmp_path / "s")
    res = runner.run()[0]
    run_dir = runner.plan()[0]["rl"] / "run"
    capsys.readouterr()
    assert main(["rl-gain", str(run_dir), "--window", "1", "--json"]) == 0
    gain = json.loads(capsys.readouterr().out)
    assert gain == json.loads(json.dumps(res["rl"]["training_gain"]))
    assert main(["rl-gain", str(run_dir), "--window", "2", "--json"]) == 0  # both steps
    two = json.loads(capsys.readouterr().out)
    assert two["window"] == 2 and two["on_policy_success"] == sum(two["success_by_step"]) / 2
    assert main(["rl-gain", str(run_dir), "--window", "3"]) == 2
    assert "between 1 and the run's 2 logged steps" in capsys.readouterr().err
    assert main(["rl-gain", str(run_dir.parent)]) == 2
    assert "a study stage's run is STAGE_DIR/run" in capsys.readouterr().err
