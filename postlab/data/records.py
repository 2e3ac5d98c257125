"""Training records and how they become token ids with a loss mask.

Three record kinds, one per line of a JSONL file:

- ``{"text": ...}``: pre-training text; every token is trained.
- ``{"prompt": ..., "completion": ...}``: raw strings, no chat template; only the completion
  (followed by EOS) is trained.
- ``{"messages": [{"role": ..., "content": ..., "train": bool?}, ...]}``: a dialogue rendered
  with the tokenizer's chat template; assistant turns are trained unless ``"train": false``,
  other turns never (environment feedback is not the model's to imitate).

Optional ``"weight"`` (a float) scales the record's loss (DRIFT, RASFT, RWR).

Files: JSONL (one record per line) or Parquet (one record per row, e.g. a Hugging Face dataset's
local files; a ``messages`` column of role/content structs), read by `load_records`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from postlab.data.files import DataError, iter_file_rows, iter_jsonl
from postlab.data.synthetic import load_synthetic

RECORD_KINDS = ("text", "prompt/completion", "messages")


def record_kind(rec: dict) -> str:
    if "messages" in rec:
        return "messages"
    if "prompt" in rec and "completion" in rec:
        return "prompt/completion"
    if "text" in rec:
        return "text"
    raise DataError(f"record has none of the keys 'text', 'prompt'+'completion', 'messages': keys {sorted(rec)}")


def validate_record(rec: object, where: str = "record") -> dict:
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(rec).__name__}")
    try:
        kind = record_kind(rec)
    except DataError as e:
        raise DataError(f"{where}: {e}") from None
    if kind == "messages":
        msgs = rec["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: 'messages' must be a non-empty list")
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
                raise DataError(f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
        if not any(m["role"] == "assistant" for m in msgs):
            raise DataError(f"{where}: 'messages' has no assistant turn, nothing to train on")
        for i, m in enumerate(msgs):
            if "train" in m and not isinstance(m["train"], bool):
                raise DataError(f"{where}: messages[{i}].train must be true or false, got {m['train']!r}")
        if not any(m["role"] == "assistant" and m.get("train", True) for m in msgs):
            raise DataError(f"{where}: every assistant turn has \"train\": false, so the record has no trainable "
                            "token; mark at least one assistant turn trainable or drop the record")
    elif kind == "prompt/completion":
        if not isinstance(rec["prompt"], str) or not isinstance(rec["completion"], str):
            raise DataError(f"{where}: 'prompt' and 'completion' must be strings")
    elif not isinstance(rec["text"], str) or not rec["text"]:
        raise DataError(f"{where}: 'text' must be a non-empty string")
    if "weight" in rec and (not isinstance(rec["weight"], (int, float)) or isinstance(rec["weight"], bool)):
        raise DataError(f"{where}: 'weight' must be a number, got {rec['weight']!r}")
    return rec


def read_jsonl(path: str | Path) -> list[dict]:
    path = Path(path)
    records = [validate_record(rec, f"{path}:{lineno}") for lineno, rec in iter_jsonl(path)]
    if not records:
        raise DataError(f"{path}: no records (empty dataset)")
    return records


def read_parquet(path: str | Path) -> list[dict]:
    records = [validate_record(rec, where) for where, rec in iter_file_rows(path)]
    if not records:
        raise DataError(f"{path}: no records (empty dataset)")
    return records


def write_jsonl(records: Iterable[dict], path: str | Path) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def load_records(source: str | Path, split: str = "train") -> list[dict]:
    """A JSONL or Parquet (`.parquet`) file, `synthetic:NAME/train|eval` (postlab.data.synthetic),
    `env:NAME/SPLIT/N` (N expert dialogues of an environment, on the expert seed range), or `hf:NAME`
    for a Hugging Face `datasets` dataset (when installed)."""
    source = str(source)
    if source.endswith(".parquet"):
        return read_parquet(source)
    if source.startswith("env:"):
        return _env_records(source)
    if source.startswith("synthetic:"):
        return load_synthetic(source)
    if source.startswith("hf:"):
        try:
            import datasets
        except ImportError:
            raise DataError("hf: data sources need the `datasets` package: pip install 'postlab[datasets]'") from None
        ds = datasets.load_dataset(source[3:], split=split)
        records = [validate_record(dict(r), f"{source}[{i}]") for i, r in enumerate(ds)]
        if not records:
            raise DataError(f"{source}: no records (empty dataset)")
        return records
    return read_jsonl(source)


def _env_records(source: str) -> list[dict]:
    """`env:generalpoints/id/4000` -> 4000 expert dialogues of generalpoints' id split (compact style);
    `?expert_choice=canonical&...` passes options to the env's constructor."""
    import yaml

    from postlab.envs import make
    from postlab.envs.export import sft_records
    from postlab.seeds import expert_seed

    spec, _, query = source[len("env:"):].partition("?")
    parts = spec.split("/")
    if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < 1:
        raise DataError(f"{source}: expected env:NAME/SPLIT/N[?option=value&...], e.g. "
                        "env:generalpoints/id/4000?expert_choice=canonical")
    name, split, n = parts[0], parts[1], int(parts[2])
    options = {}
    for pair in filter(None, query.split("&")):  # env constructor options, values parsed as YAML scalars
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise DataError(f"{source}: option {pair!r} must look like key=value")
        options[key] = yaml.safe_load(value)
    try:
        env = make(name, split=split, **options)
    except (ValueError, TypeError) as e:
        raise DataError(f"{source}: {e}") from None
    return list(sft_records(env, [expert_seed(0, i) for i in range(n)]))


