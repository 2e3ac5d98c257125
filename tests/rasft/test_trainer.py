"""RASFT trainer end to end on the math env: routing and refreshes, group weights reaching the
batch, resume, and bad input rejected before a run starts. Nano models, a few steps each."""

import json

import pytest
from safetensors.torch import load_file

from postlab.config import ConfigError, ModelConfig, OptimConfig, RunConfig
from postlab.data.records import DataError, load_records
from postlab.envs.base import ENV_REGISTRY, Env, Observation, StepResult
from postlab.rollout.engine import Completion
from postlab.trainers.rasft import RASFTConfig, RASFTDataConfig, RASFTEnvConfig, train_rasft
from postlab.trainers.rasft_groups import group_weights
from postlab.trainers.rasft_routing import ROUTES, RASFTRoutingConfig
from postlab.trainers.sft import BatchConfig

ITEMS = load_records("env:math/id/48")  # expert demonstrations with their env seeds (meta.seed)


def config(ckpt, out, steps=4, **kw) -> RASFTConfig:
    base = dict(model=ModelConfig(path=str(ckpt)), data=RASFTDataConfig(max_length=256),
                env=RASFTEnvConfig(name="math", eval_splits=()),
                optim=OptimConfig(lr=1e-3, warmup_steps=1), batch=BatchConfig(8, 4),
                routing=RASFTRoutingConfig(refresh_every=1, route_chunk=16, calibration_items=32, max_new_tokens=16),
                run=RunConfig(out_dir=str(out), max_steps=steps, log_every=1, progress=False, tensorboard=False))
    base.update(kw)
    return RASFTConfig(**base)


def rows(out, kind):
    return [r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if r["kind"] == kind]


def test_routes_and_refreshes_consistently(nano_checkpoint, tmp_path):
    out = tmp_path / "run"
    train_rasft(config(nano_checkpoint, out, steps=5), ITEMS)
    train, refreshes = rows(out, "train"), rows(out, "refresh")
    assert len(train) == 5 and refreshes, "refresh_every=1 with pending items must refresh"
    for r in train:
        assert isinstance(r["tokens_trained"], int) and r["tokens_trained"] > 0
        assert isinstance(r["tokens_generated"], int)
        assert 0 <= r["batch_rollouts"] <= 8 and 0 <= r["rho_clipped_fraction"] <= 1 and r["rho_mean"] > 0
    routed = 0
    for r in refreshes:
        assert r["refresh/correct"] <= r["refresh/kept"] <= r["refresh/samples"] == 3 * r["refresh/problems"]
        assert r["refresh/rollouts_queued"] <= r["refresh/correct"]
        if r["refresh/problems"]:
            assert 0 <= r["refresh/solve_rate"] <= 1 and 0 < r["refresh/expert_weight_mean"] <= 1
            # duplicates leave the group (K counts what is left); degenerate samples stay in it as negatives
            assert r.get("refresh/dropped_duplicate", 0) == r["refresh/samples"] - r["refresh/kept"]
            degenerate = sum(v for k, v in r.items()
                             if k.startswith("refresh/dropped_") and not k.endswith("duplicate"))
            assert degenerate <= r["refresh/kept"] - r["refresh/correct"]
        if "refresh/rollout_weight_mean" in r:
            assert 0.005 - 1e-12 <= r["refresh/rollout_weight_mean"] <= 0.0375 + 1e-12
        assert "rho_mean" in r and "rho_clipped_fraction" in r
        routed += sum(r[f"route/{name}"] for name in ROUTES)
    assert routed > 0
    # every generated token was logged on the step that generated it
    gen_steps = {r["step"] for r in train if r["tokens_generated"]}
    assert gen_steps <= {r["step"] for r in refreshes if r["refresh/problems"]}
    state = json.loads(sorted((out / "checkpoints").glob("step_*"))[-1].joinpath("trainer_state.json").read_text())
    assert {"router", "ready", "rng", "data"} <= set(state)
    assert state["router"]["counts"]["calibrations"] == 1  # calibrate_on_initial: once


def _fake_generate(tok, answers):
    """A sampler that answers each prompt with fixed texts: the expert's solution, another correct
    solution written differently, and a wrong one (K = 3 kept, k = 2 correct)."""
    by_prompt = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in ITEMS}

    def generate(model, tokenizer, prompts, params, backend=None):
        outs = []
        for p_i, ids in enumerate(prompts):
            text = tok.decode(ids)
            expert = next(v for k, v in by_prompt.items() if k in text)
            for t in answers(expert)[:params.n]:
                answers_ids = tok.encode(t, add_special_tokens=False) + [tok.eos_token_id]
                outs.append(Completion(p_i, answers_ids, t, [0.0] * len(answers_ids), "stop"))
        return outs

    return generate


def _three_answers(expert: str) -> list[str]:
    steps, answer = expert.split(" #### ")
    wrong = str(int(answer) + 1)
    return [expert, f"first {steps.replace(' ', ' then ')} so #### {answer}", f"{steps} #### {wrong}"]


