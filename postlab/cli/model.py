"""`postlab model init` and `postlab generate`."""

from __future__ import annotations

from postlab.config import finite_float


def register(sub) -> None:
    p = sub.add_parser("model", help="create or inspect models", description="Create tiny models from presets.")
    ms = p.add_subparsers(dest="model_command", metavar="SUBCOMMAND", required=True)
    init = ms.add_parser("init", help="write a freshly initialized tiny model", description="Write a tiny model from a "
                         "preset as a Hugging Face directory, with a tokenizer built by postlab.")
    init.add_argument("--preset", required=True, help="nano | micro | tiny | tiny-llama | small")
    init.add_argument("--out", required=True, help="output directory")
    init.add_argument("--tokenizer", default="char", choices=["char", "bpe"])
    init.add_argument("--vocab-size", type=int, default=512, help="bpe only")
    init.add_argument("--corpus", help="JSONL records to train a bpe tokenizer on")
    init.add_argument("--seed", type=int, default=0)
    init.set_defaults(func=_init)

    g = sub.add_parser("generate", help="sample from a checkpoint", description="Generate from a checkpoint.")
    g.add_argument("checkpoint")
    g.add_argument("--prompt", action="append", required=True, help="prompt text (repeatable)")
    g.add_argument("--chat", action="store_true", help="wrap each prompt as a user turn with the chat template")
    g.add_argument("--max-new-tokens", type=int, default=64)
    g.add_argument("--temperature", type=finite_float, default=0.0)
    g.add_argument("-n", type=int, default=1, help="samples per prompt")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_generate)


def _init(args) -> int:
    from postlab.config import ConfigError
    from postlab.data.records import iter_texts, read_jsonl
    from postlab.models import PRESETS, build_tokenizer, init_model, save_pretrained_atomic

    if args.preset not in PRESETS:
        raise ConfigError(f"--preset: unknown preset {args.preset!r}; valid: {', '.join(PRESETS)}")
    texts = list(iter_texts(read_jsonl(args.corpus))) if args.corpus else []
    tok = build_tokenizer(texts, args.tokenizer, args.vocab_size)
    model = init_model(args.preset, tok, seed=args.seed)
    save_pretrained_atomic(model, tok, args.out)
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {args.out}: {args.preset}, {n / 1e6:.2f}M parameters, vocab {len(tok)}")
    return 0


def _generate(args) -> int:
    from postlab.models import load_model, load_tokenizer
    from postlab.rollout.engine import SamplingParams, generate

    tok = load_tokenizer(args.checkpoint)
    model = load_model(args.checkpoint)
    prompts = []
    for text in args.prompt:
        if args.chat:
            text = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        prompts.append(tok.encode(text, add_special_tokens=False))
    outs = generate(model, tok, prompts, SamplingParams(max_new_tokens=args.max_new_tokens,
                                                         temperature=args.temperature, n=args.n, seed=args.seed))
    for o in outs:
        print(f"[{o.prompt_index}] {args.prompt[o.prompt_index]!r} -> {o.text!r} ({o.finish_reason})")
    return 0
