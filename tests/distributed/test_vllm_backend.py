"""The vLLM rollout backend against a fake engine that records calls (vLLM is not installed here).

The fake `LLM` has vLLM V1's surface the backend uses: generate(prompts, sampling_params,
use_tqdm), collective_rpc(fn, args) running `fn(worker, *args)` on its one worker, sleep(level),
wake_up(tags). It samples with postlab's local engine from its OWN copy of the weights, so an RL
run through it learns only if the backend pushes the policy's weights after every update.
"""

import copy
import dataclasses
import textwrap
import types

import pytest
import torch

from postlab.config import ConfigError, load_config
from postlab.envs.spec import EnvSpec
from postlab.rollout.engine import SamplingParams, generate
from postlab.rollout.vllm_backend import VLLMBackend


class FakeSamplingParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


@dataclasses.dataclass
class FakeTokensPrompt:
    prompt_token_ids: list


class FakeLLM:
    def __init__(self, model, tokenizer):
        self.model = copy.deepcopy(model).eval()
        self.tokenizer = tokenizer
        self.calls: list[tuple] = []
        self.loaded: list[dict] = []  # the weights of every load, by name
        worker = types.SimpleNamespace(model_runner=types.SimpleNamespace(
            model=types.SimpleNamespace(load_weights=self._load_weights)))
        self.worker = worker

    def _load_weights(self, weights):
        state = {name: t.detach().clone() for name, t in weights}
        self.loaded.append(state)
        self.model.load_state_dict(state, strict=False)

    def generate(self, prompts, sampling_params, use_tqdm=True):
        self.calls.append(("generate", len(prompts)))
        k = sampling_params.kwargs
        params = SamplingParams(max_new_tokens=k["max_tokens"], temperature=k["temperature"], top_p=k["top_p"],
                                top_k=max(k["top_k"], 0), n=k["n"], stop=tuple(k["stop"] or ()), seed=k["seed"])
        done = generate(self.model, self.tokenizer, [p.prompt_token_ids for p in prompts], params)
        outs = [types.SimpleNamespace(outputs=[]) for _ in prompts]
        for c in done:
            lps = [{t: types.SimpleNamespace(logprob=lp), t + 1: types.SimpleNamespace(logprob=-99.0)}
                   for t, lp in zip(c.token_ids, c.logprobs)]
            outs[c.prompt_index].outputs.append(types.SimpleNamespace(
                token_ids=tuple(c.token_ids), text=c.text, logprobs=lps, finish_reason=c.finish_reason))
        return outs

    def collective_rpc(self, method, args=()):
        self.calls.append(("collective_rpc", getattr(method, "__name__", method)))
        return [method(self.worker, *args)]

    def sleep(self, level=1):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake_up", tuple(tags) if tags else None))


def backend_for(model, tok, sleep=True):
    return VLLMBackend(FakeLLM(model, tok), FakeSamplingParams, FakeTokensPrompt, sleep=sleep)


def test_sampling_params_map_one_to_one(char_tokenizer):
    b = VLLMBackend(object(), FakeSamplingParams, FakeTokensPrompt)
    p = SamplingParams(max_new_tokens=17, temperature=0.7, top_p=0.9, top_k=5, n=3, stop=("\n",), seed=11)
    assert b.to_vllm(p).kwargs == dict(n=3, temperature=0.7, top_p=0.9, top_k=5, max_tokens=17, stop=["\n"],
                                       include_stop_str_in_output=True, seed=11,
                                       repetition_penalty=getattr(p, "repetition_penalty", 1.0), logprobs=0)
    off = b.to_vllm(SamplingParams(max_new_tokens=4, temperature=1.0, top_k=0)).kwargs
    assert off["top_k"] == -1 and off["stop"] is None  # vLLM's "off" values
    greedy = b.to_vllm(SamplingParams(max_new_tokens=4, temperature=0, top_p=0.5, top_k=3)).kwargs
    assert (greedy["temperature"], greedy["top_p"], greedy["top_k"]) == (0, 1.0, -1)


