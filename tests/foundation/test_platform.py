"""The trainer platform (issue 26): one trainer registry, one set-up, one env and sampling section,
one step tail, extra log rows through the loop."""

import ast
from pathlib import Path

import pytest
import torch

from postlab.config import ConfigError, OptimConfig, RunConfig, load_config
from postlab.trainers.envsection import EnvConfig, SamplingConfig, validate_env
from postlab.trainers.registry import TRAINERS, TrainerEntry, register_trainer

REPO = Path(__file__).resolve().parents[2]


def test_every_registered_trainer_loads_runs_from_the_cli_and_has_a_stage_kind():
    from postlab.cli.main import main
    from postlab.studies.kinds import STAGE_KINDS

    assert list(TRAINERS) == ["sft", "rl", "rasft", "rft", "drift"]
    for name, entry in TRAINERS.items():
        cfg_cls, train = entry.load()
        assert cfg_cls.__name__ == entry.config and callable(train) and train.__name__ == entry.train
        assert name in STAGE_KINDS
    with pytest.raises(SystemExit):  # argparse: the trainers it offers are the registry's
        main(["train", "nope"])


def test_a_second_trainer_with_a_taken_name_is_refused():
    with pytest.raises(ValueError, match="trainer 'rl' is already registered"):
        register_trainer(TrainerEntry("rl", "somewhere", "Cfg", "train"))
    assert TRAINERS["rl"].module == "postlab.trainers.rl"


def test_no_trainer_imports_another_trainer():
    """What two trainers share lives in setup.py, envsection.py or common.py (module- and function-level imports)."""
    trainers = {"sft", "rl", "rasft", "rft", "drift"}
    for name in trainers:
        tree = ast.parse((REPO / "postlab" / "trainers" / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                target = node.module.removeprefix("postlab.trainers.")
                assert target not in trainers - {name}, f"trainers/{name}.py imports trainers/{target}.py"
                if node.module == "postlab.trainers":
                    assert not {a.name for a in node.names} & trainers, f"trainers/{name}.py imports a trainer"


def test_env_section_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"^env.name: unknown environment 'nope'"):
        validate_env(EnvConfig(name="nope"))
    with pytest.raises(ConfigError, match=r"^env.split: .*unknown split 'zz'"):
        validate_env(EnvConfig(name="generalpoints", split="zz"))
    with pytest.raises(ConfigError, match=r"^env.eval_splits: .*unknown split 'zz'"):
        validate_env(EnvConfig(name="generalpoints", eval_splits=("id", "zz")))
    with pytest.raises(ConfigError, match=r"env.name='toy': the environment has no check_answer\(\)"):
        validate_env(EnvConfig(name="toy"), verifier_for="RFT")
    validate_env(EnvConfig(name="math"), verifier_for="RFT")  # math verifies single answers
    with pytest.raises(ConfigError, match="env.max_turns must be >= 1, got 0"):
        EnvConfig(max_turns=0)


@pytest.mark.parametrize("trainer", ["rl", "rft"])
def test_sampling_section_is_one_shape_validated_at_load(trainer):
    cls, _ = TRAINERS[trainer].load()
    with pytest.raises(ConfigError, match="sampling: temperature must be >= 0, got -1"):
        load_config(cls, None, ["model.path=x", "sampling.temperature=-1"])
    cfg = load_config(cls, None, ["model.path=x", "sampling.top_k=5", "sampling.repetition_penalty=1.1",
                                  "sampling.stop=[END]"])
    assert isinstance(cfg.sampling, SamplingConfig)
    p = cfg.sampling.params(seed=7, n=3)
    assert (p.top_k, p.repetition_penalty, p.stop, p.seed, p.n) == (5, 1.1, ("END",), 7, 3)


def test_update_step_equals_the_step_tail_written_out(nano_model, char_tokenizer):
    """common.update_step == accumulate against the step's global counts, then clip and one AdamW step."""
    import copy

    from postlab.data.records import Encoded
    from postlab.objectives.registry import get_objective
    from postlab.trainers.common import (accumulate_gradients, make_optimizer, optimizer_step, pack_micro_batches,
                                         step_normalizer, update_step)

    g = torch.Generator().manual_seed(0)
    seqs = [Encoded(torch.randint(10, len(char_tokenizer), (n,), generator=g).tolist(), [0] * 2 + [1] * (n - 2))
            for n in (7, 12, 5, 9)]
    optim = OptimConfig(lr=1e-2, schedule="constant", grad_clip=0.5)
    a, b = nano_model.train(), copy.deepcopy(nano_model).train()
    opt_a, opt_b = make_optimizer(a, optim), make_optimizer(b, optim)
    objective = get_objective("nll")
    micro_a, micro_b = pack_micro_batches(seqs, 2), pack_micro_batches(seqs, 2)
    got = update_step(a, opt_a, micro_a, objective, {}, "token_mean", optim.grad_clip)
    want = accumulate_gradients(b, micro_b, objective, {}, "token_mean", step_normalizer(micro_b))
    want["grad_norm"] = optimizer_step(b, opt_b, optim.grad_clip)
    assert got == want
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_extra_rows_of_a_step_are_logged_before_the_step_row(tmp_path, monkeypatch):
    """StepOutput.rows: RASFT's refresh rows go through the loop, on every step, before the step's own row."""
    import dataclasses
    import json

    from postlab.trainers import loop
    from postlab.trainers.loop import StepOutput, Trainer, open_run, run_loop

    @dataclasses.dataclass
    class Cfg:
        run: RunConfig

    cfg = Cfg(RunConfig(out_dir=str(tmp_path / "run"), max_steps=3, log_every=2, save_every=0, progress=False,
                        tensorboard=False))
    # a bare Linear has no Hugging Face save: the loop's saves are not what this test is about
    monkeypatch.setattr(loop, "save_final", lambda trainer, run: run.path / "final")
    monkeypatch.setattr(loop, "save_checkpoint", lambda *args, **kwargs: None)
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step(i):
        return StepOutput({"loss": float(i)}, rows=[("refresh", {"index": i})])

    run_loop(Trainer("toy", model, None, optimizer, OptimConfig(lr=1e-3), step=step), cfg.run, open_run(cfg, "toy", None))
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    kinds = [(r.get("kind", "train"), r["step"]) for r in rows]
    assert [k for k in kinds if k[0] == "refresh"] == [("refresh", 1), ("refresh", 2), ("refresh", 3)]  # every step
    assert kinds.index(("refresh", 2)) < kinds.index(("train", 2))
    assert ("train", 1) not in kinds  # log_every thins only the step rows
