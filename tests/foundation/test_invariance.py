"""Gradients do not depend on micro-batching, accumulation or data-parallel sharding.

The real model forward on packed batches of sequences of different lengths, through the
trainer's own pieces (`pack_micro_batches`, `step_normalizer`, `accumulate_gradients`).
float64 so that the comparison at 1e-6 tests the arithmetic, not rounding.
"""

import os
import tempfile

import pytest
import torch

from postlab.data.records import Encoded
from postlab.objectives import AGGREGATION_MODES, get_objective
from postlab.trainers.common import (accumulate_gradients, all_reduce_gradients, pack_micro_batches, shard_for_rank,
                                     step_normalizer)

N_SEQS = 8


def make_sequences(vocab: int, seed: int = 0) -> list[Encoded]:
    """8 sequences of lengths 4..19, prompt tokens masked, different record weights."""
    g = torch.Generator().manual_seed(seed)
    seqs = []
    for i in range(N_SEQS):
        n = int(torch.randint(4, 20, (1,), generator=g))
        ids = torch.randint(10, vocab, (n,), generator=g).tolist()
        prompt = int(torch.randint(1, n - 1, (1,), generator=g))
        seqs.append(Encoded(ids, [0] * prompt + [1] * (n - prompt), weight=0.5 + 0.25 * i))
    assert len({len(s) for s in seqs}) > 3 and len({sum(s.loss_mask) for s in seqs}) > 3
    return seqs


def make_model(char_tokenizer):
    from postlab.models import init_model

    return init_model("nano", char_tokenizer, seed=0).double().train()


def grads(model, seqs, micro: int, objective: str, mode: str) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    batches = pack_micro_batches(seqs, micro)
    norm = step_normalizer(batches, constant=16.0)
    accumulate_gradients(model, batches, get_objective(objective), {}, mode, norm)
    all_reduce_gradients(model)
    return [p.grad.detach().clone() for p in model.parameters()]


def assert_same(a, b, what):
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=0, msg=what)


@pytest.mark.parametrize("objective", ["nll", "weighted_nll", "dft"])
@pytest.mark.parametrize("mode", AGGREGATION_MODES)
def test_accumulation_invariance(char_tokenizer, mode, objective):
    model = make_model(char_tokenizer)
    seqs = make_sequences(len(char_tokenizer))
    full = grads(model, seqs, 8, objective, mode)  # batch 8 x accumulation 1
    assert sum(g.abs().sum() for g in full) > 0
    for micro in (1, 2, 4):  # batch 1 x accumulation 8, 2 x 4, 4 x 2
        assert_same(full, grads(model, seqs, micro, objective, mode), f"{mode}/{objective}: micro {micro} vs 8")


def test_modes_really_differ(char_tokenizer):
    """Sanity check that the invariance above is not vacuous: the modes give different gradients."""
    model = make_model(char_tokenizer)
    seqs = make_sequences(len(char_tokenizer))
    g = {m: grads(model, seqs, 8, "nll", m) for m in AGGREGATION_MODES}
    for a in AGGREGATION_MODES:
        for b in AGGREGATION_MODES:
            if a < b:
                assert not torch.allclose(g[a][0], g[b][0], atol=1e-6), (a, b)


# ------------------------------------------------------------------------------ data parallel


def _dp_worker(rank: int, world_size: int, out_dir: str) -> None:
    import torch.distributed as dist

    from postlab.models import build_tokenizer

    torch.set_num_threads(1)
    # A file rendezvous instead of a TCP port: no race for a "free" port between processes.
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=world_size)
    try:
        tok = build_tokenizer([], "char")
        model = make_model(tok)
        seqs = make_sequences(len(tok))
        for mode in AGGREGATION_MODES:
            # Each rank holds half of the sequences, in micro-batches of 2 (accumulation 2).
            g = grads(model, shard_for_rank(seqs, rank, world_size), 2, "nll", mode)
            if rank == 0:
                torch.save(g, os.path.join(out_dir, f"{mode}.pt"))
        dist.barrier()  # neither rank tears the group down while the other is still in a collective
    finally:
        dist.destroy_process_group()


