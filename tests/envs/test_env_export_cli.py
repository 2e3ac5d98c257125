"""Batches, SFT/corpus records, and the `envs` / `env show|play` / `data export` commands."""

import argparse
import io
import json

import pytest

from postlab.cli import envs as cli
from postlab.data.records import read_jsonl, validate_record
from postlab.envs import ENV_REGISTRY, corpus_records, expert_dialogue, make, make_batch, sft_records


def test_registry_lists_every_env():
    assert {"generalpoints", "navigation", "biographies", "math", "math-jsonl", "unary-feedback"} <= set(ENV_REGISTRY)
    with pytest.raises(ValueError, match="Did you mean 'navigation'"):
        make("navigaton")


def test_make_batch_gives_independent_episodes():
    for name, kw in (("generalpoints", {}), ("navigation", {"split": "ood-rule"}), ("biographies", {}),
                     ("unary-feedback", {"env": "math"})):
        envs = make_batch(name, 4, **kw)
        obs = [e.reset(s) for e, s in zip(envs, (0, 1, 0, 2))]
        assert obs[0].messages == obs[2].messages != obs[1].messages
        envs[0].step("garbage")  # playing one episode leaves the others untouched
        assert envs[2].step(envs[2].expert()).reward > 0  # the expert's first answer is right
        assert envs[1].step(envs[1].expert()).reward > 0


def test_sft_records_are_valid_messages_records():
    recs = list(sft_records(make("navigation"), range(5)))
    for rec in recs:
        validate_record(rec)
        roles = [m["role"] for m in rec["messages"]]
        assert roles[0] == "user" and roles[-1] == "assistant" and roles.count("assistant") > 3  # the whole dialogue
    rec = next(sft_records(make("generalpoints", split="ood-rule"), [0]))
    assert [m["role"] for m in rec["messages"]] == ["user", "assistant"] and rec["meta"]["split"] == "ood-rule"
    for r in corpus_records(make("biographies"), 3):
        validate_record(r)
    env = make("generalpoints")
    assert expert_dialogue(env, 4) == expert_dialogue(env, 4)


def _parser():
    parser = argparse.ArgumentParser(prog="postlab")
    cli.register(parser.add_subparsers(dest="command"))
    return parser


def test_cli_list_and_show(capsys):
    args = _parser().parse_args(["envs"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "generalpoints" in out and "ood-rule" in out and "comp-zeroshot" in out
    args = _parser().parse_args(["env", "show", "generalpoints", "--split", "ood-rule", "-n", "2"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert out.count("=== generalpoints split=ood-rule") == 2 and "rule J=11 Q=12 K=13" in out and "[assistant]" in out
    args = _parser().parse_args(["env", "show", "biographies", "--split", "bogus"])
    assert args.func(args) == 2
    assert "unknown split 'bogus'; valid: mem-train" in capsys.readouterr().err
    args = _parser().parse_args(["env", "show", "unary-feedback", "--opt", "env=math", "--style", "paper", "-n", "1"])
    assert args.func(args) == 0 and "<answer>" in capsys.readouterr().out


def test_cli_play_reads_stdin():
    env = make("generalpoints")
    env.reset(0)
    answer = env.expert()
    args = _parser().parse_args(["env", "play", "generalpoints"])
    out = io.StringIO()
    assert cli.cmd_play(args, inp=io.StringIO(f"1+1\n:expert\n{answer}\n"), out=out) == 0
    text = out.getvalue()
    assert "reward -4 (you used invalid numbers" in text or "reward -2" in text
    assert "fail: " in text and f"expert: {answer}" in text and "episode over: success" in text
    args = _parser().parse_args(["env", "play", "navigation", "--split", "ood-rule"])
    out = io.StringIO()
    assert cli.cmd_play(args, inp=io.StringIO("forward\n:quit\n"), out=out) == 0
    assert "mode rel" in out.getvalue() and "stopped." in out.getvalue()


def test_cli_export(tmp_path, capsys):
    out = tmp_path / "gp.jsonl"
    args = _parser().parse_args(["data", "export", "generalpoints", "--split", "ood-visual", "-n", "20",
                                 "--out", str(out)])
    assert args.func(args) == 0
    recs = read_jsonl(out)
    prompts = [r["messages"][0]["content"] for r in recs]
    assert len(recs) == 20 and all("♥" in p or "♦" in p for p in prompts)
    corpus = tmp_path / "c.jsonl"
    args = _parser().parse_args(["data", "export", "navigation", "--kind", "corpus", "-n", "7", "--out", str(corpus)])
    assert args.func(args) == 0
    kinds = [list(json.loads(line)) for line in corpus.read_text().splitlines()]
    assert kinds == [["messages"] if isinstance(item, dict) else ["text"] for item in make("navigation").base_corpus(7)]
    assert ["text"] in kinds and ["messages"] in kinds  # lines and chat-form turn decisions
    args = _parser().parse_args(["data", "export", "biographies", "--split", "ctx-train", "-n", "3", "--out",
                                 str(tmp_path / "b.jsonl"), "--opt", "preset=tiny", "--style", "paper"])
    assert args.func(args) == 0 and len(read_jsonl(tmp_path / "b.jsonl")) == 3
    args = _parser().parse_args(["data", "export", "math", "-n", "3", "--out", str(out), "--opt", "nonsense"])
    assert args.func(args) == 2 and "KEY=VALUE" in capsys.readouterr().err
