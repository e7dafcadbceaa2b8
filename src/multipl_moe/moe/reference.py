"""METHOD.md section 2 written as plain loops over sequences, segments and experts.

Slow and obviously correct: the vectorised modules are tested against these functions. They read
the weights of a `HybridMoEBlock` and share none of its indexing code.
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F

from .block import HybridMoEBlock


def _expert(experts, e: int, x_nH: torch.Tensor) -> torch.Tensor:
    gate, up = F.linear(x_nH, experts.gate_up_proj[e]).chunk(2, dim=-1)
    return F.linear(experts.act_fn(gate) * up, experts.down_proj[e])


def _logits(weight: torch.Tensor, v_H: torch.Tensor) -> torch.Tensor:
    """Router logits in fp32, also under autocast (which would run `@` in bf16)."""
    with torch.autocast(v_H.device.type, enabled=False):
        return weight.float() @ v_H.float()


def _segments(real_S: torch.Tensor, a: int) -> list[list[int]]:
    """Positions of each segment: consecutive windows of `a` real tokens."""
    positions = [t for t in range(real_S.shape[0]) if bool(real_S[t])]
    return [positions[i:i + a] for i in range(0, len(positions), a)]


def _pool(x_nH: torch.Tensor, how: str) -> torch.Tensor:
    return x_nH.float().mean(0) if how == "mean" else x_nH.float().max(0).values


def reference_token_moe(block: HybridMoEBlock, x_BSH: torch.Tensor) -> torch.Tensor:
    """y_tok for every token, one token at a time (paper's `renorm` gating)."""
    tm = block.token_moe
    K = tm.config.top_k
    out = torch.zeros_like(x_BSH)
    for b in range(x_BSH.shape[0]):
        for t in range(x_BSH.shape[1]):
            x = x_BSH[b, t]
            p = torch.softmax(_logits(tm.router.weight, x), dim=-1)
            routed = torch.topk(p[:-1], K - 1).indices.tolist()
            total = p[routed].sum() + p[-1]
            y = tm.shared_expert(x[None])[0] * (p[-1] / total).to(x.dtype)
            for e in routed:
                y = y + _expert(tm.experts, e, x[None])[0] * (p[e] / total).to(x.dtype)
            out[b, t] = y
    return out


def reference_segment_moe_batch(block: HybridMoEBlock, x_BSH: torch.Tensor,
                                real_BS: torch.Tensor | None = None) -> torch.Tensor:
    """y_seg of `batch` routing: pool each segment, each expert takes its r best, scatter back."""
    sm, cfg = block.segment_moe, block.config.segment
    B, S, H = x_BSH.shape
    real_BS = real_BS if real_BS is not None else torch.ones(B, S, dtype=torch.bool)
    segments = [(b, pos) for b in range(B) for pos in _segments(real_BS[b], cfg.segment_length)]
    V, E = len(segments), cfg.num_experts
    # c as written in decimal (1.4 = 7/5), in exact arithmetic: the config's documented rule
    r = math.floor(V * Fraction(repr(float(cfg.capacity_factor))).limit_denominator(10**6) / E)
    scores = torch.stack([torch.softmax(_logits(sm.router.weight, _pool(x_BSH[b, pos], cfg.pooling)), -1)
                          for b, pos in segments]) if V else torch.zeros(0, E)
    scale = 1.0 / cfg.segment_length if cfg.gate_scale == "inv_length" else 1.0
    taken_by = [0] * V
    out = torch.zeros_like(x_BSH)
    for e in range(E):
        candidates = sorted((j for j in range(V) if taken_by[j] < cfg.max_experts_per_segment),
                            key=lambda j: -float(scores[j, e]))[:r]
        for j in candidates:
            taken_by[j] += 1
            b, pos = segments[j]
            out[b, pos] += _expert(sm.experts, e, x_BSH[b, pos]) * (scores[j, e] * scale).to(x_BSH.dtype)
    return out


def reference_segment_moe_causal(block: HybridMoEBlock, x_BSH: torch.Tensor,
                                 real_BS: torch.Tensor | None = None) -> torch.Tensor:
    """y_seg of `causal` routing: segment p routed from segment p-1, segment 0 from its first token."""
    sm, cfg = block.segment_moe, block.config.segment
    B, S, H = x_BSH.shape
    real_BS = real_BS if real_BS is not None else torch.ones(B, S, dtype=torch.bool)
    scale = 1.0 / cfg.segment_length if cfg.gate_scale == "inv_length" else 1.0
    out = torch.zeros_like(x_BSH)
    for b in range(B):
        segments = _segments(real_BS[b], cfg.segment_length)
        route_in = x_BSH[b, segments[0][0]].float() if segments else None
        for pos in segments:
            p = torch.softmax(_logits(sm.router.weight, route_in), -1)
            gates, experts = torch.topk(p, cfg.causal_top_k)
            for g, e in zip(gates, experts.tolist()):
                out[b, pos] += _expert(sm.experts, e, x_BSH[b, pos]) * (g * scale).to(x_BSH.dtype)
            route_in = _pool(x_BSH[b, pos], cfg.pooling)
    return out


def reference_block(block: HybridMoEBlock, x_BSH: torch.Tensor, real_BS: torch.Tensor | None = None) -> torch.Tensor:
    cfg = block.config
    y_tok = reference_token_moe(block, x_BSH)
    if block.segment_moe is None:
        return y_tok if cfg.fusion == "preserving" else cfg.token_weight * y_tok
    seg_fn = reference_segment_moe_batch if cfg.segment.routing == "batch" else reference_segment_moe_causal
    y_seg = seg_fn(block, x_BSH, real_BS)
    if cfg.fusion == "preserving":
        return y_tok + block.segment_gate * y_seg
    return cfg.token_weight * y_tok + cfg.segment_weight * y_seg
