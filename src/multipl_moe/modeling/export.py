"""Export the token-level-only variant as a standard `Qwen2MoeForCausalLM` checkpoint.

The baseline then loads in any tool that knows Qwen2-MoE (vLLM, TGI, llama.cpp converters).
Exact only for `token.gating = qwen2_moe` (softmax over routed experts, sigmoid-gated shared
expert); the fusion weight `token_weight` is folded into the experts' down projections.
"""

from __future__ import annotations

import torch

from . import MultiplMoEForCausalLM
from ..moe import HybridMoEBlock


class ExportError(ValueError):
    pass


def to_qwen2_moe(model: MultiplMoEForCausalLM):
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    cfg = model.config
    moe = cfg.moe_config
    if moe.segment.enabled:
        raise ExportError("only the token-level-only variant maps onto Qwen2-MoE (segment.num_experts must be 0; "
                          "upcycle with --preset qwen2-moe)")
    if moe.token.gating != "qwen2_moe":
        raise ExportError("Qwen2-MoE gates its shared expert with a sigmoid; the paper's renormalised gating has no "
                          "exact Qwen2-MoE form (upcycle with --preset qwen2-moe)")
    base = cfg.base_config_dict()
    head_dim = base.get("head_dim") or cfg.hidden_size // cfg.num_attention_heads
    if head_dim != cfg.hidden_size // cfg.num_attention_heads:
        raise ExportError(f"head_dim {head_dim} != hidden_size / num_attention_heads: Qwen2-MoE cannot express it")
    if cfg.base_model_type == "qwen2":
        qkv_bias = True
    elif base.get("attention_bias", False) or base.get("mlp_bias", False):
        raise ExportError("Llama attention/MLP biases have no Qwen2-MoE equivalent")
    else:
        qkv_bias = False
    if base.get("sliding_window") and cfg.base_model_type == "mistral":
        raise ExportError("Mistral's sliding window on every layer has no Qwen2-MoE equivalent")
    moe_layers = [i for i in range(cfg.num_hidden_layers) if cfg.is_moe_layer(i)]
    q_cfg = Qwen2MoeConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, hidden_act=cfg.hidden_act,
        max_position_embeddings=cfg.max_position_embeddings, rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters=base.get("rope_parameters"), tie_word_embeddings=cfg.tie_word_embeddings,
        num_experts=moe.token.num_routed, num_experts_per_tok=moe.token.top_k - 1,
        moe_intermediate_size=cfg.intermediate_size, shared_expert_intermediate_size=cfg.intermediate_size,
        norm_topk_prob=moe.token.norm_topk_prob, decoder_sparse_step=1,
        mlp_only_layers=[i for i in range(cfg.num_hidden_layers) if i not in moe_layers],
        qkv_bias=qkv_bias, router_aux_loss_coef=moe.load_balance_coef,
        bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id,
        use_sliding_window=False,
    )
    state = {}
    w = moe.token_weight
    for name, t in model.state_dict().items():
        new = name.replace(".mlp.token_moe.router.", ".mlp.gate.").replace(".mlp.token_moe.", ".mlp.")
        if w != 1.0 and name.endswith(("token_moe.experts.down_proj", "token_moe.shared_expert.down_proj.weight")):
            t = t * w
        state[new] = t
    with torch.device("meta"):
        q_model = Qwen2MoeForCausalLM(q_cfg)
    q_model.load_state_dict(state, strict=True, assign=True)
    if q_cfg.tie_word_embeddings:
        q_model.tie_weights()
    # Buffers (rotary frequencies) are not in the state dict: recompute them on the CPU.
    q_model.model.rotary_emb.__init__(q_cfg)
    assert not any(isinstance(layer.mlp, HybridMoEBlock) for layer in q_model.model.layers)
    return q_model.eval()
