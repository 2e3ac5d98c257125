"""scripts/seen_vs_heldout.py: greedy success on a trajectory file's problems against held-out ones
(docs/results.md, drift `reason`: does DRIFT gain on the hands it trained on and lose on new ones?)."""

import importlib.util
import json
import shutil

import pytest

import postlab.envs.toy  # noqa: F401
from postlab.data.records import DataError

from drift.helpers import make_trajectory
from harness import REPO, tiny_checkpoint


def _script():
    spec = importlib.util.spec_from_file_location("seen_vs_heldout", REPO / "scripts" / "seen_vs_heldout.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gap_is_seen_change_minus_heldout_change():
    s = _script()
    gap = s.gap_ci([1.0, 1.0, 1.0, 1.0], [0.0, 0.0])
    assert gap == {"mean": 1.0, "ci_low": 1.0, "ci_high": 1.0}
    gap = s.gap_ci([1.0, 0.0], [0.0, -1.0, 0.0, -1.0])
    assert gap["mean"] == pytest.approx(1.0) and gap["ci_low"] <= 1.0 <= gap["ci_high"]
    with pytest.raises(ValueError, match="at least one problem"):
        s.gap_ci([], [1.0])
    # compare: changes are paired against the first checkpoint, per side
    ref = {"seen": [0.0, 1.0, 0.0], "heldout": [1.0, 1.0]}
    other = {"seen": [1.0, 1.0, 1.0], "heldout": [0.0, 1.0]}
    c = s.compare({"ref": ref, "other": other})["other"]
    assert c["seen"]["mean"] == pytest.approx(2 / 3) and c["heldout"]["mean"] == pytest.approx(-0.5)
    assert c["gap"]["mean"] == pytest.approx(2 / 3 + 0.5)


def test_seen_seeds_are_the_files_distinct_env_seeds_in_order(tmp_path):
    s = _script()
    f = tmp_path / "t.jsonl"
    trajs = [make_trajectory(i, 0, env_seed=x) for i, x in enumerate([7, 7, 3, 9, 3])]
    f.write_text("".join(json.dumps(t) + "\n" for t in trajs))
    assert s.seen_seeds(f) == [7, 3, 9]
    no_seed = {k: v for k, v in trajs[1].items() if k != "env_seed"}
    f.write_text(json.dumps(trajs[0]) + "\n" + json.dumps(no_seed) + "\n")
    with pytest.raises(DataError, match=r"t.jsonl:2.*env_seed"):
        s.seen_seeds(f)


def test_end_to_end_a_checkpoint_against_its_copy_changes_nothing(tmp_path, capsys):
    s = _script()
    ckpt = tiny_checkpoint(tmp_path / "m", preset="nano", seed=0)
    copy = shutil.copytree(ckpt, tmp_path / "copy")
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps(make_trajectory(0, 0, env_seed=x)) + "\n" for x in (11, 12, 11, 13)))
    out = tmp_path / "r.json"
    s.main([str(ckpt), str(copy), "--trajectories", str(f), "--env", "toy", "--heldout", "5",
            "--max-new-tokens", "4", "--out", str(out)])
    r = json.loads(out.read_text())
    a, b = r["outcomes"][str(ckpt)], r["outcomes"][str(copy)]
    assert len(a["seen"]) == 3 and len(a["heldout"]) == 5 and a == b
    change = r["changes"][str(copy)]
    assert change["seen"]["mean"] == change["heldout"]["mean"] == change["gap"]["mean"] == 0.0
    assert "gap (seen - held-out) +0.0" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        s.main([str(ckpt), str(ckpt), "--trajectories", str(f), "--env", "toy"])
    assert "given twice" in capsys.readouterr().err
