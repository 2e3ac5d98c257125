"""RL budgets chosen by a recorded protocol, on training problems only: the `rl-probe` stage kind.

At lab scale RL moves a model only at some budgets (about 64+ sequences per step at a learning
rate the policy survives); at others the update is noise that a fair-coin reward matches. Which
budget learns depends on the checkpoint, so a study does not guess it: an `rl-probe` stage runs
short RL probes from the checkpoint over a grid of settings and keeps the one under which
on-policy training success rises most over the frozen checkpoint on the same problems.

Per setting (a point of the grid, e.g. ``{optim.lr: 1e-4, batch.prompts_per_step: 64}``):

1. RL for ``probe.steps`` steps from the input checkpoint with the stage's RL config and that
   setting (`postlab.trainers.rl`; its periodic evaluation is switched off, so no evaluation
   problem is ever played);
2. the frozen checkpoint plays the problems of the last ``probe.window`` steps, with the same
   sampling seeds (`postlab.trainers.rl_rollouts.play_step`: common random numbers);
3. gain = mean on-policy training success of those steps - the frozen success on the same
   problems, with a 95% bootstrap CI over the steps (paired step by step).

The gate: where the frozen checkpoint solves no problem of any probe group (pass@G = 0 on every
group), RL has no signal from a group baseline, and the probe says ``skip``: an `rl` stage fed
by it returns its start unchanged (and says so). Otherwise the setting with the largest gain is
``chosen`` (ties: the cheaper one, fewer sequences per step), whether or not its gain is above 0;
the report shows every probe so a reader sees how sure the choice was. ``probe.select: ci_low``
chooses by the lower end of the gain's 95% CI instead: for a grid over batch sizes, where a small
batch's gain is measured on a few dozen sequences and its mean is the noisiest (the largest of
several noisy means is biased up: in `atomic-to-composite --preset lab-probe` seed 1 the 8-composite
probe's +3.1 [-9.4, +14.1] won on its mean and the run then lost 10.9 points of training success).

An `rl` stage takes the choice with ``after: [START, PROBE]``: the chosen values replace the
grid keys of its config. The probes' compute is the stage's compute (the report counts it).
"""

from __future__ import annotations

import copy
import itertools
import json
import shutil

from pathlib import Path

from postlab.config import ConfigError
from postlab.eval.metrics import mean_ci
from postlab.progress import console

PROBE_KEYS = ("steps", "window", "grid", "select")
# what `probe.select` ranks the settings by -> (the rank of a probe, how the choice is reported)
SELECT = {"gain": (lambda p: p["gain"], "largest gain"),
          "ci_low": (lambda p: p["gain_ci"][0], "largest lower end of the 95% CI of the gain")}


