"""Multi-turn episodes against any `Env`, in lock-step (evaluation: postlab.eval.evaluate).

All active episodes generate together each turn (one `generate` call per turn). The training
sequence of an episode is built token by token: the rendered prompt, then the sampled tokens
exactly as sampled (mask 1, with the sampler's log-probs), then the environment's feedback
rendered with the chat template (mask 0), and so on. Nothing is re-tokenized, so the loss
mask covers exactly the model's tokens and the stored log-probs align with the trained
tokens (the trainer's `old_logp`).

The feedback segment is the chat-template text that rendering the dialogue with the new
turns adds to what has been rendered so far; a template that is not prefix-stable (it
rewrites earlier turns) raises a clear error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

from postlab.data.records import Encoded
from postlab.envs.base import Env
from postlab.rollout.engine import DialogueSampler, SamplingParams, generate


@dataclasses.dataclass
class Turn:
    start: int  # index in Episode.input_ids of the turn's first generated token (context length before it)
    token_ids: list[int]
    logprobs: list[float]
    text: str
    finish_reason: str
    reward: float = 0.0
    success: bool = False
    env_done: bool = False  # the env ended the episode here (not the caller's turn cap)
    info: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Episode:
    seed: int
    messages: list[dict]
    input_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]  # aligned with input_ids; 0 on prompt and feedback tokens
    turns: list[Turn] = dataclasses.field(default_factory=list)
    done: bool = False
    success: bool = False
    # True: the env's expert played the turn, not the policy (LUFFY's expert trace in a group); its
    # logprobs are 0 (no behaviour probability: the objective treats pi_off as 1)
    off_policy: bool = False
    # UFT: the first turn starts with this many tokens of a hint (a prefix of the expert's solution put
    # in the prompt); they are the turn's first token_ids, trained as off-policy targets (logprobs 0)
    hint_tokens: int = 0
    hint: str = ""
    _rendered: str = ""

    @property
    def reward(self) -> float:
        """Episode return: the sum of turn rewards."""
        return sum(t.reward for t in self.turns)

    @property
    def truncated(self) -> bool:
        return any(t.finish_reason == "length" for t in self.turns)

    def encoded(self) -> Encoded:
        return Encoded(list(self.input_ids), list(self.loss_mask))

    def target_logprobs(self) -> list[float]:
        """Sampler log-probs of the trained tokens, in the order `pack` lists targets."""
        return [lp for lp, m in zip(self.logprobs[1:], self.loss_mask[1:]) if m]

    def target_turns(self) -> list[int]:
        """Turn index of every trained token, in target order."""
        return [k for k, t in enumerate(self.turns) for _ in t.token_ids]


def render_chat(tokenizer, messages: list[dict], generation_prompt: bool) -> str:
    """The chat-template text of a dialogue (roles and contents only), as the rollout engine encodes it."""
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    return tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=generation_prompt)


def _append(ep: Episode, tokenizer, text: str, mask: int) -> None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    ep.input_ids += ids
    ep.loss_mask += [mask] * len(ids)
    ep.logprobs += [0.0] * len(ids)


def start_episode(env: Env, tokenizer, seed: int) -> Episode:
    obs = env.reset(seed=seed)
    ep = Episode(seed=seed, messages=list(obs.messages), input_ids=[], loss_mask=[], logprobs=[])
    ep._rendered = render_chat(tokenizer, ep.messages, True)
    _append(ep, tokenizer, ep._rendered, 0)
    return ep


def start_hint(ep: Episode, tokenizer, hint: str) -> None:
    """Put a hint in the episode's prompt, as the first words of the model's answer (UFT): the model
    continues it, and the hint's tokens become the first trained tokens of the first turn."""
    ids = tokenizer.encode(hint, add_special_tokens=False)
    ep.input_ids += ids
    ep.loss_mask += [1] * len(ids)
    ep.logprobs += [0.0] * len(ids)
    ep._rendered += hint
    ep.hint_tokens, ep.hint = len(ids), hint


def _after_turn(ep: Episode, env: Env, tokenizer, completion, max_turns: int, stop_ids: set) -> None:
    """Record the model's turn, score it with the env, append feedback or finish."""
    hint = ep.hint if not ep.turns else ""  # a hint is the start of the first answer: scored with it
    turn = Turn(len(ep.input_ids) - (ep.hint_tokens if hint else 0),
                (ep.input_ids[-ep.hint_tokens:] if hint else []) + completion.token_ids,
                ([0.0] * ep.hint_tokens if hint else []) + completion.logprobs, hint + completion.text,
                completion.finish_reason)
    ep.input_ids += completion.token_ids
    ep.loss_mask += [1] * len(completion.token_ids)
    ep.logprobs += completion.logprobs
    ep.turns.append(turn)
    ended_by_token = bool(completion.token_ids) and completion.token_ids[-1] in stop_ids
    ep._rendered += completion.text + (tokenizer.decode(completion.token_ids[-1:]) if ended_by_token else "")
    ep.messages.append({"role": "assistant", "content": turn.text})
    res = env.step(turn.text)
    turn.reward, turn.success, turn.info = float(res.reward), bool(res.success), dict(res.info or {})
    turn.env_done = bool(res.done)
    ep.success = ep.success or turn.success
    if res.done or len(ep.turns) >= max_turns:
        ep.done = True
        return
    ep.messages += list(res.feedback)
    full = render_chat(tokenizer, ep.messages, True)
    if not full.startswith(ep._rendered):
        raise ValueError("the chat template is not prefix-stable after a model turn (it rewrites earlier text); "
                         "multi-turn episodes need a prefix-stable template")
    _append(ep, tokenizer, full[len(ep._rendered):], 0)
    ep._rendered = full


