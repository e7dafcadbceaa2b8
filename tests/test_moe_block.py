"""The hybrid MoE block (issue 2): each test names the property of METHOD.md it guards."""

from __future__ import annotations

import copy

import pytest
import torch

from multipl_moe.moe import (ConfigError, HybridMoEBlock, HybridMoEConfig, SegmentMoEConfig,
                             SwiGLUExperts, SwiGLUMLP, TokenMoEConfig)
from multipl_moe.moe.reference import (reference_block, reference_segment_moe_batch,
                                       reference_segment_moe_causal, reference_token_moe)

H, I = 16, 24


def make_block(routing="batch", seed=0, **segment_kw) -> HybridMoEBlock:
    torch.manual_seed(seed)
    seg = dict(segment_length=4, routing=routing)
    seg.update(segment_kw)
    cfg = HybridMoEConfig(segment=SegmentMoEConfig(**seg))
    return HybridMoEBlock(cfg, H, I).eval()


def padded_batch(B=3, S=11, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, S, H, generator=g)
    real = torch.ones(B, S, dtype=torch.bool)
    real[1, :3] = False   # left padding
    real[2, 8:] = False   # right padding
    return x, real


# ---------------------------------------------------------------- 1. fast dispatch == reference
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_grouped_dispatch_matches_reference_forward_and_backward(dtype, tol):
    torch.manual_seed(0)
    experts = SwiGLUExperts(5, H, I).to(dtype)
    x = torch.randn(64, H, dtype=dtype)
    idx = torch.randint(0, 5, (64,))
    idx[idx == 3] = 4  # one expert receives no rows: empty groups must work
    results = []
    for path in ("reference", "grouped"):
        e = copy.deepcopy(experts)
        xi = x.clone().requires_grad_(True)
        y = getattr(e, f"forward_{path}")(xi, idx)
        (y.float() * torch.linspace(-1, 1, H)).sum().backward()
        results.append((y, xi.grad, e.gate_up_proj.grad, e.down_proj.grad))
    for ref, fast in zip(*results):
        torch.testing.assert_close(fast.float(), ref.float(), atol=tol, rtol=tol)