def test_generate_stores_the_samplers_logprobs(nano_model, char_tokenizer):
    backend = backend_for(nano_model, char_tokenizer)
    prompts = [char_tokenizer.encode("ab="), char_tokenizer.encode("abc=")]
    params = SamplingParams(max_new_tokens=6, temperature=1.0, n=2, seed=3)
    got = generate(nano_model, char_tokenizer, prompts, params, backend=backend)
    local = generate(nano_model, char_tokenizer, prompts, params)
    assert [c.prompt_index for c in got] == [0, 0, 1, 1]
    for g, want in zip(got, local):  # the fake samples with the local engine: same tokens, same log-probs
        assert g.token_ids == want.token_ids and g.logprobs == pytest.approx(want.logprobs)
    assert backend.llm.calls == [("generate", 2), ("sleep", 1)]  # asleep during the update


def test_missing_vllm_names_the_extra(tmp_path):
    from postlab.rollout.backends import RolloutConfig, make_backend

    with pytest.raises(ImportError, match=r"pip install 'postlab\[vllm\]'"):
        VLLMBackend(object())
    with pytest.raises(ConfigError, match=r"rollout.backend: vllm: .*pip install 'postlab\[vllm\]'"):
        make_backend(RolloutConfig(backend="vllm"), str(tmp_path))


def test_rl_syncs_weights_after_every_update(tmp_path, monkeypatch, nano_checkpoint):
    """rollout.backend: vllm in an RL run: every step samples through the engine, which receives the
    policy's exact weights after every update (before the next rollout); sleep/wake around it."""
    from safetensors.torch import load_file

    from postlab.trainers import rl

    base = nano_checkpoint
    cfg_path = tmp_path / "rl.yaml"
    cfg_path.write_text(textwrap.dedent(f"""
        model: {{path: {base}}}
        env: {{name: toy, eval_splits: []}}
        batch: {{prompts_per_step: 2, samples_per_prompt: 4, micro_batch_sequences: 4}}
        sampling: {{max_new_tokens: 6}}
        rollout: {{backend: vllm}}
        reward_fn: dist_rewards:token_parity
        run: {{max_steps: 3, log_every: 1, progress: false, tensorboard: false, out_dir: {tmp_path / 'run'}}}
    """))
    monkeypatch.syspath_prepend(str(__import__("pathlib").Path(__file__).parent))
    cfg = load_config(rl.RLConfig, cfg_path)
    made = []

    def fake_make_backend(rollout_cfg, start, dtype, seed):
        assert rollout_cfg.backend == "vllm" and start == str(base)
        from postlab.models.io import load_model, load_tokenizer

        made.append(backend_for(load_model(start), load_tokenizer(start)))
        return made[-1]

    from postlab.rollout import backends

    monkeypatch.setattr(backends, "make_backend", fake_make_backend)
    synced = []
    orig_sync = VLLMBackend.sync

    def sync(self, policy):
        orig_sync(self, policy)
        synced.append({k: v.detach().clone() for k, v in policy.state_dict().items()})

    monkeypatch.setattr(VLLMBackend, "sync", sync)
    final = rl.train_rl(cfg)
    (backend,) = made
    llm = backend.llm
    assert [c[0] for c in llm.calls] == ["generate", "sleep", "wake_up", "collective_rpc", "wake_up"] * 3
    assert ("wake_up", ("weights",)) in llm.calls  # weights woken alone, before the KV cache
    assert backend.syncs == len(llm.loaded) == len(synced) == 3
    for pushed, policy in zip(llm.loaded, synced):  # the engine got the policy's weights of that moment
        for name, t in pushed.items():
            torch.testing.assert_close(t, policy[name], atol=0, rtol=0)
    assert any(not torch.equal(llm.loaded[0][k], llm.loaded[-1][k]) for k in llm.loaded[0])  # it trained
    weights = load_file(str(final / "model.safetensors"))
    for name, t in weights.items():
        torch.testing.assert_close(llm.model.state_dict()[name], t, atol=0, rtol=0)


def _fake_make_backend(made, expected_start):
    def make(rollout_cfg, start, dtype="bfloat16", seed=0):
        assert rollout_cfg.backend == "vllm" and str(start) == str(expected_start)
        from postlab.models.io import load_model, load_tokenizer

        made.append(backend_for(load_model(str(start)), load_tokenizer(str(start))))
        return made[-1]

    return make


