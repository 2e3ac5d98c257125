"""Optional vLLM backend behind `generate(..., backend=VLLMBackend(llm))` (paper scale, GPUs).

`pip install 'postlab[vllm]'`. vLLM is imported lazily, only when a backend is built without
injected classes, so postlab imports and tests run without it. Log-probs: vLLM returns the
sampled token's log-prob; with `logprobs_mode="raw_logprobs"` (vLLM's default) that is the
temperature-1 model distribution, like the local engine. After each policy update the
trainer must push weights to the engine (`sync_weights`).
"""

from __future__ import annotations

from postlab.rollout.engine import Completion, SamplingParams


class VLLMBackend:
    def __init__(self, llm, sampling_params_cls=None, tokens_prompt_cls=None):
        if sampling_params_cls is None or tokens_prompt_cls is None:
            try:
                from vllm import SamplingParams as VSamplingParams
                from vllm.inputs import TokensPrompt
            except ImportError:
                raise ImportError("the vLLM backend needs vllm: pip install 'postlab[vllm]'") from None
            sampling_params_cls, tokens_prompt_cls = VSamplingParams, TokensPrompt
        self.llm, self._sp, self._prompt = llm, sampling_params_cls, tokens_prompt_cls

    def to_vllm(self, params: SamplingParams):
        greedy = params.temperature == 0
        return self._sp(n=params.n, temperature=params.temperature, top_p=1.0 if greedy else params.top_p,
                        top_k=-1 if greedy or not params.top_k else params.top_k, max_tokens=params.max_new_tokens,
                        stop=list(params.stop) or None, include_stop_str_in_output=True, seed=params.seed, logprobs=0)

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        outs = self.llm.generate([self._prompt(prompt_token_ids=p) for p in prompts], self.to_vllm(params),
                                 use_tqdm=False)
        results = []
        for i, out in enumerate(outs):
            for o in out.outputs:
                ids = list(o.token_ids)
                # logprobs: one {token_id: Logprob} dict per generated token
                lps = [step[t].logprob for step, t in zip(o.logprobs or [], ids)]
                finish = "length" if o.finish_reason == "length" else "stop"
                results.append(Completion(i, ids, o.text, lps, finish))
        return results

    def sync_weights(self, model) -> None:
        """Load the policy's current weights into the vLLM engine (same process)."""
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights(model.state_dict().items())
