"""Edge cases of the MoE block found by probing (issue 11, item 4); each failed before its fix."""

from __future__ import annotations

import pytest
import torch

from multipl_moe.moe import ConfigError, HybridMoEBlock, HybridMoEConfig, SegmentMoEConfig, SwiGLUMLP
from multipl_moe.moe.reference import reference_block, reference_segment_moe_batch
from multipl_moe.moe.presets import resolve_preset

H, I = 16, 24


# ---------------------------------------------------------------- segment capacity
def test_padding_does_not_change_the_segment_capacity():
    """45 real one-token segments, c = 1.4, 3 experts: r = 45 * 1.4 / 3 = 21 with or without a
    padding token (it was 20 without padding: r_max in float64 rounded 62.99.../3 down, and 21
    with one, where r in float32 took over)."""
    torch.manual_seed(0)
    seg = SegmentMoEConfig(num_experts=3, segment_length=1, capacity_factor=1.4, max_experts_per_segment=3)
    block = HybridMoEBlock(HybridMoEConfig(segment=seg), H, I).eval()
    x = torch.randn(1, 45, H)
    padded = torch.cat([x, torch.zeros(1, 1, H)], 1)
    real = torch.ones(1, 46, dtype=torch.bool)
    real[0, 45] = False
    with torch.no_grad():
        plain, with_pad = block.segment_moe(x), block.segment_moe(padded, real)
        want = reference_segment_moe_batch(block, x)
    assert plain.load_BE.tolist() == [[21, 21, 21]]
    assert with_pad.load_BE.tolist() == [[21, 21, 21]]
    torch.testing.assert_close(with_pad.y_BLH[:, :45], plain.y_BLH, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(plain.y_BLH, want, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("c,V,E,r", [(1.4, 45, 3, 21), (1.0, 10, 3, 3), (0.1, 30, 1, 3), (2.5, 7, 6, 2),
                                     (1 / 3, 30, 1, 10), (7.0, 5, 6, 5)])
def test_capacity_is_exact_integer_arithmetic(c, V, E, r):
    assert SegmentMoEConfig(num_experts=E, capacity_factor=c).capacity(V) == r


@pytest.mark.parametrize("c", [7.0, 20.0])
def test_capacity_factor_above_the_number_of_experts_takes_every_segment(c):
    """c > N_seg made r exceed the number of segments and crashed in topk ("selected index k out
    of range"); like the reference, an expert then takes every segment (still at most C experts
    per segment)."""
    torch.manual_seed(0)
    seg = SegmentMoEConfig(num_experts=6, segment_length=4, capacity_factor=c, max_experts_per_segment=4)
    block = HybridMoEBlock(HybridMoEConfig(segment=seg), H, I).eval()
    x = torch.randn(2, 13, H)
    real = torch.ones(2, 13, dtype=torch.bool)
    real[1, :3] = False
    with torch.no_grad():
        out = block(x, real)
        want = reference_block(block, x, real)
    torch.testing.assert_close(out.hidden_states[real], want[real], atol=1e-5, rtol=1e-5)
    # 4 + 3 segments; every segment is taken by the first C = 4 experts
    assert out.stats["segment_load"].sum(0).tolist() == [7, 7, 7, 7, 0, 0]


# ---------------------------------------------------------------- function preserving, every variant
@pytest.mark.parametrize("overrides", [
    {"segment.num_experts": 0},  # was 0.7 x the FFN
    {"segment.num_experts": 0, "token_weight": 0.5},
    {},
    {"segment.routing": "batch", "segment.capacity_factor": 2.0},
    {"segment.pooling": "max", "segment.gate_scale": "inv_length", "segment.causal_top_k": 3},
    {"token.num_experts": 4, "token.top_k": 3, "segment.num_experts": 2},
])
def test_a_preserving_block_equals_the_dense_ffn_in_every_accepted_configuration(overrides):
    """`--preset preserving --set segment.num_experts=0` computed 0.7 x the FFN."""
    torch.manual_seed(0)
    cfg = resolve_preset("preserving", {"segment.segment_length": 4, **overrides})
    dense = SwiGLUMLP(H, I)
    block = HybridMoEBlock(cfg, H, I).eval()
    block.load_dense_ffn(dense.gate_proj.weight, dense.up_proj.weight, dense.down_proj.weight)
    x = torch.randn(2, 11, H)
    with torch.no_grad():
        torch.testing.assert_close(block(x).hidden_states, dense(x), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(reference_block(block, x), dense(x), atol=1e-6, rtol=1e-5)


def test_preserving_still_rejects_qwen2_moe_gating():
    with pytest.raises(ConfigError, match="fusion"):
        resolve_preset("preserving", {"token.gating": "qwen2_moe", "segment.num_experts": 0})


# ---------------------------------------------------------------- causal mode: segment 0
def _causal_block(seed=0, **kw) -> HybridMoEBlock:
    torch.manual_seed(seed)
    seg = dict(segment_length=4, routing="causal", causal_top_k=1)
    seg.update(kw)
    return HybridMoEBlock(HybridMoEConfig(segment=SegmentMoEConfig(**seg)), H, I).eval()


def test_first_segment_routing_has_no_tie_and_depends_on_the_data():
    """Segment 0 was routed from a zero vector: equal logits for all experts, so every sequence's
    first segment went wherever the device's top-k breaks ties. It is routed from its own first
    token now: distinct logits, and different sequences may choose different experts."""
    block = _causal_block()
    x = torch.randn(64, 9, H)
    with torch.no_grad():
        out = block.segment_moe(x)
    logits_BRE = out.z_logits_GE.view(64, -1, block.config.segment.num_experts)
    top2 = logits_BRE[:, 0].topk(2, dim=-1).values
    assert (top2[:, 0] > top2[:, 1]).all()  # no exact tie
    first_expert = logits_BRE[:, 0].argmax(-1)
    assert first_expert.unique().numel() > 1


def test_first_segment_routing_is_the_first_tokens():
    """Changing any token of segment 0 but the first leaves its routing (hence the first token's
    output) unchanged; changing the first token changes it."""
    block = _causal_block()
    x = torch.randn(16, 8, H)
    with torch.no_grad():
        base = block.segment_moe(x)
        later = x.clone()
        later[:, 1:4] = torch.randn(16, 3, H) * 5
        moved_later = block.segment_moe(later)
        first = x.clone()
        first[:, 0] = torch.randn(16, H) * 5
        moved_first = block.segment_moe(first)
    E = block.config.segment.num_experts
    choice = lambda out: out.z_logits_GE.view(16, -1, E)[:, 0].argmax(-1)  # noqa: E731
    assert torch.equal(choice(moved_later), choice(base))
    assert torch.equal(moved_later.y_BLH[:, 0], base.y_BLH[:, 0])
    assert not torch.equal(choice(moved_first), choice(base))


@pytest.mark.parametrize("pooling", ["mean", "max"])
def test_a_sequence_that_starts_during_decoding_routes_as_if_alone(pooling):
    """A sequence with no real token in the prefill (all padding), which then starts one token
    at a time: its first segment's routing input is its first token, kept in the state."""
    block = _causal_block(pooling=pooling)
    x = torch.randn(2, 12, H)
    with torch.no_grad():
        alone = block(x[1:2, 5:]).hidden_states[0]
        real = torch.ones(2, 5, dtype=torch.bool)
        real[1] = False
        out = block(x[:, :5], real)
        state, steps = out.segment_state, []
        for t in range(5, 12):
            out = block(x[:, t:t + 1], None, state)
            state = out.segment_state
            steps.append(out.hidden_states[1, 0])
    torch.testing.assert_close(torch.stack(steps), alone, atol=1e-6, rtol=1e-6)


def test_a_checkpoint_with_the_old_first_segment_query_still_loads(tiny_base_factory, tmp_path):
    """Checkpoints written before segment 0 was routed from its first token hold a
    `first_segment_query` per layer; they load (the tensor is dropped) and compute what a
    checkpoint without it computes."""
    from safetensors.torch import load_file, save_file

    from multipl_moe.modeling import MultiplMoEForCausalLM
    from multipl_moe.modeling.upcycle import load_dense, upcycle_model

    dense = load_dense(str(tiny_base_factory("qwen2")), "float32")
    model = upcycle_model(dense, resolve_preset("paper-causal", {"segment.segment_length": 4}), noise_std=0.02)
    model.save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    H_model = dense.config.hidden_size
    weights.update({f"model.layers.{i}.mlp.segment_moe.first_segment_query": torch.zeros(H_model)
                    for i in range(dense.config.num_hidden_layers)})
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    loaded = MultiplMoEForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(3, 259, (2, 11), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model.eval()(ids).logits, atol=0, rtol=0)
