"""FSDP2 data parallelism on CPU: 2 gloo processes under torchrun against one process.

The same global batch must give the same losses and, after several AdamW steps, the same
weights (fp32, 1e-5): gradients are reduced as a SUM over ranks of losses aggregated with global
counts (postlab.distributed). A rank killed with SIGKILL mid-run resumes from the last distributed
checkpoint and ends exactly where an uninterrupted run ends. Only rank 0 writes run files.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from postlab.data.records import write_jsonl

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STEPS = 6


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]), "OMP_NUM_THREADS": "1",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run(cli: list[str], procs: int, opts: list[str] = (), check: bool = True) -> subprocess.CompletedProcess:
    """postlab CLI through tests/distributed/worker.py: alone, or under torchrun with `procs` processes."""
    launcher = [sys.executable] if procs == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                    "--nproc_per_node", str(procs)]
    out = subprocess.run([*launcher, str(HERE / "worker.py"), *opts, "::", *cli], env=_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"exit {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-6000:]}")
    return out


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()
            if json.loads(line)["kind"] == "train"]


def assert_same_run(one: Path, two: Path, keys=("loss",), atol=1e-4):
    """Metric rows equal to 1e-5 relative; final weights to `atol`. Adam divides each coordinate's gradient by
    its own running scale, so where a gradient is ~0 the order in which ranks' gradients are summed (and the
    CPU's vector width: AVX2 and AVX-512 sum differently) moves that coordinate by up to a fraction of the lr
    (3e-3 here): 2e-5 measured on one AVX-512 machine. A rank's gradient lost or counted twice shows in the
    loss and grad-norm rows, and a wrong shard saved differs by the weights' own scale (~0.1)."""
    a, b = rows(one), rows(two)
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, len(a) + 1))  # one row per step
    for ra, rb in zip(a, b):
        for k in keys:
            assert ra[k] == pytest.approx(rb[k], rel=1e-5, abs=1e-6), (k, ra["step"], ra[k], rb[k])
    wa, wb = load_file(str(one / "final" / "model.safetensors")), load_file(str(two / "final" / "model.safetensors"))
    assert sorted(wa) == sorted(wb)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


@pytest.fixture(scope="module")
def sft_runs(tmp_path_factory):
    """One uninterrupted SFT run on one process and one on two."""
    sys.path.insert(0, str(REPO / "tests" / "foundation"))
    from helpers import reverse_records

    tmp = tmp_path_factory.mktemp("sft")
    write_jsonl(reverse_records(64, seed=3), tmp / "train.jsonl")
    cfg = tmp / "sft.yaml"
    # 5 sequences per step: rank 0 holds 3 (2 micro-batches), rank 1 holds 2 (1 micro-batch), so
    # the zero-weight padding forward that keeps FSDP's collectives in step is exercised.
    cfg.write_text(textwrap.dedent(f"""
        model: {{preset: nano}}
        data: {{train: {tmp / 'train.jsonl'}}}
        optim: {{lr: 3.0e-3, warmup_steps: 1}}
        batch: {{sequences_per_step: 5, micro_batch_sequences: 2}}
        run: {{max_steps: {STEPS}, log_every: 1, save_every: 2, progress: false, tensorboard: false, seed: 7}}
    """))
    run(["train", "sft", str(cfg), f"run.out_dir={tmp / 'one'}"], 1)
    run(["train", "sft", str(cfg), f"run.out_dir={tmp / 'two'}"], 2)
    return tmp, cfg


def test_sft_two_processes_match_one(sft_runs):
    tmp, _ = sft_runs
    assert_same_run(tmp / "one", tmp / "two", keys=("loss", "grad_norm", "tokens_trained"))
    meta = json.loads((tmp / "two" / "meta.json").read_text())
    assert (meta["world_size"], meta["backend"]) == (2, "gloo")
    assert json.loads((tmp / "one" / "meta.json").read_text())["world_size"] == 1