def probe_options(given: dict | None, where: str) -> dict:
    """A stage's ``probe`` mapping, checked: steps >= 2, 1 <= window <= steps, a non-empty grid of dotted config
    keys, select one of SELECT."""
    p = dict(given or {})
    for k in p:
        if k not in PROBE_KEYS:
            raise ConfigError(f"{where}.{k}: unknown key; valid: {', '.join(PROBE_KEYS)}")
    p.setdefault("steps", 20)
    p.setdefault("window", max(1, p["steps"] // 2))
    p.setdefault("select", "gain")
    if p["select"] not in SELECT:
        raise ConfigError(f"{where}.select: {p['select']!r}; valid: {', '.join(SELECT)} (the mean gain, or the "
                          "lower end of its 95% CI, which prefers a precisely measured gain to a noisy one)")
    if not (isinstance(p["steps"], int) and p["steps"] >= 2):
        raise ConfigError(f"{where}.steps must be an integer >= 2, got {p['steps']!r}")
    if not (isinstance(p["window"], int) and 1 <= p["window"] <= p["steps"]):
        raise ConfigError(f"{where}.window must be an integer in [1, steps={p['steps']}], got {p['window']!r}")
    grid = p.get("grid")
    if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError(f"{where}.grid: a mapping of dotted RL config keys to non-empty lists of values, e.g. "
                          "{optim.lr: [3.0e-5, 1.0e-4], batch.prompts_per_step: [16, 64]}")
    for key in grid:
        if key.split(".")[0] in ("run", "model", "env"):
            raise ConfigError(f"{where}.grid.{key}: run, model and env are the study's; probe training settings "
                              "(optim.*, batch.*, sampling.*, algorithm, beta, ...)")
    return p


def settings(grid: dict) -> list[dict]:
    """Every point of the grid, in the order of its keys and values."""
    keys = list(grid)
    return [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def _set_dotted(data: dict, key: str, value) -> None:
    *path, last = key.split(".")
    for part in path:
        data = data.setdefault(part, {})
    data[last] = value


def probe_config(rl_data: dict, setting: dict, steps: int, out_dir: Path):
    """The RL config of one probe: the RL stage's config mapping `rl_data` with `setting`, `steps` steps,
    no evaluation (never an evaluation problem) and no intermediate saves."""
    from postlab.config import load_config
    from postlab.trainers.rl import RLConfig

    data = copy.deepcopy(rl_data)
    for k, v in setting.items():
        _set_dotted(data, k, v)
    data.setdefault("run", {}).update(out_dir=str(out_dir), max_steps=steps, save_every=0, eval_every=0, log_every=1,
                                      keep_checkpoints=1)
    data.setdefault("env", {}).update(eval_splits=[], eval_samples=0)
    return load_config(RLConfig, base=data)


def _replay_key(cfg, steps: list[int]) -> str:
    """What the frozen replay depends on: the start, the env, the problems (batch shape, run seed, steps)
    and the sampling. Settings that differ only in training knobs (lr, ...) share one replay."""
    import dataclasses

    return json.dumps({"model": dataclasses.asdict(cfg.model), "env": dataclasses.asdict(cfg.env),
                       "prompts": cfg.batch.prompts_per_step, "samples": cfg.batch.samples_per_prompt,
                       "sampling": dataclasses.asdict(cfg.sampling), "seed": cfg.run.seed, "steps": steps},
                      sort_keys=True, default=str)


def _frozen_success(cfg, steps: list[int], cache: dict | None = None) -> tuple[list[float], float]:
    """(frozen success per step, fraction of groups with at least one success) on the probe's problems;
    `cache` keeps replays for probes that play the same problems with the same seeds."""
    key = _replay_key(cfg, steps)
    if cache is not None and key in cache:
        return cache[key]
    from postlab.models.io import load_model, load_tokenizer
    from postlab.trainers.rl_rollouts import play_step

    model = load_model(str(cfg.model.path)).eval()
    tok = load_tokenizer(str(cfg.model.path))
    G = cfg.batch.samples_per_prompt - cfg.experts_per_group  # the policy's own samples of each group
    per_step, groups, solved = [], 0, 0
    for i in steps:
        eps = [e for e in play_step(cfg, model, tok, i) if not e.off_policy]  # LUFFY's expert traces apart
        per_step.append(sum(e.success for e in eps) / len(eps))
        for g in range(0, len(eps), G):
            groups += 1
            solved += any(e.success for e in eps[g:g + G])
    if cache is not None:
        cache[key] = (per_step, solved / groups)
    return per_step, solved / groups


def training_gain(cfg, run_dir: Path, window: int, cache: dict | None = None) -> dict:
    """On-policy training success of the last `window` steps of the RL run in `run_dir` (config `cfg`)
    against the frozen start (`cfg.model.path`) on the same problems and sampling seeds: the gain
    with a 95% CI over those steps (paired step by step), the fraction of groups the frozen model
    solves at least once, and the run's token totals."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    on_policy = {int(r["step"]): float(r["success"]) for r in rows if "success" in r and "time_training" in r}
    if not on_policy:
        raise ValueError(f"{run_dir}: metrics.jsonl has no RL training step with a success rate; is it an RL run?")
    steps = max(on_policy)
    if not 1 <= window <= steps:
        raise ValueError(f"window {window}: must be between 1 and the run's {steps} logged steps")
    last = list(range(steps - window, steps))  # 0-based step indices; logged as step + 1
    frozen, groups_solved = _frozen_success(cfg, last, cache)
    ci = mean_ci([on_policy[i + 1] - f for i, f in zip(last, frozen)])
    final = max((r for r in rows if "tokens_trained_total" in r), key=lambda r: r["step"])
    return {"on_policy_success": sum(on_policy[i + 1] for i in last) / window, "frozen_success": sum(frozen) / window,
            "gain": ci["mean"], "gain_ci": [ci["ci_low"], ci["ci_high"]], "window": window,
            "frozen_groups_solved": groups_solved, "success_by_step": [on_policy[k] for k in sorted(on_policy)],
            "tokens_trained": int(final["tokens_trained_total"]), "tokens_generated": int(final["tokens_generated_total"])}


def run_probes(path: Path, rl_data: dict, opts: dict) -> dict:
    """Run every probe of the grid under `path`; the probes, the chosen setting (or skip) and their tokens."""
    from postlab.trainers.rl import train_rl

    steps, window = opts["steps"], opts["window"]
    probes, tokens_trained, tokens_generated = [], 0, 0
    replays: dict = {}  # frozen replays shared by settings that play the same problems (an lr grid: one)
    for n, setting in enumerate(settings(opts["grid"])):
        out = path / f"probe-{n}"
        done = out / "probe.json"
        if done.exists():  # an interrupted stage keeps the probes it finished
            probe = json.loads(done.read_text())
        else:
            if out.exists():
                shutil.rmtree(out)
            cfg = probe_config(rl_data, setting, steps, out / "run")
            console.print(f"probe {n + 1}: {setting}", highlight=False)
            train_rl(cfg)
            probe = {"setting": setting, "sequences_per_step": cfg.batch.sequences_per_step,
                     **training_gain(cfg, out / "run", window, replays)}
            for sub in ("checkpoints", "final"):  # the probe's model is not used again; its metrics are kept
                shutil.rmtree(out / "run" / sub, ignore_errors=True)
            done.write_text(json.dumps(probe, indent=2))
        console.print(f"probe {n + 1}: {setting}: training success {probe['on_policy_success']:.3f} vs frozen "
                      f"{probe['frozen_success']:.3f} on the same problems: gain {probe['gain']:+.3f} "
                      f"[{probe['gain_ci'][0]:+.3f}, {probe['gain_ci'][1]:+.3f}]", highlight=False)
        probes.append(probe)
        tokens_trained += probe["tokens_trained"]
        tokens_generated += probe["tokens_generated"]
    skip = all(p["frozen_groups_solved"] == 0 for p in probes)
    select = opts["select"]
    best = choose(probes, select)
    result = {"probes": probes, "steps": steps, "window": window, "skip": skip, "select": select,
              "chosen": None if skip else best["setting"],
              "reason": ("no group of any probe had a success under the frozen checkpoint (pass@G = 0): "
                         "RL has no signal" if skip else
                         f"{SELECT[select][1]} in training success over the frozen checkpoint "
                         f"({best['gain']:+.3f} [{best['gain_ci'][0]:+.3f}, {best['gain_ci'][1]:+.3f}])"),
              "tokens_trained": tokens_trained, "tokens_generated": tokens_generated}
    console.print(f"probe choice: {'skip RL' if skip else result['chosen']} ({result['reason']})", highlight=False)
    return result


def choose(probes: list[dict], select: str = "gain") -> dict:
    """The probe whose gain ranks first by `select` (SELECT); ties go to fewer sequences per step."""
    rank = SELECT[select][0]
    return max(probes, key=lambda p: (rank(p), -p["sequences_per_step"]))


def apply_choice(data: dict, probe_result: dict) -> None:
    """Merge a probe's chosen setting into an RL config mapping (its dotted keys replace the config's)."""
    for k, v in (probe_result.get("chosen") or {}).items():
        _set_dotted(data, k, v)
