"""`postlab eval` prints a summary table by default; the full record only with --json or --out
(issue 29: one split with --decoding sampled printed ~430 lines of JSON)."""

import json

from postlab.cli.main import main

ARGS = ["--env", "toy", "--split", "id", "--episodes", "4", "--decoding", "sampled", "--k", "2",
        "--max-new-tokens", "4", "--device", "cpu"]


def test_default_output_is_a_short_summary(nano_checkpoint, capsys):
    assert main(["eval", str(nano_checkpoint), *ARGS]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err  # the tables go to the console (stderr), like every command's summary
    assert "summary" in out and "pass@k" in out and "truncated" in out and "tokens" in out
    assert '"success_rate"' not in out  # no JSON dump
    assert len(out.splitlines()) < 40


def test_json_prints_the_full_record(nano_checkpoint, capsys):
    assert main(["eval", str(nano_checkpoint), *ARGS, "--json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert records[0]["split"] == "id" and "pass_at_k" in records[0] and "truncated_fraction" in records[0]


def test_out_writes_the_full_record(nano_checkpoint, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert main(["eval", str(nano_checkpoint), *ARGS, "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert '"success_rate"' not in captured.out + captured.err
    assert json.loads(out.read_text())[0]["split"] == "id"


def test_env_diagnostics_are_printed(nano_checkpoint, capsys):
    """math's `solution` diagnostic (where a worked solution leaves the problem's) is shown, not only saved:
    an untrained model writes no equation at all."""
    args = ["--env", "math", "--episodes", "3", "--max-new-tokens", "6", "--device", "cpu"]
    assert main(["eval", str(nano_checkpoint), *args]) == 0
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert "first-answer diagnostics" in out and "solution" in out and "no steps 100.0%" in out