def test_sharded_checkpoint_layout_and_plain_load(sft_runs):
    """Each rank's DCP shard and RNG, rank 0's Hugging Face copy (loads with plain transformers, the
    real class name, tied weights once), checksums over every file."""
    from transformers import AutoModelForCausalLM

    from postlab.runs import check_checkpoint

    tmp, _ = sft_runs
    ckpt = tmp / "two" / "checkpoints" / f"step_{STEPS:06d}"
    assert sorted(p.name for p in (ckpt / "dcp").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert (ckpt / "trainer_state.rank0.safetensors").exists() and (ckpt / "trainer_state.rank1.safetensors").exists()
    listed = json.loads((ckpt / "checksums.json").read_text())["files"]
    assert "dcp/__1_0.distcp" in listed and "trainer_state.rank1.safetensors" in listed
    check_checkpoint(ckpt)
    assert json.loads((ckpt / "config.json").read_text())["architectures"] == ["Qwen2ForCausalLM"]
    model = AutoModelForCausalLM.from_pretrained(str(tmp / "two" / "final"))
    final = load_file(str(tmp / "two" / "final" / "model.safetensors"))
    torch.testing.assert_close(model.model.embed_tokens.weight, final["model.embed_tokens.weight"])
    assert "lm_head.weight" not in final  # tied: written once, as transformers writes it
    assert not list((tmp / "two").glob("**/*.tmp"))


def test_sigkill_one_rank_then_resume_matches_uninterrupted(sft_runs):
    tmp, cfg = sft_runs
    killed = tmp / "killed"
    dead = run(["train", "sft", str(cfg), f"run.out_dir={killed}"], 2, ["--die-at-step", "5"], check=False)
    assert dead.returncode != 0
    assert not (killed / "final").exists()
    assert (killed / "checkpoints" / "step_000004" / "dcp").is_dir()
    out = run(["train", "sft", str(cfg), "--resume", str(killed)], 2)
    assert "resumed from" in out.stderr and "step_000004" in out.stderr
    a, b = rows(tmp / "two"), rows(killed)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))  # the dead run's rows after step 4 were dropped
    assert [r["loss"] for r in a] == [r["loss"] for r in b]
    wa, wb = load_file(str(tmp / "two" / "final" / "model.safetensors")), load_file(str(killed / "final" / "model.safetensors"))
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


@pytest.fixture(scope="module")
def rl_base(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rl")
    subprocess.run([sys.executable, "-m", "postlab.cli.main", "model", "init", "--preset", "nano", "--out",
                    str(tmp / "base")], env=_env(), cwd=REPO, check=True, capture_output=True)
    # on-policy distillation's teacher: another size (micro), the same tokenizer (postlab's char one)
    subprocess.run([sys.executable, "-m", "postlab.cli.main", "model", "init", "--preset", "micro", "--seed", "7",
                    "--out", str(tmp / "teacher")], env=_env(), cwd=REPO, check=True, capture_output=True)
    cfg = tmp / "rl.yaml"
    # 4 prompts x 4 samples, micro-batches of 3: the two ranks split groups differently from one process.
    cfg.write_text(textwrap.dedent(f"""
        model: {{path: {tmp / 'base'}}}
        env: {{name: toy, eval_splits: [], eval_episodes: 4}}
        batch: {{prompts_per_step: 4, samples_per_prompt: 4, micro_batch_sequences: 3, updates_per_batch: 2}}
        sampling: {{max_new_tokens: 8}}
        optim: {{lr: 1.0e-3}}
        beta: 0.05
        reward_fn: dist_rewards:token_parity
        run: {{max_steps: 3, log_every: 1, progress: false, tensorboard: false, seed: 3}}
    """))
    return tmp, cfg


# PPO whitens turn advantages over the batch; on the toy env every turn reward is -1, so the
# advantages' std is ~2e-4 and whitening multiplies float rounding (1e-8) by ~5000. The gathered
# whitening itself is the same function on the same numbers; the comparison runs without it.
@pytest.mark.parametrize("algorithm,extra", [("grpo", []), ("ppo", ["normalize_advantages=false"]),
                                             ("luffy", []), ("chord", ["chord.decay=3"]),
                                             ("uft", ["uft.hint_steps=2", "uft.staged=true"]),
                                             ("opd", ["teacher={teacher}"]), ("gkd", ["teacher={teacher}"])])
def test_rl_two_processes_match_one(rl_base, algorithm, extra):
    tmp, cfg = rl_base
    extra = [e.format(teacher=tmp / "teacher") for e in extra]
    frozen = ["--frozen-rollouts", str(tmp / "base")]
    for procs in (1, 2):
        run(["train", "rl", str(cfg), f"algorithm={algorithm}", f"run.out_dir={tmp / f'{algorithm}{procs}'}", *extra],
            procs, frozen)
    keys = ("loss", "reward_mean", "reward_std", "kl", "grad_norm") \
        + {"ppo": ("value_grad_norm",), "gkd": ("jsd",)}.get(algorithm, ())
    assert_same_run(tmp / f"{algorithm}1", tmp / f"{algorithm}2", keys=keys)
    if algorithm == "ppo":
        a = load_file(str(tmp / "ppo1" / "final" / "value_head.safetensors"))
        b = load_file(str(tmp / "ppo2" / "final" / "value_head.safetensors"))
        for k in a:
            torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=0)


