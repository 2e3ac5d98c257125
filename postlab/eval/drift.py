"""How far a continuation moved from its start: KL(pi_start || pi) on held-out prompts, and parameter distance.

"RL forgets less than SFT" is only a finding when the two continuations moved equally far;
a continuation that barely moved forgets nothing. RL's Razor (Shenfeld et al. 2025, arXiv
2509.04259) finds that forgetting is predicted by the forward KL between the start policy and
the fine-tuned one on the new task's prompts,

    KL(pi_0 || pi) = E_x E_{y ~ pi_0(.|x)} [ log pi_0(y|x) - log pi(y|x) ],

estimated here by Monte Carlo on samples of the start model (temperature 1, the policy itself):
`n_problems` prompts (the evaluation problems' first-turn prompts: measuring is not training,
and every model is measured on the same ones), `samples` completions of at most
`max_new_tokens` tokens each. The samples are drawn once per start model (`DriftReference`) and
every continuation is scored on the same ones, so points along a run are compared on common
samples. Both log-probabilities come from the same teacher-forced forward
(`postlab.models.forward.token_outputs`), so the start model measured against itself gives
exactly 0. A completion cut at `max_new_tokens` contributes the KL of its first tokens: the
estimate is of the KL between the distributions of the first `max_new_tokens` tokens.

Per problem the value is the mean over its samples of the sequence log-ratio (nats per
sequence); ``kl`` is their mean, ``kl_per_token`` divides by the mean completion length.
``param_distance`` is ||theta - theta_0||_2 over the parameters both models share, and
``param_distance_rel`` that divided by ||theta_0||_2.

Forgetting of what pre-training taught (`corpus_items` > 0, for an env with a base corpus): the
mean per-token negative log-likelihood of `corpus_items` held-out base-corpus items (drawn with
`seeds.corpus_generator_seed(..., "held_out")`, never a training item), ``corpus_nll``, and its
increase over the start's on the same items, ``corpus_nll_increase`` (per item, for paired CIs).
At lab scale the base corpus is the "earlier task": arithmetic, card values under both rules,
card games to other targets; a continuation that forgets it moves its NLL up.
"""

from __future__ import annotations

import dataclasses

import torch

from postlab.data.batching import pack
from postlab.data.records import Encoded, encode_all
from postlab.eval.metrics import mean_ci
from postlab.models.forward import token_outputs
from postlab.rollout.engine import SamplingParams, generate
from postlab.rollout.episodes import start_episode
from postlab.seeds import corpus_generator_seed, eval_seed

# what a point's drift record holds that a report can name as ``drift:KEY``
DRIFT_KEYS = ("kl", "kl_per_token", "param_distance", "param_distance_rel", "corpus_nll", "corpus_nll_increase")
# the keys whose per-problem (per-item) values a record also holds, for paired CIs
DRIFT_PER_PROBLEM = {"kl": "kl_per_problem", "corpus_nll_increase": "corpus_nll_increase_per_item"}


@dataclasses.dataclass
class DriftOptions:
    """Where and how `DriftReference` measures KL to the start (a study eval stage's `drift:` mapping)."""

    split: str = "id"  # the new task's prompts: the training split's held-out problems
    n_problems: int = 64
    samples: int = 4  # completions of the start model per prompt
    max_new_tokens: int = 64
    micro_batch_sequences: int = 32  # sequences per teacher-forced forward
    seed: int = 0
    corpus_items: int = 128  # held-out base-corpus items for corpus_nll (0: not measured)

    def __post_init__(self):
        for k in ("n_problems", "samples", "max_new_tokens", "micro_batch_sequences"):
            if not isinstance(getattr(self, k), int) or getattr(self, k) < 1:
                raise ValueError(f"drift.{k} must be an integer >= 1, got {getattr(self, k)!r}")
        if not isinstance(self.corpus_items, int) or self.corpus_items < 0:
            raise ValueError(f"drift.corpus_items must be an integer >= 0, got {self.corpus_items!r}")


