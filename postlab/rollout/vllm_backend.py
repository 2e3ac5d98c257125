"""The vLLM rollout backend (paper scale, GPUs), for vLLM's V1 engine.

    backend = VLLMBackend.create(model_path, dtype="bfloat16", seed=0)   # or VLLMBackend(llm) for any LLM
    completions = generate(model, tokenizer, prompts, params, backend=backend)
    ... optimizer step(s) ...
    backend.sync(policy)      # before the next rollout: vLLM samples from the updated weights

A rollout backend is two methods (`postlab.rollout.backends.RolloutBackend`): `generate(prompts,
params)` and `sync(policy)`. `pip install 'postlab[vllm]'`; vLLM is imported only when an engine
is built here, so postlab imports and its tests run without it (tests drive this class with a
fake engine that records calls).

- Sampling parameters map one to one (`to_vllm`): n, temperature (0 = greedy), top_p, top_k
  (0 = off, vLLM's -1), max_new_tokens -> max_tokens, stop strings (kept in the output, like the
  local engine), seed, repetition_penalty; `logprobs=0` returns the sampled token's log-prob,
  stored as the behaviour policy's (`Completion.logprobs`), as the local engine does. vLLM's
  default `logprobs_mode="raw_logprobs"` makes them the temperature-1 model distribution's, the
  local engine's convention too.
- Weights go through vLLM's supported RPC: `LLM.collective_rpc(fn, args=(weights,))` runs `fn` on
  every worker, which calls its model's `load_weights` (vLLM's own loader: it fuses q/k/v and
  gate/up projections from Hugging Face names). No private engine attribute is touched.
- Sleep mode (`enable_sleep_mode=True`): after a rollout the engine sleeps (level 1: weights
  offloaded to CPU, KV cache freed) so the update has the GPU memory; `sync` wakes the weights,
  loads the new ones, then wakes the KV cache.
"""

from __future__ import annotations

from postlab.rollout.engine import Completion, SamplingParams

VLLM_MISSING = "the vLLM rollout backend needs vllm: pip install 'postlab[vllm]' (GPU machines with CUDA)"


def _load_weights_on_worker(worker, weights) -> None:
    """Runs inside every vLLM worker (through collective_rpc): vLLM's own Hugging Face-name loader."""
    worker.model_runner.model.load_weights(weights=weights)


class VLLMBackend:
    """Rollouts from a vLLM `LLM`; `sync(policy)` pushes the policy's weights into it."""

    def __init__(self, llm, sampling_params_cls=None, tokens_prompt_cls=None, sleep: bool = False):
        if sampling_params_cls is None or tokens_prompt_cls is None:
            try:
                from vllm import SamplingParams as VSamplingParams
                from vllm.inputs import TokensPrompt
            except ImportError:
                raise ImportError(VLLM_MISSING) from None
            sampling_params_cls, tokens_prompt_cls = VSamplingParams, TokensPrompt
        self.llm, self._sp, self._prompt = llm, sampling_params_cls, tokens_prompt_cls
        self.sleep_between = sleep
        self._asleep = False
        self.syncs = 0  # weight pushes so far (logged by trainers)

    @classmethod
    def create(cls, model_path: str, dtype: str = "bfloat16", seed: int = 0, gpu_memory_utilization: float = 0.3,
               max_model_len: int | None = None, sleep: bool = True, **engine_kwargs) -> VLLMBackend:
        """A colocated engine on this process's GPU. Under torchrun every rank builds its own
        (vLLM's `external_launcher` mode: one engine per process, no extra processes)."""
        try:
            from vllm import LLM
        except ImportError:
            raise ImportError(VLLM_MISSING) from None
        from postlab.distributed import world

        kwargs = dict(model=model_path, dtype=dtype, seed=seed, gpu_memory_utilization=gpu_memory_utilization,
                      enable_sleep_mode=sleep, **engine_kwargs)
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if world()[1] > 1:
            kwargs.setdefault("distributed_executor_backend", "external_launcher")
        return cls(LLM(**kwargs), sleep=sleep)

    # ------------------------------------------------------------------ sampling
    def to_vllm(self, params: SamplingParams):
        greedy = params.temperature == 0
        return self._sp(n=params.n, temperature=params.temperature, top_p=1.0 if greedy else params.top_p,
                        top_k=-1 if greedy or not params.top_k else params.top_k, max_tokens=params.max_new_tokens,
                        stop=list(params.stop) or None, include_stop_str_in_output=True, seed=params.seed,
                        repetition_penalty=getattr(params, "repetition_penalty", 1.0), logprobs=0)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        self._wake()
        outs = self.llm.generate([self._prompt(prompt_token_ids=p) for p in prompts], self.to_vllm(params),
                                 use_tqdm=False)
        results = []
        for i, out in enumerate(outs):
            for o in out.outputs:
                ids = list(o.token_ids)
                # logprobs: one {token_id: Logprob} dict per generated token (the sampled one included)
                lps = [step[t].logprob for step, t in zip(o.logprobs or [], ids)]
                if len(lps) != len(ids):
                    raise RuntimeError(f"vLLM returned {len(lps)} log-probs for {len(ids)} tokens; the sampler's "
                                       "log-probs are needed as the behaviour policy's (logprobs=0)")
                finish = "length" if o.finish_reason == "length" else "stop"
                results.append(Completion(i, ids, o.text, lps, finish))
        if self.sleep_between:  # the update runs next: give it the GPU memory
            self.llm.sleep(level=1)
            self._asleep = True
        return results

    # ------------------------------------------------------------------ weights
    def sync(self, policy) -> None:
        """Push `policy`'s current weights into the engine (call after the update, before the next rollout).

        A sharded (FSDP2) policy is gathered first (a collective: every rank calls sync); each
        rank's engine then loads the full weights. The tensors go to vLLM by Hugging Face name."""
        from postlab.distributed import full_state_dict_all_ranks
        from postlab.models import lora

        # a LoRA policy: the engine serves the base architecture, so it gets the adapters merged in
        state = lora.merged_state_dict(policy) if lora.is_lora(policy) else full_state_dict_all_ranks(policy)
        weights = [(name, t.detach()) for name, t in state.items()]
        if self._asleep:
            self._wake(tags=["weights"])  # weights first: the KV cache is not needed to load them
        self.llm.collective_rpc(_load_weights_on_worker, args=(weights,))
        self._wake()
        self.syncs += 1

    # Backward-compatible name.
    sync_weights = sync

    def _wake(self, tags: list[str] | None = None) -> None:
        if not self._asleep:
            return
        if tags is None:
            self.llm.wake_up()
            self._asleep = False
        else:
            self.llm.wake_up(tags=tags)