# ----------------------------------------------------------------------------- tokenization


@dataclasses.dataclass
class Encoded:
    """One sequence: token ids and, per token, 1 if the model is trained to predict it."""

    input_ids: list[int]
    loss_mask: list[int]
    weight: float = 1.0

    def __len__(self) -> int:
        return len(self.input_ids)


def render_messages(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """Token ids and trainable mask of a dialogue, via the tokenizer's chat template.

    Rendered incrementally: the tokens of assistant turn i are what rendering messages[:i+1]
    adds to rendering messages[:i] with the generation prompt. Each segment is tokenized on
    its own, so the ids are exactly what the rollout engine produces when it encodes the
    prompt and appends sampled tokens, and the mask boundaries are exact.
    """
    ids: list[int] = []
    mask: list[int] = []
    rendered = ""
    clean = [{"role": m["role"], "content": m["content"]} for m in messages]
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            prefix = tokenizer.apply_chat_template(clean[:i], tokenize=False, add_generation_prompt=True) if i else \
                tokenizer.apply_chat_template([], tokenize=False, add_generation_prompt=True)
            _extend(tokenizer, prefix, rendered, ids, mask, 0)
            full = tokenizer.apply_chat_template(clean[: i + 1], tokenize=False)
            _extend(tokenizer, full, prefix, ids, mask, 1 if m.get("train", True) else 0)
            rendered = full
        else:
            full = tokenizer.apply_chat_template(clean[: i + 1], tokenize=False)
            _extend(tokenizer, full, rendered, ids, mask, 0)
            rendered = full
    return ids, mask


def _extend(tokenizer, full: str, done: str, ids: list[int], mask: list[int], value: int) -> None:
    if not full.startswith(done):
        raise DataError("the tokenizer's chat template is not prefix-stable; cannot derive per-turn loss masks")
    segment = full[len(done):]
    if segment:
        new = tokenizer.encode(segment, add_special_tokens=False)
        ids.extend(new)
        mask.extend([value] * len(new))


def encode_record(tokenizer, rec: dict, max_length: int | None = None) -> Encoded:
    kind = record_kind(rec)
    if kind == "messages":
        ids, mask = render_messages(tokenizer, rec["messages"])
    elif kind == "prompt/completion":
        p = tokenizer.encode(rec["prompt"], add_special_tokens=False)
        c = tokenizer.encode(rec["completion"], add_special_tokens=False) + [tokenizer.eos_token_id]
        ids, mask = p + c, [0] * len(p) + [1] * len(c)
    else:
        body = tokenizer.encode(rec["text"], add_special_tokens=False)
        bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
        ids = bos + body + [tokenizer.eos_token_id]
        mask = [0] * len(bos) + [1] * (len(body) + 1)
    if max_length is not None and len(ids) > max_length:
        ids, mask = ids[:max_length], mask[:max_length]
    mask[0] = 0  # the first token has no context to be predicted from
    return Encoded(ids, mask, float(rec.get("weight", 1.0)))


def encode_all(tokenizer, records: list[dict], max_length: int | None = None) -> list[Encoded]:
    out = [encode_record(tokenizer, r, max_length) for r in records]
    empty = sum(1 for e in out if not any(e.loss_mask))
    if empty == len(out):
        raise DataError("no record has a trainable token after truncation (max_length too small?)")
    return out


def iter_texts(records: list[dict]) -> Iterator[str]:
    """Every string in the records, for building a tokenizer."""
    for r in records:
        kind = record_kind(r)
        if kind == "text":
            yield r["text"]
        elif kind == "prompt/completion":
            yield r["prompt"] + r["completion"]
        else:
            for m in r["messages"]:
                yield m["content"]


def prompt_and_target(tokenizer, rec: dict) -> tuple[list[int], str]:
    """Prompt ids and the expected answer text, for exact-match evaluation of a record.

    prompt/completion: the prompt and the completion; messages: the dialogue up to the last
    assistant turn (with the generation prompt) and that turn's content.
    """
    kind = record_kind(rec)
    if kind == "prompt/completion":
        return tokenizer.encode(rec["prompt"], add_special_tokens=False), rec["completion"]
    if kind == "messages":
        msgs = rec["messages"]
        last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        clean = [{"role": m["role"], "content": m["content"]} for m in msgs[:last]]
        text = tokenizer.apply_chat_template(clean, tokenize=False, add_generation_prompt=True)
        return tokenizer.encode(text, add_special_tokens=False), msgs[last]["content"]
    raise DataError("text records have no prompt to evaluate")
