"""`postlab rejuvenate` and `postlab diagnose` end to end on tiny saved checkpoints."""

import json

import pytest
import torch

from postlab.cli.main import main
from postlab.interventions.common import InterventionError
from postlab.interventions.diagnostics import DRIFT_KEYS, GAP_KEYS, MODEL_KEYS, RESULT_KEYS, SPLIT_KEYS
from postlab.interventions.rejuvenation import rejuvenate

from .conftest import tiny_qwen2


def test_rejuvenate_writes_a_checkpoint_plain_transformers_loads(saved_pair, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, sft = saved_pair
    out = tmp_path / "rejuvenated"
    rc = main(["rejuvenate", "--base", str(base), "--sft", str(sft), "--out", str(out), "--env", "toy",
               "--split", "id", "--n", "4", "--top-positions", "6", "--alpha-module", "embed_tokens=1.0"])
    assert rc == 0
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    assert len(tokenizer) == model.config.vocab_size
    report = json.loads((out / "rejuvenation_report.json").read_text())
    assert (out / "rejuvenation_report.md").read_text().startswith("# Rejuvenation")
    # per layer: q 32 + k 16 + v 16 + o 32 + gate/up/down 3 x 64 = 288 slices, round(1%) = 3
    assert report["units"] == "slices" and report["reset"]["reset_units"] == 2 * 3
    assert sum(report["reset"]["per_module"].values()) == report["reset"]["reset_units"]
    assert set(report["entropy"]) == {"base", "sft", "fused", "rejuvenated"}
    assert report["drift"]["fused"]["total"] < report["drift"]["sft"]["total"]
    assert len(report["calibration"]["top_positions"]) == 6
    sft_model = AutoModelForCausalLM.from_pretrained(str(sft))
    assert torch.equal(model.model.embed_tokens.weight, sft_model.model.embed_tokens.weight)


def test_rejuvenate_redo_mode_and_drift_scorer_without_env(saved_pair, tmp_path):
    base, sft = saved_pair
    report = rejuvenate(base, sft, tmp_path / "redo", scorer="drift", mode="redo", fraction=0.05, scope="global")
    assert report["units"] == "neurons" and report["entropy"] is None
    assert report["reset"]["per_module"] == {"mlp": round(0.05 * 128)}
    with pytest.raises(InterventionError, match="already holds a checkpoint"):
        rejuvenate(base, sft, tmp_path / "redo", scorer="drift")
    rejuvenate(base, sft, tmp_path / "redo", scorer="drift", force=True)


@pytest.mark.parametrize("options, message", [
    ({"fraction": -0.01}, r"--fraction must be in \[0, 1\)"),
    ({"fraction": 1.5}, r"--fraction must be in \[0, 1\)"),
    ({"fraction": 1.0}, r"--fraction must be in \[0, 1\)"),
    ({"alpha": -0.1}, r"--alpha must be in \[0, 1\]"),
    ({"omega": 1.2}, r"--omega must be in \[0, 1\]"),
    ({"scorer": "dla"}, "needs calibration prompts: pass --env"),
    ({"env": "toy", "scorer": "dormancy", "units": "slices"}, "use --units neurons"),
    ({"scorer": "drift", "module_alphas": {"nothing_like_this": 0.5}}, "no parameter name contains"),
])
def test_bad_options_fail_before_writing(saved_pair, tmp_path, options, message):
    base, sft = saved_pair
    out = tmp_path / "never"
    with pytest.raises(InterventionError, match=message):
        rejuvenate(base, sft, out, **options)
    assert not out.exists() and not (tmp_path / "never.tmp").exists()


def test_shape_mismatch_names_the_parameter_and_writes_nothing(saved_pair, tmp_path, char_tokenizer, capsys):
    from postlab.models import save_pretrained_atomic

    base, _ = saved_pair
    save_pretrained_atomic(tiny_qwen2(len(char_tokenizer), intermediate_size=48), char_tokenizer, tmp_path / "other")
    out = tmp_path / "never"
    rc = main(["rejuvenate", "--base", str(base), "--sft", str(tmp_path / "other"), "--out", str(out),
               "--scorer", "drift"])
    assert rc == 2
    assert "model.layers.0.mlp.gate_proj.weight" in capsys.readouterr().err
    assert not out.exists()
    rc = main(["rejuvenate", "--base", str(base), "--sft", str(base), "--out", str(out), "--alpha", "-0.1",
               "--scorer", "drift"])
    assert rc == 2 and "--alpha must be in [0, 1]" in capsys.readouterr().err and not out.exists()


def test_diagnose_writes_every_key_and_the_plots(saved_pair, tmp_path):
    base, sft = saved_pair
    out = tmp_path / "diag"
    rc = main(["diagnose", str(sft), "--base", str(base), "--env", "toy", "--split", "id", "--split", "ood",
               "--n", "3", "--out", str(out), "--hessian-iters", "3", "--perturb-samples", "2", "--top-positions", "4"])
    assert rc == 0
    result = json.loads((out / "diagnostics.json").read_text())
    assert set(RESULT_KEYS) <= set(result) and result["splits"] == ["id", "ood"]
    assert set(DRIFT_KEYS) <= set(result["drift"]) and result["drift"]["total"] > 0
    for split in ("id", "ood"):
        per_split = result["per_split"][split]
        assert set(SPLIT_KEYS) <= set(per_split)
        assert set(GAP_KEYS) <= set(per_split["entropy_gap"]) and len(per_split["entropy_gap"]["top"]) == 4
        for who in ("checkpoint", "base"):
            assert set(MODEL_KEYS) <= set(per_split[who])
            assert all(per_split[who][k] is not None for k in MODEL_KEYS), per_split[who]
            assert len(per_split[who]["dormant_ratio_per_layer"]) == 2
    for name in ("drift.png", "entropy.png", "entropy_gap.png", "dormancy.png"):
        assert (out / name).stat().st_size > 1000


# ------------------------------------------------------------------------------ issue 29


def _snapshot(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("which", ["sft", "base", "inside-sft", "holds-sft"])
@pytest.mark.parametrize("force", [False, True])
def test_an_output_that_is_or_holds_or_lies_inside_an_input_is_refused(saved_pair, tmp_path, capsys, which, force):
    base, sft = saved_pair
    if which == "holds-sft":  # --sft lives inside --out: replacing --out would delete it
        import shutil

        sft = shutil.copytree(sft, tmp_path / "parent" / "sft")
    out = {"sft": sft, "base": base, "inside-sft": sft / "sub", "holds-sft": tmp_path / "parent"}[which]
    before = {who: _snapshot(p) for who, p in (("base", base), ("sft", sft))}
    argv = ["rejuvenate", "--base", str(base), "--sft", str(sft), "--out", str(out), "--scorer", "drift"]
    rc = main(argv + (["--force"] if force else []))
    assert rc == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "would replace the checkpoint being read" in err and "Traceback" not in err
    assert {who: _snapshot(p) for who, p in (("base", base), ("sft", sft))} == before


def test_fraction_zero_is_fusion_without_a_reset(saved_pair, tmp_path):
    from postlab.interventions.fusion import fuse
    from postlab.models import load_model

    base, sft = saved_pair
    out = tmp_path / "fused"
    assert main(["rejuvenate", "--base", str(base), "--sft", str(sft), "--out", str(out), "--fraction", "0",
                 "--alpha", "0.5"]) == 0  # no --env needed: nothing is scored
    report = json.loads((out / "rejuvenation_report.json").read_text())
    assert report["reset"]["reset_units"] == 0 and report["reset"]["per_module"] == {}
    expected = fuse(load_model(str(base)), load_model(str(sft)), 0.5, {})
    got = load_model(str(out))
    for (name, p), q in zip(got.named_parameters(), expected.parameters()):
        assert torch.equal(p, q), name


def test_alpha_one_is_a_reset_without_fusion(saved_pair, tmp_path):
    from postlab.models import load_model

    base, sft = saved_pair
    report = rejuvenate(base, sft, tmp_path / "reset", scorer="drift", alpha=1.0, fraction=0.05)
    assert report["reset"]["reset_units"] > 0
    assert report["drift"]["fused"]["total"] == pytest.approx(report["drift"]["sft"]["total"])
    changed = sum(not torch.equal(p, q) for p, q in zip(load_model(str(tmp_path / "reset")).parameters(),
                                                       load_model(str(sft)).parameters()))
    assert changed > 0
