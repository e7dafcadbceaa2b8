"""Parameter accounting of a MultiPL-MoE config, computed on the meta device (no weights needed).

Active parameters per token: everything outside the MoE blocks, the routers, the shared expert,
K-1 routed experts, and the segment experts a token goes through on average (c in `batch` mode,
since E experts take floor(V*c/E) segments each; causal_top_k in `causal` mode).
"""

from __future__ import annotations

import torch

from . import MultiplMoEConfig, MultiplMoEForCausalLM
from ..moe import HybridMoEBlock


def model_info(config: MultiplMoEConfig) -> dict:
    with torch.device("meta"):
        model = MultiplMoEForCausalLM(config)
    moe = config.moe_config
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    inactive = 0
    moe_layers = 0
    for layer in model.model.layers:
        if not isinstance(layer.mlp, HybridMoEBlock):
            continue
        moe_layers += 1
        tok = layer.mlp.token_moe.experts
        per_expert = tok.gate_up_proj[0].numel() + tok.down_proj[0].numel()
        inactive += per_expert * (moe.token.num_routed - (moe.token.top_k - 1))
        if layer.mlp.segment_moe is not None:
            seg_active = (moe.segment.capacity_factor if moe.segment.routing == "batch"
                          else moe.segment.causal_top_k)
            inactive += per_expert * (moe.segment.num_experts - seg_active)
    active = total - inactive
    return {
        "base_model_type": config.base_model_type,
        "layers": config.num_hidden_layers,
        "moe_layers": moe_layers,
        "token_experts_per_layer": moe.token.num_experts,
        "token_top_k": moe.token.top_k,
        "segment_experts_per_layer": moe.segment.num_experts,
        "segment_routing": moe.segment.routing if moe.segment.enabled else None,
        "total_params": total,
        "active_params_per_token": int(round(active)),
        "trainable_params_at_construction": trainable,
        "frozen_params_at_construction": total - trainable,
    }


def format_info(info: dict) -> str:
    def b(n):
        return f"{n / 1e9:.2f}B" if n >= 1e8 else f"{n / 1e6:.2f}M"

    lines = [
        f"architecture      {info['base_model_type']}, {info['layers']} layers ({info['moe_layers']} with MoE)",
        f"experts per layer {info['token_experts_per_layer']} token (top-{info['token_top_k']}, shared included)"
        f" + {info['segment_experts_per_layer']} segment"
        + (f" ({info['segment_routing']} routing)" if info['segment_routing'] else ""),
        f"total params      {b(info['total_params'])} ({info['total_params']:,})",
        f"active per token  {b(info['active_params_per_token'])} ({info['active_params_per_token']:,})",
        f"frozen / trainable at construction  {b(info['frozen_params_at_construction'])} / "
        f"{b(info['trainable_params_at_construction'])} (the training recipe decides what trains)",
    ]
    return "\n".join(lines)
