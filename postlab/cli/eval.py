"""`postlab eval CKPT --env NAME --split S [--split S2 ...] [--decoding sampled --k 8 ...]`."""

from __future__ import annotations

import json
from pathlib import Path

from postlab.config import finite_float


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on environment splits",
                       description="Evaluate a Hugging Face checkpoint on an environment's splits: success rate with a "
                                   "bootstrap 95%% CI, pass@k (sampled decoding), multi-turn success by turn, per-reason "
                                   "failure counts. Prints a table; --out writes JSON.")
    p.add_argument("checkpoint", help="model directory (e.g. RUN/final)")
    p.add_argument("--env", required=True, help="environment name (e.g. generalpoints, navigation)")
    p.add_argument("--split", action="append", help="split to evaluate; repeat for several (default: id)")
    p.add_argument("--episodes", type=int, default=64, help="problems per split (default 64)")
    p.add_argument("--decoding", choices=["greedy", "sampled"], default="greedy")
    p.add_argument("--temperature", type=finite_float, default=1.0, help="sampled decoding temperature")
    p.add_argument("--k", type=int, default=1, help="pass@k (sampled decoding)")
    p.add_argument("--samples", type=int, default=0, help="samples per problem for pass@k (default: k)")
    p.add_argument("--max-turns", "--verify-iter", dest="max_turns", type=int, default=None,
                   help="verification iterations: attempts with verifier feedback (default: the env's)")
    p.add_argument("--style", default="compact", help="prompt style (compact | paper; GeneralPoints also reason)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE", help="extra env constructor argument")
    p.add_argument("--device", default="auto")
    p.add_argument("--backend", choices=["local", "vllm"], default="local",
                   help="who samples: postlab's engine (default) or vLLM (pip install 'postlab[vllm]', GPU)")
    p.add_argument("--out", help="write the full results (every metric, sample dialogues) as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the full results as JSON instead of the summary table")
    p.set_defaults(func=_run)

    g = sub.add_parser("rl-gain", help="an RL run's training success vs its frozen start on the same problems",
                       description="Replay the last --window steps of an RL run (postlab train rl, or a study's rl "
                                   "stage: STAGE_DIR/run) with its frozen start model: the same problems, the same "
                                   "sampling seeds. Prints on-policy vs frozen success, the gain with a 95%% CI over "
                                   "those steps, and the share of groups the frozen model solves at least once: did RL "
                                   "learn on its own training problems? (A study's rl stage after a probe reports this "
                                   "itself, as `training_gain`.) No evaluation problem is played.")
    g.add_argument("run", help="the RL run directory (holds config.yaml and metrics.jsonl)")
    g.add_argument("--window", type=int, default=4, help="last steps to compare (default 4, the probes' default)")
    g.add_argument("--json", action="store_true", help="print the result as JSON")
    g.set_defaults(func=_run_gain)


def _run_gain(args) -> int:
    from postlab.config import ConfigError, load_config
    from postlab.progress import console
    from postlab.studies.probe import training_gain
    from postlab.trainers.rl import RLConfig

    run = Path(args.run)
    for name in ("config.yaml", "metrics.jsonl"):
        if not (run / name).is_file():
            hint = " (a study stage's run is STAGE_DIR/run)" if (run / "run" / name).is_file() else ""
            raise ConfigError(f"rl-gain {run}: no {name} there{hint}; give the directory of an RL run")
    cfg = load_config(RLConfig, run / "config.yaml")
    try:  # training_gain checks the run's steps and the window before it replays anything
        gain = {k: v for k, v in training_gain(cfg, run, args.window).items() if not k.startswith("tokens_")}
    except ValueError as e:
        raise ConfigError(f"rl-gain: {e}") from None
    if args.json:
        print(json.dumps(gain, indent=2))
    else:
        lo, hi = gain["gain_ci"]
        console.print(f"{run}: training success {gain['on_policy_success']:.3f} vs frozen start "
                      f"{gain['frozen_success']:.3f} on the last {args.window} steps' problems: gain "
                      f"{gain['gain']:+.3f} [{lo:+.3f}, {hi:+.3f}]; the frozen start solves "
                      f"{gain['frozen_groups_solved']:.1%} of their groups at least once", highlight=False)
    return 0


def _run(args) -> int:
    from postlab.config import ConfigError, parse_override
    from postlab.eval.evaluate import evaluate_checkpoint, results_table
    from postlab.progress import console

    env_args = {}
    for text in args.env_arg:
        key, value = parse_override(text)
        env_args[".".join(key)] = value
    try:
        results = evaluate_checkpoint(args.checkpoint, args.env, args.split or ["id"], device=args.device,
                                      n_episodes=args.episodes, decoding=args.decoding, temperature=args.temperature,
                                      k=args.k, n_samples=args.samples, max_turns=args.max_turns, style=args.style,
                                      seed=args.seed, max_new_tokens=args.max_new_tokens, env_args=env_args,
                                      backend=args.backend)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.json:  # the full record, machine-readable, alone on stdout
        print(json.dumps([{k: v for k, v in r.items() if k != "examples"} for r in results], indent=2))
    else:
        console.print(results_table(results, title=f"eval {args.checkpoint}"))
        console.print(summary_table(results))
        if any(r.get("diagnostics") for r in results):
            console.print(diagnostics_table(results))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
        console.print(f"wrote the full results to {args.out}")
    elif not args.json:
        console.print("full results: --json (print) or --out FILE (write)")
    return 0


def summary_table(results: list[dict]):
    """One row per split: success with its 95% CI, pass@k, truncated answers and generated tokens."""
    from rich.table import Table

    table = Table(title="summary")
    for col in ("split", "success [95% CI]", "pass@k", "truncated", "tokens"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for r in results:
        ci = r.get("ci") or (float("nan"), float("nan"))
        pk = f"{r['pass_at_k']:.3f} (k={r['k']})" if "pass_at_k" in r else "-"
        trunc = r.get("truncated_fraction")
        table.add_row(str(r.get("split", "?")), f"{r.get('success_rate', float('nan')):.3f} [{ci[0]:.3f}, {ci[1]:.3f}]",
                      pk, "-" if trunc is None else f"{trunc:.1%}", str(r.get("generated_tokens", "-")))
    return table


def diagnostics_table(results: list[dict]):
    """The env's first-answer diagnostics (GeneralPoints' face_rule, math's solution, ...): per split and
    diagnostic, each category's share of first answers, most common first."""
    from rich.table import Table

    table = Table(title="first-answer diagnostics (share of answers)")
    for col in ("split", "diagnostic", "categories"):
        table.add_column(col)
    for r in results:
        for key, shares in (r.get("diagnostics") or {}).items():
            cats = ", ".join(f"{c} {v:.1%}" for c, v in sorted(shares.items(), key=lambda kv: -kv[1]))
            table.add_row(str(r.get("split", "?")), key, cats)
    return table