def test_rft_samples_through_vllm_and_syncs_after_every_update(tmp_path, monkeypatch, nano_checkpoint):
    from postlab.trainers import rft

    base = nano_checkpoint
    made = []
    from postlab.rollout import backends

    monkeypatch.setattr(backends, "make_backend", _fake_make_backend(made, base))
    # every sampled answer counts as a verified, finished one: each step updates, so each step syncs
    orig = rft.run_episodes

    def all_correct(*a, **kw):
        eps = orig(*a, **kw)
        for e in eps:
            e.success, e.turns[-1].finish_reason = True, "stop"
        return eps

    monkeypatch.setattr(rft, "run_episodes", all_correct)
    cfg = load_config(rft.RFTConfig, None, [f"model.path={base}", "env.eval_splits=[]", "batch.prompts_per_step=2",
                                            "batch.samples_per_prompt=2", "sampling.max_new_tokens=6",
                                            "rollout.backend=vllm", "run.max_steps=2", "run.progress=false",
                                            "run.tensorboard=false", f"run.out_dir={tmp_path / 'run'}"])
    final = rft.train_rft(cfg)
    (backend,) = made
    assert [c[0] for c in backend.llm.calls] == ["generate", "sleep", "wake_up", "collective_rpc", "wake_up"] * 2
    from safetensors.torch import load_file

    for name, t in load_file(str(final / "model.safetensors")).items():  # the engine holds the final policy
        torch.testing.assert_close(backend.llm.model.state_dict()[name], t, atol=0, rtol=0)


def test_rasft_pushes_weights_only_before_a_refresh_after_an_update(tmp_path, monkeypatch, nano_checkpoint):
    from postlab.data.records import load_records, write_jsonl
    from postlab.trainers import rasft

    base = nano_checkpoint
    made = []
    from postlab.rollout import backends

    monkeypatch.setattr(backends, "make_backend", _fake_make_backend(made, base))
    write_jsonl(load_records("env:math/id/40"), tmp_path / "items.jsonl")
    cfg = load_config(rasft.RASFTConfig, None, [
        f"model.path={base}", f"data.train={tmp_path / 'items.jsonl'}", "data.max_length=256", "env.eval_splits=[]",
        "batch.sequences_per_step=8", "batch.micro_batch_sequences=4", "routing.refresh_every=1",
        "routing.route_chunk=16", "routing.calibration_items=32", "routing.max_new_tokens=8", "rollout.backend=vllm",
        "run.max_steps=3", "run.progress=false", "run.tensorboard=false", f"run.out_dir={tmp_path / 'run'}"])
    rasft.train_rasft(cfg)
    (backend,) = made
    kinds = [c[0] for c in backend.llm.calls if c[0] in ("generate", "collective_rpc")]
    # each refresh here follows an update: one push, then its rollouts; no push at steps without a refresh
    assert kinds == ["collective_rpc", "generate"] * (len(kinds) // 2) and len(kinds) >= 2
    assert backend.syncs == len(kinds) // 2 < 3  # fewer pushes than the run's 3 optimizer steps


def test_rollout_job_and_eval_sample_through_vllm_without_loading_the_weights(tmp_path, monkeypatch, nano_checkpoint):
    import importlib

    evaluate_mod = importlib.import_module("postlab.eval.evaluate")
    from postlab.models import io
    from postlab.rollout import backends, offline

    base = nano_checkpoint
    made = []
    monkeypatch.setattr(offline, "make_backend", _fake_make_backend(made, base))
    monkeypatch.setattr(backends, "make_backend", _fake_make_backend(made, base))
    loads = []
    orig_load = io.load_model
    monkeypatch.setattr(io, "load_model", lambda *a, **k: loads.append(a) or orig_load(*a, **k))
    job = lambda backend: offline.RolloutJobConfig(  # noqa: E731
        model=str(base), env=EnvSpec(name="unary-feedback", kwargs={"env": "math", "max_attempts": 2}), n_prompts=2,
        samples_per_prompt=2, max_new_tokens=6, out=str(tmp_path / f"{backend}.jsonl"), progress=False,
        rollout=backends.RolloutConfig(backend=backend))
    summary = offline.run_rollout_job(job("vllm"))
    assert summary.trajectories == 4 and made[-1].llm.calls[0][0] == "generate"
    assert offline.job_fingerprint(job("vllm"), "x") != offline.job_fingerprint(job("local"), "x")
    res = evaluate_mod.evaluate_checkpoint(str(base), "math", ["id"], backend="vllm", n_episodes=3,
                                           max_new_tokens=6)
    assert res[0]["n_episodes"] == 3 and made[-1].llm.calls[0] == ("generate", 3)
    assert len(loads) == 2  # only the fake engines loaded weights: neither job nor evaluation made a local copy