@pytest.mark.parametrize("routing", ["batch", "causal"])
def test_block_dispatch_paths_agree(routing):
    block = make_block(routing)
    x, real = padded_batch()
    outs = []
    for dispatch in ("reference", "grouped"):
        b = copy.deepcopy(block).train()
        for m in b.modules():
            if isinstance(m, SwiGLUExperts):
                m.dispatch = dispatch
        xi = x.clone().requires_grad_(True)
        out = b(xi, real)
        (out.hidden_states[real].sum() + out.aux_loss).backward()
        outs.append((out.hidden_states[real], xi.grad, b.token_moe.experts.gate_up_proj.grad,
                     b.segment_moe.experts.down_proj.grad, b.token_moe.router.weight.grad))
    for ref, fast in zip(*outs):
        torch.testing.assert_close(fast, ref, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- the whole block == loops
@pytest.mark.parametrize("routing", ["batch", "causal"])
@pytest.mark.parametrize("pooling", ["mean", "max"])
@pytest.mark.parametrize("gate_scale", ["one", "inv_length"])
def test_block_matches_loop_reference(routing, pooling, gate_scale):
    # capacity 3 with at most 2 experts per segment makes the cap bind in batch mode
    block = make_block(routing, pooling=pooling, gate_scale=gate_scale, capacity_factor=3.0,
                       max_experts_per_segment=2, causal_top_k=2)
    x, real = padded_batch()
    with torch.no_grad():
        got = block(x, real).hidden_states
        want = reference_block(block, x, real)
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- 2. token-level gating
def test_token_weights_sum_to_one_and_shared_expert_always_chosen():
    block = make_block()
    x = torch.randn(200, H) * 3
    routing = block.token_moe.route(x)
    total = routing.routed_weight_TK.sum(-1) + routing.shared_weight_T
    torch.testing.assert_close(total, torch.ones(200), atol=1e-6, rtol=0)
    assert (routing.shared_weight_T > 0).all()
    assert routing.routed_idx_TK.max() < block.config.token.num_routed  # never the shared index
    # the renormalised weights are the softmax's own probabilities divided by their sum
    p = torch.softmax(x @ block.token_moe.router.weight.T, -1)
    chosen = torch.cat([p.gather(1, routing.routed_idx_TK), p[:, -1:]], 1)
    torch.testing.assert_close(routing.shared_weight_T, chosen[:, -1] / chosen.sum(-1), atol=1e-6, rtol=1e-5)
    load = block(x.view(4, 50, H)).stats["token_load"]
    assert load[:, -1].tolist() == [50] * 4 and load.sum().item() == 200 * block.config.token.top_k


def test_token_level_matches_per_token_loop():
    block = make_block()
    x = torch.randn(2, 7, H)
    with torch.no_grad():
        got, _ = block.token_moe(x.view(-1, H))
        torch.testing.assert_close(got.view(2, 7, H), reference_token_moe(block, x), atol=1e-6, rtol=1e-5)


def test_frozen_shared_expert_gets_no_gradient_and_others_do():
    block = make_block().train()
    assert all(not p.requires_grad for p in block.token_moe.shared_expert.parameters())
    x = torch.randn(2, 12, H)
    out = block(x)
    (out.hidden_states.square().sum() + out.aux_loss).backward()
    assert all(p.grad is None for p in block.token_moe.shared_expert.parameters())
    for name, p in block.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    unfrozen = HybridMoEBlock(HybridMoEConfig(token=TokenMoEConfig(freeze_shared_expert=False)), H, I)
    assert all(p.requires_grad for p in unfrozen.token_moe.shared_expert.parameters())


# ---------------------------------------------------------------- 3. B > 1 segment placement
def test_segment_outputs_land_on_the_tokens_of_the_segment_chosen_batch_gt_1():
    """METHOD.md 3.1: the released code pooled segments in one order and gathered in another."""
    block = make_block("batch", capacity_factor=2.0)
    B, S, a = 4, 12, 4
    # Each segment gets a distinct, strongly different content, so a segment expert applied to
    # the wrong segment's tokens (or written to the wrong place) gives a visibly different output.
    x = torch.randn(B, S, H) + torch.arange(B * S // a).repeat_interleave(a).view(B, S, 1) * 0.5
    with torch.no_grad():
        out = block.segment_moe(x)
        want = reference_segment_moe_batch(block, x)
    torch.testing.assert_close(out.y_BLH, want, atol=1e-5, rtol=1e-5)
    # and directly from the routing decisions: row g of the grid is (sequence g // R, segment g % R)
    R = S // a
    expected = torch.zeros_like(x)
    for e in range(block.config.segment.num_experts):
        for row, gate in zip(out.chosen_rows_Er[e].tolist(), out.chosen_gates_Er[e]):
            if gate == 0:
                continue
            b, p = divmod(row, R)
            seg = slice(p * a, (p + 1) * a)
            expected[b, seg] += block.segment_moe.experts.forward_reference(x[b, seg], torch.full((a,), e)) * gate
    torch.testing.assert_close(out.y_BLH, expected, atol=1e-5, rtol=1e-5)
    assert out.load_BE.sum() == 6 * 4  # E experts * r, r = floor(V * c / E) = floor(12 * 2.0 / 6)


def test_segment_routing_is_balanced_and_capped():
    # c = 1.5 with at most 2 experts per segment: feasible (E * r = 12 <= 2 * V), and tight
    block = make_block("batch", capacity_factor=1.5, max_experts_per_segment=2)
    x = torch.randn(2, 16, H)
    out = block.segment_moe(x)
    V, E = 8, 6
    r = int(V * 1.5 // E)
    taken = out.chosen_gates_Er > 0
    assert taken.sum(1).tolist() == [r] * E  # every expert is full
    per_segment = torch.bincount(out.chosen_rows_Er[taken], minlength=V)
    assert per_segment.max() <= 2


# ---------------------------------------------------------------- 4. lengths and padding
@pytest.mark.parametrize("routing", ["batch", "causal"])
@pytest.mark.parametrize("S", [1, 3, 4, 5, 13])
def test_any_sequence_length_works(routing, S):
    block = make_block(routing).train()
    out = block(torch.randn(2, S, H))
    assert out.hidden_states.shape == (2, S, H) and torch.isfinite(out.hidden_states).all()
    out.hidden_states.sum().backward()


@pytest.mark.parametrize("routing", ["batch", "causal"])
def test_padding_changes_nothing_for_real_tokens(routing):
    block = make_block(routing)
    x, real = padded_batch()
    with torch.no_grad():
        base = block(x, real).hidden_states
        # different values under the padding, and more padding on the right, change nothing
        x2 = torch.where(real.unsqueeze(-1), x, torch.randn_like(x) * 100)
        x2 = torch.cat([x2, torch.randn(3, 5, H)], 1)
        real2 = torch.cat([real, torch.zeros(3, 5, dtype=torch.bool)], 1)
        more = block(x2, real2).hidden_states[:, :11]
    torch.testing.assert_close(more[real], base[real], atol=1e-5, rtol=1e-5)
    if routing == "causal":  # and each sequence alone, unpadded, computes the same as in the batch
        for b in range(3):
            with torch.no_grad():
                alone = block(x[b:b + 1, real[b]]).hidden_states[0]
            torch.testing.assert_close(alone, base[b, real[b]], atol=1e-5, rtol=1e-5)


def test_padding_tokens_belong_to_no_segment():
    """Left padding shifts no boundary: segments are cut from the first real token."""
    block = make_block("batch")
    x = torch.randn(1, 8, H)
    with torch.no_grad():
        plain = block(torch.cat([x, x], 0)).hidden_states
        padded = torch.cat([torch.zeros(2, 3, H), torch.cat([x, x], 0)], 1)
        real = torch.ones(2, 11, dtype=torch.bool)
        real[:, :3] = False
        shifted = block(padded, real).hidden_states[:, 3:]
    torch.testing.assert_close(shifted, plain, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------- 5. causal mode
def test_causal_prefix_outputs_are_bit_identical_when_the_suffix_changes():
    block = make_block("causal")
    x = torch.randn(2, 17, H)
    for t in (0, 3, 4, 9, 15):
        y = x.clone()
        y[:, t + 1:] = torch.randn_like(y[:, t + 1:]) * 5
        with torch.no_grad():
            a, b = block(x).hidden_states, block(y).hidden_states
        assert torch.equal(a[:, :t + 1], b[:, :t + 1]), t
        assert not torch.equal(a[:, t + 1:], b[:, t + 1:])


def test_causal_output_of_a_sequence_does_not_depend_on_the_batch():
    block = make_block("causal")
    x = torch.randn(4, 13, H)
    with torch.no_grad():
        full = block(x).hidden_states
        others = x.clone()
        others[1:] = torch.randn_like(others[1:])
        swapped = block(others).hidden_states
        alone = block(x[:1]).hidden_states
    assert torch.equal(full[0], swapped[0])  # same shapes: bit-identical
    torch.testing.assert_close(alone[0], full[0], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_causal_step_by_step_decoding_equals_full_forward(pooling):
    block = make_block("causal", pooling=pooling, causal_top_k=2)
    x = torch.randn(2, 14, H)
    with torch.no_grad():
        full = block(x).hidden_states
        state, steps = None, []
        for t in range(14):
            out = block(x[:, t:t + 1], None, state)
            state = out.segment_state
            steps.append(out.hidden_states)
        torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-6, rtol=1e-6)
        state, chunks = None, []
        for lo, hi in ((0, 6), (6, 7), (7, 14)):  # prefill, then uneven chunks
            out = block(x[:, lo:hi], None, state)
            state = out.segment_state
            chunks.append(out.hidden_states)
        torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-6, rtol=1e-6)
        assert state.num_seen_B.tolist() == [14, 14]


def test_causal_decoding_with_left_padded_prefill_and_beam_reorder():
    block = make_block("causal")
    x = torch.randn(2, 10, H)
    with torch.no_grad():
        want = torch.stack([block(x[0:1, 2:]).hidden_states[0], block(x[1:2]).hidden_states[0, 2:]])
        real = torch.ones(2, 7, dtype=torch.bool)
        real[0, :2] = False  # sequence 0 is 2 tokens shorter: left padded
        prompt = torch.stack([torch.cat([torch.zeros(2, H), x[0, 2:7]]), x[1, :7]])
        out = block(prompt, real)
        state, steps = out.segment_state, [out.hidden_states[:, 2:]]
        # reorder twice (a no-op overall) to exercise SegmentState.index_select
        state = state.index_select(torch.tensor([1, 0])).index_select(torch.tensor([1, 0]))
        for t in range(7, 10):
            nxt = torch.stack([x[0, t], x[1, t]]).unsqueeze(1)
            out = block(nxt, None, state)
            state = out.segment_state
            steps.append(out.hidden_states)
        got = torch.cat(steps, 1)
    # both sequences: prompt positions 2..6 then three decoded tokens, as if each ran alone
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------- 6. batch mode is not causal
def test_batch_mode_is_not_causal():
    """Documented behaviour (METHOD.md 4): a later token of the same window, or another sequence
    of the batch, changes the output at an earlier position."""
    block = make_block("batch", capacity_factor=1.0)
    torch.manual_seed(3)
    x = torch.randn(2, 12, H)
    with torch.no_grad():
        base = block(x).hidden_states
        changed_later = x.clone()
        changed_later[0, 3] += 10  # last token of segment 0 of sequence 0
        later = block(changed_later).hidden_states
        changed_other = x.clone()
        changed_other[1] = torch.randn(12, H) * 10
        other = block(changed_other).hidden_states
    assert not torch.allclose(later[0, 0], base[0, 0])  # position 0 saw position 3
    assert not torch.allclose(other[0], base[0])        # sequence 0 saw sequence 1
    with pytest.raises(ValueError, match="no incremental form"):
        block(x[:, :1], None, segment_state=make_block("causal")(x[:, :1]).segment_state)


# ---------------------------------------------------------------- 7. function preserving
@pytest.mark.parametrize("routing", ["batch", "causal"])
def test_preserving_fusion_reproduces_the_dense_ffn_at_initialisation(routing):
    torch.manual_seed(0)
    dense = SwiGLUMLP(H, I)
    cfg = HybridMoEConfig(fusion="preserving", segment=SegmentMoEConfig(segment_length=4, routing=routing))
    block = HybridMoEBlock(cfg, H, I).eval()
    block.load_dense_ffn(dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight)
    x, real = padded_batch()
    with torch.no_grad():
        torch.testing.assert_close(block(x, real).hidden_states[real], dense(x)[real], atol=1e-6, rtol=1e-5)
    # the paper's fixed fusion is not function preserving (METHOD.md 3.3): about 0.7x + segment term
    fixed = HybridMoEBlock(HybridMoEConfig(segment=SegmentMoEConfig(segment_length=4, routing=routing)), H, I)
    fixed.load_dense_ffn(dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight)
    with torch.no_grad():
        assert not torch.allclose(fixed.eval()(x, real).hidden_states[real], dense(x)[real], atol=1e-3)
    # and the segment gate does learn: it gets a gradient at step 0
    block.train()
    block(x, real).hidden_states.square().sum().backward()
    assert block.segment_gate.grad is not None and block.segment_gate.grad != 0


def test_upcycling_noise_makes_experts_differ():
    dense = SwiGLUMLP(H, I)
    block = HybridMoEBlock(HybridMoEConfig(), H, I)
    block.load_dense_ffn(dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight, noise_std=0.01,
                         generator=torch.Generator().manual_seed(0))
    w = block.token_moe.experts.gate_up_proj
    assert not torch.equal(w[0], w[1])
    torch.testing.assert_close(w[0, :I], dense.gate_proj.weight, atol=0.06, rtol=0)


# ---------------------------------------------------------------- load balance and statistics
def test_aux_loss_only_in_training_and_padding_ignored():
    block = make_block("batch")
    x, real = padded_batch()
    assert block.eval()(x, real).aux_loss is None
    block.train()
    out = block(x, real)
    assert out.aux_loss is not None and out.aux_loss.dtype == torch.float32
    x2 = torch.where(real.unsqueeze(-1), x, torch.randn_like(x) * 50)
    assert torch.equal(block(x2, real).stats["load_balance_loss"], out.stats["load_balance_loss"])
    # Switch form: = 1 when routing is uniform and perfectly balanced
    from multipl_moe.moe.token_moe import TokenRouting, load_balance_loss
    E, T = 5, 10
    uniform = TokenRouting(torch.arange(T).remainder(E)[:, None], torch.ones(T, 1), torch.ones(T),
                           torch.full((T, E), 1 / E), torch.zeros(T, E + 1))
    assert load_balance_loss(uniform, None).item() == pytest.approx(1.0)
    skewed = TokenRouting(torch.zeros(T, 1, dtype=torch.long), torch.ones(T, 1), torch.ones(T),
                          torch.eye(E)[[0] * T], torch.zeros(T, E + 1))
    assert load_balance_loss(skewed, None).item() == pytest.approx(E)


def test_z_loss_and_segment_balance_in_aux():
    torch.manual_seed(0)
    cfg = HybridMoEConfig(router_z_loss_coef=1e-3, segment=SegmentMoEConfig(segment_length=4, routing="causal"))
    block = HybridMoEBlock(cfg, H, I).train()
    out = block(torch.randn(2, 12, H))
    assert {"load_balance_loss", "z_loss", "segment_balance_loss"} <= set(out.stats)
    want = 0.01 * (out.stats["load_balance_loss"] + out.stats["segment_balance_loss"])
    assert out.aux_loss.item() > want.item()  # the z-loss adds on top
    assert out.stats["segment_load"].sum().item() == 2 * 3  # k=1 expert for each of 3 segments


def test_token_only_block_has_no_segment_level():
    cfg = HybridMoEConfig(token_weight=1.0, segment=SegmentMoEConfig(num_experts=0))
    block = HybridMoEBlock(cfg, H, I)
    assert block.segment_moe is None and block.is_causal
    assert "segment_load" not in block(torch.randn(1, 5, H)).stats


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize("kwargs,field", [
    (dict(token=dict(num_experts=6, top_k=7)), "token.top_k"),
    (dict(token=dict(top_k=1)), "token.top_k"),
    (dict(segment=dict(segment_length=0)), "segment.segment_length"),
    (dict(segment=dict(capacity_factor=0)), "segment.capacity_factor"),
    (dict(segment=dict(capacity_factor=-1.0)), "segment.capacity_factor"),
    (dict(segment=dict(max_experts_per_segment=0)), "segment.max_experts_per_segment"),
    (dict(segment=dict(routing="global")), "segment.routing"),
    (dict(segment=dict(pooling="median")), "segment.pooling"),
    (dict(fusion="sum"), "fusion"),
    (dict(token_weight=-0.1), "token_weight"),
    (dict(dispatch="cuda"), "dispatch"),
    (dict(segment=dict(causal_top_k=9)), "segment.causal_top_k"),
    (dict(segment=dict(window=3)), "unknown key"),
])
def test_bad_config_values_fail_naming_the_field(kwargs, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        HybridMoEConfig(**kwargs)


def test_config_dict_round_trip():
    cfg = HybridMoEConfig(fusion="preserving", segment=SegmentMoEConfig(routing="causal", segment_length=32))
    assert HybridMoEConfig.from_dict(cfg.to_dict()) == cfg
