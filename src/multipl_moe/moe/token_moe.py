"""Token level of the hybrid block: token-choice routing with an always-selected shared expert.

Shape legend: T tokens (batch and sequence flattened), H hidden, E routed experts,
K-1 routed experts chosen per token (K counts the shared expert too), B batch.

The paper's gating (`renorm`, METHOD.md 2.1): p = softmax over *all* N_tok experts in fp32; select
the shared expert (the last) and the top K-1 of the others; renormalise the K selected
probabilities to sum to 1. Because the weights sum to 1, a freshly upcycled layer (all experts
copies of the dense FFN) computes the dense FFN exactly, up to rounding.

The shared expert is a separate module rather than a slice of the fused routed weights, because
it must be freezable on its own and because that is Qwen2-MoE's layout (`shared_expert`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import TokenMoEConfig
from .experts import SwiGLUExperts, SwiGLUMLP, fp32_linear


@dataclass
class TokenRouting:
    routed_idx_TK: torch.Tensor     # [T, K-1] routed expert ids, in 0..E-1
    routed_weight_TK: torch.Tensor  # [T, K-1] fp32 gate of each routed choice
    shared_weight_T: torch.Tensor   # [T] fp32 gate of the shared expert
    routed_probs_TE: torch.Tensor   # [T, E] fp32 router probabilities over the routed experts only
    logits_TX: torch.Tensor         # fp32 router logits (for the z-loss)


class TokenMoE(nn.Module):
    def __init__(self, config: TokenMoEConfig, hidden_size: int, intermediate_size: int,
                 hidden_act: str = "silu", dispatch: str = "auto"):
        super().__init__()
        self.config = config
        num_router_outputs = config.num_experts if config.gating == "renorm" else config.num_routed
        self.router = nn.Linear(hidden_size, num_router_outputs, bias=False)
        nn.init.normal_(self.router.weight, std=0.02)
        self.experts = SwiGLUExperts(config.num_routed, hidden_size, intermediate_size, hidden_act, dispatch)
        self.shared_expert = SwiGLUMLP(hidden_size, intermediate_size, hidden_act)
        if config.gating == "qwen2_moe":
            self.shared_expert_gate = nn.Linear(hidden_size, 1, bias=False)
        if config.freeze_shared_expert:
            self.shared_expert.requires_grad_(False)

    def route(self, x_TH: torch.Tensor) -> TokenRouting:
        cfg = self.config
        k_routed = cfg.top_k - 1
        # The router runs in fp32 whatever the activations' dtype or autocast says: softmax and
        # top-k in bf16 flip choices between near-tied experts.
        logits = fp32_linear(x_TH, self.router.weight)
        if cfg.gating == "renorm":
            probs = torch.softmax(logits, dim=-1)
            top_p, top_idx = torch.topk(probs[:, :-1], k_routed, dim=-1)
            shared_p = probs[:, -1]
            norm = top_p.sum(-1) + shared_p
            routed_w, shared_w = top_p / norm[:, None], shared_p / norm
            routed_probs = torch.softmax(logits[:, :-1], dim=-1)
        else:  # Qwen2-MoE: softmax over routed experts, sigmoid-gated shared expert
            routed_probs = torch.softmax(logits, dim=-1)
            routed_w, top_idx = torch.topk(routed_probs, k_routed, dim=-1)
            if cfg.norm_topk_prob:
                routed_w = routed_w / routed_w.sum(-1, keepdim=True)
            shared_w = torch.sigmoid(fp32_linear(x_TH, self.shared_expert_gate.weight)).squeeze(-1)
        return TokenRouting(top_idx, routed_w, shared_w, routed_probs, logits)

    def forward(self, x_TH: torch.Tensor, output_scale: float | torch.Tensor = 1.0) -> tuple[torch.Tensor, TokenRouting]:
        """y_tok for every token, times `output_scale` (the block's fusion weight, folded into the
        [T, K] gates here rather than applied to the [T, H] output: one pass fewer each way)."""
        routing = self.route(x_TH)
        routed_w_TK, shared_w_T = routing.routed_weight_TK, routing.shared_weight_T
        if not (isinstance(output_scale, float) and output_scale == 1.0):
            routed_w_TK, shared_w_T = routed_w_TK * output_scale, shared_w_T * output_scale
        # Weighted sum over the K choices in a fixed order: a deterministic combine.
        y_TH = self.experts.forward_weighted(x_TH, routing.routed_idx_TK, routed_w_TK)
        shared_TH = (self.shared_expert(x_TH) if self.experts.dispatch == "reference"
                     else self.shared_expert.forward_fused(x_TH))
        # Under autocast both terms come in the autocast dtype, as an nn.Linear FFN's output would.
        y_TH = torch.addcmul(y_TH, shared_TH.to(y_TH.dtype), shared_w_T.to(y_TH.dtype).unsqueeze(-1))
        return y_TH, routing


def load_balance_loss(routing: TokenRouting, real_T: torch.Tensor | None, reduce=None) -> torch.Tensor:
    """Switch load-balance loss over the routed experts, fp32, padding excluded.

    L = E * sum_i f_i P_i, f_i the fraction of routed selections that went to expert i and P_i the
    mean router probability of i renormalised over the routed experts. The shared expert is
    excluded: it is always selected, so it carries no balance signal (the released code counts it
    and divides by 4 selections per token where there are 2, METHOD.md 3.5). Equals 1 when
    perfectly balanced. `reduce` averages f and P over processes (equal token counts assumed).
    """
    probs_TE, idx_TK = routing.routed_probs_TE, routing.routed_idx_TK
    E = probs_TE.shape[1]
    weight_T = (real_T.float() if real_T is not None
                else torch.ones(probs_TE.shape[0], dtype=torch.float32, device=probs_TE.device))
    n_real = weight_T.sum().clamp(min=1.0)
    P_E = (probs_TE.float() * weight_T[:, None]).sum(0) / n_real
    counts_E = torch.zeros(E, device=probs_TE.device, dtype=torch.float32)
    counts_E.index_add_(0, idx_TK.reshape(-1), weight_T.repeat_interleave(idx_TK.shape[1]))
    f_E = counts_E / (n_real * idx_TK.shape[1])
    if reduce is not None:  # e.g. a mean over data-parallel processes: the global batch's f and P
        f_E, P_E = reduce(f_E), reduce(P_E)
    return E * (f_E * P_E).sum()


def router_z_loss(logits_TX: torch.Tensor, real_T: torch.Tensor | None) -> torch.Tensor:
    """Mean squared log-partition of the router logits (ST-MoE), padding excluded."""
    z_T = torch.logsumexp(logits_TX, dim=-1).square()
    if real_T is None:
        return z_T.mean()
    w = real_T.float()
    return (z_T * w).sum() / w.sum().clamp(min=1.0)


def token_load(routing: TokenRouting, real_BS: torch.Tensor) -> torch.Tensor:
    """[B, N_tok] number of real tokens of each sequence sent to each expert (shared expert last)."""
    B, S = real_BS.shape
    idx_BSK = routing.routed_idx_TK.view(B, S, -1)
    E = routing.routed_probs_TE.shape[1]
    onehot = F.one_hot(idx_BSK, E).sum(2) * real_BS.unsqueeze(-1)
    return torch.cat([onehot.sum(1), real_BS.sum(1, keepdim=True)], dim=1)
