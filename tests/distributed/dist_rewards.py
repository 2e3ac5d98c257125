"""Rewards for the distributed RL tests: they vary within a group even for an untrained model,
so advantages (and the update being compared) are not all zero."""


def token_parity(episode) -> float:
    ids = episode.turns[-1].token_ids
    return sum(t % 2 for t in ids) / max(len(ids), 1)
