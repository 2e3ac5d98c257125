"""Tokenizers postlab builds for lab-scale models trained from scratch.

`char`: one token per byte (per character for ASCII), the most learnable choice for tiny
models doing arithmetic. `bpe`: byte-level BPE trained on the corpus with the
`tokenizers` library, for long texts (biographies). Both come back as a
`PreTrainedTokenizerFast` with a chat template, so the lab and paper scales share one code path.
"""

from __future__ import annotations

from collections.abc import Iterable

SPECIAL_TOKENS = ["<|pad|>", "<|unk|>", "<|bos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>"]
PAD, UNK, BOS, EOS = "<|pad|>", "<|unk|>", "<|bos|>", "<|end|>"

SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")

# Each turn is "<|role|>content<|end|>"; the generation prompt is "<|assistant|>". Prefix-stable,
# which is what incremental rendering of multi-turn masks relies on.
CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>' + message['content'] + '<|end|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def build_tokenizer(texts: Iterable[str], kind: str = "char", vocab_size: int = 512):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in ("char", "bpe"):
        raise ValueError(f"unknown tokenizer kind {kind!r}; valid: 'char', 'bpe'")
    # Both kinds are byte-level BPE so that `AutoTokenizer` reloads them faithfully whatever
    # tokenizer class the architecture maps to; `char` simply learns no merges (one token
    # per byte, which is one per character for ASCII text).
    tok = Tokenizer(models.BPE(unk_token=None))
    # Qwen2's split pattern (digits one by one), so AutoTokenizer's Qwen2Tokenizer re-creates
    # exactly this pre-tokenizer when it reloads a qwen2 checkpoint.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    size = len(alphabet) + len(SPECIAL_TOKENS) if kind == "char" else vocab_size
    trainer = trainers.BpeTrainer(vocab_size=size, special_tokens=SPECIAL_TOKENS, initial_alphabet=alphabet,
                                  show_progress=False)
    tok.train_from_iterator(list(texts) if kind == "bpe" else [], trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS,
                                   eos_token=EOS, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


# postlab's template for a tokenizer of any vocabulary: each turn ends with the tokenizer's own EOS,
# so the rollout engine (which stops at EOS) ends a sampled turn where the template does. With
# postlab's tokenizers (EOS = <|end|>) it renders exactly what CHAT_TEMPLATE renders.
PLAIN_CHAT_TEMPLATE = CHAT_TEMPLATE.replace("'<|end|>'", "eos_token")


def choose_chat_template(tokenizer, choice: str = "auto"):
    """Set the template that renders dialogues (`model.chat_template`); returns `tokenizer`.

    auto: the tokenizer's own template when it has one (a real checkpoint's, or the one postlab saved
    with its own tokenizers), else PLAIN_CHAT_TEMPLATE; tokenizer: the tokenizer's own, and an error
    if it has none; postlab: PLAIN_CHAT_TEMPLATE whatever the tokenizer carries."""
    from postlab.config import ConfigError

    own = getattr(tokenizer, "chat_template", None)
    if choice == "tokenizer" and not own:
        raise ConfigError("model.chat_template: 'tokenizer', but this tokenizer has no chat template (a base "
                          "checkpoint?); use model.chat_template: postlab (or auto) for postlab's plain template")
    if choice == "postlab" or (choice == "auto" and not own):
        if tokenizer.eos_token is None:
            raise ConfigError("model.chat_template: postlab's template ends each turn with the tokenizer's EOS "
                              "token, and this tokenizer has none; set tokenizer.eos_token in its tokenizer_config.json")
        tokenizer.chat_template = PLAIN_CHAT_TEMPLATE if own != CHAT_TEMPLATE else CHAT_TEMPLATE
    return tokenizer
