"""`postlab rollout`: trajectories sampled once from a fixed reference; killed and resumed == uninterrupted."""

import shutil
import signal
import subprocess
import sys

import pytest
import torch

from postlab.config import ConfigError, load_config
from postlab.data.records import DataError
from postlab.data.trajectories import read_trajectories
from postlab.objectives.returns import trajectory_return
from postlab.rollout.offline import RolloutJobConfig, checkpoint_sha256, run_rollout_job
from postlab.seeds import EVAL, RL, rl_seed, sampling_seed

from harness import REPO, cli_env

# 5 prompts x 2 samples; batch_size 4 = 2 prompts per chunk: chunks [0, 1], [2, 3], [4]
JOB = ["n_prompts=5", "samples_per_prompt=2", "env.kwargs.max_attempts=2", "max_new_tokens=6", "batch_size=4",
       "device=cpu", "progress=false"]


def job(ckpt, out, *extra) -> RolloutJobConfig:
    return load_config(RolloutJobConfig, None, [f"model={ckpt}", f"out={out}", *JOB, *extra])


@pytest.fixture(scope="module")
def uninterrupted(nano_checkpoint, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("full") / "full.jsonl"
    summary = run_rollout_job(job(nano_checkpoint, out))
    assert summary.trajectories == 10 and summary.prompts == 5 and summary.resumed_from_prompt == 0
    return out.read_bytes()


def test_dataset_contents(uninterrupted, nano_checkpoint, tmp_path):
    out = tmp_path / "d.jsonl"
    out.write_bytes(uninterrupted)
    trajs = read_trajectories(out)
    assert [(t["prompt_id"], t["sample"]) for t in trajs] == [(p, s) for p in range(5) for s in range(2)]
    for t in trajs:
        assert t["env_seed"] == rl_seed(0, t["prompt_id"]) and t["env_seed"] in RL and t["env_seed"] not in EVAL
        assert t["sampling_seed"] == sampling_seed(0, t["prompt_id"] // 2)  # chunk = prompt // 2
        assert t["reference"] == {"path": str(nano_checkpoint), "sha256": checkpoint_sha256(nano_checkpoint)}
        assert t["env"] == {"name": "unary-feedback(math)", "split": "id", "style": "compact", "max_turns": None,
                                "kwargs": {"max_attempts": 2}}  # the job's env section, attempt budget included
        assert len(t["verdicts"]) == len(t["answers"]) == len(t["turn_rewards"]) >= 1
        assert t["return"] == pytest.approx(trajectory_return(t["verdicts"], t["answers"]))
        assert t["messages"][-1]["role"] == "assistant" and t["messages"][0]["content"].endswith("<answer>")
    # the samples of a prompt share its problem, and differ in what the model said
    assert trajs[0]["messages"][0] == trajs[1]["messages"][0] != trajs[2]["messages"][0]
    assert trajs[0]["messages"][1] != trajs[1]["messages"][1]


class Killed(Exception):
    pass


def kill_after(chunk_to_die):
    def on_chunk(chunk, trajs):
        if chunk == chunk_to_die:
            raise Killed

    return on_chunk


def test_job_stopped_after_a_chunk_resumes_to_the_same_bytes(uninterrupted, nano_checkpoint, tmp_path):
    out = tmp_path / "r.jsonl"
    with pytest.raises(Killed):
        run_rollout_job(job(nano_checkpoint, out), on_chunk=kill_after(0))
    assert len(out.read_bytes().splitlines()) == 4
    summary = run_rollout_job(job(nano_checkpoint, out))
    assert summary.resumed_from_prompt == 2 and summary.trajectories == 10
    assert out.read_bytes() == uninterrupted


@pytest.mark.parametrize("cut", ["mid_line", "mid_prompt", "mid_chunk"])
def test_half_written_output_resumes_to_the_same_bytes(uninterrupted, nano_checkpoint, tmp_path, cut):
    lines = uninterrupted.splitlines(keepends=True)
    keep = {"mid_line": b"".join(lines[:5]) + lines[5][: len(lines[5]) // 2],  # prompt 2 sample 1 half-written
            "mid_prompt": b"".join(lines[:3]),  # prompt 1 lacks sample 1: prompt 1 redone inside chunk 0
            "mid_chunk": b"".join(lines[:2]) + lines[2][:7]}[cut]  # prompt 0 kept, chunk 0 resampled for prompt 1
    out = tmp_path / "h.jsonl"
    out.write_bytes(keep)
    run_rollout_job(job(nano_checkpoint, out))
    assert out.read_bytes() == uninterrupted


def test_complete_output_is_left_as_it_is(uninterrupted, nano_checkpoint, tmp_path):
    out = tmp_path / "c.jsonl"
    out.write_bytes(uninterrupted)
    before = out.stat().st_mtime_ns
    summary = run_rollout_job(job(nano_checkpoint, out))
    assert summary.already_complete and summary.trajectories == 10 and summary.generated_tokens == 0
    assert out.read_bytes() == uninterrupted and out.stat().st_mtime_ns == before


def test_another_config_or_reference_is_refused(uninterrupted, nano_checkpoint, nano_model, char_tokenizer, tmp_path):
    from postlab.models.io import save_pretrained_atomic

    out = tmp_path / "x.jsonl"
    out.write_bytes(b"".join(uninterrupted.splitlines(keepends=True)[:4]))
    with pytest.raises(ConfigError, match="another config"):
        run_rollout_job(job(nano_checkpoint, out, "temperature=0.7"))
    other = shutil.copytree(nano_checkpoint, tmp_path / "other")
    assert checkpoint_sha256(other) == checkpoint_sha256(nano_checkpoint)  # a copy is the same reference
    model = type(nano_model)(nano_model.config)
    with torch.no_grad():
        for p, q in zip(model.parameters(), nano_model.parameters()):
            p.copy_(q * 1.01)
    save_pretrained_atomic(model, char_tokenizer, other)
    with pytest.raises(ConfigError, match="another reference checkpoint"):
        run_rollout_job(job(other, out))
    assert len(out.read_bytes().splitlines()) == 4  # nothing was changed
    broken = tmp_path / "broken.jsonl"
    lines = uninterrupted.splitlines(keepends=True)
    broken.write_bytes(lines[0] + b'{"prompt_id": 0,\n' + lines[2])
    with pytest.raises(DataError, match="broken.jsonl:2"):
        run_rollout_job(job(nano_checkpoint, broken))


def test_config_errors_are_actionable(nano_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="model="):
        load_config(RolloutJobConfig, None, ["out=x.jsonl"])
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        job(nano_checkpoint, tmp_path / "o.jsonl", "samples_per_prompt=0")
    with pytest.raises(ConfigError, match=r"env: kwargs: \['split'\] are keys of the env section"):
        job(nano_checkpoint, tmp_path / "o.jsonl", "env.kwargs={split: ood}")
    with pytest.raises(ConfigError, match="'env_kwargs' was renamed to 'env.kwargs'"):  # the keys of earlier versions
        job(nano_checkpoint, tmp_path / "o.jsonl", "env_kwargs={env: math}")
    with pytest.raises(ConfigError, match="'max_turns' moved to env.kwargs.max_attempts"):
        job(nano_checkpoint, tmp_path / "o.jsonl", "max_turns=5")
    with pytest.raises(ConfigError, match="env: expected a section .*name, split, style, max_turns, kwargs"):
        job(nano_checkpoint, tmp_path / "o.jsonl", "env=unary-feedback")
    with pytest.raises(ConfigError, match="env: .*unknown inner env"):
        run_rollout_job(job(nano_checkpoint, tmp_path / "o.jsonl", "env.kwargs.env=nope"))
    with pytest.raises(ConfigError, match="local checkpoint directory"):
        run_rollout_job(job(tmp_path / "missing", tmp_path / "o.jsonl"))


def test_kill_9_then_cli_resume(uninterrupted, nano_checkpoint, tmp_path, capsys):
    """A real SIGKILL right after the first chunk is on disk, then `postlab rollout` on the same output
    (in-process: one interpreter start is the slow part of this test)."""
    from postlab.cli.main import main

    out = tmp_path / "k.jsonl"
    script = ("import os, signal, sys; from postlab.config import load_config; "
              "from postlab.rollout.offline import RolloutJobConfig, run_rollout_job; "
              "cfg = load_config(RolloutJobConfig, None, sys.argv[1:]); "
              "run_rollout_job(cfg, on_chunk=lambda c, t: os.kill(os.getpid(), signal.SIGKILL))")
    args = [f"model={nano_checkpoint}", f"out={out}", *JOB]
    killed = subprocess.run([sys.executable, "-c", script, *args], env=cli_env(), capture_output=True, text=True,
                            cwd=REPO)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert len(out.read_bytes().splitlines()) == 4
    assert main(["rollout", *args]) == 0
    assert "resuming, 2 of 5 prompts already written" in " ".join(capsys.readouterr().err.split())  # rich wraps
    assert out.read_bytes() == uninterrupted
    assert main(["rollout", f"model={nano_checkpoint}", f"out={out}", *JOB, "top_p=0.5"]) == 2  # refused, exit 2
    assert "another config" in capsys.readouterr().err


def test_trajectory_from_a_scripted_unary_feedback_episode(nano_checkpoint, tmp_path):
    """The env's per-turn verdicts and answers become the line's fields and DRIFT's return."""
    from postlab.data.trajectories import validate_trajectory
    from postlab.rollout.episodes import Episode, Turn
    from postlab.rollout.offline import make_env_factory, trajectory_from_episode

    cfg = job(nano_checkpoint, tmp_path / "s.jsonl")
    env = make_env_factory(cfg)()
    seed = rl_seed(0, 3)
    env.reset(seed)
    right = env.expert_answer()
    ep = Episode(seed=seed, messages=[], input_ids=[], loss_mask=[], logprobs=[])
    for text in ("I am not sure", f"<answer>{int(right) + 1}</answer>", f"so <answer>{right}</answer>"):
        res = env.step(text)
        ep.turns.append(Turn(0, [1, 2], [0.0, 0.0], text, "stop", res.reward, res.success, res.done, res.info))
        ep.success = ep.success or res.success
    ep.messages = env.messages
    assert res.done  # stopped at the first correct answer
    spec = {"name": env.name, "split": "id", "style": "compact", "kwargs": {}}
    t = validate_trajectory(trajectory_from_episode(ep, 3, 0, 7, {"path": "r", "sha256": "x"}, spec, "job"))
    assert t["verdicts"] == [None, False, True] and t["answers"] == [None, str(int(right) + 1), right]
    assert t["turn_rewards"] == [-0.1, 0.0, 1.0] and t["first_correct_turn"] == 3 and t["success"]
    assert t["return"] == pytest.approx(0.9 - 0.1)  # attempt 2 (the unparsable turn uses none), one format penalty
    assert t["generated_tokens"] == 6 and [m["role"] for m in t["messages"]].count("assistant") == 3


# ------------------------------------------------------------------------------ issue 29: never another's file


@pytest.mark.parametrize("content", [b"my notes, no trailing newline", b"{\"a\": 1}", b"x", b" ",
                                     b'{"prompt_id": 3, "sample": 0, "env_seed": 1'])
def test_a_file_that_is_not_a_rollout_dataset_is_never_touched(nano_checkpoint, tmp_path, content):
    out = tmp_path / "notes.txt"
    out.write_bytes(content)
    with pytest.raises(DataError, match="not a rollout dataset.*refusing to change the file"):
        run_rollout_job(job(nano_checkpoint, out))
    assert out.read_bytes() == content


def test_a_foreign_tail_after_the_jobs_lines_is_never_cut(uninterrupted, nano_checkpoint, tmp_path):
    lines = uninterrupted.splitlines(keepends=True)
    content = b"".join(lines[:3]) + b"appended by hand"
    out = tmp_path / "t.jsonl"
    out.write_bytes(content)
    with pytest.raises(DataError, match=r"t.jsonl: its last line \(4\) has no newline"):
        run_rollout_job(job(nano_checkpoint, out))
    assert out.read_bytes() == content


@pytest.mark.parametrize("n", [1, 7, 40])
def test_a_half_written_first_line_still_resumes(uninterrupted, nano_checkpoint, tmp_path, n):
    out = tmp_path / "f.jsonl"
    out.write_bytes(uninterrupted.splitlines(keepends=True)[0][:n])
    run_rollout_job(job(nano_checkpoint, out))
    assert out.read_bytes() == uninterrupted


def test_out_naming_a_directory_or_under_a_file_is_a_config_error(nano_checkpoint, tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        run_rollout_job(job(nano_checkpoint, tmp_path))
    (tmp_path / "f").write_text("keep")
    with pytest.raises(ConfigError, match="is a file, not a directory"):
        run_rollout_job(job(nano_checkpoint, tmp_path / "f" / "o.jsonl"))
    assert (tmp_path / "f").read_text() == "keep"


@pytest.mark.parametrize("bad", ["temperature=nan", "temperature=.inf", "top_p=nan", "temperature=-.inf"])
def test_non_finite_sampling_values_are_config_errors(nano_checkpoint, tmp_path, bad):
    with pytest.raises(ConfigError, match="finite"):
        job(nano_checkpoint, tmp_path / "o.jsonl", bad)