class DriftReference:
    """The start model's samples on fixed prompts, and its log-probs of them; `measure(model)` scores a continuation."""

    def __init__(self, start_model, tokenizer, env_factory, options: DriftOptions):
        self.tokenizer, self.options = tokenizer, options
        o = options
        prompts = [start_episode(env_factory(), tokenizer, eval_seed(o.seed + i)).input_ids for i in range(o.n_problems)]
        params = SamplingParams(max_new_tokens=o.max_new_tokens, temperature=1.0, n=o.samples, seed=o.seed)
        completions = generate(start_model, tokenizer, prompts, params)
        # one sequence per (problem, sample), prompt-major; completions without a token carry nothing
        self.sequences = [Encoded(list(prompts[c.prompt_index]) + c.token_ids,
                                  [0] * len(prompts[c.prompt_index]) + [1] * len(c.token_ids))
                          for c in completions]
        self.problem = [c.prompt_index for c in completions]
        self.lengths = [len(c.token_ids) for c in completions]
        self.start_logp = self._sequence_logp(start_model)
        self.start_params = {n: p.detach().clone() for n, p in start_model.named_parameters()}
        records = env_factory().base_corpus_records(o.corpus_items, seed=corpus_generator_seed(0, "held_out")) \
            if o.corpus_items else []
        self.corpus = [e for e in encode_all(tokenizer, records) if any(e.loss_mask)] if records else []
        self.start_corpus_nll = self._corpus_nll(start_model) if self.corpus else []

    def _sequence_logp(self, model) -> list[float]:
        """log pi(y|x) of every sample, summed over its completion tokens (0 for an empty completion)."""
        kept = [i for i, n in enumerate(self.lengths) if n]
        out = [0.0] * len(self.sequences)
        for i, (total, _) in zip(kept, self._logp_sums(model, [self.sequences[i] for i in kept])):
            out[i] = total
        return out

    def _corpus_nll(self, model) -> list[float]:
        """Mean negative log-likelihood per trained token of every held-out corpus item."""
        return [-total / count for total, count in self._logp_sums(model, self.corpus)]

    @torch.no_grad()
    def _logp_sums(self, model, sequences: list[Encoded]) -> list[tuple[float, int]]:
        """(sum of log p over its trained tokens, their number) of each sequence: teacher-forced forwards in
        eval mode, `micro_batch_sequences` at a time (every sequence has a trained token)."""
        was_training = model.training
        model.eval()
        out: list[tuple[float, int]] = []
        mb = self.options.micro_batch_sequences
        try:
            for lo in range(0, len(sequences), mb):
                batch = pack(sequences[lo:lo + mb]).to(next(model.parameters()).device)
                logp = token_outputs(model, batch).logp.double()
                n = batch.num_seqs
                sums = torch.zeros(n, dtype=torch.float64, device=logp.device).index_add_(0, batch.seq_idx, logp)
                counts = torch.bincount(batch.seq_idx, minlength=n)
                out += [(float(t), int(c)) for t, c in zip(sums, counts)]
        finally:
            model.train(was_training)
        return out

    def measure(self, model, n_boot: int = 2000) -> dict:
        """KL(pi_start || model) per problem and overall, and the parameter distance (a JSON-ready dict)."""
        logp = self._sequence_logp(model)
        n, s = self.options.n_problems, self.options.samples
        ratios = [a - b for a, b in zip(self.start_logp, logp)]
        per_problem = [sum(ratios[p * s:(p + 1) * s]) / s for p in range(n)]
        kl = mean_ci(per_problem, n_boot=n_boot, seed=self.options.seed)
        mean_len = sum(self.lengths) / len(self.lengths)
        dist, ref = parameter_distance(self.start_params, model)
        out = {"kl": kl["mean"], "kl_ci": [kl["ci_low"], kl["ci_high"]], "kl_per_problem": per_problem,
               "kl_per_token": kl["mean"] / mean_len if mean_len else 0.0, "mean_completion_tokens": mean_len,
               "param_distance": dist, "param_distance_rel": dist / ref if ref else 0.0,
               "split": self.options.split, "n_problems": n, "samples": s, "max_new_tokens": self.options.max_new_tokens}
        if self.corpus:
            nll = self._corpus_nll(model)
            increase = [a - b for a, b in zip(nll, self.start_corpus_nll)]
            out.update(corpus_nll=sum(nll) / len(nll), corpus_nll_increase=sum(increase) / len(increase),
                       corpus_nll_increase_per_item=increase, corpus_items=len(nll))
        return out


@torch.no_grad()
def parameter_distance(start: dict[str, torch.Tensor], model) -> tuple[float, float]:
    """(||theta - theta_0||_2, ||theta_0||_2) over the parameters present in both with the same shape."""
    diff = norm = 0.0
    for name, p in model.named_parameters():
        p0 = start.get(name)
        if p0 is None or p0.shape != p.shape:
            continue
        diff += float((p.detach().double().cpu() - p0.double().cpu()).pow(2).sum())
        norm += float(p0.double().pow(2).sum())
    return diff ** 0.5, norm ** 0.5
