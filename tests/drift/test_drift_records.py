"""The trajectory dataset: writer, validating reader (DataError names file, line, field), SFT records."""

import json
import math

import pytest

from postlab.data.records import DataError, encode_record, validate_record
from postlab.data.trajectories import TrajectoryWriter, read_trajectories, to_drift_records

from .helpers import hand_trajectories, make_trajectory


def test_writer_appends_and_reader_round_trips(tmp_path):
    path = tmp_path / "t.jsonl"
    trajs = hand_trajectories()
    with TrajectoryWriter(path) as w:
        assert w.write(trajs[:3]) == 3
    with TrajectoryWriter(path) as w:  # append-only: a second writer continues the file
        w.write(trajs[3:])
    assert read_trajectories(path) == trajs
    with pytest.raises(DataError, match="field 'return'"):  # the writer validates too
        TrajectoryWriter(path).write([make_trajectory(ret=float("inf"))])


def test_only_the_last_assistant_turn_is_trained(char_tokenizer):
    trajs = hand_trajectories()
    records = to_drift_records(trajs, [1.5, 0.5, 1.0, 1.0])
    assert [r["weight"] for r in records] == [1.5, 0.5, 1.0, 1.0]
    for traj, rec in zip(trajs, records):
        validate_record(rec)
        enc = encode_record(char_tokenizer, rec)
        assert enc.weight == rec["weight"]
        trained = char_tokenizer.decode([i for i, m in zip(enc.input_ids, enc.loss_mask) if m])
        assert trained == traj["messages"][-1]["content"] + "<|end|>"  # the last turn and its end marker only
        # the whole dialogue as context
        assert char_tokenizer.decode(enc.input_ids).count("<|assistant|>") == len(traj["verdicts"])
    kept = to_drift_records(trajs, [1.0] * 4, keep=[True, False, False, True])
    assert [(r["prompt_id"], r["sample"]) for r in kept] == [(0, 0), (1, 1)]
    with pytest.raises(DataError, match=r"weights\[2\]"):
        to_drift_records(trajs, [1.0, 1.0, math.nan, 1.0])
    with pytest.raises(DataError, match="one weight per trajectory"):
        to_drift_records(trajs, [1.0])


def write_lines(path, objs_or_text):
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs_or_text))
    return path


@pytest.mark.parametrize("bad, line, field", [
    ('{"prompt_id": 1, "sample": ', 2, "malformed JSON"),
    ({k: v for k, v in make_trajectory().items() if k != "answers"}, 2, "missing field 'answers'"),
    (make_trajectory(ret=float("nan")), 2, "field 'return'"),
    (make_trajectory(ret=float("-inf")), 2, "field 'return'"),
    (make_trajectory(weight=float("nan")), 2, "field 'weight'"),
    ({**make_trajectory(), "prompt_id": "0"}, 2, "field 'prompt_id'"),
    (make_trajectory(verdicts=[1, True]), 2, "field 'verdicts'"),
    (make_trajectory(turn_rewards=[0.0, float("nan")]), 2, "field 'turn_rewards'"),
    ({**make_trajectory(), "answers": ["3"]}, 2, "field 'answers' has 1 entries"),
    (make_trajectory(reference={"path": "ref"}), 2, "field 'reference'"),
    ([1, 2], 2, "expected a JSON object"),
])
def test_bad_lines_name_file_line_and_field(tmp_path, bad, line, field):
    path = write_lines(tmp_path / "bad.jsonl", [make_trajectory(), bad, make_trajectory(1)])
    with pytest.raises(DataError) as e:
        read_trajectories(path)
    assert f"bad.jsonl:{line}:" in str(e.value) and field in str(e.value)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="does not exist.*postlab rollout"):
        read_trajectories(tmp_path / "none.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty"):
        read_trajectories(tmp_path / "empty.jsonl")