def expert_episode(env: Env, tokenizer, seed: int, stop_id: int) -> Episode:
    """A one-turn episode on `seed` whose answer is the env's expert demonstration (`env.expert()`, what
    SFT imitates), ended with `stop_id` as a sampled answer ends with EOS, and scored by the env's own
    verifier like any sampled answer (LUFFY scores its expert traces with the same reward)."""
    from postlab.rollout.engine import Completion

    ep = start_episode(env, tokenizer, seed)
    text = env.expert()
    ids = tokenizer.encode(text, add_special_tokens=False) + [stop_id]
    _after_turn(ep, env, tokenizer, Completion(0, ids, text, [0.0] * len(ids), "stop"), 1, {stop_id})
    ep.off_policy = True
    return ep


def run_episodes(model, tokenizer, envs: Sequence[Env], seeds: Sequence[int], params: SamplingParams,
                 max_turns: int | None = None, backend=None, max_context: int | None = None,
                 prefix_cache: bool = True, hints: Sequence[str] | None = None) -> list[Episode]:
    """Play one episode per (env, seed) in lock-step; `params.n` must be 1 (pass one env per sample).

    Episodes whose envs share a seed start from the same prompt, which the engine prefills once.
    Turn k samples with seed params.seed + k, so a batch is reproducible from params.seed.
    `max_context` keeps only the last tokens of a dialogue as the prompt (long multi-turn
    evaluation on a small-context model); the episode itself keeps every token.
    `prefix_cache=False` re-encodes every dialogue each turn (the reference the cached path is
    tested against). `hints` (UFT): per episode, text the first answer starts with (`start_hint`).
    """
    if params.n != 1:
        raise ValueError("run_episodes samples once per env; for G samples per prompt pass G envs with the same seed")
    if len(envs) != len(seeds):
        raise ValueError(f"{len(envs)} envs but {len(seeds)} seeds")
    from postlab.rollout.engine import stop_token_ids

    stop_ids = set(stop_token_ids(model, tokenizer))
    eps = [start_episode(env, tokenizer, s) for env, s in zip(envs, seeds)]
    for ep, hint in zip(eps, hints or ()):
        if hint:
            start_hint(ep, tokenizer, hint)
    limits = [max_turns or env.max_turns for env in envs]
    # the local engine keeps each dialogue's KV cache between turns (re-encoding a 10-turn dialogue
    # every turn was 80% of multi-turn sampling time); an external backend gets whole prompts
    multi_turn = max(limits) > 1
    sampler = DialogueSampler(model, tokenizer) if multi_turn and prefix_cache and backend is None and \
        DialogueSampler.supports(model) else None
    turn = 0
    while True:
        active = [i for i, e in enumerate(eps) if not e.done]
        if not active:
            return eps
        prompts = [eps[i].input_ids[-max_context:] if max_context else eps[i].input_ids for i in active]
        turn_params = dataclasses.replace(params, seed=params.seed + 1_000_003 * turn)
        if sampler is not None:
            outs = sampler.sample(active, prompts, turn_params)
        else:
            outs = generate(model, tokenizer, prompts, turn_params, backend=backend)
        for i, c in zip(active, outs):
            _after_turn(eps[i], envs[i], tokenizer, c, limits[i], stop_ids)
        turn += 1


def play(model, tokenizer, make_env: Callable[[], Env], seeds: Sequence[int], params: SamplingParams,
         max_turns: int | None = None, batch_size: int = 256, backend=None,
         max_context: int | None = None) -> list[Episode]:
    """`run_episodes` over many seeds, `batch_size` episodes at a time (one fresh env each);
    chunk c samples with seed params.seed + c, so results do not depend on earlier chunks."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    eps: list[Episode] = []
    for lo in range(0, len(seeds), batch_size):
        chunk = list(seeds[lo:lo + batch_size])
        eps += run_episodes(model, tokenizer, [make_env() for _ in chunk], chunk,
                            dataclasses.replace(params, seed=params.seed + lo), max_turns, backend, max_context)
    return eps


def context_limit(model, max_new_tokens: int) -> int | None:
    """How many prompt tokens fit before `max_new_tokens` in the model's position range."""
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return max_pos - max_new_tokens if max_pos else None
