"""Offline trajectory datasets (DRIFT's reference rollouts): schema, writer, reader, SFT records.

One trajectory per JSONL line, written by `postlab rollout` (postlab.rollout.offline)::

    prompt_id           int >= 0      index of the prompt in the job (0..n_prompts-1)
    sample              int >= 0      index of the trajectory among its prompt's samples
    env_seed            int           the env seed that picked the problem (postlab.seeds.rl_seed)
    messages            list          the dialogue: [{"role", "content"}, ...], ending with the last model turn
    verdicts            list          per model turn: true (correct) / false (wrong) / null (unparsable)
    turn_rewards        list[float]   per model turn, the env's reward (unary feedback: 1 / 0 / -0.1)
    answers             list          per model turn, the parsed answer (string) or null (unparsable)
    first_correct_turn  int | null    1-based model turn of the first correct answer; null if never correct
    success             bool          solved within the budget
    return              float         DRIFT's R(tau) with the return_params below (finite)
    return_params       dict          {"gamma", "format_penalty", "repetition_coef"} used for `return`
    generated_tokens    int           tokens the model sampled over all its turns
    truncated           bool          some turn hit max_new_tokens
    sampling_seed       int           sampler seed of the chunk that produced the trajectory
    reference           dict          {"path": checkpoint directory, "sha256": hash of its files}
    env                 dict          {"name", "split", "style", "kwargs"}
    job                 str           fingerprint of the job config (resume refuses another job's file)
    weight              float         optional; finite when present

`read_trajectories` validates every line and raises `DataError` naming file, line and field.
`to_drift_records` turns trajectories into chat records of the SFT data format
(postlab.data.records): only the LAST assistant turn is trained (earlier ones carry
`"train": false`), conditioned on the whole dialogue before it, and the record's `weight` is
the trajectory's importance weight. Records are re-rendered from text with the chat template,
as any SFT record is (not from the sampled token ids).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

from postlab.data.records import DataError

# ----------------------------------------------------------------------------- schema


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _nonneg_int(v) -> bool:
    return _int(v) and v >= 0


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _verdict(v) -> bool:
    return v is None or isinstance(v, bool)


def _answer(v) -> bool:
    return v is None or isinstance(v, str)


def _message(m) -> bool:
    return isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)


def _list_of(check: Callable[[object], bool]) -> Callable[[object], bool]:
    return lambda v: isinstance(v, list) and all(check(x) for x in v)


def _dict_with(*keys: str) -> Callable[[object], bool]:
    return lambda v: isinstance(v, dict) and all(isinstance(v.get(k), str) for k in keys)


RETURN_PARAMS = ("gamma", "format_penalty", "repetition_coef")

# field -> (check, what a valid value is); order is the order of the checks
TRAJECTORY_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {
    "prompt_id": (_nonneg_int, "an integer >= 0"),
    "sample": (_nonneg_int, "an integer >= 0"),
    "env_seed": (_int, "an integer"),
    "messages": (_list_of(_message), "a list of {\"role\": str, \"content\": str} objects"),
    "verdicts": (_list_of(_verdict), "a list of true / false / null"),
    "turn_rewards": (_list_of(_finite), "a list of finite numbers"),
    "answers": (_list_of(_answer), "a list of strings or nulls"),
    "first_correct_turn": (lambda v: v is None or (_int(v) and v >= 1), "an integer >= 1 or null"),
    "success": (lambda v: isinstance(v, bool), "true or false"),
    "return": (_finite, "a finite number"),
    "return_params": (lambda v: isinstance(v, dict) and all(_finite(v.get(k)) for k in RETURN_PARAMS),
                      "an object with finite gamma, format_penalty, repetition_coef"),
    "generated_tokens": (_nonneg_int, "an integer >= 0"),
    "truncated": (lambda v: isinstance(v, bool), "true or false"),
    "sampling_seed": (_int, "an integer"),
    "reference": (_dict_with("path", "sha256"), "an object with string path and sha256"),
    "env": (lambda v: _dict_with("name", "split", "style")(v) and isinstance(v.get("kwargs", {}), dict),
            "an object with string name, split, style (and a kwargs object)"),
    "job": (lambda v: isinstance(v, str) and bool(v), "a non-empty string"),
}
OPTIONAL_FIELDS: dict[str, tuple[Callable[[object], bool], str]] = {"weight": (_finite, "a finite number")}


def validate_trajectory(traj: object, where: str = "trajectory") -> dict:
    """`traj` if it matches the schema; DataError naming `where` and the field otherwise."""
    if not isinstance(traj, dict):
        raise DataError(f"{where}: expected a JSON object (one trajectory), got {type(traj).__name__}")
    for name, (check, valid) in TRAJECTORY_FIELDS.items():
        if name not in traj:
            raise DataError(f"{where}: missing field '{name}' (must be {valid}); was the file written by "
                            "`postlab rollout`?")
        if not check(traj[name]):
            raise DataError(f"{where}: field '{name}' must be {valid}, got {_short(traj[name])}")
    for name, (check, valid) in OPTIONAL_FIELDS.items():
        if name in traj and not check(traj[name]):
            raise DataError(f"{where}: field '{name}' must be {valid}, got {_short(traj[name])}")
    n_model_turns = sum(m["role"] == "assistant" for m in traj["messages"])
    for name in ("verdicts", "turn_rewards", "answers"):
        if len(traj[name]) != n_model_turns:
            raise DataError(f"{where}: field '{name}' has {len(traj[name])} entries but 'messages' has "
                            f"{n_model_turns} assistant turns; give one per model turn")
    if not traj["messages"] or traj["messages"][-1]["role"] != "assistant":
        raise DataError(f"{where}: field 'messages' must end with the last assistant turn (the DRIFT target)")
    return traj


def _short(v) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------- writing and reading


class TrajectoryWriter:
    """Append-only JSONL writer: each `write` is one batch, flushed and fsynced before it returns,
    so a killed job loses at most the batch in flight (and leaves at most one half-written line)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")

    def write(self, trajectories: Sequence[dict]) -> int:
        lines = []
        for i, traj in enumerate(trajectories):
            validate_trajectory(traj, f"{self.path}: trajectory {i} of the batch being written")
            lines.append(json.dumps(traj, ensure_ascii=False, allow_nan=False) + "\n")
        self._fh.write("".join(lines))
        self._fh.flush()
        os.fsync(self._fh.fileno())
        return len(lines)

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    def __enter__(self) -> "TrajectoryWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_trajectories(path: str | Path) -> list[dict]:
    """Every trajectory of a JSONL file, validated; DataError names file, line and field."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file does not exist; write it with `postlab rollout CONFIG`")
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            out.append(validate_trajectory(parse_line(line, f"{path}:{lineno}"), f"{path}:{lineno}"))
    if not out:
        raise DataError(f"{path}: no trajectories (empty file)")
    return out


def parse_line(line: str, where: str) -> object:
    """One JSON line; DataError on broken JSON. NaN / Infinity parse (Python writes them) and are
    then refused by the schema check, which can name the field."""
    try:
        return json.loads(line)
    except json.JSONDecodeError as e:
        raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno}); if it is the last line, a killed "
                        "`postlab rollout` left it half-written: rerun the same command to redo it") from None


# ----------------------------------------------------------------------------- episodes -> trajectories


def episode_verdicts(episode) -> list[bool | None]:
    """Per model turn: True / False / None (unparsable), from a `postlab.rollout.episodes.Episode`.

    The unary-feedback env reports them (`turn_correct`); any other env's turn counts as
    evaluated, correct when it succeeded."""
    if episode.turns and "turn_correct" in episode.turns[-1].info:
        return list(episode.turns[-1].info["turn_correct"])
    return [bool(t.success) for t in episode.turns]


def episode_answers(episode) -> list[str | None]:
    """Per model turn: the parsed answer, or None where unparsable (unary-feedback's `answers`);
    other envs: their `predicted` answer if they report one, else the stripped turn text."""
    if episode.turns and "answers" in episode.turns[-1].info:
        return list(episode.turns[-1].info["answers"])
    return [t.info["predicted"] if "predicted" in t.info else t.text.strip() for t in episode.turns]


def first_correct_turn(verdicts: Sequence[bool | None]) -> int | None:
    """1-based model turn of the first correct answer, None if never correct."""
    return next((k + 1 for k, v in enumerate(verdicts) if v is True), None)


# ----------------------------------------------------------------------------- trajectories -> SFT records


def to_drift_records(trajectories: Sequence[dict], weights: Sequence[float],
                     keep: Sequence[bool] | None = None) -> list[dict]:
    """SFT chat records training only each trajectory's LAST assistant turn, with `weight` w_i.

    `keep` (e.g. `drift_weights(...).keep`) drops trajectories of excluded groups; without it
    every trajectory becomes a record (a zero weight then contributes no gradient but still
    counts in the batch mean's B)."""
    if len(weights) != len(trajectories):
        raise DataError(f"{len(trajectories)} trajectories but {len(weights)} weights; give one weight per trajectory")
    if keep is not None and len(keep) != len(trajectories):
        raise DataError(f"{len(trajectories)} trajectories but {len(keep)} keep flags")
    records = []
    for i, (traj, w) in enumerate(zip(trajectories, weights)):
        if keep is not None and not keep[i]:
            continue
        try:  # numpy and torch scalars are welcome; bools are not weights
            w = float(w) if not isinstance(w, bool) else math.nan
        except (TypeError, ValueError):
            w = math.nan
        if not math.isfinite(w):
            raise DataError(f"weights[{i}] (prompt {traj.get('prompt_id')}, sample {traj.get('sample')}) is "
                            f"{weights[i]!r}; weights must be finite numbers")
        msgs = traj.get("messages")
        if not isinstance(msgs, list) or not msgs or not all(_message(m) for m in msgs) \
                or msgs[-1]["role"] != "assistant":
            raise DataError(f"trajectory {i}: field 'messages' must be a list of messages ending with an assistant "
                            "turn (validate it with read_trajectories)")
        last = len(msgs) - 1
        # only the last model turn is the target; earlier model turns are context, like the feedback
        out = [{"role": m["role"], "content": m["content"]} for m in msgs]
        for k, m in enumerate(out):
            if m["role"] == "assistant":
                m["train"] = k == last
        records.append({"messages": out, "weight": w, "prompt_id": traj.get("prompt_id"),
                        "sample": traj.get("sample")})
    return records


__all__ = ["OPTIONAL_FIELDS", "TRAJECTORY_FIELDS", "TrajectoryWriter", "episode_answers", "episode_verdicts",
           "first_correct_turn", "parse_line", "read_trajectories", "to_drift_records", "validate_trajectory"]