def test_rl_prompts_must_divide_over_ranks(rl_base):
    tmp, cfg = rl_base
    out = run(["train", "rl", str(cfg), "batch.prompts_per_step=3", f"run.out_dir={tmp / 'bad'}"], 2, check=False)
    assert out.returncode != 0
    assert "batch.prompts_per_step (3) must be divisible by the number of data-parallel processes (2)" in out.stderr


def test_rft_two_processes_match_one(rl_base):
    """RFT data parallel: each rank samples its block of problems; the update equals one process's."""
    tmp, _ = rl_base
    cfg = tmp / "rft.yaml"
    # 4 problems x 4 samples, micro-batches of 3: ranks keep different numbers of answers
    cfg.write_text(textwrap.dedent(f"""
        model: {{path: {tmp / 'base'}}}
        env: {{name: math, eval_splits: []}}
        batch: {{prompts_per_step: 4, samples_per_prompt: 4, micro_batch_sequences: 3}}
        sampling: {{max_new_tokens: 8}}
        optim: {{lr: 1.0e-3}}
        run: {{max_steps: 3, log_every: 1, progress: false, tensorboard: false, seed: 3}}
    """))
    opts = ["--frozen-rollouts", str(tmp / "base"), "--parity-verifier"]
    for procs in (1, 2):
        run(["train", "rft", str(cfg), f"run.out_dir={tmp / f'rft{procs}'}"], procs, opts)
    assert_same_run(tmp / "rft1", tmp / "rft2", keys=("loss", "kept", "solve_rate", "grad_norm"))
    assert all(r["updated"] == 1 and r["kept"] > 0 for r in rows(tmp / "rft1"))
    meta = json.loads((tmp / "rft2" / "meta.json").read_text())
    assert meta["world_size"] == 2


def test_rft_problems_must_divide_over_ranks(rl_base):
    tmp, _ = rl_base
    out = run(["train", "rft", str(tmp / "rft.yaml"), "batch.prompts_per_step=3", f"run.out_dir={tmp / 'rft-bad'}"],
              2, check=False)
    assert out.returncode != 0
    assert "batch.prompts_per_step (3) must be divisible by the number of data-parallel processes (2)" in out.stderr


def test_rasft_two_processes_match_one(rl_base):
    """RASFT data parallel: routing, scoring and refresh rollouts replicated, the training step split."""
    from postlab.data.records import load_records

    tmp, _ = rl_base
    write_jsonl(load_records("env:math/id/40"), tmp / "items.jsonl")
    cfg = tmp / "rasft.yaml"
    # 7 samples per step, micro-batches of 2: rank 0 trains 4, rank 1 trains 3 (padding forward exercised);
    # a refresh every step, so rolled-out samples join the batches
    cfg.write_text(textwrap.dedent(f"""
        model: {{path: {tmp / 'base'}}}
        data: {{train: {tmp / 'items.jsonl'}, max_length: 256}}
        env: {{name: math, eval_splits: []}}
        optim: {{lr: 1.0e-3, warmup_steps: 1}}
        batch: {{sequences_per_step: 7, micro_batch_sequences: 2}}
        routing: {{refresh_every: 1, route_chunk: 16, calibration_items: 32, max_new_tokens: 16}}
        run: {{max_steps: 3, log_every: 1, progress: false, tensorboard: false, seed: 5}}
    """))
    for procs in (1, 2):
        run(["train", "rasft", str(cfg), f"run.out_dir={tmp / f'rasft{procs}'}"], procs)
    assert_same_run(tmp / "rasft1", tmp / "rasft2", keys=("loss", "batch_rollouts", "batch_weight_mean", "grad_norm"))
    refreshes = [r for r in map(json.loads, (tmp / "rasft2" / "metrics.jsonl").read_text().splitlines())
                 if r["kind"] == "refresh"]
    assert any(r["refresh/samples"] > 0 for r in refreshes)  # rollouts were sampled (replicated) on both ranks


