"""`postlab envs`, `postlab env show|play`, `postlab data export`: environments from the terminal.

    postlab envs                                        # environments, splits, styles
    postlab env show generalpoints --split ood-rule -n 3
    postlab env play navigation --split ood-rule        # play an episode yourself (stdin)
    postlab data export generalpoints --split id -n 10000 --out gp.jsonl
    postlab data export biographies --kind corpus -n 5000 --out bios.jsonl --opt preset=tiny

Environment options that are not flags go through `--opt KEY=VALUE` (repeatable), e.g.
`--opt verify_iter=3`, `--opt env=math` for unary-feedback, `--opt path=data.jsonl` for
math-jsonl.
"""

from __future__ import annotations

import argparse
import sys


def _value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _options(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        key, sep, val = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--opt expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = _value(val.strip())
    return out


def _env_kwargs(args) -> dict:
    kw = _options(getattr(args, "opt", None))
    for key in ("split", "style"):
        if getattr(args, key, None) is not None:
            kw[key] = getattr(args, key)
    return kw


def _guard(fn):
    """Bad names and values are user errors: one clear line, exit status 2, no traceback."""
    def run(args):
        try:
            return fn(args)
        except (ValueError, FileNotFoundError) as e:
            print(f"postlab: error: {e}", file=sys.stderr)
            return 2
    return run


def cmd_list(args, out=None) -> int:
    from postlab.envs import ENV_REGISTRY

    out = out or sys.stdout
    for name in sorted(ENV_REGISTRY):
        cls = ENV_REGISTRY[name]
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        splits = ", ".join(cls.splits) if cls.splits else "those of the wrapped env (--opt env=NAME)"
        print(f"{name}\n  {doc}\n  splits: {splits}\n  styles: {', '.join(cls.styles)}", file=out)
    return 0


def _print_messages(messages: list[dict], out) -> None:
    for m in messages:
        body = m["content"].replace("\n", "\n    ")
        print(f"  [{m['role']}] {body}", file=out)


def cmd_show(args, out=None) -> int:
    from postlab.envs import make
    from postlab.envs.export import expert_dialogue

    out = out or sys.stdout
    env = make(args.name, **_env_kwargs(args))
    for seed in range(args.seed, args.seed + args.n):
        print(f"=== {args.name} split={env.split} style={env.style} seed={seed}", file=out)
        _print_messages(expert_dialogue(env, seed), out)
    return 0


def cmd_play(args, inp=None, out=None) -> int:
    from postlab.envs import make

    inp, out = inp or sys.stdin, out or sys.stdout
    env = make(args.name, **_env_kwargs(args))
    obs = env.reset(args.seed)
    print(f"=== {args.name} split={env.split} style={env.style} seed={args.seed}  "
          "(one answer per line; ':expert' shows the expert's answer, ':quit' stops)", file=out)
    _print_messages(obs.messages, out)
    total = 0.0
    while True:
        print("> ", end="", file=out, flush=True)
        line = inp.readline()
        if not line or line.strip() == ":quit":
            print("stopped.", file=out)
            return 0
        text = line.rstrip("\n").replace("\\n", "\n")  # "\n" typed literally makes multi-line answers
        if text.strip() == ":expert":
            print(f"  expert: {env.expert()}", file=out)
            continue
        result = env.step(text)
        total += result.reward
        reasons = result.info.get("reasons")
        print(f"  reward {result.reward:+g}" + (f" ({'; '.join(reasons)})" if reasons else ""), file=out)
        _print_messages(result.feedback, out)
        if result.done:
            print(f"episode over: {'success' if result.success else 'failure'}, return {total:+g}", file=out)
            return 0


def cmd_export(args, out=None) -> int:
    from postlab.envs.export import export

    out = out or sys.stdout
    kw = _env_kwargs(args)
    split = kw.pop("split", None)
    count = export(args.name, split, args.n, args.out, kind=args.kind, seed=args.seed, **kw)
    print(f"wrote {count} {args.kind} records to {args.out}", file=out)
    return 0


def _env_args(p: argparse.ArgumentParser, with_n: bool = True) -> None:
    p.add_argument("name", help="environment name (see `postlab envs`)")
    p.add_argument("--split", help="split, e.g. id, ood-rule, ood-visual, comp-zeroshot (default: the env's)")
    p.add_argument("--style", choices=("compact", "paper"), help="prompt style (default: the env's)")
    p.add_argument("--seed", type=int, default=0, help="first episode seed (default 0)")
    p.add_argument("--opt", action="append", metavar="KEY=VALUE", help="other env option (repeatable)")
    if with_n:
        p.add_argument("-n", type=int, default=3, help="number of episodes (default 3)")


def register(sub) -> None:
    p = sub.add_parser("envs", help="list environments and their splits", description="List environments.")
    p.set_defaults(func=_guard(cmd_list))

    p = sub.add_parser("env", help="show or play environment episodes", description="Inspect environments.")
    es = p.add_subparsers(dest="env_command", metavar="ACTION", required=True)
    show = es.add_parser("show", help="print episodes with expert answers", description="Print episodes with the "
                         "expert's answers (the whole expert dialogue for multi-turn envs).")
    _env_args(show)
    show.set_defaults(func=_guard(cmd_show))
    play = es.add_parser("play", help="play an episode in the terminal", description="Play an episode: type "
                         "answers, read the environment's feedback and rewards.")
    _env_args(play, with_n=False)
    play.set_defaults(func=_guard(cmd_play))

    p = sub.add_parser("data", help="export training data from environments", description="Export data.")
    ds = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    ex = ds.add_parser("export", help="write SFT records or base-corpus items as JSONL",
                       description='Write expert SFT records ({"messages": ...}) or base-corpus items (texts '
                                   '{"text": ...} and chat records {"messages": ...}).')
    _env_args(ex, with_n=False)
    ex.add_argument("-n", type=int, required=True, help="number of records")
    ex.add_argument("--out", required=True, help="output JSONL file")
    ex.add_argument("--kind", choices=("sft", "corpus"), default="sft", help="sft (default) or corpus")
    ex.set_defaults(func=_guard(cmd_export))
