"""`postlab diagnose CKPT --base BASE --env NAME` and `postlab rejuvenate --base BASE --sft SFT --out DIR`."""

from __future__ import annotations

from postlab.config import finite_float


def register(sub) -> None:
    d = sub.add_parser("diagnose", help="plasticity diagnostics of a checkpoint against its base",
                       description="Token entropy and max probability on the env's evaluation prompts (teacher-forced "
                                   "on the expert answers), parameter drift per layer and module, dormant-neuron ratio, "
                                   "sharpness (top Hessian eigenvalue, loss rise under weight noise), effective rank of "
                                   "the final features and the per-position entropy gap. Prints a table; --out writes "
                                   "diagnostics.json and PNG plots.")
    d.add_argument("checkpoint", help="the (SFT) model directory to diagnose")
    d.add_argument("--base", required=True, help="the base model it was fine-tuned from")
    d.add_argument("--env", required=True, help="environment whose prompts to use (e.g. math, generalpoints)")
    d.add_argument("--split", action="append", help="split; repeat for several (default: the env's first)")
    d.add_argument("--n", type=int, default=32, help="prompts per split (default 32)")
    d.add_argument("--out", help="directory for diagnostics.json and the plots")
    d.add_argument("--style", default="compact", help="prompt style (compact | paper)")
    d.add_argument("--tau", type=finite_float, default=None, help="dormancy threshold on the ReDo score (default 0.025)")
    d.add_argument("--top-positions", type=int, default=20, help="entropy-gap positions to list (default 20)")
    d.add_argument("--hessian-iters", type=int, default=20, help="power-iteration steps (0 skips; default 20)")
    d.add_argument("--hessian-tol", type=finite_float, default=1e-3, help="relative stopping tolerance (default 1e-3)")
    d.add_argument("--hessian-sequences", type=int, default=16, help="sequences the sharpness losses use (default 16)")
    d.add_argument("--perturb-eps", type=finite_float, default=None, help="relative weight-noise norm (default 1e-2)")
    d.add_argument("--perturb-samples", type=int, default=8, help="weight-noise draws (0 skips; default 8)")
    d.add_argument("--no-plots", action="store_true", help="write diagnostics.json only")
    _common_options(d)
    d.set_defaults(func=_diagnose)

    r = sub.add_parser("rejuvenate", help="base-anchored fusion + targeted unit reset of an SFT checkpoint",
                       description="Rejuvenation (Liu et al., arXiv 2606.09932): fuse the SFT model with its base "
                                   "(alpha*SFT + (1-alpha)*base on all parameters), score units (DLA at the top "
                                   "entropy-gap positions, or dormancy / drift / saturation) and reset the top "
                                   "fraction toward the base (anchored) or ReDo-style. Writes a Hugging Face checkpoint "
                                   "with rejuvenation_report.json/.md. See docs/interventions.md.")
    r.add_argument("--base", required=True, help="the base model directory")
    r.add_argument("--sft", required=True, help="the SFT model directory (its tokenizer is saved with the result)")
    r.add_argument("--out", required=True, help="output checkpoint directory")
    r.add_argument("--alpha", type=finite_float, default=0.5, help="fusion weight of the SFT model, in [0, 1] (default 0.5)")
    r.add_argument("--alpha-module", action="append", default=[], metavar="NAME=A",
                   help="alpha for parameters whose name contains NAME (repeatable; e.g. embed_tokens=1.0)")
    r.add_argument("--scorer", default="dla", choices=["dla", "dormancy", "drift", "saturation"])
    r.add_argument("--fraction", type=finite_float, default=0.01, help="share of units to reset, in [0, 1) (default 0.01; 0: fusion without a reset)")
    r.add_argument("--scope", default="per_layer", choices=["per_layer", "global"])
    r.add_argument("--mode", default="anchored", choices=["anchored", "redo"])
    r.add_argument("--omega", type=finite_float, default=1.0, help="anchor strength on reset units, in [0, 1] (default 1)")
    r.add_argument("--units", choices=["slices", "neurons"], default=None,
                   help="rows/columns of each projection (default for dla, drift) or whole MLP neurons")
    r.add_argument("--env", help="calibration environment (required by dla, dormancy, saturation)")
    r.add_argument("--split", action="append", help="calibration split; repeat for several (default: the env's first)")
    r.add_argument("--n", type=int, default=32, help="calibration prompts per split (default 32)")
    r.add_argument("--top-positions", type=int, default=64, help="entropy-gap positions DLA attributes (default 64)")
    r.add_argument("--style", default="compact", help="prompt style (compact | paper)")
    r.add_argument("--force", action="store_true", help="replace a checkpoint already in --out")
    _common_options(r)
    r.set_defaults(func=_rejuvenate)


def _common_options(p) -> None:
    p.add_argument("--env-arg", action="append", default=[], metavar="KEY=VALUE", help="extra env constructor argument")
    p.add_argument("--micro-batch", type=int, default=8, help="sequences per forward pass (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", default="auto")


def _env_args(items: list[str]) -> dict:
    from postlab.config import parse_override

    out = {}
    for text in items:
        key, value = parse_override(text)
        out[".".join(key)] = value
    return out


def _diagnose(args) -> int:
    import json

    from postlab.interventions.diagnostics import DORMANT_TAU, PERTURB_EPS, diagnose, diagnostics_table
    from postlab.progress import console

    result = diagnose(args.checkpoint, args.base, args.env, args.split, args.n, out=args.out, style=args.style,
                      env_args=_env_args(args.env_arg), device=args.device, dtype=args.dtype,
                      micro_batch=args.micro_batch, tau=DORMANT_TAU if args.tau is None else args.tau,
                      top_positions=args.top_positions, hessian_iters=args.hessian_iters,
                      hessian_tol=args.hessian_tol, hessian_sequences=args.hessian_sequences,
                      perturb_eps=PERTURB_EPS if args.perturb_eps is None else args.perturb_eps,
                      perturb_samples=args.perturb_samples, seed=args.seed, plots=not args.no_plots)
    console.print(diagnostics_table(result))
    if args.out:
        console.print(f"wrote {', '.join(result['files'])} to {args.out}")
    else:
        print(json.dumps({k: v for k, v in result.items() if k != "drift"} | {"drift": result["drift"]["total"]},
                         indent=2))
    return 0


def _rejuvenate(args) -> int:
    from postlab.interventions.fusion import parse_module_alphas
    from postlab.interventions.rejuvenation import rejuvenate
    from postlab.progress import summary_table

    report = rejuvenate(args.base, args.sft, args.out, force=args.force, device=args.device, dtype=args.dtype,
                        alpha=args.alpha, module_alphas=parse_module_alphas(args.alpha_module), scorer=args.scorer,
                        fraction=args.fraction, scope=args.scope, mode=args.mode, omega=args.omega, units=args.units,
                        env=args.env, splits=args.split, n=args.n, top_positions=args.top_positions, style=args.style,
                        env_args=_env_args(args.env_arg), micro_batch=args.micro_batch, seed=args.seed)
    rows = {"checkpoint": report["checkpoint"], "units reset": f"{report['reset']['reset_units']} of "
            f"{report['reset']['scored_units']} {report['units']}",
            "per module": " ".join(f"{m}={c}" for m, c in sorted(report["reset"]["per_module"].items()))}
    for who in ("sft", "fused", "rejuvenated"):
        rows[f"drift {who}"] = report["drift"][who]["total"]
    if report["entropy"]:
        for who in ("base", "sft", "fused", "rejuvenated"):
            rows[f"entropy {who}"] = report["entropy"][who]["mean"]
    summary_table("rejuvenate", rows)
    return 0