def test_drift_two_processes_match_one(rl_base):
    """DRIFT data parallel (FSDP2): weighted SFT on last turns, split by rank, equals one process."""
    sys.path.insert(0, str(REPO / "tests"))
    from drift.helpers import make_trajectory
    from postlab.data.trajectories import TrajectoryWriter

    tmp, _ = rl_base
    trajs = [make_trajectory(p, s, (False,) * (s % 3) + (True,), ("3",) * (s % 3) + ("4",), 0.9 ** (s % 3))
             for p in range(4) for s in range(4)]
    with TrajectoryWriter(tmp / "trajs.jsonl") as w:
        w.write(trajs)
    # 5 trajectories per step, micro-batches of 2: rank 0 trains 3 (2 micro-batches), rank 1 trains 2
    common = [f"model.path={tmp / 'base'}", f"data.paths=[{tmp / 'trajs.jsonl'}]", "batch.sequences_per_step=5",
              "batch.micro_batch_sequences=2", "run.max_steps=3", "run.log_every=1", "run.progress=false",
              "run.tensorboard=false"]
    for procs in (1, 2):
        run(["train", "drift", *common, f"run.out_dir={tmp / f'drift{procs}'}"], procs)
    assert_same_run(tmp / "drift1", tmp / "drift2", keys=("loss", "grad_norm"))
    assert json.loads((tmp / "drift2" / "meta.json").read_text())["world_size"] == 2
    assert not list((tmp / "drift2").glob("rank*"))  # rank 1 wrote no run files of its own


def test_lora_sft_two_processes_match_one(rl_base):
    """LoRA under torchrun: the frozen base replicated, adapter gradients summed over ranks (DDP-style)."""
    pytest.importorskip("peft")
    sys.path.insert(0, str(REPO / "tests" / "foundation"))
    from helpers import reverse_records

    tmp, _ = rl_base
    write_jsonl(reverse_records(40, seed=5), tmp / "lora-train.jsonl")
    cfg = tmp / "lora.yaml"
    # dropout 0: a rank's dropout masks are its own, so with dropout the runs would differ by design
    cfg.write_text(textwrap.dedent(f"""
        model: {{path: {tmp / 'base'}, lora: {{r: 4, alpha: 8.0, dropout: 0.0}}}}
        data: {{train: {tmp / 'lora-train.jsonl'}}}
        optim: {{lr: 1.0e-2, warmup_steps: 1}}
        batch: {{sequences_per_step: 5, micro_batch_sequences: 2}}
        run: {{max_steps: 4, log_every: 1, progress: false, tensorboard: false, seed: 7}}
    """))
    for procs in (1, 2):
        run(["train", "sft", str(cfg), f"run.out_dir={tmp / f'lora{procs}'}"], procs)
    a, b = rows(tmp / "lora1"), rows(tmp / "lora2")
    assert [r["loss"] for r in a] == pytest.approx([r["loss"] for r in b], rel=1e-5)
    wa = load_file(str(tmp / "lora1" / "final" / "adapter_model.safetensors"))
    wb = load_file(str(tmp / "lora2" / "final" / "adapter_model.safetensors"))
    assert sorted(wa) == sorted(wb) and any("lora_B" in k for k in wa)
    assert any(wa[k].abs().max() > 0 for k in wa if "lora_B" in k)  # the adapters trained (B starts at 0)
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0, msg=k)
    assert json.loads((tmp / "lora2" / "meta.json").read_text())["world_size"] == 2


def test_lora_rl_two_processes_match_one(rl_base):
    """LoRA GRPO under torchrun, with the adapter-disabled policy as the KL reference."""
    pytest.importorskip("peft")
    tmp, cfg = rl_base
    frozen = ["--frozen-rollouts", str(tmp / "base")]
    lora = ["model.lora={r: 4, alpha: 8.0, dropout: 0.0}", "batch.updates_per_batch=1"]
    for procs in (1, 2):
        run(["train", "rl", str(cfg), "algorithm=grpo", *lora, f"run.out_dir={tmp / f'lora-rl{procs}'}"], procs, frozen)
    a, b = rows(tmp / "lora-rl1"), rows(tmp / "lora-rl2")
    for k in ("loss", "kl", "grad_norm", "reward_mean"):
        assert [r[k] for r in a] == pytest.approx([r[k] for r in b], rel=1e-5, abs=1e-6), k
    assert a[0]["kl"] == pytest.approx(0.0, abs=1e-9)  # step 0: the reference is the policy with adapters off
    wa = load_file(str(tmp / "lora-rl1" / "final" / "adapter_model.safetensors"))
    wb = load_file(str(tmp / "lora-rl2" / "final" / "adapter_model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0, msg=k)