def test_group_weights_reach_the_batch_and_survive_a_crash(nano_checkpoint, tmp_path, monkeypatch):
    from postlab.models import load_tokenizer
    from postlab import runs
    import postlab.trainers.rasft as rasft

    tok = load_tokenizer(str(nano_checkpoint))
    monkeypatch.setattr(rasft, "generate", _fake_generate(tok, _three_answers))
    cfg = config(nano_checkpoint, tmp_path / "full", steps=4, run=RunConfig(
        out_dir=str(tmp_path / "full"), max_steps=4, log_every=1, save_every=1, keep_checkpoints=10, progress=False,
        tensorboard=False))
    train_rasft(cfg, ITEMS)
    want = group_weights(2, 3)
    refreshes = [r for r in rows(tmp_path / "full", "refresh") if r["refresh/problems"]]
    assert refreshes
    for r in refreshes:
        assert (r["refresh/kept"], r["refresh/correct"]) == (3 * r["refresh/problems"], 2 * r["refresh/problems"])
        assert r["refresh/solve_rate"] == pytest.approx(2 / 3)
        assert r["refresh/expert_weight_mean"] == pytest.approx(want.expert)
        assert r["refresh/rollout_weight_mean"] == pytest.approx(want.correct_rollout)
        assert r["refresh/rollouts_queued"] == 2 * r["refresh/problems"]
    assert sum(r["batch_rollouts"] for r in rows(tmp_path / "full", "train")) > 0
    state = json.loads((tmp_path / "full" / "checkpoints" / "step_000002" / "trainer_state.json").read_text())
    queued = [e for e in state["ready"] if "ids" in e]
    assert all(e["w"] == pytest.approx(want.correct_rollout) for e in queued)

    # the same run, crashed right after logging step 3 (checkpoint 2 is on disk), then resumed
    crashed = tmp_path / "crashed"
    orig = runs.RunDir.log

    def log(self, step, metrics, kind="train"):
        orig(self, step, metrics, kind)
        if step == 3 and kind == "train":
            raise KeyboardInterrupt("simulated crash")

    monkeypatch.setattr(runs.RunDir, "log", log)
    cfg_c = config(nano_checkpoint, crashed, run=RunConfig(out_dir=str(crashed), max_steps=4, log_every=1,
                                                           save_every=2, progress=False, tensorboard=False))
    with pytest.raises(KeyboardInterrupt):
        train_rasft(cfg_c, ITEMS)
    monkeypatch.setattr(runs.RunDir, "log", orig)
    train_rasft(cfg_c, ITEMS, resume=crashed)
    a = load_file(str(tmp_path / "full" / "final" / "model.safetensors"))
    b = load_file(str(crashed / "final" / "model.safetensors"))
    assert all(a[k].equal(b[k]) for k in a)
    assert [r["loss"] for r in rows(crashed, "train")] == [r["loss"] for r in rows(tmp_path / "full", "train")]


# ----------------------------------------------------------------------------- bad input


class _NoVerifier(Env):
    """A single-answer env with an expert but no check_answer()."""

    splits, styles = ("id",), ("compact",)

    def reset(self, seed):
        return Observation([{"role": "user", "content": f"Say {seed % 10}."}])

    def step(self, text):
        return StepResult([], 0.0, True)

    def expert(self):
        return "#### 1"


class _NoExpertAnswer(_NoVerifier):
    def check_answer(self, answer):
        return True


@pytest.mark.parametrize("cls,missing", [(_NoVerifier, "check_answer()"), (_NoExpertAnswer, "expert_answer()")])
def test_env_without_a_verifier_is_rejected(nano_checkpoint, tmp_path, monkeypatch, cls, missing):
    monkeypatch.setitem(ENV_REGISTRY, "rasft-test-env", cls)
    cfg = config(nano_checkpoint, tmp_path / "run", env=RASFTEnvConfig(name="rasft-test-env", eval_splits=()))
    with pytest.raises(ConfigError, match=rf"env.name='rasft-test-env': the environment has no .*{missing}.*math"):
        train_rasft(cfg, ITEMS)
    assert not (tmp_path / "run").exists()


def _with(i, content=None, **meta):
    recs = [json.loads(json.dumps(r)) for r in ITEMS[:12]]
    if content is not None:
        recs[i]["messages"][-1]["content"] = content
    if meta:
        recs[i]["meta"].update(meta)
        recs[i]["meta"] = {k: v for k, v in recs[i]["meta"].items() if v is not None}
    return recs


@pytest.mark.parametrize("records,kw,match", [
    (_with(3, content="1+1=2 #### 999"), {}, r"item 3 \(seed \d+\): the verifier of env 'math' rejects the "
                                             r"expert's answer '999'"),
    (_with(5, seed=None), {}, r"item 5: no meta.seed"),
    (_with(0), {"env": RASFTEnvConfig(name="math", split="ood", eval_splits=())}, r"item 0 .*prompt differs"),
    (_with(0), {"data": RASFTDataConfig(max_length=12)}, r"none of the 12 items can be routed: "
                                                        r"data.max_length=12 cuts away every expert response"),
    ([], {}, r"training data is empty"),
])
def test_bad_items_fail_before_a_run_starts(nano_checkpoint, tmp_path, records, kw, match):
    with pytest.raises(DataError, match=match):
        train_rasft(config(nano_checkpoint, tmp_path / "run", **kw), records)
    assert not (tmp_path / "run").exists()


def test_config_rejects_a_bad_ratio_clip(nano_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="rho_min"):
        config(nano_checkpoint, tmp_path, rho_min=1.5, rho_max=1.2)
    with pytest.raises(ConfigError, match="model.path: RASFT starts from a checkpoint"):
        train_rasft(config(nano_checkpoint, tmp_path, model=ModelConfig(preset="nano")), ITEMS)


def test_published_defaults():
    cfg = RASFTConfig(model=ModelConfig(path="x"))
    o = cfg.optim
    assert (o.lr, o.weight_decay, o.schedule, o.warmup_steps, o.grad_clip) == (5e-5, 0.0, "cosine", 4, 1.0)
    assert cfg.batch.sequences_per_step == 256 and (cfg.rho_min, cfg.rho_max) == (0.4, 1.2)
    r = cfg.routing
    assert (r.samples_per_problem, r.temperature, r.top_p, r.repetition_penalty) == (3, 0.9, 0.95, 1.1)
    assert (r.hard_never, r.calibrate_on_initial, r.refresh_every, r.route_chunk) == ("expert", True, 32, 128)
