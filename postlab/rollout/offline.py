"""Offline rollouts: sample a trajectory dataset ONCE from a fixed reference checkpoint (DRIFT).

    postlab rollout configs/drift_rollout.yaml model=runs/sft/final out=data/drift.jsonl

For prompt i (env seed `postlab.seeds.rl_seed(seed, i)`, the on-policy training range, never
evaluation problems) the job plays `samples_per_prompt` episodes of the env (default: the
unary-feedback wrapper over math, methods.md section 4: up to 5 attempts, "Incorrect. Please
think again." after a wrong answer, stop at the first correct one) and appends them to a JSONL
file (schema: postlab.data.trajectories) through `TrajectoryWriter`, in chunks of whole prompts.

Reproducible and resumable:
- chunk c holds prompts [c P, (c+1) P) with P = max(1, batch_size // samples_per_prompt), and is
  sampled with seed `sampling_seed(seed, c)` in one lock-step batch: its trajectories depend
  only on (config, reference weights, c), never on earlier chunks;
- rerunning the same command on an existing file checks that every line was made by this job
  (same config fingerprint and reference sha256; anything else is refused), drops a
  half-written last line and the lines of an incomplete last prompt, regenerates the chunk
  that prompt belongs to and appends only the missing prompts. So a killed and resumed job
  writes the same bytes as an uninterrupted one. A complete file is left as it is.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from postlab.config import ConfigError, to_dict
from postlab.data.records import DataError
from postlab.data.trajectories import (TrajectoryWriter, episode_answers, episode_verdicts, first_correct_turn,
                                       validate_trajectory)
from postlab.envs.spec import EnvSpec
from postlab.objectives.returns import (DEFAULT_FORMAT_PENALTY, DEFAULT_GAMMA, DEFAULT_REPETITION_COEF,
                                        trajectory_return)
from postlab.rollout.backends import RolloutConfig, config_only_model, make_backend
from postlab.seeds import rl_seed, sampling_seed

RETURN_PARAMS = {"gamma": DEFAULT_GAMMA, "format_penalty": DEFAULT_FORMAT_PENALTY,
                 "repetition_coef": DEFAULT_REPETITION_COEF}
# Keys a resumed job may change. `device` among them: another device samples valid trajectories
# of the same reference, only not bit-identical to what the first device would have drawn.
NOT_IN_FINGERPRINT = ("out", "device", "progress")


@dataclasses.dataclass
class RolloutJobConfig:
    """One offline rollout job (DRIFT's data, Mu et al. arXiv 2605.31455; methods.md section 4)."""

    RENAMED = {"env_kwargs": "env.kwargs", "split": "env.split", "style": "env.style",
               "max_turns": "env.kwargs.max_attempts (unary-feedback's attempt budget; other envs: env.max_turns)"}

    model: str | None = None  # the fixed reference checkpoint (a local Hugging Face directory); required
    # any env (postlab.envs.spec); DRIFT: unary-feedback over math (env.kwargs.env) with 5 attempts
    # (env.kwargs.max_attempts; an unparsable turn uses none, and the env caps all turns at twice that)
    env: EnvSpec = dataclasses.field(default_factory=lambda: EnvSpec(name="unary-feedback"))
    n_prompts: int = 64  # distinct problems
    samples_per_prompt: int = 16  # DRIFT: 16 trajectories per prompt
    temperature: float = 1.0  # DRIFT samples the reference at temperature 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64  # per model turn
    out: str = "data/rollouts.jsonl"
    seed: int = 0  # run seed: env seeds rl_seed(seed, i), chunk c samples with sampling_seed(seed, c)
    batch_size: int = 256  # trajectories sampled together: batch_size // samples_per_prompt whole prompts
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "auto"
    progress: bool = True
    # who samples: postlab's local engine (default) or vLLM (`rollout: {backend: vllm}`, paper scale); the
    # reference is fixed, so the engine never needs a weight push
    rollout: RolloutConfig = dataclasses.field(default_factory=RolloutConfig)

    def __post_init__(self):
        if not self.model:
            raise ConfigError("model: set model=PATH, the reference checkpoint to sample from (e.g. an SFT run's "
                              "RUN/final)")
        for key in ("n_prompts", "samples_per_prompt", "max_new_tokens", "batch_size"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key}: must be >= 1, got {getattr(self, key)}")
        if self.seed < 0:
            raise ConfigError(f"seed: must be >= 0, got {self.seed}")
        if self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ConfigError(f"temperature must be >= 0 and top_p in (0, 1]; got {self.temperature}, {self.top_p}")
        try:
            rl_seed(self.seed, self.n_prompts - 1)
        except ValueError as e:
            raise ConfigError(f"n_prompts / seed: {e}") from None

    @property
    def prompts_per_chunk(self) -> int:
        return max(1, self.batch_size // self.samples_per_prompt)

    @property
    def n_chunks(self) -> int:
        return -(-self.n_prompts // self.prompts_per_chunk)

def make_env_factory(cfg: RolloutJobConfig) -> Callable:
    """A function giving one independent env of the job per call (clones of one env built here,
    so what construction builds, e.g. a world, is built once); bad env settings raise ConfigError."""
    return cfg.env.build(key="env").clone


# ----------------------------------------------------------------------------- identity of a job


def checkpoint_sha256(path: str | Path) -> str:
    """sha256 over the files that define a checkpoint's policy: every top-level file (weights,
    config, generation config, tokenizer) by name and content, except a trainer's resume state
    (trainer_state.*) and the checksums.json derived from the others."""
    from postlab.models.io import CHECKSUMS, file_sha256

    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"model: {path} is not a local checkpoint directory; the reference must be fixed by its "
                          "hash, so download it first (e.g. `huggingface-cli download NAME --local-dir DIR`)")
    skip = ("trainer_state.", ".", CHECKSUMS)
    files = sorted(f for f in path.iterdir() if f.is_file() and not f.name.startswith(skip))
    if not files:
        raise ConfigError(f"model: {path} holds no files; give the reference checkpoint directory")
    listing = "".join(f"{f.name}\0{file_sha256(f)}\n" for f in files)
    return hashlib.sha256(listing.encode()).hexdigest()


def job_fingerprint(cfg: RolloutJobConfig, reference_sha256: str) -> str:
    """Hash of everything that determines the dataset: the config (but where it is written and on
    which device) and the reference weights."""
    what = {k: v for k, v in to_dict(cfg).items() if k not in NOT_IN_FINGERPRINT}
    what["model"] = reference_sha256  # the weights, not where they are
    # another sampler draws other samples from the same seeds; its memory knobs change nothing
    backend = what.pop("rollout")["backend"]
    if backend != "local":
        what["backend"] = backend
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- resuming


@dataclasses.dataclass
class ExistingOutput:
    complete_prompts: int  # prompts 0..complete_prompts-1 are fully written
    keep_bytes: int  # the file is cut here before appending (drops partial lines / prompts)
    trajectories: list[dict]  # the kept ones
    dropped_lines: int


def scan_output(path: Path, cfg: RolloutJobConfig, job: str, reference_sha256: str) -> ExistingOutput:
    """What an existing output already holds, and where to cut it so that appending continues it.

    A broken LAST line is a kill mid-write and is dropped; a broken line before it is corruption
    and is refused. Every line must come from this job (`job`); the prompts must be complete and in
    order, except the last, whose lines are dropped and redone."""
    check_output_path(path)
    data = path.read_bytes() if path.exists() else b""
    lines = data.split(b"\n")  # the piece after the last newline is "" or a half-written line
    kept: list[dict] = []
    offsets: list[int] = []  # byte offset just after each kept line
    pos, dropped = 0, 0
    for lineno, raw in enumerate(lines, 1):
        is_last_piece = lineno == len(lines)
        if is_last_piece:
            if raw:  # no newline: a half-written line, redone, but only when it can be one this job wrote
                _check_half_written(raw, path, lineno, proven=bool(kept))
            dropped += bool(raw)
            break
        # a line that ends with a newline was written whole (a batch is one write, so a kill leaves a
        # prefix of it): if it is broken, the file was damaged by something else
        try:
            obj = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise DataError(f"{path}:{lineno}: broken line ({e}) before the end of the file, so not one a kill "
                            "leaves; the file is damaged: delete it (or that line's prompt onward) and rerun") from None
        traj = validate_trajectory(obj, f"{path}:{lineno}")
        _check_same_job(traj, path, lineno, cfg, job, reference_sha256)
        pos += len(raw) + 1
        kept.append(traj)
        offsets.append(pos)
    complete, cut = _complete_prompts(kept, cfg.samples_per_prompt, path)
    dropped += len(kept) - cut
    return ExistingOutput(complete, offsets[cut - 1] if cut else 0, kept[:cut], dropped)


# How every line of a rollout dataset begins (trajectory_from_episode's first keys, json.dumps' separators):
# a kill mid-write leaves a prefix of a line, so a half-written piece agrees with this on their common length.
LINE_HEAD = b'{"prompt_id": '
FIRST_LINE_HEAD = b'{"prompt_id": 0, "sample": 0, '


def check_output_path(path: Path) -> None:
    """`out` must be a regular file or not exist, under directories (not files)."""
    if path.exists() and not path.is_file():
        raise ConfigError(f"out: {path} exists and is not a file (a directory?); name the JSONL file to write, e.g. "
                          f"out={path / 'rollouts.jsonl'}")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise ConfigError(f"out: {parent} (a parent of {path}) is a file, not a directory; pick another out path")


def _check_half_written(piece: bytes, path: Path, lineno: int, proven: bool) -> None:
    """Refuse to cut a last line without a newline unless it is the start of a line this job writes: the
    file's complete lines proved the file ours (`proven`) and the piece begins like a trajectory line,
    or the file holds only that piece and it begins like the job's first line. Anything else is someone
    else's file (or damage), and not one byte of it is changed."""
    head = LINE_HEAD if proven else FIRST_LINE_HEAD
    n = min(len(piece), len(head))
    if piece[:n] != head[:n]:
        what = (f"its last line ({lineno}) has no newline and is not the start of a trajectory" if proven else
                "it holds no complete trajectory line: it is not a rollout dataset written by `postlab rollout`")
        raise DataError(f"out: {path}: {what}, so it is not a line a killed job left; refusing to change the file. "
                        "Pick another out path, or delete the file (or that line) if it is yours")


def _check_same_job(traj: dict, path: Path, lineno: int, cfg: RolloutJobConfig, job: str, sha: str) -> None:
    ref = traj["reference"]
    if ref["sha256"] != sha:
        raise ConfigError(f"out: {path}:{lineno} was sampled from another reference checkpoint ({ref['path']}, sha256 "
                          f"{ref['sha256'][:12]}...) than model={cfg.model} (sha256 {sha[:12]}...); DRIFT's data come "
                          "from ONE fixed reference: write to another out path, or delete the file to start over")
    if traj["job"] != job:
        raise ConfigError(f"out: {path}:{lineno} was written by a rollout job with another config (fingerprint "
                          f"{traj['job']} vs {job}); rerun with that file's config to resume it, or write to "
                          "another out path")


def _complete_prompts(trajs: list[dict], per_prompt: int, path: Path) -> tuple[int, int]:
    """(number of complete prompts, number of lines they fill); checks the order of the lines."""
    for n, traj in enumerate(trajs):
        want = (n // per_prompt, n % per_prompt)
        if (traj["prompt_id"], traj["sample"]) != want:
            raise DataError(f"{path}:{n + 1}: expected prompt_id {want[0]} sample {want[1]}, found "
                            f"{traj['prompt_id']} / {traj['sample']}; the file was not written by one rollout job in "
                            "order: delete it and rerun")
    complete = len(trajs) // per_prompt
    return complete, complete * per_prompt


# ----------------------------------------------------------------------------- sampling


def env_spec(cfg: RolloutJobConfig, env) -> dict:
    """What the dataset records of its env: the built env's name (e.g. "unary-feedback(math)")."""
    return cfg.env.record(env.name)


def trajectory_from_episode(ep, prompt_id: int, sample: int, chunk_seed: int, reference: dict, env: dict,
                            job: str) -> dict:
    """One JSONL line of the dataset (schema: postlab.data.trajectories)."""
    verdicts, answers = episode_verdicts(ep), episode_answers(ep)
    return {
        "prompt_id": prompt_id,
        "sample": sample,
        "env_seed": ep.seed,
        "messages": [{"role": m["role"], "content": m["content"]} for m in ep.messages],
        "verdicts": verdicts,
        "turn_rewards": [float(t.reward) for t in ep.turns],
        "answers": answers,
        "first_correct_turn": first_correct_turn(verdicts),
        "success": bool(ep.success),
        "return": trajectory_return(verdicts, answers, RETURN_PARAMS["gamma"], RETURN_PARAMS["format_penalty"],
                                    RETURN_PARAMS["repetition_coef"]),
        "return_params": dict(RETURN_PARAMS),
        "generated_tokens": sum(len(t.token_ids) for t in ep.turns),
        "truncated": bool(ep.truncated),
        "sampling_seed": chunk_seed,
        "reference": dict(reference),
        "env": dict(env),
        "job": job,
    }


def sample_chunk(model, tokenizer, make_env: Callable, cfg: RolloutJobConfig, chunk: int, reference: dict,
                 env: dict, job: str, max_context: int | None = None, backend=None) -> list[dict]:
    """All trajectories of chunk `chunk`, prompt-major; a function of (cfg, weights, chunk) only."""
    from postlab.rollout.engine import SamplingParams
    from postlab.rollout.episodes import run_episodes

    lo = chunk * cfg.prompts_per_chunk
    prompts = range(lo, min(lo + cfg.prompts_per_chunk, cfg.n_prompts))
    seed = sampling_seed(cfg.seed, chunk)
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
    env_seeds = [rl_seed(cfg.seed, p) for p in prompts for _ in range(cfg.samples_per_prompt)]
    # one fresh env per trajectory; the env ends the episode (its own turn cap), so no extra cap here
    eps = run_episodes(model, tokenizer, [make_env() for _ in env_seeds], env_seeds, params, max_context=max_context,
                       backend=backend)
    G = cfg.samples_per_prompt
    return [trajectory_from_episode(ep, prompts[k // G], k % G, seed, reference, env, job)
            for k, ep in enumerate(eps)]


@dataclasses.dataclass
class RolloutSummary:
    path: Path
    trajectories: int
    prompts: int
    success_rate: float
    mean_turns: float
    generated_tokens: int  # sampled by this invocation
    wall_time_s: float  # of this invocation
    resumed_from_prompt: int  # 0 for a fresh job
    already_complete: bool = False

    def rows(self) -> dict:
        return {"trajectories": self.trajectories, "prompts": self.prompts, "success rate": self.success_rate,
                "mean turns": self.mean_turns, "generated tokens (this run)": self.generated_tokens,
                "tokens/s": self.generated_tokens / max(self.wall_time_s, 1e-9),
                "wall time (s)": self.wall_time_s, "resumed from prompt": self.resumed_from_prompt,
                "output": str(self.path)}


def run_rollout_job(cfg: RolloutJobConfig, on_chunk: Callable[[int, list[dict]], None] | None = None,
                    model=None, tokenizer=None) -> RolloutSummary:
    """Sample (or finish sampling) the dataset `cfg.out`; returns the summary (also printed).

    `on_chunk(chunk, trajectories)` runs after each chunk is on disk (tests use it to simulate a
    kill). `model`/`tokenizer` skip loading `cfg.model` (they must be its weights: the file
    records cfg.model's hash)."""
    from postlab.progress import StepProgress, console, summary_table
    from postlab.rollout.episodes import context_limit

    start = time.time()
    out = Path(cfg.out)
    check_output_path(out)
    sha = checkpoint_sha256(cfg.model)
    job = job_fingerprint(cfg, sha)
    reference = {"path": str(cfg.model), "sha256": sha}
    make_env = make_env_factory(cfg)
    env = env_spec(cfg, make_env())
    existing = scan_output(out, cfg, job, sha)
    total = cfg.n_prompts * cfg.samples_per_prompt
    done_prompts = existing.complete_prompts
    if done_prompts >= cfg.n_prompts:
        console.print(f"{out}: already complete ({len(existing.trajectories)} trajectories of {cfg.n_prompts} "
                      "prompts); nothing to do (delete it to sample again)")
        return _summarize(existing.trajectories, out, 0, time.time() - start, cfg.n_prompts, already_complete=True)
    if out.exists():
        with open(out, "r+b") as fh:  # drop a half-written line and an incomplete last prompt
            fh.truncate(existing.keep_bytes)
        if done_prompts or existing.dropped_lines:
            console.print(f"{out}: resuming, {done_prompts} of {cfg.n_prompts} prompts already written"
                          + (f" ({existing.dropped_lines} line(s) of an unfinished prompt dropped, to be redone)"
                             if existing.dropped_lines else ""))
    backend = make_backend(cfg.rollout, cfg.model, dtype=cfg.dtype, seed=cfg.seed)
    if model is None or tokenizer is None:
        from postlab.models.io import load_model, load_tokenizer, pick_device

        tokenizer = load_tokenizer(cfg.model)
        # with vLLM the engine holds the weights: the episodes only read the model's config (context
        # length, end-of-turn tokens), so a second copy of the weights is not loaded
        model = config_only_model(cfg.model) if backend is not None else \
            load_model(cfg.model, dtype=cfg.dtype, device=pick_device(cfg.device))
    if backend is None:
        model.eval()
    max_context = context_limit(model, cfg.max_new_tokens)
    written = list(existing.trajectories)
    new_tokens = 0
    first_chunk = done_prompts // cfg.prompts_per_chunk
    with TrajectoryWriter(out) as writer, StepProgress(total, "rollout", start=len(written),
                                                       enabled=cfg.progress) as bar:
        for chunk in range(first_chunk, cfg.n_chunks):
            trajs = [t for t in sample_chunk(model, tokenizer, make_env, cfg, chunk, reference, env, job, max_context,
                                             backend)
                     if t["prompt_id"] >= done_prompts]  # a resumed chunk: its prompts already on disk are kept
            writer.write(trajs)
            written += trajs
            for t in trajs:
                new_tokens += t["generated_tokens"]
                bar.advance(tokens=t["generated_tokens"])
            if on_chunk is not None:
                on_chunk(chunk, trajs)
    summary = _summarize(written, out, new_tokens, time.time() - start, done_prompts)
    summary_table("rollout", summary.rows())
    return summary


def _summarize(trajs: list[dict], out: Path, new_tokens: int, wall: float, resumed_from: int,
               already_complete: bool = False) -> RolloutSummary:
    n = max(len(trajs), 1)
    return RolloutSummary(path=out, trajectories=len(trajs), prompts=len({t["prompt_id"] for t in trajs}),
                          success_rate=sum(t["success"] for t in trajs) / n,
                          mean_turns=sum(len(t["verdicts"]) for t in trajs) / n, generated_tokens=new_tokens,
                          wall_time_s=wall, resumed_from_prompt=resumed_from, already_complete=already_complete)


__all__ = ["RolloutJobConfig", "RolloutSummary", "checkpoint_sha256", "env_spec", "job_fingerprint",
           "make_env_factory", "run_rollout_job", "sample_chunk", "scan_output", "trajectory_from_episode"]