def test_data_parallel_sharding_equivalence(char_tokenizer):
    """2 gloo processes, half the sequences each, all-reduced counts and summed gradients ==
    one process with all 8 sequences, for every aggregation mode."""
    import torch.multiprocessing as mp

    model = make_model(char_tokenizer)
    seqs = make_sequences(len(char_tokenizer))
    with tempfile.TemporaryDirectory() as out:
        mp.spawn(_dp_worker, args=(2, out), nprocs=2, join=True)
        for mode in AGGREGATION_MODES:
            dp = torch.load(os.path.join(out, f"{mode}.pt"))
            assert_same(grads(model, seqs, 8, "nll", mode), dp, f"data parallel {mode}")


def test_length_chunks_by_hand():
    from postlab.models.forward import length_chunks

    # cost per chunk = rows x width x per_token + rows x width^2 / 2 x per_pair + call; sorted longest first
    lengths = [10, 50, 45, 8]
    assert length_chunks(lengths, 1, 0, 0) == [[1], [2], [0], [3]]  # free calls: no padding at all
    assert length_chunks(lengths, 1, 0, 100) == [[1, 2, 0, 3]]  # 4 x 50 + 100 = 300 beats any two calls (420)
    # call 30: {50, 45} {10, 8} = 100 + 30 + 20 + 30 = 180 < 205 ({50} {45} {10, 8}) < 218 < 230 (one call)
    assert length_chunks(lengths, 1, 0, 30) == [[1, 2], [0, 3]]
    # attention decides: one call 2 x 50 + 2 x 50^2 / 2 + 200 = 2,800; two (50 + 1,250 + 200) + (45 + 1,012.5
    # + 200) = 2,757.5
    assert length_chunks([50, 45], 1, 1, 200) == [[0], [1]]
    assert length_chunks([10, 10, 10, 10], 1, 0, 100, max_tokens=25) == [[0, 1], [2, 3]]
    assert length_chunks([30], 1, 0, 0, max_tokens=10) == [[0]]  # one row always fits


def test_padded_layout_matches_single_packed_row(char_tokenizer, monkeypatch):
    """Batches of several sequences run as length-sorted padded rows, one sequence per row, with
    sdpa's causal kernel (forward.length_chunks): same log-probs, entropies, hidden states and
    gradients as one packed row with a block-diagonal mask and as each sequence on its own."""
    from postlab.data.batching import pack
    from postlab.models import forward

    g = torch.Generator().manual_seed(1)
    seqs = [Encoded(torch.randint(10, len(char_tokenizer), (n,), generator=g).tolist(), [0] * 3 + [1] * (n - 3))
            for n in torch.randint(5, 40, (24,), generator=g).tolist()]
    model = make_model(char_tokenizer)
    batch = pack(seqs)
    monkeypatch.setattr(forward, "CALL_TOKENS", {"cpu": 8, "default": 8})  # several model calls, as on a long batch
    chunks = forward.length_chunks(batch.seq_lengths.tolist(), *forward.forward_costs(model.config), 8)
    assert len(chunks) > 3 and any(len(c) > 1 for c in chunks)  # several calls, rows padded together
    padded = forward.token_outputs(model, batch, want_entropy=True, want_hidden=True)
    g_padded = torch.autograd.grad(padded.logp.sum(), list(model.parameters()))
    monkeypatch.setattr(forward, "padded_path_blocked", lambda m: True)
    single = forward.token_outputs(model, batch, want_entropy=True, want_hidden=True)
    g_single = torch.autograd.grad(single.logp.sum(), list(model.parameters()))
    alone = torch.cat([forward.token_outputs(model, pack([s])).logp for s in seqs])
    torch.testing.assert_close(padded.logp, single.logp, atol=1e-10, rtol=0)
    torch.testing.assert_close(padded.logp, alone, atol=1e-10, rtol=0)
    torch.testing.assert_close(padded.entropy, single.entropy, atol=1e-10, rtol=0)
    torch.testing.assert_close(padded.hidden, single.hidden, atol=1e-5, rtol=0)
    assert_same(g_padded, g_single, "padded layout gradients")
