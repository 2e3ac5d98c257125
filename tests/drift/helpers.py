"""Hand-made trajectories in the dataset schema (postlab.data.trajectories)."""


def make_trajectory(prompt_id=0, sample=0, verdicts=(False, True), answers=("3", "4"), ret=0.9, **extra) -> dict:
    msgs = [{"role": "user", "content": f"Q{prompt_id}: 1+3? <answer>"}]
    for k, a in enumerate(answers):
        if k:
            msgs.append({"role": "user", "content": "Incorrect. Please think again."})
        msgs.append({"role": "assistant", "content": f"t{k} <answer>{a}</answer>" if a is not None else f"t{k} ??"})
    first = next((k + 1 for k, v in enumerate(verdicts) if v is True), None)
    traj = {"prompt_id": prompt_id, "sample": sample, "env_seed": 20_000_000_000 + prompt_id, "messages": msgs,
            "verdicts": list(verdicts), "turn_rewards": [{True: 1.0, False: 0.0, None: -0.1}[v] for v in verdicts],
            "answers": list(answers), "first_correct_turn": first, "success": first is not None, "return": ret,
            "return_params": {"gamma": 0.9, "format_penalty": -0.1, "repetition_coef": 0.5},
            "generated_tokens": 10, "truncated": False, "sampling_seed": 0,
            "reference": {"path": "ref", "sha256": "ab" * 32},
            "env": {"name": "unary-feedback", "split": "id", "style": "compact", "kwargs": {"env": "math"}},
            "job": "0123456789abcdef"}
    traj.update(extra)
    return traj


def hand_trajectories() -> list[dict]:
    """Two prompts x 2 samples with 1-3 model turns each."""
    return [make_trajectory(0, 0, (True,), ("4",), 1.0),
            make_trajectory(0, 1, (False, None, True), ("3", None, "4"), 0.8),
            make_trajectory(1, 0, (False, False), ("5", "5"), -0.25),
            make_trajectory(1, 1, (None, True), (None, "4"), 0.9)]
